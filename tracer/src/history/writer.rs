//! The agent's history writer: a thread of its own behind a bounded queue, so a slow or failing
//! disk delays neither the output nor the reading of the ring buffer. Each row's id is handed
//! out before it is stored ([`Ids`]): a kill's outputs say where it is stored, and go out while
//! the disk commits it.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::row::{EventKey, EventKind, EventRow};
use super::store::{Ids, Inserted, Retention, Store};

/// Events waiting for the disk. The output side does not wait for commits; it only waits (at
/// most [`COMMIT_WAIT`]) when this many are queued.
const QUEUE: usize = 256;

/// How long the output side waits for room in a full queue before it gives an event up.
pub(crate) const COMMIT_WAIT: Duration = Duration::from_secs(1);

/// After the history could not be opened, how long before trying again.
const REOPEN_INTERVAL: Duration = Duration::from_secs(30);

/// Kills kept while the history takes no writes (about 4 KiB each).
const UNSTORED_QUEUE: usize = 1024;

/// While kills wait to be stored, how often the writer tries again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// While kills wait to be stored, how often the writer looks for new ones.
const RETRY_POLL: Duration = Duration::from_millis(100);

/// A repeated error is logged once, then at most this often.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Events handed an id lately: the same event again (the only way a live row can be one the
/// history has) gets none, since its row will not be stored.
const RECENT: usize = 64;

enum Job {
    /// An event the agent traced, under the id it was handed, if it was.
    Live { row: Box<EventRow>, id: Option<i64> },
    /// A burst is over: give back the page cache's memory.
    ReleaseMemory,
    /// Kills recovered from the kernel log, each stored unless already known.
    Backfill {
        rows: Vec<EventRow>,
        tolerance: Duration,
        done: oneshot::Sender<anyhow::Result<Backfilled>>,
    },
}

/// What a backfill did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backfilled {
    pub stored: usize,
    /// Already in the history: traced live, or backfilled before.
    pub known: usize,
}

/// The handle the output side holds.
pub(crate) struct HistoryWriter {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    errors: Arc<AtomicU64>,
    slow: RateLimitedLog,
    ids: Arc<Ids>,
    recent: VecDeque<EventKey>,
    /// Set when the queue stayed full for [`COMMIT_WAIT`]: until it has room again, events are
    /// given up without waiting, so a stalled disk costs the output one wait, not one per event.
    stalled: bool,
}

impl HistoryWriter {
    /// Starts the writer thread, which opens (creating) the history at `path`, and waits (at
    /// most [`COMMIT_WAIT`]) for that, so the first kill already has its id. A history that
    /// cannot be opened is logged, and retried now and then; tracing goes on either way.
    pub(crate) fn start(
        path: PathBuf,
        retention: Retention,
        group: Option<u32>,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let errors = Arc::new(AtomicU64::new(0));
        let ids = Arc::new(Ids::default());
        let (opened, first_open) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new().name("history".into()).spawn({
            let errors = Arc::clone(&errors);
            let ids = Arc::clone(&ids);
            move || write_loop(&path, retention, group, queue, &errors, &ids, opened)
        })?;
        let _ = first_open.recv_timeout(COMMIT_WAIT);
        Ok(HistoryWriter {
            jobs: Some(jobs),
            thread: Some(thread),
            errors,
            slow: RateLimitedLog::default(),
            ids,
            recent: VecDeque::with_capacity(RECENT),
            stalled: false,
        })
    }

