//! Naming containers without a runtime socket: the runtimes' own state on disk, read-only.
//!
//! A runtime's API socket is root on the host (whoever can talk to it can start a privileged
//! container), so mounting it into the agent grants far more than naming needs. Docker and
//! podman keep each container's name, image, labels, limit and restart policy in files under
//! their state directories; a read-only mount of those is enough. [`RuntimeState`] reads them
//! as one more [`ContainerRuntime`]: it lists what is there, follows changes with inotify (no
//! polling), and reads a container on demand when a kill needs it. What it says is marked
//! [`Origin::State`](super::runtime::Origin::State), and the API's word, where there is one,
//! wins.

pub(crate) mod bolt;
pub mod docker;
pub(crate) mod inotify;
pub mod podman;

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt as _};

use crate::confined::{self, Refused};

use super::runtime::{
    ContainerMetadata, ContainerRuntime, RuntimeError, RuntimeEvent, RuntimeResult,
};

/// Where Docker and podman keep their state by default.
pub const DEFAULT_DIRS: [&str; 2] = ["/var/lib/docker", "/var/lib/containers/storage"];

/// Why a runtime's state could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum StateError {
    /// A file is there but cannot be read.
    Unreadable(String),
    /// A file says something its runtime never writes.
    Garbage(String),
    /// The runtime is writing it right now.
    Busy(String),
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Unreadable(why) => write!(f, "unreadable: {why}"),
            StateError::Garbage(why) => write!(f, "unexpected content: {why}"),
            StateError::Busy(why) => write!(f, "busy: {why}"),
        }
    }
}

impl From<StateError> for RuntimeError {
    fn from(err: StateError) -> Self {
        match err {
            StateError::Garbage(why) => RuntimeError::Garbage(why),
            StateError::Unreadable(why) | StateError::Busy(why) => RuntimeError::Unavailable(why),
        }
    }
}

/// Which runtime's layout a directory has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Docker,
    Podman,
}

/// One runtime's state directory, as a [`ContainerRuntime`]. Which runtime it belongs to is
/// found when it connects, from what the directory holds.
pub struct RuntimeState {
    dir: PathBuf,
    /// At most this many containers are listed and followed (the cache's capacity); others
    /// are read when a kill needs them.
    capacity: usize,
    layout: Mutex<Option<Layout>>,
}

impl RuntimeState {
    pub fn new(dir: impl Into<PathBuf>, capacity: usize) -> Self {
        RuntimeState {
            dir: dir.into(),
            capacity: capacity.max(1),
            layout: Mutex::new(None),
        }
    }

    fn layout(&self) -> Option<Layout> {
        *self
            .layout
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn set_layout(&self, layout: Option<Layout>) {
        *self
            .layout
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = layout;
    }

    fn connected(&self) -> RuntimeResult<Layout> {
        self.layout()
            .ok_or_else(|| RuntimeError::Unavailable("not connected".to_owned()))
    }
}

impl ContainerRuntime for RuntimeState {
    fn describe(&self) -> String {
        match self.layout() {
            Some(Layout::Docker) => format!("docker, its state at {}", self.dir.display()),
            Some(Layout::Podman) => format!("podman, its state at {}", self.dir.display()),
            None => format!("state at {}", self.dir.display()),
        }
    }

    fn connect(&self) -> BoxFuture<'_, RuntimeResult<()>> {
        Box::pin(async move {
            let layout = if docker::is_docker_root(&self.dir) {
                Layout::Docker
            } else if podman::is_podman_root(&self.dir) {
                Layout::Podman
            } else {
                return Err(match std::fs::metadata(&self.dir) {
                    Ok(_) => RuntimeError::Absent(format!(
                        "{} holds neither Docker's nor podman's state",
                        self.dir.display()
                    )),
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {
                        RuntimeError::Absent(format!("no {}", self.dir.display()))
                    }
                    // There, but not for this process to read: not the same as absent.
                    Err(err) => RuntimeError::Unavailable(format!("{}: {err}", self.dir.display())),
                });
            };
            self.set_layout(Some(layout));
            Ok(())
        })
    }

    fn is_connected(&self) -> bool {
        self.layout().is_some()
    }

    fn disconnect(&self) {
        self.set_layout(None);
    }

    fn describes_in_full(&self) -> bool {
        true
    }

    fn list(&self) -> BoxFuture<'_, RuntimeResult<Vec<ContainerMetadata>>> {
        Box::pin(async move {
            let layout = self.connected()?;
            let (dir, capacity) = (self.dir.clone(), self.capacity);
            off_thread(&self.dir, move || match layout {
                Layout::Docker => docker::list(&dir, capacity),
                Layout::Podman => Ok(podman::read_all(&dir, capacity)?.into_values().collect()),
            })
            .await
        })
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, RuntimeResult<Option<ContainerMetadata>>> {
        Box::pin(async move {
            let layout = self.connected()?;
            let (dir, id) = (self.dir.clone(), id.to_owned());
            off_thread(&self.dir, move || match layout {
                Layout::Docker => Ok(docker::read(&dir, &id)?),
                // The whole database, once per kill that needs it: the listing and the events
                // usually know the container already.
                Layout::Podman => Ok(podman::read_all(&dir, usize::MAX)?.remove(&id)),
            })
            .await
        })
    }

