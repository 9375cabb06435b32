//! podman's state on disk, under its storage root (`/var/lib/containers/storage`):
//!
//! * libpod's database, `libpod/bolt_state.db` (BoltDB, podman 4): bucket `ctr` holds a bucket
//!   per container with its `config` (name, labels, image, memory limit, restart policy) and
//!   its `state` (main pid, restart count), both JSON. podman opens it for each operation and
//!   closes it after, holding an exclusive `flock` meanwhile; it is read here under a shared
//!   one, as bbolt's read-only opens do, and never waited for.
//! * containers/storage's `<driver>-containers/containers.json`: every container's id, names
//!   and image name, and nothing else; read when libpod's database is absent or unreadable
//!   (podman 5 may keep it in SQLite instead).
//!
//! Both are rewritten as a whole: each change is read as a whole and compared with the last.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::bolt::{Bolt, Item};
use super::inotify::{Event, Inotify, Watch, name_str};
use super::{
    StateError, events_lost, is_container_id, json_error, off_thread, open, read_bounded, read_open,
};
use crate::attribute::runtime::{
    ContainerMetadata, Origin, RuntimeError, RuntimeEvent, RuntimeResult, bounded,
};

const LIBPOD_DIR: &str = "libpod";
const BOLT_FILE: &str = "bolt_state.db";
const CONTAINERS_FILE: &str = "containers.json";
/// libpod's database grows with the containers it holds, a few KiB each.
const MAX_BOLT_BYTES: u64 = 256 << 20;
const MAX_CONTAINERS_JSON_BYTES: u64 = 64 << 20;
/// libpod's `ContainerStateRunning`.
const RUNNING: i64 = 3;

/// Whether `dir` is a containers/storage root podman uses.
pub fn is_podman_root(dir: &Path) -> bool {
    dir.join(LIBPOD_DIR).join(BOLT_FILE).is_file() || !containers_files(dir).is_empty()
}

/// Every container podman keeps, at most `capacity`, by id.
pub fn read_all(
    root: &Path,
    capacity: usize,
) -> Result<BTreeMap<String, ContainerMetadata>, StateError> {
    let bolt = root.join(LIBPOD_DIR).join(BOLT_FILE);
    match read_locked(root, &Path::new(LIBPOD_DIR).join(BOLT_FILE), MAX_BOLT_BYTES) {
        Ok(Some(data)) => match from_bolt(&data, capacity) {
            Ok(found) => return Ok(found),
            Err(err) => log::warn!(
                "{}: {err}; naming podman's containers from {CONTAINERS_FILE} instead",
                bolt.display()
            ),
        },
        Ok(None) => {}
        // podman writes it right now: its close is an event, and the caller reads again then.
        Err(err @ StateError::Busy(_)) => return Err(err),
        Err(err) => log::warn!(
            "{}: {err}; naming podman's containers from {CONTAINERS_FILE} instead",
            bolt.display()
        ),
    }
    let mut found = BTreeMap::new();
    for file in containers_files(root) {
        if let Some(json) = read_bounded(root, &file, MAX_CONTAINERS_JSON_BYTES)? {
            for meta in from_containers_json(&json)? {
                if found.len() == capacity {
                    break;
                }
                found.entry(meta.id.clone()).or_insert(meta);
            }
        }
    }
    Ok(found)
}

/// The containers in libpod's database (its bytes), at most `capacity`.
pub fn from_bolt(
    data: &[u8],
    capacity: usize,
) -> Result<BTreeMap<String, ContainerMetadata>, StateError> {
    let garbage = |err: super::bolt::BoltError| StateError::Garbage(err.to_string());
    let db = Bolt::open(data).map_err(garbage)?;
    let Some(ctr) = db.root().bucket(b"ctr").map_err(garbage)? else {
        return Ok(BTreeMap::new());
    };
    let mut buckets = Vec::new();
    ctr.walk(&mut |id, item| {
        if let Item::Bucket(bucket) = item {
            buckets.push((id, bucket));
        }
        buckets.len() < capacity
    })
    .map_err(garbage)?;
    let mut found = BTreeMap::new();
    for (id, bucket) in buckets {
        let id = String::from_utf8_lossy(id);
        let config = bucket.value(b"config").map_err(garbage)?;
        let state = bucket.value(b"state").map_err(garbage)?;
        let Some(config) = config else {
            continue;
        };
        match from_libpod_json(config, state) {
            Ok(meta) if meta.id == id => {
                found.insert(meta.id.clone(), meta);
            }
            Ok(meta) => log::debug!("libpod's bucket {id} describes container {}", meta.id),
            Err(err) => log::debug!("libpod's container {id}: {err}"),
        }
    }
    Ok(found)
}