    /// Events that could not be stored, for `agent_stopped` and metrics.
    pub(crate) fn error_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.errors)
    }

    /// The id the event `key` will be stored under, decided now without waiting for the disk:
    /// `None` while the history takes no writes (the row, handed over all the same, is stored
    /// later under an id of its own), or for an event handed an id already.
    pub(crate) fn reserve(&mut self, key: EventKey) -> Option<i64> {
        if self.jobs.is_none() || self.recent.contains(&key) {
            return None;
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(key);
        self.ids.reserve()
    }

    /// Hands `row` to the writer thread under `id` (from [`HistoryWriter::reserve`]); waits
    /// only while the queue is full, at most [`COMMIT_WAIT`] once per stall.
    pub(crate) async fn send(&mut self, row: EventRow, id: Option<i64>) {
        let Some(jobs) = &self.jobs else { return };
        let job = Job::Live {
            row: Box::new(row),
            id,
        };
        let job = match jobs.try_send(job) {
            Ok(()) => {
                self.stalled = false;
                return;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return self.writer_gone(),
            Err(mpsc::error::TrySendError::Full(job)) => job,
        };
        if !self.stalled {
            match tokio::time::timeout(COMMIT_WAIT, jobs.send(job)).await {
                Ok(Ok(())) => return,
                Ok(Err(_)) => return self.writer_gone(),
                Err(_) => self.stalled = true,
            }
        }
        self.lost(format!(
            "history: the disk has not taken a write for over {COMMIT_WAIT:?} and {QUEUE} \
             events wait; kills are not stored until it does"
        ));
    }

    /// [`HistoryWriter::reserve`], then [`HistoryWriter::send`]: the id `row` will be stored
    /// under, if it is known now.
    #[cfg(test)]
    pub(crate) async fn write(&mut self, row: EventRow) -> Option<i64> {
        let id = self.reserve(row.key());
        self.send(row, id).await;
        id
    }

    /// Stores kills recovered from the kernel log (`Origin::Kmsg` rows), skipping each one
    /// already known within `tolerance` of its kernel time; waits until all are stored.
    pub(crate) async fn backfill(
        &mut self,
        rows: Vec<EventRow>,
        tolerance: Duration,
    ) -> anyhow::Result<Backfilled> {
        let jobs = self
            .jobs
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the history is closed"))?;
        let (done, result) = oneshot::channel();
        jobs.send(Job::Backfill {
            rows,
            tolerance,
            done,
        })
        .await
        .map_err(|_| anyhow::anyhow!("the history writer stopped"))?;
        result
            .await
            .map_err(|_| anyhow::anyhow!("the history writer stopped"))?
    }

    /// Asks the writer to give back its page cache; never waits for a busy disk.
    pub(crate) async fn release_memory(&mut self) {
        if let Some(jobs) = &self.jobs {
            let _ = jobs.try_send(Job::ReleaseMemory);
        }
    }

    /// An event that will not be stored.
    fn lost(&mut self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.slow.log(|| message);
    }

    fn writer_gone(&mut self) {
        self.lost("history: the writer stopped; kills are no longer stored".into());
    }

    /// Waits for the queued events to be stored and closes the history.
    pub(crate) fn close(mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("history: the writer thread panicked");
        }
    }
}

