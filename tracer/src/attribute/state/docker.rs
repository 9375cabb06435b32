//! Docker's state on disk: `<data root>/containers/<id>/config.v2.json` (name, image, labels,
//! state with the main pid, restart count) and `hostconfig.json` (memory limit, restart
//! policy), which dockerd rewrites (a temporary file renamed over the old one) whenever a
//! container is created, started, stopped, restarted or renamed, and removes with the container.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::inotify::{Event, Inotify, Watch, name_str};
use super::{StateError, events_lost, is_container_id, json_error, off_thread, read_bounded};
use crate::attribute::runtime::{
    ContainerMetadata, Origin, RuntimeError, RuntimeEvent, RuntimeResult, bounded,
};

const CONFIG: &str = "config.v2.json";
const HOST_CONFIG: &str = "hostconfig.json";
/// Far more than any real container's (a few KiB; labels and environment make them grow).
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Whether `dir` holds Docker's state: its `containers` directory.
pub fn is_docker_root(dir: &Path) -> bool {
    dir.join("containers").is_dir()
}

/// Every container on disk, at most `capacity`.
pub fn list(root: &Path, capacity: usize) -> RuntimeResult<Vec<ContainerMetadata>> {
    let containers = root.join("containers");
    let entries = std::fs::read_dir(&containers)
        .map_err(|err| RuntimeError::Absent(format!("{}: {err}", containers.display())))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        if found.len() == capacity {
            log::warn!(
                "{}: more than {capacity} containers; the rest are read when one is OOM-killed",
                containers.display()
            );
            break;
        }
        let Some(id) = entry
            .file_name()
            .to_str()
            .filter(|id| is_container_id(id))
            .map(str::to_owned)
        else {
            continue;
        };
        match read(root, &id) {
            Ok(Some(meta)) => found.push(meta),
            Ok(None) => {}
            Err(err) => log::debug!("{}/{id}: {err}", containers.display()),
        }
    }
    Ok(found)
}

/// Container `id`, `None` if it has no state on disk (yet, or any more).
pub fn read(root: &Path, id: &str) -> Result<Option<ContainerMetadata>, StateError> {
    if !is_container_id(id) {
        return Ok(None);
    }
    let dir = Path::new("containers").join(id);
    let Some(config) = read_bounded(root, &dir.join(CONFIG), MAX_CONFIG_BYTES)? else {
        return Ok(None);
    };
    let host_config = read_bounded(root, &dir.join(HOST_CONFIG), MAX_CONFIG_BYTES)?;
    let meta = parse(&config, host_config.as_deref()).map_err(|err| match err {
        StateError::Garbage(why) => {
            StateError::Garbage(format!("{}: {why}", root.join(&dir).display()))
        }
        err => err,
    })?;
    if meta.id != id {
        return Err(StateError::Garbage(format!(
            "{}/{CONFIG} describes another container",
            root.join(&dir).display(),
        )));
    }
    Ok(Some(meta))
}

#[derive(Deserialize)]
struct ConfigV2 {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Name", default)]
    name: String,
    /// The image's id; the name the user gave is in `Config.Image`.
    #[serde(rename = "Image", default)]
    image: Option<String>,
    #[serde(rename = "Config", default)]
    config: Option<Config>,
    #[serde(rename = "State", default)]
    state: Option<State>,
    #[serde(rename = "RestartCount", default)]
    restart_count: Option<u32>,
}

#[derive(Deserialize)]
struct Config {
    #[serde(rename = "Image", default)]
    image: Option<String>,
    #[serde(rename = "Labels", default)]
    labels: Option<HashMap<String, String>>,
}

#[derive(Deserialize)]
struct State {
    #[serde(rename = "Running", default)]
    running: bool,
    #[serde(rename = "Pid", default)]
    pid: i64,
}

