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
/// For this long after a connection is lost, kills wait for it to come back: a restart of the
/// daemon takes a few seconds.
const QUICK_RETRIES_FOR: Duration = Duration::from_secs(10);
/// A connection whose events flowed this long was a working one: the next loss starts the
/// backoff afresh. One lost sooner (a daemon that accepts and then fails every stream, or one
/// restarting in a loop) counts as one more failed attempt.
const HEALTHY_AFTER: Duration = Duration::from_secs(10);

/// How far back the first subscription replays: containers that started and went while the
/// agent was attaching, or in the second it takes podman to answer `/version`.
const REPLAY_AT_START: Duration = Duration::from_secs(10);

/// When to try a runtime again, and what to say of it: a growing wait between attempts (from
/// [`FIRST_RETRY`], doubling, at most [`LAST_RETRY`]), and one line per change of state (it
/// stopped answering, it fails in another way, it answers again), never one per attempt.
#[derive(Debug)]
struct Reconnect {
    next_wait: Duration,
    /// The problems said in this outage (a runtime that fails in turns, refused and then lost,
    /// says each once); empty while it answers, and before the first attempt.
    said: Vec<&'static str>,
    /// Whether any of them was said above debug level: only then is the runtime's return said.
    aloud: bool,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            next_wait: FIRST_RETRY,
            said: Vec::new(),
            aloud: false,
        }
    }
}

impl Reconnect {
    /// An attempt failed with `problem` (a kind, not the error's text): whether to say so, and
    /// how long to wait before the next.
    fn failed(&mut self, problem: &'static str) -> (bool, Duration) {
        let say = !self.said.contains(&problem);
        if say {
            self.said.push(problem);
        }
        (say, self.wait())
    }

    /// A connection's events stopped; `healthy` if they had flowed for [`HEALTHY_AFTER`].
    /// Whether to say so, and how long to wait before reconnecting.
    fn lost(&mut self, healthy: bool) -> (bool, Duration) {
        if healthy {
            self.said.clear();
            self.aloud = false;
            self.next_wait = FIRST_RETRY;
        }
        self.failed("lost")
    }

    /// The problem just said was said in the log, not only at debug level.
    fn said_aloud(&mut self) {
        self.aloud = true;
    }

    /// Events have flowed for [`HEALTHY_AFTER`]: whether this ends an outage that was said.
    fn healthy(&mut self) -> bool {
        self.next_wait = FIRST_RETRY;
        self.said.clear();
        std::mem::take(&mut self.aloud)
    }

    /// Whether the runtime is in an outage that was said: its reconnections say nothing more
    /// until it has answered for a while.
    fn in_outage(&self) -> bool {
        self.aloud
    }

    fn wait(&mut self) -> Duration {
        let wait = self.next_wait;
        self.next_wait = (self.next_wait * 2).min(LAST_RETRY);
        wait
    }
}