#[derive(Deserialize)]
struct LibpodConfig {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: Option<HashMap<String, String>>,
    /// The image as the user named it.
    #[serde(rename = "rootfsImageName", default)]
    image: Option<String>,
    #[serde(rename = "RawImageName", default)]
    raw_image: Option<String>,
    #[serde(default)]
    restart_policy: Option<String>,
    #[serde(default)]
    spec: Option<Spec>,
}

#[derive(Deserialize)]
struct Spec {
    #[serde(default)]
    linux: Option<Linux>,
}

#[derive(Deserialize)]
struct Linux {
    #[serde(default)]
    resources: Option<Resources>,
}

#[derive(Deserialize)]
struct Resources {
    #[serde(default)]
    memory: Option<Memory>,
}

#[derive(Deserialize)]
struct Memory {
    #[serde(default)]
    limit: Option<i64>,
}

#[derive(Deserialize)]
struct LibpodState {
    #[serde(default)]
    state: Option<i64>,
    #[serde(default)]
    pid: Option<i64>,
    #[serde(rename = "restartCount", default)]
    restart_count: Option<u32>,
}

/// One container's `config` and `state` from libpod's database.
pub fn from_libpod_json(
    config: &[u8],
    state: Option<&[u8]>,
) -> Result<ContainerMetadata, StateError> {
    let LibpodConfig {
        id,
        name,
        labels,
        image,
        raw_image,
        restart_policy,
        spec,
    } = serde_json::from_slice(config).map_err(|err| json_error("a container's config", &err))?;
    check_id(&id)?;
    let mut meta = ContainerMetadata::new(&id, &name, "podman", labels.unwrap_or_default());
    meta.origin = Origin::State;
    meta.image = image
        .filter(|image| !image.is_empty())
        .or(raw_image)
        .map(|image| bounded(&image));
    meta.memory_limit_bytes = spec
        .and_then(|spec| spec.linux?.resources?.memory?.limit)
        .and_then(|limit| u64::try_from(limit).ok())
        .filter(|&limit| limit > 0);
    meta.restart_policy = restart_policy
        .filter(|policy| !policy.is_empty())
        .map(|policy| bounded(&policy));
    if let Some(state) = state {
        let LibpodState {
            state,
            pid,
            restart_count,
        } = serde_json::from_slice(state)
            .map_err(|err| json_error(&format!("container {id}'s state"), &err))?;
        meta.main_pid = pid
            .filter(|_| state == Some(RUNNING))
            .and_then(|pid| u32::try_from(pid).ok())
            .filter(|&pid| pid > 0);
        // podman leaves it out while it is 0.
        meta.restart_count = Some(restart_count.unwrap_or(0));
    }
    Ok(meta)
}

#[derive(Deserialize)]
struct StorageContainer {
    id: String,
    #[serde(default)]
    names: Vec<String>,
    /// JSON in a string: `{"image-name": …, "name": …}`.
    #[serde(default)]
    metadata: Option<String>,
}

#[derive(Deserialize, Default)]
struct StorageMetadata {
    #[serde(rename = "image-name", default)]
    image_name: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// containers/storage's `containers.json`: names and images only.
pub fn from_containers_json(json: &[u8]) -> Result<Vec<ContainerMetadata>, StateError> {
    let listed: Vec<StorageContainer> =
        serde_json::from_slice(json).map_err(|err| json_error(CONTAINERS_FILE, &err))?;
    let mut found = Vec::new();
    for StorageContainer {
        id,
        names,
        metadata,
    } in listed
    {
        if check_id(&id).is_err() {
            continue;
        }
        let metadata: StorageMetadata = metadata
            .and_then(|metadata| serde_json::from_str(&metadata).ok())
            .unwrap_or_default();
        let name = names
            .into_iter()
            .next()
            .or(metadata.name)
            .unwrap_or_default();
        let mut meta = ContainerMetadata::new(&id, &name, "podman", []);
        meta.origin = Origin::State;
        meta.image = metadata.image_name.map(|image| bounded(&image));
        found.push(meta);
    }
    Ok(found)
}

fn check_id(id: &str) -> Result<(), StateError> {
    if is_container_id(id) {
        Ok(())
    } else {
        Err(StateError::Garbage(
            "an `id` that is not a container id".to_owned(),
        ))
    }
}

/// `<driver>-containers/containers.json` for each storage driver used, relative to `root`.
fn containers_files(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.ends_with("-containers"))
        })
        .map(|entry| Path::new(&entry.file_name()).join(CONTAINERS_FILE))
        .filter(|file| root.join(file).is_file())
        .collect();
    files.sort();
    files
}