#[derive(Deserialize)]
struct HostConfig {
    #[serde(rename = "Memory", default)]
    memory: Option<i64>,
    #[serde(rename = "RestartPolicy", default)]
    restart_policy: Option<RestartPolicy>,
}

#[derive(Deserialize)]
struct RestartPolicy {
    #[serde(rename = "Name", default)]
    name: Option<String>,
}

/// A container's `config.v2.json` and, when there, its `hostconfig.json`.
pub fn parse(config: &[u8], host_config: Option<&[u8]>) -> Result<ContainerMetadata, StateError> {
    let garbage = |what: &str, err: serde_json::Error| json_error(what, &err);
    let ConfigV2 {
        id,
        name,
        image,
        config,
        state,
        restart_count,
    } = serde_json::from_slice(config).map_err(|err| garbage(CONFIG, err))?;
    if !is_container_id(&id) {
        return Err(StateError::Garbage(format!(
            "{CONFIG}: its `ID` is not a container id"
        )));
    }
    let (config_image, labels) = match config {
        Some(Config { image, labels }) => (image, labels.unwrap_or_default()),
        None => (None, HashMap::new()),
    };
    let mut meta = ContainerMetadata::new(&id, &name, "docker", labels);
    meta.origin = Origin::State;
    meta.image = config_image.or(image).map(|image| bounded(&image));
    meta.main_pid = state
        .filter(|state| state.running)
        .and_then(|state| u32::try_from(state.pid).ok())
        .filter(|&pid| pid > 0);
    meta.restart_count = restart_count;
    if let Some(host_config) = host_config {
        let HostConfig {
            memory,
            restart_policy,
        } = serde_json::from_slice(host_config).map_err(|err| garbage(HOST_CONFIG, err))?;
        meta.memory_limit_bytes = memory
            .and_then(|bytes| u64::try_from(bytes).ok())
            .filter(|&bytes| bytes > 0);
        meta.restart_policy = restart_policy
            .and_then(|policy| policy.name)
            .filter(|name| !name.is_empty())
            .map(|name| bounded(&name));
    }
    Ok(meta)
}

/// Follows `<root>/containers`: a directory appears with a container and goes with it, and its
/// two files are replaced whenever its state changes.
pub struct Follower {
    root: PathBuf,
    inotify: Inotify,
    top: Watch,
    dirs: HashMap<Watch, String>,
    capacity: usize,
    queue: VecDeque<RuntimeResult<RuntimeEvent>>,
    /// Containers whose files changed, read (off the runtime's thread) before the next event.
    changed: Vec<String>,
    ended: bool,
}

const TOP_EVENTS: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;
const DIR_EVENTS: u32 = libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE | libc::IN_ONLYDIR;

impl Follower {
    /// Watches the directory and every container's in it (up to `capacity`), before anything
    /// is listed: a change in between is then an event, not lost.
    pub fn new(root: &Path, capacity: usize) -> RuntimeResult<Self> {
        let containers = root.join("containers");
        let unavailable = |err: io::Error| {
            RuntimeError::Unavailable(format!("watching {}: {err}", containers.display()))
        };
        let inotify = Inotify::new().map_err(unavailable)?;
        let top = inotify.add(&containers, TOP_EVENTS).map_err(|err| {
            if err.kind() == io::ErrorKind::NotFound {
                RuntimeError::Absent(format!("no {}", containers.display()))
            } else {
                unavailable(err)
            }
        })?;
        let mut follower = Follower {
            root: root.to_owned(),
            inotify,
            top,
            dirs: HashMap::new(),
            capacity,
            queue: VecDeque::new(),
            changed: Vec::new(),
            ended: false,
        };
        for id in follower.ids_on_disk() {
            follower.watch_dir(&id);
        }
        Ok(follower)
    }