/// Runs until the agent stops. A runtime the user named (`asked`) is warned of when it cannot
/// be reached, and so is any runtime that answered once and then stopped; one only looked for at
/// its usual place and not there is said once, with the others, in the startup's census.
pub(super) async fn watch(runtime: Arc<dyn ContainerRuntime>, shared: Arc<Shared>, asked: Asked) {
    let mut reconnect = Reconnect::default();
    // Events are replayed from here on each (re)connection, so none is lost in between.
    let mut since = SystemTime::now()
        .checked_sub(REPLAY_AT_START)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut lost_at: Option<Instant> = None;
    let mut first_attempt = true;
    loop {
        shared.connecting.fetch_add(1, Ordering::SeqCst);
        let connected = runtime.connect().await;
        shared.connecting.fetch_sub(1, Ordering::SeqCst);
        // Whether it worked or not, a kill waiting for this runtime looks again.
        shared.updated.notify_waiters();
        if let Err(err) = connected {
            let absent = matches!(err, RuntimeError::Absent(_));
            if first_attempt {
                let not_found = (absent && asked == Asked::Default).then(|| runtime.describe());
                census_reports(&shared, not_found);
            }
            let (say, wait) = reconnect.failed(problem_kind(&err));
            match (say, failure_level(asked, lost_at.is_some(), &err)) {
                (false, _) => log::debug!("container runtime {}: {err}", runtime.describe()),
                (true, Some(level)) => {
                    log::log!(
                        level,
                        "container runtime {}: {err}; containers are named from cgroup paths \
                         only until it answers (retrying, at most every {} s)",
                        runtime.describe(),
                        LAST_RETRY.as_secs()
                    );
                    reconnect.said_aloud();
                }
                (true, None) => log::debug!("container runtime {}: {err}", runtime.describe()),
            }
            first_attempt = false;
            pause(&shared, lost_at, wait).await;
            continue;
        }
        if first_attempt {
            census_reports(&shared, None);
            first_attempt = false;
        }
        shared.connected.fetch_add(1, Ordering::SeqCst);
        // Identified while its events are already being followed: podman is slow to say.
        let identify = async {
            if let Err(err) = runtime.identify().await {
                log::debug!("container runtime {}: /version: {err}", runtime.describe());
            }
        };
        let ((), followed) = tokio::join!(
            identify,
            follow(runtime.as_ref(), &shared, since, &mut reconnect)
        );
        // Whole seconds: the API's `since` has no finer grain.
        since = SystemTime::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        runtime.disconnect();
        lost_at = Some(Instant::now());
        shared.connected.fetch_sub(1, Ordering::SeqCst);
        shared.updated.notify_waiters();
        let (say, wait) = reconnect.lost(followed.healthy);
        if say {
            log::warn!(
                "container runtime {}: {}; reconnecting",
                runtime.describe(),
                followed.why
            );
            reconnect.said_aloud();
        } else {
            log::debug!("container runtime {}: {}", runtime.describe(), followed.why);
        }
        pause(&shared, lost_at, wait).await;
    }
}

/// Waits `wait` before the next attempt. Shortly after a connection was lost the daemon is
/// usually restarting: kills wait for it meanwhile, as they do for a first connection.
async fn pause(shared: &Shared, lost_at: Option<Instant>, wait: Duration) {
    let restarting = lost_at.is_some_and(|at| at.elapsed() < QUICK_RETRIES_FOR);
    if restarting {
        shared.connecting.fetch_add(1, Ordering::SeqCst);
    }
    tokio::time::sleep(wait).await;
    if restarting {
        shared.connecting.fetch_sub(1, Ordering::SeqCst);
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

/// How a connection's events stopped.
struct Followed {
    /// Why, in words of the agent's own.
    why: String,
    /// Whether they had flowed for [`HEALTHY_AFTER`] first.
    healthy: bool,
}

/// Lists, then follows events until the stream ends or fails. In an outage already said, the
/// listing is not said again; once events have flowed for [`HEALTHY_AFTER`], the runtime is
/// said to answer again.
async fn follow(
    runtime: &dyn ContainerRuntime,
    shared: &Shared,
    since: SystemTime,
    reconnect: &mut Reconnect,
) -> Followed {
    let mut events = runtime.events(since);
    let quiet = reconnect.in_outage();
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
            let level = if quiet {
                log::Level::Debug
            } else {
                log::Level::Info
            };
            log::log!(
                level,
                "container runtime {}: {count} containers{pods} known; following its events",
                runtime.describe()
            );
        }
        Err(err) if quiet => log::debug!(
            "container runtime {}: listing containers: {err}",
            runtime.describe()
        ),
        Err(err) => log::warn!(
            "container runtime {}: listing containers: {err}; following its events anyway",
            runtime.describe()
        ),
    }
    let became_healthy = tokio::time::sleep(HEALTHY_AFTER);
    tokio::pin!(became_healthy);
    let mut healthy = false;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = &mut became_healthy, if !healthy => {
                healthy = true;
                if reconnect.healthy() {
                    log::info!(
                        "container runtime {}: answering again; following its events",
                        runtime.describe()
                    );
                }
                continue;
            }
        };
        match event {
            Some(Ok(RuntimeEvent::Changed { id, known })) => {
                let complete = known.is_some() && runtime.describes_in_full();
                if let Some(known) = known {
                    shared.with_cache(|cache| cache.upsert(*known, Instant::now()));
                }
                if !complete {
                    refresh(runtime, shared, &id).await;
                }
            }
            Some(Ok(RuntimeEvent::Removed { id })) => {
                shared.with_cache(|cache| cache.removed(&id, Instant::now()));
            }
            Some(Err(err)) => {
                return Followed {
                    why: format!("event stream: {err}"),
                    healthy,
                };
            }
            None => {
                return Followed {
                    why: "its event stream ended (daemon restarted?)".to_owned(),
                    healthy,
                };
            }
        }
    }
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

