//! Keeps the cache current: for each runtime, list its containers at startup, then follow its
//! event stream, so a container's name is known before it is OOM-killed. When the runtime goes
//! away (its daemon restarted), reconnect with a growing backoff.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt as _;
use tokio::sync::Notify;

use super::Asked;
use super::cache::MetadataCache;
use super::docker::LOOKUP_TIMEOUT;
use super::runtime::{ContainerRuntime, Role, RuntimeError, RuntimeEvent};

/// The cache and its change signal, shared by the watchers (writers) and the resolver (reader).
pub(super) struct Shared {
    pub cache: std::sync::Mutex<MetadataCache>,
    /// Woken on every cache change: a kill waiting for a container it has not heard of yet
    /// looks again.
    pub updated: Notify,
    /// Runtimes connected right now: a kill may wait for their events.
    pub connected: AtomicUsize,
    /// Runtimes being connected right now, or reconnected after a recent loss: a kill may wait
    /// for them to answer.
    pub connecting: AtomicUsize,
    /// The first attempt of each runtime, for the one line that says which were not found.
    census: std::sync::Mutex<Census>,
}

impl Shared {
    pub(super) fn new(cache: MetadataCache) -> Self {
        Shared {
            cache: std::sync::Mutex::new(cache),
            updated: Notify::new(),
            connected: AtomicUsize::new(0),
            connecting: AtomicUsize::new(0),
            census: std::sync::Mutex::new(Census::default()),
        }
    }

    /// How many runtimes report a first attempt before the census is told.
    pub(super) fn expect_runtimes(&self, count: usize) {
        self.census().expected = count;
    }

    fn census(&self) -> std::sync::MutexGuard<'_, Census> {
        self.census
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Reads the cache; wakes nobody.
    pub(super) fn with_cache_quietly<T>(&self, f: impl FnOnce(&MetadataCache) -> T) -> T {
        let cache = self
            .cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        f(&cache)
    }

    pub(super) fn with_cache<T>(&self, f: impl FnOnce(&mut MetadataCache) -> T) -> T {
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

/// Runs until the agent stops. A runtime the user named (`asked`) is warned of when it cannot
/// be reached, and so is any runtime that answered once and then stopped; one only looked for at
/// its usual place and not there is said once, with the others, in the startup's census.
pub(super) async fn watch(runtime: Arc<dyn ContainerRuntime>, shared: Arc<Shared>, asked: Asked) {
    let mut retry = FIRST_RETRY;
    // Events are replayed from here on each (re)connection, so none is lost in between.
    let mut since = SystemTime::now()
        .checked_sub(REPLAY_AT_START)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    // Said once per outage, not once per attempt.
    let mut last_problem: Option<String> = None;
    let mut lost_at: Option<Instant> = None;
    let mut first_attempt = true;
    loop {
        shared.connecting.fetch_add(1, Ordering::SeqCst);
        let connected = runtime.connect().await;
        shared.connecting.fetch_sub(1, Ordering::SeqCst);
        // Whether it worked or not, a kill waiting for this runtime looks again.
        shared.updated.notify_waiters();
        if let Err(err) = connected {
            let problem = problem_kind(&err);
            let said_once = last_problem.as_deref() == Some(problem.as_str());
            let absent = matches!(err, RuntimeError::Absent(_));
            if first_attempt {
                let not_found = (absent && asked == Asked::Default).then(|| runtime.describe());
                census_reports(&shared, not_found);
            }
            match (said_once, failure_level(asked, lost_at.is_some(), &err)) {
                (true, _) => {}
                (false, Some(level)) => log::log!(
                    level,
                    "container runtime {}: {err}; containers are named from cgroup paths only \
                     until it answers (retrying)",
                    runtime.describe()
                ),
                (false, None) => log::debug!("container runtime {}: {err}", runtime.describe()),
            }
            first_attempt = false;
            last_problem = Some(problem);
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
        if first_attempt {
            census_reports(&shared, None);
            first_attempt = false;
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

/// How loudly a failed connection is logged, `None` for not at all (only at debug level): a
/// runtime nobody named and that never answered is simply not on this host, unless something
/// is there that fails in another way (a socket that refuses, a directory it cannot read).
fn failure_level(asked: Asked, answered_before: bool, err: &RuntimeError) -> Option<log::Level> {
    let absent = matches!(err, RuntimeError::Absent(_));
    (asked == Asked::Named || answered_before || !absent).then_some(log::Level::Warn)
}

/// Counts a runtime's first attempt (`not_found`: its description, if it was looked for at its
/// usual place and is not there); the last to report logs the census.
fn census_reports(shared: &Shared, not_found: Option<String>) {
    let line = shared.census().first_attempt(not_found);
    if let Some(line) = line {
        log::info!("{line}");
    }
}

/// The first attempts of the runtimes, until all have reported.
#[derive(Debug, Default)]
struct Census {
    expected: usize,
    reported: usize,
    not_found: Vec<String>,
}

impl Census {
    /// Returns the census line once every runtime has reported, if any was not found.
    fn first_attempt(&mut self, not_found: Option<String>) -> Option<String> {
        self.reported += 1;
        self.not_found.extend(not_found);
        if self.reported != self.expected || self.not_found.is_empty() {
            return None;
        }
        Some(census_line(&self.not_found, self.expected))
    }
}

/// `container runtimes not found at their usual places: …`: one line, whatever the count.
fn census_line(not_found: &[String], of: usize) -> String {
    let consequence = if not_found.len() == of {
        "containers are named from their cgroup paths"
    } else {
        "the others name containers"
    };
    format!(
        "container runtimes not found at their usual places (none was named on the command \
         line): {}; {consequence}, and these are looked for again every {} s",
        not_found.join(", "),
        LAST_RETRY.as_secs()
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_named_runtime_or_one_that_stopped_answering_warns() {
        let absent = || RuntimeError::Absent("no socket at /var/run/docker.sock".into());
        let refused = || RuntimeError::Unavailable("permission denied".into());
        assert_eq!(failure_level(Asked::Default, false, &absent()), None);
        assert_eq!(
            failure_level(Asked::Named, false, &absent()),
            Some(log::Level::Warn)
        );
        assert_eq!(
            failure_level(Asked::Default, true, &absent()),
            Some(log::Level::Warn),
            "it answered before and stopped"
        );
        assert_eq!(
            failure_level(Asked::Default, false, &refused()),
            Some(log::Level::Warn),
            "something is there, and fails"
        );
    }

    #[test]
    fn the_census_is_one_line_once_every_runtime_tried() {
        let mut census = Census {
            expected: 3,
            ..Census::default()
        };
        assert_eq!(
            census.first_attempt(Some("the Docker API at /a".into())),
            None
        );
        assert_eq!(census.first_attempt(None), None);
        assert_eq!(
            census.first_attempt(Some("state at /b".into())).as_deref(),
            Some(
                "container runtimes not found at their usual places (none was named on the \
                 command line): the Docker API at /a, state at /b; the others name containers, \
                 and these are looked for again every 30 s"
            )
        );
        let mut none_found = Census {
            expected: 2,
            ..Census::default()
        };
        none_found.first_attempt(Some("a".into()));
        let line = none_found.first_attempt(Some("b".into())).unwrap();
        assert!(
            line.contains("a, b; containers are named from their cgroup paths"),
            "{line}"
        );
        let mut all_found = Census {
            expected: 1,
            ..Census::default()
        };
        assert_eq!(all_found.first_attempt(None), None, "nothing to say");
    }
}