    /// The next change; `None` once the directory itself is gone.
    pub async fn next(&mut self) -> Option<RuntimeResult<RuntimeEvent>> {
        loop {
            if !self.changed.is_empty() {
                self.read_changed().await;
            }
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match self.inotify.next().await {
                Ok(event) => self.handle(event),
                Err(err) => {
                    self.ended = true;
                    return Some(Err(events_lost(&err)));
                }
            }
        }
    }

    fn handle(&mut self, event: Event) {
        if event.is(libc::IN_Q_OVERFLOW) {
            // Events were lost: the disk says what is true now.
            self.resync();
            return;
        }
        if event.watch == self.top {
            if event.is(libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) {
                self.ended = true;
                self.queue.push_back(Err(RuntimeError::Absent(format!(
                    "{}/containers was removed",
                    self.root.display()
                ))));
                return;
            }
            let Some(id) = name_str(&event)
                .filter(|id| is_container_id(id))
                .map(str::to_owned)
            else {
                return;
            };
            if event.is(libc::IN_CREATE | libc::IN_MOVED_TO) {
                self.watch_dir(&id);
                self.describe(&id);
            } else if event.is(libc::IN_DELETE | libc::IN_MOVED_FROM) {
                self.unwatch_dir(&id);
                self.queue.push_back(Ok(RuntimeEvent::Removed { id }));
            }
            return;
        }
        let Some(id) = self.dirs.get(&event.watch).cloned() else {
            return;
        };
        if event.is(libc::IN_IGNORED) {
            self.dirs.remove(&event.watch);
        } else if matches!(name_str(&event), Some(CONFIG | HOST_CONFIG)) {
            self.describe(&id);
        }
    }

    fn describe(&mut self, id: &str) {
        if !self.changed.iter().any(|known| known == id) {
            self.changed.push(id.to_owned());
        }
    }

    /// Reads the containers that changed, in order, and queues what they are now.
    async fn read_changed(&mut self) {
        let ids = std::mem::take(&mut self.changed);
        let root = self.root.clone();
        let read_all = move || {
            Ok(ids
                .into_iter()
                .map(|id| {
                    let meta = read(&root, &id);
                    (id, meta)
                })
                .collect::<Vec<_>>())
        };
        let read = match off_thread(&self.root.join("containers"), read_all).await {
            Ok(read) => read,
            Err(err) => {
                log::debug!("{err}");
                return;
            }
        };
        for (id, meta) in read {
            match meta {
                Ok(Some(meta)) => self.queue.push_back(Ok(RuntimeEvent::Changed {
                    id,
                    known: Some(Box::new(meta)),
                })),
                // Not written yet: its first write is an event too.
                Ok(None) => {}
                Err(err) => log::debug!("{}/containers/{id}: {err}", self.root.display()),
            }
        }
    }

    fn watch_dir(&mut self, id: &str) {
        if self.dirs.len() >= self.capacity {
            log::debug!(
                "{}/containers/{id}: not followed, {} containers are; read when OOM-killed",
                self.root.display(),
                self.capacity
            );
            return;
        }
        let dir = self.root.join("containers").join(id);
        match self.inotify.add(&dir, DIR_EVENTS) {
            Ok(watch) => {
                self.dirs.insert(watch, id.to_owned());
            }
            // Gone already, or the watch limit (fs.inotify.max_user_watches) is reached: the
            // container is read when it is OOM-killed instead.
            Err(err) => log::debug!("watching {}: {err}", dir.display()),
        }
    }

    fn unwatch_dir(&mut self, id: &str) {
        let watch = self
            .dirs
            .iter()
            .find(|(_, known)| known.as_str() == id)
            .map(|(watch, _)| *watch);
        if let Some(watch) = watch {
            self.dirs.remove(&watch);
            self.inotify.remove(watch);
        }
    }