fn problem_kind(err: &RuntimeError) -> &'static str {
    match err {
        RuntimeError::Absent(_) => "absent",
        RuntimeError::Garbage(_) => "garbage",
        RuntimeError::Unavailable(_) => "unavailable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::cache::MetadataCache;
    use crate::attribute::runtime::{ContainerMetadata, RuntimeResult};
    use futures_util::future::BoxFuture;
    use futures_util::stream::{self, BoxStream};

    /// A daemon as a test scripts it: whether each connection succeeds, and how long its event
    /// stream lasts before it fails. Records when it was asked.
    struct FakeDaemon {
        answers: bool,
        stream_lasts: Duration,
        attempts: std::sync::Mutex<Vec<tokio::time::Instant>>,
    }

    impl FakeDaemon {
        fn new(answers: bool, stream_lasts: Duration) -> Arc<Self> {
            Arc::new(FakeDaemon {
                answers,
                stream_lasts,
                attempts: std::sync::Mutex::new(Vec::new()),
            })
        }

        /// The waits between its attempts.
        fn gaps(&self) -> Vec<Duration> {
            let attempts = self.attempts.lock().unwrap();
            attempts.windows(2).map(|pair| pair[1] - pair[0]).collect()
        }
    }

    impl ContainerRuntime for FakeDaemon {
        fn describe(&self) -> String {
            "the fake daemon".to_owned()
        }
        fn connect(&self) -> BoxFuture<'_, RuntimeResult<()>> {
            let mut attempts = self.attempts.lock().unwrap();
            attempts.push(tokio::time::Instant::now());
            // Never a busy loop, even when the watcher is wrong: the test ends.
            let runaway = attempts.len() > 1000;
            let answers = self.answers;
            Box::pin(async move {
                if runaway {
                    std::future::pending::<()>().await;
                }
                if answers {
                    Ok(())
                } else {
                    Err(RuntimeError::Absent("nothing listens at the socket".into()))
                }
            })
        }
        fn is_connected(&self) -> bool {
            false
        }
        fn disconnect(&self) {}
        fn list(&self) -> BoxFuture<'_, RuntimeResult<Vec<ContainerMetadata>>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn inspect<'a>(
            &'a self,
            _id: &'a str,
        ) -> BoxFuture<'a, RuntimeResult<Option<ContainerMetadata>>> {
            Box::pin(async { Ok(None) })
        }
        fn events(&self, _since: SystemTime) -> BoxStream<'_, RuntimeResult<RuntimeEvent>> {
            let lasts = self.stream_lasts;
            stream::once(async move {
                tokio::time::sleep(lasts).await;
                Err(RuntimeError::Unavailable("connection reset".into()))
            })
            .boxed()
        }
    }

    /// Runs the watcher against `daemon` for `time` (virtual: the clock is paused).
    async fn watch_for(daemon: &Arc<FakeDaemon>, time: Duration) {
        let shared = Arc::new(Shared::new(MetadataCache::new(8, Duration::from_secs(60))));
        shared.expect_runtimes(1);
        let runtime: Arc<dyn ContainerRuntime> = Arc::clone(daemon) as _;
        let watcher = tokio::spawn(watch(runtime, Arc::clone(&shared), Asked::Named));
        tokio::time::sleep(time).await;
        watcher.abort();
    }

    /// From the first retry, doubling, up to the cap.
    fn backoff(count: usize) -> Vec<Duration> {
        std::iter::successors(Some(FIRST_RETRY), |wait| Some((*wait * 2).min(LAST_RETRY)))
            .take(count)
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_daemon_that_went_away_is_retried_ever_less_often() {
        let gone = FakeDaemon::new(false, Duration::ZERO);
        watch_for(&gone, Duration::from_secs(120)).await;
        let gaps = gone.gaps();
        // 0.1 + 0.2 + … + 25.6 s, then every 30 s: 12 attempts in two minutes, not thousands.
        assert_eq!(gaps.len(), 11, "{gaps:?}");
        let expected = backoff(gaps.len());
        for (gap, wait) in gaps.iter().zip(&expected) {
            assert!(
                *gap >= *wait && *gap < *wait + Duration::from_millis(5),
                "{gaps:?}"
            );
        }
    }

    /// It accepts every connection and fails the event stream at once (a daemon restarting in
    /// a loop, or one that answers `/_ping` and nothing else): each failure counts.
    #[tokio::test(start_paused = true)]
    async fn a_daemon_whose_streams_fail_at_once_is_not_reconnected_in_a_loop() {
        let flapping = FakeDaemon::new(true, Duration::ZERO);
        watch_for(&flapping, Duration::from_secs(120)).await;
        let gaps = flapping.gaps();
        assert_eq!(gaps.len(), 11, "{gaps:?}");
        for (gap, wait) in gaps.iter().zip(backoff(gaps.len())) {
            assert!(
                *gap >= wait && *gap < wait + Duration::from_millis(5),
                "{gaps:?}"
            );
        }
    }

    /// A connection that worked for a while and was lost is retried quickly again.
    #[tokio::test(start_paused = true)]
    async fn a_connection_that_worked_starts_the_backoff_afresh() {
        let restarting = FakeDaemon::new(true, HEALTHY_AFTER + Duration::from_secs(5));
        watch_for(&restarting, Duration::from_secs(60)).await;
        let gaps = restarting.gaps();
        assert!(gaps.len() >= 3, "{gaps:?}");
        for gap in gaps {
            // The stream's life, then the first retry.
            assert!(
                gap >= HEALTHY_AFTER + Duration::from_secs(5) + FIRST_RETRY
                    && gap < HEALTHY_AFTER + Duration::from_secs(5) + FIRST_RETRY * 2,
                "{gap:?}"
            );
        }
    }

    #[test]
    fn each_change_of_state_is_said_once_not_each_attempt() {
        let mut reconnect = Reconnect::default();
        // Gone: said once, then quietly retried, ever less often.
        assert_eq!(reconnect.failed("absent"), (true, FIRST_RETRY));
        reconnect.said_aloud();
        let mut waits = Vec::new();
        for _ in 0..12 {
            let (say, wait) = reconnect.failed("absent");
            assert!(!say);
            waits.push(wait);
        }
        assert_eq!(waits, backoff(13)[1..]);
        // Back for a moment, lost again, refused again, in turns: each kind said once.
        assert!(reconnect.lost(false).0);
        assert!(!reconnect.failed("absent").0);
        assert!(!reconnect.lost(false).0);
        assert!(reconnect.in_outage(), "the listing is not said again");
        // Answering for a while: said once; the next loss is said, and retried at once.
        assert!(reconnect.healthy());
        assert!(!reconnect.in_outage());
        assert_eq!(reconnect.lost(true), (true, FIRST_RETRY));
        // A runtime nobody named and never seen: its return is not news.
        let mut absent = Reconnect::default();
        assert!(absent.failed("absent").0);
        assert!(!absent.healthy());
    }

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
