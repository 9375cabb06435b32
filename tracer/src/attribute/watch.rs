//! Keeps the cache current: for each runtime, list its containers at startup, then follow its
//! event stream, so a container's name is known before it is OOM-killed. When the runtime goes
//! away (its daemon restarted), reconnect with a growing backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt as _;
use tokio::sync::Notify;

use super::cache::MetadataCache;
use super::docker::LOOKUP_TIMEOUT;
use super::runtime::{ContainerRuntime, Role, RuntimeError, RuntimeEvent};

/// The cache and its change signal, shared by the watchers (writers) and the resolver (reader).
pub struct Shared {
    pub cache: std::sync::Mutex<MetadataCache>,
    /// Woken on every cache change: a kill waiting for a container it has not heard of yet
    /// looks again.
    pub updated: Notify,
    /// Runtimes connected right now: a kill may wait for their events.
    pub connected: AtomicUsize,
    /// Runtimes being connected right now, or reconnected after a recent loss: a kill may wait
    /// for them to answer.
    pub connecting: AtomicUsize,
}

impl Shared {
    pub fn new(cache: MetadataCache) -> Self {
        Shared {
            cache: std::sync::Mutex::new(cache),
            updated: Notify::new(),
            connected: AtomicUsize::new(0),
            connecting: AtomicUsize::new(0),
        }
    }

    /// Reads the cache; wakes nobody.
    pub fn with_cache_quietly<T>(&self, f: impl FnOnce(&MetadataCache) -> T) -> T {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        f(&cache)
    }

    pub fn with_cache<T>(&self, f: impl FnOnce(&mut MetadataCache) -> T) -> T {
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let result = f(&mut cache);
        drop(cache);
        self.updated.notify_waiters();
        result
    }
}

const FIRST_RETRY: Duration = Duration::from_millis(100);
/// A daemon that is down for long is retried twice a minute: cheap, and idle otherwise.
const LAST_RETRY: Duration = Duration::from_secs(30);
/// For this long after a connection is lost, retry every [`FIRST_RETRY`]: a restart of the
/// daemon takes a few seconds.
const QUICK_RETRIES_FOR: Duration = Duration::from_secs(10);

/// How far back the first subscription replays: containers that started and went while the
/// agent was attaching, or in the second it takes podman to answer `/version`.
const REPLAY_AT_START: Duration = Duration::from_secs(10);

/// Runs until the agent stops.
pub async fn watch(runtime: Arc<dyn ContainerRuntime>, shared: Arc<Shared>) {
    let mut retry = FIRST_RETRY;
    // Events are replayed from here on each (re)connection, so none is lost in between.
    let mut since = SystemTime::now()
        .checked_sub(REPLAY_AT_START)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    // Said once per outage, not once per attempt.
    let mut last_problem: Option<String> = None;
    let mut lost_at: Option<Instant> = None;
    loop {
        shared.connecting.fetch_add(1, Ordering::SeqCst);
        let connected = runtime.connect().await;
        shared.connecting.fetch_sub(1, Ordering::SeqCst);
        // Whether it worked or not, a kill waiting for this runtime looks again.
        shared.updated.notify_waiters();
        if let Err(err) = connected {
            let problem = problem_kind(&err);
            if last_problem.as_deref() != Some(problem.as_str()) {
                log::warn!(
                    "container runtime {}: {err}; containers are named from cgroup paths only \
                     until it answers (retrying)",
                    runtime.describe()
                );
                last_problem = Some(problem);
            }
            // A daemon that just went away is usually restarting: retry quickly, and let kills
            // wait for it meanwhile, as they do for a first connection.
            let restarting = lost_at.is_some_and(|at| at.elapsed() < QUICK_RETRIES_FOR);
            if restarting {
                shared.connecting.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(FIRST_RETRY).await;
                shared.connecting.fetch_sub(1, Ordering::SeqCst);
            } else {
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(LAST_RETRY);
            }
            continue;
        }
        retry = FIRST_RETRY;
        last_problem = None;
        shared.connected.fetch_add(1, Ordering::SeqCst);
        // Identified while its events are already being followed: podman is slow to say.
        let identify = async {
            if let Err(err) = runtime.identify().await {
                log::debug!("container runtime {}: /version: {err}", runtime.describe());
            }
        };
        tokio::join!(identify, follow(runtime.as_ref(), &shared, since));
        // Whole seconds: the API's `since` has no finer grain.
        since = SystemTime::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        runtime.disconnect();
        lost_at = Some(Instant::now());
        shared.connected.fetch_sub(1, Ordering::SeqCst);
        shared.updated.notify_waiters();
    }
}

/// Lists, then follows events until the stream ends or fails.
async fn follow(runtime: &dyn ContainerRuntime, shared: &Shared, since: SystemTime) {
    let mut events = runtime.events(since);
    match runtime.list().await {
        Ok(containers) => {
            let pods = containers
                .iter()
                .filter(|listed| listed.role != Role::Workload)
                .count();
            let count = containers.len() - pods;
            for listed in containers {
                let id = listed.id.clone();
                shared.with_cache(|cache| cache.upsert(listed, Instant::now()));
                if !runtime.describes_in_full() {
                    refresh(runtime, shared, &id).await;
                }
            }
            let pods = match pods {
                0 => String::new(),
                pods => format!(" and {pods} pods"),
            };
            log::info!(
                "container runtime {}: {count} containers{pods} known; following its events",
                runtime.describe()
            );
        }
        Err(err) => log::warn!(
            "container runtime {}: listing containers: {err}; following its events anyway",
            runtime.describe()
        ),
    }
    while let Some(event) = events.next().await {
        match event {
            Ok(RuntimeEvent::Changed { id, known }) => {
                let complete = known.is_some() && runtime.describes_in_full();
                if let Some(known) = known {
                    shared.with_cache(|cache| cache.upsert(*known, Instant::now()));
                }
                if !complete {
                    refresh(runtime, shared, &id).await;
                }
            }
            Ok(RuntimeEvent::Removed { id }) => {
                shared.with_cache(|cache| cache.removed(&id, Instant::now()));
            }
            Err(err) => {
                log::warn!(
                    "container runtime {}: event stream: {err}; reconnecting",
                    runtime.describe()
                );
                return;
            }
        }
    }
    log::warn!(
        "container runtime {}: its event stream ended (daemon restarted?); reconnecting",
        runtime.describe()
    );
}

/// Asks for the details an event or a listing lacks: the main pid, the memory limit.
async fn refresh(runtime: &dyn ContainerRuntime, shared: &Shared, id: &str) {
    match tokio::time::timeout(LOOKUP_TIMEOUT, runtime.inspect(id)).await {
        Ok(Ok(Some(meta))) => shared.with_cache(|cache| cache.upsert(meta, Instant::now())),
        // Already gone: what the event said is all there is.
        Ok(Ok(None)) => {}
        Ok(Err(err)) => log::debug!("inspecting container {id}: {err}"),
        Err(_) => log::debug!("inspecting container {id}: no answer within {LOOKUP_TIMEOUT:?}"),
    }
}

fn problem_kind(err: &RuntimeError) -> String {
    match err {
        RuntimeError::Absent(_) => "absent".to_owned(),
        RuntimeError::Garbage(_) => "garbage".to_owned(),
        RuntimeError::Unavailable(_) => "unavailable".to_owned(),
    }
}