fn write_loop(
    path: &std::path::Path,
    retention: Retention,
    group: Option<u32>,
    mut queue: mpsc::Receiver<Job>,
    errors: &AtomicU64,
    ids: &Arc<Ids>,
    opened: std::sync::mpsc::Sender<()>,
) {
    let mut failures = RateLimitedLog::default();
    let open = |failures: &mut RateLimitedLog| match Store::open_with(
        path,
        retention,
        group,
        Arc::clone(ids),
    ) {
        Ok(store) => {
            log::info!("history: storing kills in {}", path.display());
            Some(store)
        }
        Err(err) => {
            failures.log(|| {
                format!(
                    "history: cannot open {}: {err:#}; kills are still reported, and stored \
                     once it can be opened",
                    path.display()
                )
            });
            None
        }
    };
    let mut store = open(&mut failures);
    ids.set_taking_writes(store.is_some());
    let _ = opened.send(());
    let mut last_open = Instant::now();
    let mut unstored = Unstored::default();
    loop {
        let job = if unstored.rows.is_empty() {
            match queue.blocking_recv() {
                Some(job) => Some(job),
                None => break,
            }
        } else {
            match queue.try_recv() {
                Ok(job) => Some(job),
                Err(mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(RETRY_POLL);
                    None
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
        };
        if store.is_none() && last_open.elapsed() >= REOPEN_INTERVAL {
            store = open(&mut failures);
            last_open = Instant::now();
        }
        match job {
            None => {}
            Some(Job::Live { row, id }) => {
                unstored.push(row, id, errors);
                // Stored in order: the ones waiting first.
                unstored.store(store.as_mut(), path, &mut failures);
                ids.set_taking_writes(store.is_some() && unstored.rows.is_empty());
                continue;
            }
            Some(Job::ReleaseMemory) => {
                if let Some(store) = &store {
                    store.release_memory();
                }
            }
            Some(Job::Backfill {
                rows,
                tolerance,
                done,
            }) => {
                let result = match &mut store {
                    Some(store) => backfill(store, &rows, tolerance, errors),
                    None => Err(anyhow::anyhow!("{} could not be opened", path.display())),
                };
                let _ = done.send(result);
            }
        }
        if unstored.due() {
            unstored.store(store.as_mut(), path, &mut failures);
        }
        ids.set_taking_writes(store.is_some() && unstored.rows.is_empty());
    }
    // The agent stops: one last try, and what still cannot be stored is given up, and counted.
    unstored.store(store.as_mut(), path, &mut failures);
    if !unstored.rows.is_empty() {
        let left = unstored.rows.len() as u64;
        errors.fetch_add(left, Ordering::Relaxed);
        log::error!(
            "history: {left} kills reported but never stored in {}",
            path.display()
        );
    }
}

/// Kills that could not be stored yet (the disk full, the file read-only or not openable), in
/// the order they came, stored as soon as the history takes writes again.
#[derive(Default)]
struct Unstored {
    /// Each with the id it was handed, if it was; the others get theirs when stored.
    rows: VecDeque<(Box<EventRow>, Option<i64>)>,
    last_try: Option<Instant>,
    /// How many of `rows` were stored late, for the log line once they all are.
    late: u64,
}

impl Unstored {
    /// Queues `row`; past [`UNSTORED_QUEUE`], gives up the oldest SIGKILL (else the oldest
    /// kill) and counts it.
    fn push(&mut self, row: Box<EventRow>, id: Option<i64>, errors: &AtomicU64) {
        if self.rows.len() >= UNSTORED_QUEUE {
            let victim = self
                .rows
                .iter()
                .position(|(row, _)| row.kind == EventKind::Sigkill)
                .unwrap_or(0);
            self.rows.remove(victim);
            errors.fetch_add(1, Ordering::Relaxed);
        }
        self.rows.push_back((row, id));
    }

    fn due(&self) -> bool {
        !self.rows.is_empty()
            && self
                .last_try
                .is_none_or(|at| at.elapsed() >= RETRY_INTERVAL)
    }

    /// Stores what waits, oldest first, until one fails; returns how the last one stored went.
    fn store(
        &mut self,
        store: Option<&mut Store>,
        path: &std::path::Path,
        log: &mut RateLimitedLog,
    ) -> Option<Inserted> {
        let waited = self.rows.len() > 1 || self.last_try.is_some();
        self.last_try = Some(Instant::now());
        let store = store?;
        let mut last = None;
        while let Some((row, id)) = self.rows.front() {
            let inserted = match id {
                Some(id) => store.insert_as(row, *id),
                None => store.insert(row),
            };
            match inserted {
                Ok(inserted) => {
                    last = Some(inserted);
                    self.rows.pop_front();
                    if waited {
                        self.late += 1;
                    }
                }
                Err(err) => {
                    log.log(|| {
                        format!(
                            "history: the {} of pid {} is not stored in {} yet: {err:#}; kills \
                             are still reported, and up to {UNSTORED_QUEUE} kept to be stored \
                             when it takes writes again",
                            row.kind.as_str(),
                            row.victim_pid,
                            path.display()
                        )
                    });
                    return last;
                }
            }
        }
        self.last_try = None;
        if self.late > 0 {
            log::info!(
                "history: {} kills stored late in {}, now that it takes writes again",
                std::mem::take(&mut self.late),
                path.display()
            );
        }
        last
    }
}

fn backfill(
    store: &mut Store,
    rows: &[EventRow],
    tolerance: Duration,
    errors: &AtomicU64,
) -> anyhow::Result<Backfilled> {
    let mut backfilled = Backfilled::default();
    for row in rows {
        match store.insert_backfilled(row, tolerance) {
            Ok(Inserted::New(_)) => backfilled.stored += 1,
            Ok(Inserted::Known) => backfilled.known += 1,
            Err(err) => {
                errors.fetch_add(1, Ordering::Relaxed);
                return Err(err.context(format!(
                    "storing the kill of pid {} from the kernel log",
                    row.victim_pid
                )));
            }
        }
    }
    Ok(backfilled)
}

/// Logs the first error at once, then at most one per [`ERROR_LOG_INTERVAL`], saying how many
/// were left out in between.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn log(&mut self, message: impl FnOnce() -> String) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < ERROR_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        let message = message();
        match std::mem::take(&mut self.suppressed) {
            0 => log::error!("{message}"),
            n => log::error!("{message} ({n} similar errors not logged)"),
        }
        self.last = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::{synthetic_row, temp_dir};

    fn retention() -> Retention {
        Retention::new(Duration::from_secs(86_400), 1000)
    }

    fn stored_ids(path: &std::path::Path) -> Vec<(u32, i64)> {
        let reader = crate::history::schema::open_read_only(path).unwrap();
        let mut statement = reader
            .prepare("SELECT victim_pid, id FROM events ORDER BY id")
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[tokio::test]
    async fn an_event_is_stored_under_the_id_write_returned() {
        let dir = temp_dir();
        let path = dir.join("writer.db");
        let mut writer = HistoryWriter::start(path.clone(), retention(), None).unwrap();
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        let id = writer.write(synthetic_row(5, now)).await;
        assert!(id.is_some(), "an open history hands out an id at once");
        // The same event again is not stored twice, and has no id of its own.
        assert_eq!(writer.write(synthetic_row(5, now)).await, None);
        let next = writer.write(synthetic_row(6, now)).await;
        let errors = writer.error_counter();
        writer.close();
        assert_eq!(errors.load(Ordering::Relaxed), 0);
        assert_eq!(
            stored_ids(&path),
            [(5, id.unwrap()), (6, next.unwrap())],
            "each stored under the id its outputs were given"
        );
    }

    #[tokio::test]
    async fn ids_are_never_reused_after_retention_or_a_restart() {
        let dir = temp_dir();
        let path = dir.join("ids.db");
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        let mut writer = HistoryWriter::start(path.clone(), retention(), None).unwrap();
        let first = writer.write(synthetic_row(1, now)).await.unwrap();
        let second = writer.write(synthetic_row(2, now)).await.unwrap();
        assert!(second > first);
        writer.close();
        // Restarted on the same file: the next id is past the highest stored.
        let mut writer = HistoryWriter::start(path.clone(), retention(), None).unwrap();
        let third = writer.write(synthetic_row(3, now)).await.unwrap();
        assert!(third > second, "{third} after {second}");
        writer.close();
        // A store whose retention deleted the newest row still counts on from its id.
        let ids = Arc::new(Ids::default());
        let mut store = Store::open_with(&path, retention(), None, Arc::clone(&ids)).unwrap();
        store
            .connection()
            .execute("DELETE FROM events WHERE id = ?1", [third])
            .unwrap();
        ids.set_taking_writes(true);
        let fourth = ids.reserve().unwrap();
        assert!(fourth > third, "{fourth} after {third}, deleted");
        assert!(matches!(
            store.insert_as(&synthetic_row(4, now), fourth).unwrap(),
            Inserted::New(_)
        ));
        // An id taken already is an error, never a silent skip.
        assert!(store.insert_as(&synthetic_row(5, now), fourth).is_err());
        drop(store);
        assert_eq!(stored_ids(&path), [(1, first), (2, second), (4, fourth)]);
    }

    #[tokio::test]
    async fn a_stalled_disk_holds_up_no_output() {
        let dir = temp_dir();
        let path = dir.join("stalled.db");
        let mut writer = HistoryWriter::start(path.clone(), retention(), None).unwrap();
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        let first = writer.write(synthetic_row(1, now)).await;
        // Another process holds the write lock until told: each insert waits for it.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (locked, is_locked) = std::sync::mpsc::channel();
        let holder = std::thread::spawn({
            let path = path.clone();
            move || {
                let conn = rusqlite::Connection::open(&path).unwrap();
                conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
                locked.send(()).unwrap();
                released.recv().unwrap();
                conn.execute_batch("COMMIT").unwrap();
            }
        });
        is_locked.recv().unwrap();
        let mut ids = vec![first];
        for pid in 2..=5 {
            ids.push(writer.write(synthetic_row(pid, now)).await);
        }
        // Every write returned while the disk took none.
        release.send(()).unwrap();
        holder.join().unwrap();
        let errors = writer.error_counter();
        writer.close();
        // Nothing was lost: the writer caught up once the lock went.
        assert_eq!(errors.load(Ordering::Relaxed), 0);
        let stored = stored_ids(&path);
        assert_eq!(stored.len(), 5, "{stored:?}");
        for ((_, stored), handed) in stored.iter().zip(&ids) {
            if let Some(handed) = handed {
                assert_eq!(stored, handed, "{stored:?} against {ids:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_backfill_stores_only_the_kills_not_known() {
        let dir = temp_dir();
        let mut writer = HistoryWriter::start(dir.join("backfill.db"), retention(), None).unwrap();
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        let live = synthetic_row(5, now);
        writer.write(live.clone()).await;
        let from_kmsg = |pid: u32, ktime_ns: u64| EventRow {
            source: crate::history::row::Origin::Kmsg,
            ktime_ns,
            ..synthetic_row(pid, now)
        };
        let rows = vec![
            // The live kill, as the kernel log timed it.
            from_kmsg(5, live.ktime_ns + 3_000_000),
            from_kmsg(6, 2_000_000),
        ];
        let tolerance = Duration::from_millis(100);
        let first = writer.backfill(rows.clone(), tolerance).await.unwrap();
        assert_eq!(
            first,
            Backfilled {
                stored: 1,
                known: 1
            }
        );
        // Again, as after a restart: nothing new.
        let again = writer.backfill(rows, tolerance).await.unwrap();
        assert_eq!(
            again,
            Backfilled {
                stored: 0,
                known: 2
            }
        );
        writer.close();
    }

    #[tokio::test]
    async fn an_unopenable_history_counts_every_event_and_returns_at_once() {
        // A path under a regular file cannot be created, even by root.
        let dir = temp_dir();
        std::fs::write(dir.join("file"), b"").unwrap();
        let mut writer =
            HistoryWriter::start(dir.join("file/oomtrace.db"), retention(), None).unwrap();
        let errors = writer.error_counter();
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        let started = Instant::now();
        for pid in 0..3 {
            writer.write(synthetic_row(pid, now)).await;
        }
        assert!(started.elapsed() < COMMIT_WAIT, "{:?}", started.elapsed());
        // Kept in case it can be opened later; given up, and counted, when the agent stops.
        assert_eq!(errors.load(Ordering::Relaxed), 0);
        writer.close();
        assert_eq!(errors.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn kills_the_disk_refused_are_stored_once_it_takes_writes_again() {
        let dir = temp_dir();
        let path = dir.join("full.db");
        let mut writer = HistoryWriter::start(path.clone(), retention(), None).unwrap();
        let errors = writer.error_counter();
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        writer.write(synthetic_row(1, now)).await;
        // Another connection holds the write lock past the busy timeout: every insert fails,
        // as on a full disk.
        let (release, released) = std::sync::mpsc::channel::<()>();
        let (locked, is_locked) = std::sync::mpsc::channel();
        let holder = std::thread::spawn({
            let path = path.clone();
            move || {
                let conn = rusqlite::Connection::open(&path).unwrap();
                conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
                locked.send(()).unwrap();
                released.recv().unwrap();
                conn.execute_batch("COMMIT").unwrap();
            }
        });
        is_locked.recv().unwrap();
        for pid in 2..=4 {
            writer.write(synthetic_row(pid, now)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        release.send(()).unwrap();
        holder.join().unwrap();
        let reader = crate::history::schema::open_read_only(&path).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stored: i64 = reader
                .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
                .unwrap();
            if stored == 4 {
                break;
            }
            assert!(Instant::now() < deadline, "{stored} of 4 kills stored");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        writer.close();
        assert_eq!(errors.load(Ordering::Relaxed), 0, "none given up");
    }
}