/// The whole file, read under a shared `flock`, as bbolt's readers do: podman holds an
/// exclusive one while it writes. `Busy` rather than waiting, when podman holds it.
fn read_locked(root: &Path, relative: &Path, limit: u64) -> Result<Option<Vec<u8>>, StateError> {
    let path = &root.join(relative);
    let Some(file) = open(root, relative)? else {
        return Ok(None);
    };
    // SAFETY: no pointers; the descriptor is valid while `file` lives, and closing it releases
    // the lock.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
        let err = io::Error::last_os_error();
        return Err(if err.kind() == io::ErrorKind::WouldBlock {
            StateError::Busy(format!("{} is locked by podman", path.display()))
        } else {
            StateError::Unreadable(format!("locking {}: {err}", path.display()))
        });
    }
    read_open(file, path, limit).map(Some)
}

/// Follows libpod's database and containers/storage's lists: each time podman closes one after
/// writing, reads podman's containers again and says what changed.
pub struct Follower {
    root: PathBuf,
    inotify: Inotify,
    top: Watch,
    capacity: usize,
    known: BTreeMap<String, ContainerMetadata>,
    queue: VecDeque<RuntimeResult<RuntimeEvent>>,
    ended: bool,
}

impl Follower {
    pub fn new(root: &Path, capacity: usize) -> RuntimeResult<Self> {
        let unavailable = |err: io::Error| {
            RuntimeError::Unavailable(format!("watching {}: {err}", root.display()))
        };
        let inotify = Inotify::new().map_err(unavailable)?;
        let top = inotify
            .add(
                root,
                libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_CREATE | libc::IN_ONLYDIR,
            )
            .map_err(unavailable)?;
        let mut follower = Follower {
            root: root.to_owned(),
            inotify,
            top,
            capacity,
            known: BTreeMap::new(),
            queue: VecDeque::new(),
            ended: false,
        };
        follower.watch_files();
        // What is there now, so that the first change is told against it (a container removed
        // before then must be said removed).
        if let Ok(known) = read_all(root, capacity) {
            follower.known = known;
        }
        Ok(follower)
    }