    fn events(&self, _since: SystemTime) -> BoxStream<'_, RuntimeResult<RuntimeEvent>> {
        // Nothing to replay: what changed while nobody watched is in the listing that follows.
        let follower = match self.connected() {
            Ok(Layout::Docker) => {
                docker::Follower::new(&self.dir, self.capacity).map(Follower::Docker)
            }
            Ok(Layout::Podman) => {
                podman::Follower::new(&self.dir, self.capacity).map(Follower::Podman)
            }
            Err(err) => Err(err),
        };
        match follower {
            Ok(follower) => stream::unfold(follower, |mut follower| async move {
                let event = follower.next().await?;
                Some((event, follower))
            })
            .boxed(),
            Err(err) => stream::once(async { Err(err) }).boxed(),
        }
    }
}

enum Follower {
    Docker(docker::Follower),
    Podman(podman::Follower),
}

impl Follower {
    async fn next(&mut self) -> Option<RuntimeResult<RuntimeEvent>> {
        match self {
            Follower::Docker(follower) => follower.next().await,
            Follower::Podman(follower) => follower.next().await,
        }
    }
}

/// The inotify descriptor failed: the stream ends, and the watcher reconnects.
fn events_lost(err: &io::Error) -> RuntimeError {
    RuntimeError::Unavailable(format!("reading inotify events: {err}"))
}

/// How long one read of a runtime's state may take: a local file is read in microseconds, a
/// hung network filesystem never.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Reads given up on but still stuck in the kernel, at most: each holds a blocking thread.
const MAX_STUCK_READS: usize = 4;
static STUCK_READS: AtomicUsize = AtomicUsize::new(0);

/// `read` on a blocking thread, never on the runtime's own (which reads the ring buffer and
/// writes records), and given up after [`READ_TIMEOUT`].
async fn off_thread<T: Send + 'static>(
    what: &Path,
    read: impl FnOnce() -> RuntimeResult<T> + Send + 'static,
) -> RuntimeResult<T> {
    if STUCK_READS.load(Ordering::Relaxed) >= MAX_STUCK_READS {
        return Err(RuntimeError::Unavailable(format!(
            "{}: {MAX_STUCK_READS} reads still unanswered; not read",
            what.display()
        )));
    }
    STUCK_READS.fetch_add(1, Ordering::Relaxed);
    let task = tokio::task::spawn_blocking(move || {
        let result = read();
        STUCK_READS.fetch_sub(1, Ordering::Relaxed);
        result
    });
    match tokio::time::timeout(READ_TIMEOUT, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(err)) => Err(RuntimeError::Unavailable(format!(
            "{}: reading failed: {err}",
            what.display()
        ))),
        Err(_) => Err(RuntimeError::Unavailable(format!(
            "{}: no answer within {} s",
            what.display(),
            READ_TIMEOUT.as_secs()
        ))),
    }
}

/// 64 lowercase hex digits: a Docker or podman container id, and a safe path component.
pub fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `relative` under `root`, `None` if it does not exist, an error past `limit` bytes. Nothing
/// outside `root`, no symlink and no file but a regular one is read ([`crate::confined`]).
fn read_bounded(root: &Path, relative: &Path, limit: u64) -> Result<Option<Vec<u8>>, StateError> {
    match open(root, relative)? {
        Some(file) => read_open(file, &root.join(relative), limit).map(Some),
        None => Ok(None),
    }
}

/// `relative` under `root` opened for reading, `None` if it does not exist.
fn open(root: &Path, relative: &Path) -> Result<Option<File>, StateError> {
    match confined::open(root, relative) {
        Ok(file) => Ok(Some(file)),
        Err(Refused::NotFound) => Ok(None),
        Err(err) => Err(StateError::Unreadable(format!(
            "{}: {err}",
            root.join(relative).display()
        ))),
    }
}

/// The rest of an open file, an error past `limit` bytes.
fn read_open(file: File, path: &Path, limit: u64) -> Result<Vec<u8>, StateError> {
    confined::read_open(file, limit).map_err(|err| match err {
        Refused::TooLarge(_) => StateError::Garbage(format!("{} is {err}", path.display())),
        err => StateError::Unreadable(format!("{}: {err}", path.display())),
    })
}

/// What was wrong with a JSON file, without quoting it: serde's messages quote the values they
/// did not expect, and a state file is not the agent's to print.
fn json_error(what: &str, err: &serde_json::Error) -> StateError {
    use serde_json::error::Category;
    let kind = match err.classify() {
        Category::Io => "unreadable",
        Category::Syntax => "not JSON",
        Category::Data => "not the JSON its runtime writes",
        Category::Eof => "cut short",
    };
    StateError::Garbage(format!(
        "{what}: {kind} (line {}, column {})",
        err.line(),
        err.column()
    ))
}

#[cfg(test)]
mod tests;