    fn ids_on_disk(&self) -> Vec<String> {
        std::fs::read_dir(self.root.join("containers"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|id| is_container_id(id))
            .collect()
    }

    fn resync(&mut self) {
        let on_disk = self.ids_on_disk();
        let gone: Vec<String> = self
            .dirs
            .values()
            .filter(|id| !on_disk.contains(id))
            .cloned()
            .collect();
        for id in gone {
            self.unwatch_dir(&id);
            self.queue.push_back(Ok(RuntimeEvent::Removed { id }));
        }
        for id in on_disk {
            if !self.dirs.values().any(|known| *known == id) {
                self.watch_dir(&id);
            }
            self.describe(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/state/docker");
    /// Compose's `shop_db_1` on Docker 20.10, OOM-killed and being restarted (`restart: always`).
    const SHOP_DB: &str = "4e9ee8e1d7d167949d849d3dbd4588c0997a1353fd384018f7f721b5dc85c79c";

    #[test]
    fn reads_a_compose_container_docker_wrote() {
        let meta = read(Path::new(FIXTURE_ROOT), SHOP_DB)
            .expect("a valid fixture")
            .expect("on disk");
        assert_eq!(meta.id, SHOP_DB);
        assert_eq!(meta.name, "shop_db_1");
        assert_eq!(meta.image.as_deref(), Some("oomtrace-hog:latest"));
        assert_eq!(meta.runtime, "docker");
        assert_eq!(meta.origin, Origin::State);
        assert_eq!(meta.compose.project.as_deref(), Some("shop"));
        assert_eq!(meta.compose.service.as_deref(), Some("db"));
        assert_eq!(meta.compose.number, Some(1));
        assert_eq!(
            meta.labels.get("app.tier").map(String::as_str),
            Some("database")
        );
        assert_eq!(meta.memory_limit_bytes, Some(40 << 20));
        assert_eq!(meta.restart_policy.as_deref(), Some("always"));
        assert_eq!(meta.restart_count, Some(6));
        // Being restarted: `Running` but no process.
        assert_eq!(meta.main_pid, None);

        let listed = list(Path::new(FIXTURE_ROOT), 10).expect("the fixture root");
        assert_eq!(listed, [meta]);
        assert!(list(Path::new(FIXTURE_ROOT), 0).unwrap().is_empty());
    }

    #[test]
    fn what_is_not_on_disk_is_none() {
        let root = Path::new(FIXTURE_ROOT);
        assert_eq!(read(root, &"0".repeat(64)).unwrap(), None);
        assert_eq!(
            read(root, "../../etc").unwrap(),
            None,
            "not an id: not a path either"
        );
    }

    #[test]
    fn a_running_container_has_its_pid() {
        let config = br#"{"ID":"c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff",
            "Name":"/web","Config":{"Image":"nginx:1","Labels":null},
            "State":{"Running":true,"Pid":4242},"RestartCount":0}"#;
        let meta = parse(config, None).expect("valid");
        assert_eq!(meta.main_pid, Some(4242));
        assert_eq!(meta.name, "web");
        assert_eq!(meta.restart_count, Some(0));
        assert_eq!((meta.memory_limit_bytes, meta.restart_policy), (None, None));
    }

    #[test]
    fn garbage_is_refused_cleanly() {
        let id = "c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff";
        for config in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"Name\":\"/x\"}",
            b"{\"ID\":\"../../x\"}",
            b"{\"ID\":42}",
            b"{\"ID\":\"c0ffee\",\"Config\":{\"Labels\":[1]}}",
        ] {
            assert!(
                matches!(parse(config, None), Err(StateError::Garbage(_))),
                "{}",
                String::from_utf8_lossy(config)
            );
        }
        let config = format!(r#"{{"ID":"{id}","State":{{"Running":true,"Pid":-1}}}}"#);
        let meta = parse(config.as_bytes(), Some(b"{\"Memory\":-5}")).expect("odd but valid");
        assert_eq!((meta.main_pid, meta.memory_limit_bytes), (None, None));
        assert!(parse(config.as_bytes(), Some(b"{\"Memory\":\"x\"}")).is_err());
    }
}
