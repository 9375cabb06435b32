//! The agent's history writer: a thread of its own behind a bounded queue, so a slow or failing
//! disk delays the output a little and never the reading of the ring buffer.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::row::EventRow;
use super::store::{Inserted, Retention, Store};

/// Events waiting for the disk. The output side waits for each commit, so this only fills
/// while commits are slower than [`COMMIT_WAIT`].
const QUEUE: usize = 256;

/// How long the output side waits for an event's commit before writing it out anyway. The
/// event stays queued and is stored when the disk catches up.
pub const COMMIT_WAIT: Duration = Duration::from_secs(1);

/// After the history could not be opened, how long before trying again.
const REOPEN_INTERVAL: Duration = Duration::from_secs(30);

/// A repeated error is logged once, then at most this often.
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(60);

struct Job {
    row: EventRow,
    committed: oneshot::Sender<()>,
}

/// The handle the output side holds.
pub struct HistoryWriter {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    errors: Arc<AtomicU64>,
    slow: RateLimitedLog,
}

impl HistoryWriter {
    /// Starts the writer thread, which opens (creating) the history at `path`. A history that
    /// cannot be opened is logged, and retried now and then; tracing goes on either way.
    pub fn start(path: PathBuf, retention: Retention) -> std::io::Result<Self> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let errors = Arc::new(AtomicU64::new(0));
        let thread = std::thread::Builder::new().name("history".into()).spawn({
            let errors = Arc::clone(&errors);
            move || write_loop(&path, retention, queue, &errors)
        })?;
        Ok(HistoryWriter {
            jobs: Some(jobs),
            thread: Some(thread),
            errors,
            slow: RateLimitedLog::default(),
        })
    }

    /// Events that could not be stored, for `agent_stopped` and metrics.
    pub fn error_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.errors)
    }

    /// Stores `row` and waits, at most [`COMMIT_WAIT`], until it is committed (or failed).
    pub async fn write(&mut self, row: EventRow) {
        let Some(jobs) = &self.jobs else { return };
        let started = Instant::now();
        let (committed, done) = oneshot::channel();
        let queued = tokio::time::timeout(COMMIT_WAIT, jobs.send(Job { row, committed })).await;
        match queued {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                // The writer thread is gone (it panicked): nothing will be stored.
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.slow
                    .log(|| "history: the writer stopped; kills are no longer stored".into());
                return;
            }
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                self.slow.log(|| {
                    format!(
                        "history: the disk has not taken a write for over {COMMIT_WAIT:?} and \
                         {QUEUE} events wait; this one is not stored"
                    )
                });
                return;
            }
        }
        let left = COMMIT_WAIT.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, done).await.is_err() {
            self.slow.log(|| {
                format!(
                    "history: a write took over {COMMIT_WAIT:?}; the event is written out \
                     before it is stored"
                )
            });
        }
    }

    /// Waits for the queued events to be stored and closes the history.
    pub fn close(mut self) {
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
    mut queue: mpsc::Receiver<Job>,
    errors: &AtomicU64,
) {
    let mut failures = RateLimitedLog::default();
    let open = |failures: &mut RateLimitedLog| match Store::open(path, retention) {
        Ok(store) => {
            log::info!("history: storing kills in {}", path.display());
            Some(store)
        }
        Err(err) => {
            failures.log(|| {
                format!(
                    "history: cannot open {}: {err:#}; kills are still reported, but not \
                     stored",
                    path.display()
                )
            });
            None
        }
    };
    let mut store = open(&mut failures);
    let mut last_open = Instant::now();
    while let Some(Job { row, committed }) = queue.blocking_recv() {
        if store.is_none() && last_open.elapsed() >= REOPEN_INTERVAL {
            store = open(&mut failures);
            last_open = Instant::now();
        }
        match &mut store {
            Some(open_store) => match open_store.insert(&row) {
                Ok(Inserted::New(_) | Inserted::Known) => {}
                Err(err) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    failures.log(|| {
                        format!(
                            "history: storing the {} of pid {} in {} failed: {err:#}; kills are \
                             still reported",
                            row.kind.as_str(),
                            row.victim_pid,
                            path.display()
                        )
                    });
                }
            },
            None => {
                errors.fetch_add(1, Ordering::Relaxed);
                failures.log(|| {
                    format!(
                        "history: the {} of pid {} is not stored: {} could not be opened",
                        row.kind.as_str(),
                        row.victim_pid,
                        path.display()
                    )
                });
            }
        }
        // The output side may have stopped waiting: nothing to tell then.
        let _ = committed.send(());
    }
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
        Retention {
            max_age: Duration::from_secs(86_400),
            max_rows: 1000,
        }
    }

    #[tokio::test]
    async fn an_event_is_committed_before_write_returns() {
        let dir = temp_dir();
        let path = dir.join("writer.db");
        let mut writer = HistoryWriter::start(path.clone(), retention()).unwrap();
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        writer.write(synthetic_row(5, now)).await;
        // Another connection sees it before the writer is closed.
        let reader = crate::history::schema::open_read_only(&path).unwrap();
        let stored: i64 = reader
            .query_row(
                "SELECT count(*) FROM events WHERE victim_pid = 5",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(stored, 1);
        let errors = writer.error_counter();
        writer.close();
        assert_eq!(errors.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn an_unopenable_history_counts_every_event_and_returns_at_once() {
        // A path under a regular file cannot be created, even by root.
        let dir = temp_dir();
        std::fs::write(dir.join("file"), b"").unwrap();
        let mut writer = HistoryWriter::start(dir.join("file/oomtrace.db"), retention()).unwrap();
        let errors = writer.error_counter();
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        let started = Instant::now();
        for pid in 0..3 {
            writer.write(synthetic_row(pid, now)).await;
        }
        assert!(started.elapsed() < COMMIT_WAIT, "{:?}", started.elapsed());
        assert_eq!(errors.load(Ordering::Relaxed), 3);
        writer.close();
    }
}