    pub async fn next(&mut self) -> Option<RuntimeResult<RuntimeEvent>> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            let event = match self.inotify.next().await {
                Ok(event) => event,
                Err(err) => {
                    self.ended = true;
                    return Some(Err(events_lost(&err)));
                }
            };
            let mut changed = self.is_change(&event);
            // One podman command writes several times in a row: read once for the burst.
            loop {
                match self.inotify.next_ready() {
                    Ok(Some(event)) => changed |= self.is_change(&event),
                    Ok(None) => break,
                    Err(err) => {
                        self.ended = true;
                        return Some(Err(events_lost(&err)));
                    }
                }
            }
            if changed && !self.ended {
                self.reread().await;
            }
        }
    }

    /// Whether `event` may change what podman's containers are.
    fn is_change(&mut self, event: &Event) -> bool {
        if event.watch == self.top {
            if event.is(libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) {
                self.ended = true;
                self.queue.push_back(Err(RuntimeError::Absent(format!(
                    "{} was removed",
                    self.root.display()
                ))));
                return false;
            }
            // A storage driver's directory or libpod's appeared: follow it too.
            self.watch_files();
            return true;
        }
        event.is(libc::IN_Q_OVERFLOW)
            || matches!(name_str(event), Some(BOLT_FILE | CONTAINERS_FILE))
    }

    fn watch_files(&mut self) {
        let mut dirs = vec![self.root.join(LIBPOD_DIR)];
        dirs.extend(
            containers_files(&self.root)
                .iter()
                .filter_map(|file| file.parent().map(|dir| self.root.join(dir))),
        );
        for dir in dirs {
            // Adding a watch again is harmless; a directory not there yet is no error.
            let _ = self.inotify.add(
                &dir,
                libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_ONLYDIR,
            );
        }
    }

    async fn reread(&mut self) {
        let (root, capacity) = (self.root.clone(), self.capacity);
        let read = off_thread(&self.root, move || Ok(read_all(&root, capacity)));
        let now = match read.await {
            Ok(Ok(now)) => now,
            // Read again at podman's next close.
            Ok(Err(StateError::Busy(_))) => return,
            Ok(Err(err)) => {
                log::debug!("{}: {err}", self.root.display());
                return;
            }
            Err(err) => {
                log::debug!("{err}");
                return;
            }
        };
        let before = std::mem::take(&mut self.known);
        for id in before.keys().filter(|id| !now.contains_key(*id)) {
            self.queue
                .push_back(Ok(RuntimeEvent::Removed { id: id.clone() }));
        }
        for (id, meta) in &now {
            if before.get(id) != Some(meta) {
                self.queue.push_back(Ok(RuntimeEvent::Changed {
                    id: id.clone(),
                    known: Some(Box::new(meta.clone())),
                }));
            }
        }
        self.known = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/state/podman");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(Path::new(FIXTURES).join(name)).expect("the fixture")
    }

    #[test]
    fn reads_podmans_containers_from_libpods_database() {
        let found = from_bolt(&fixture(BOLT_FILE), 100).expect("a valid database");
        let by_name = |name: &str| {
            found
                .values()
                .find(|meta| meta.name == name)
                .unwrap_or_else(|| panic!("no {name} in {found:#?}"))
        };
        assert_eq!(found.len(), 3);

        let db = by_name("shop_db_1");
        assert_eq!(db.runtime, "podman");
        assert_eq!(db.origin, Origin::State);
        assert_eq!(db.image.as_deref(), Some("localhost/oomtrace-hog:latest"));
        assert_eq!(db.compose.project.as_deref(), Some("shop"));
        assert_eq!(db.compose.service.as_deref(), Some("db"));
        assert_eq!(db.compose.number, Some(1));
        assert_eq!(db.memory_limit_bytes, Some(48 << 20));
        assert_eq!(db.restart_policy.as_deref(), Some("always"));
        // Created, never started.
        assert_eq!((db.main_pid, db.restart_count), (None, Some(0)));

        let web = by_name("web");
        assert_eq!(web.main_pid, Some(16887));
        assert_eq!(web.memory_limit_bytes, Some(64 << 20));
        assert_eq!(web.restart_policy, None);

        let restarter = by_name("restarter");
        assert_eq!(restarter.restart_policy.as_deref(), Some("always"));
        assert_eq!(restarter.restart_count, Some(9));
        assert_eq!(restarter.main_pid, Some(17572));

        assert_eq!(
            from_bolt(&fixture(BOLT_FILE), 2).unwrap().len(),
            2,
            "bounded"
        );
    }

    #[test]
    fn containers_json_names_the_same_containers() {
        let listed = from_containers_json(&fixture(CONTAINERS_FILE)).expect("valid");
        let from_bolt = from_bolt(&fixture(BOLT_FILE), 100).unwrap();
        assert_eq!(listed.len(), 3);
        for meta in &listed {
            let full = &from_bolt[&meta.id];
            assert_eq!(meta.name, full.name);
            assert_eq!(meta.image, full.image);
            assert_eq!(meta.origin, Origin::State);
        }
    }

    #[test]
    fn garbage_is_refused_cleanly() {
        for json in [&b""[..], b"{}", b"[{\"names\":[]}]", b"[1]", b"null"] {
            assert!(
                from_containers_json(json).is_err(),
                "{}",
                String::from_utf8_lossy(json)
            );
        }
        // An entry whose id is no container id is left out, the rest kept.
        let json = br#"[{"id":"../x","names":["a"]},{"id":"c0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ffeec0ff","names":["b"],"metadata":"not json"}]"#;
        let listed = from_containers_json(json).expect("valid");
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].name.as_str(), listed[0].image.as_deref()),
            ("b", None)
        );

        assert!(from_bolt(b"garbage", 10).is_err());
        assert!(from_libpod_json(b"{\"id\":\"x\"}", None).is_err());
        assert!(from_libpod_json(b"{", None).is_err());
    }
}
