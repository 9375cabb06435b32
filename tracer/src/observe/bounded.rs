//! Reads of the running system bounded in time. A `/proc/<pid>` file waits for its process's
//! locks (a `cmdline` for its memory map's, held for as long as the process is stuck in a page
//! fault under reclaim), and a cgroup file on a host in heavy reclaim can take seconds: a
//! kill's record must not wait for them, nor every record after it. So the reads run on a
//! thread of their own and publish what they read as they go; after [`READ_BUDGET`] the record
//! goes out with what was published, and says what it lacks.
//!
//! A read that never answers keeps its thread: the kernel offers no way to interrupt it. That
//! thread is given up (a new one reads the next event), counted, and at most
//! [`MAX_STUCK_THREADS`] are left waiting at once: past that, nothing more is read until one of
//! them answers, and the records say so.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

use crate::record::{Cut, CutReason, ObservedPart};

/// How long the reads of one event may take. A kill's reads take milliseconds even on a host
/// with ten thousand processes (a snapshot reads at most 256 of them), and under heavy reclaim
/// a few hundred; a second is far past both, and still short beside the runtime's answer the
/// attribute stage may wait for, so a record held up by a stuck read is late but not lost in
/// the noise of a burst.
pub(crate) const READ_BUDGET: Duration = Duration::from_secs(1);

/// How many threads may be left waiting on reads that never answered. Each holds a stack and a
/// reference to what it was reading; a host where reads hang hangs them all alike, so a few
/// threads say as much as a hundred would.
pub(crate) const MAX_STUCK_THREADS: usize = 4;

/// What one event's reads published, and where they were.
pub(crate) struct Progress<P> {
    state: Mutex<State<P>>,
    deadline: Instant,
}

struct State<P> {
    published: P,
    /// The part being read now.
    reading: Option<ObservedPart>,
    phase: Phase,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    Done,
    /// Given up by the event's side: its record went out without what is still to come.
    Abandoned,
}

impl<P> Progress<P> {
    /// Says that `part` is read next; `false` when the budget is spent (or the reads were given
    /// up): the reads stop there.
    pub(crate) fn reading(&self, part: ObservedPart) -> bool {
        let mut state = self.lock();
        if state.phase == Phase::Abandoned || Instant::now() >= self.deadline {
            return false;
        }
        state.reading = Some(part);
        true
    }

    /// Makes what was read part of the record, even if the next read never answers.
    pub(crate) fn publish(&self, add: impl FnOnce(&mut P)) {
        let mut state = self.lock();
        if state.phase != Phase::Abandoned {
            add(&mut state.published);
            state.reading = None;
        }
    }

    /// When the reads must stop: those that can stop on their own (one process after another)
    /// do.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    fn lock(&self) -> MutexGuard<'_, State<P>> {
        // A panic in a read leaves what was published before it: still true.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What an event's reads left by their end or by the budget.
pub(crate) struct Finished<P> {
    pub(crate) published: P,
    /// Why the reads did not all finish, and the one under way then; `None` when they did.
    pub(crate) stopped: Option<(CutReason, Option<ObservedPart>)>,
}

impl<P> Finished<P> {
    /// The record's `cut`: `missing` are the parts the reads did not publish.
    pub(crate) fn cut(&self, budget: Duration, missing: Vec<ObservedPart>) -> Option<Cut> {
        if missing.is_empty() {
            return None;
        }
        let (reason, waiting_on) = self.stopped.unwrap_or((CutReason::NoAnswer, None));
        Some(Cut {
            reason,
            parts: missing,
            waiting_on,
            budget_ms: budget.as_millis() as u64,
        })
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The thread the reads run on, replaced when a read keeps it.
pub(crate) struct BoundedReads {
    budget: Duration,
    /// `None` until the first event, and after a read kept the thread.
    worker: Option<mpsc::Sender<Job>>,
    /// Threads waiting on a read given up, now.
    stuck: Arc<AtomicUsize>,
    /// Events whose reads were given up, since the start.
    given_up: u64,
}

impl BoundedReads {
    pub(crate) fn new(budget: Duration) -> Self {
        BoundedReads {
            budget,
            worker: None,
            stuck: Arc::new(AtomicUsize::new(0)),
            given_up: 0,
        }
    }

    pub(crate) fn budget(&self) -> Duration {
        self.budget
    }

    /// Events whose reads were given up after the budget.
    pub(crate) fn given_up(&self) -> u64 {
        self.given_up
    }

    /// Runs `read` off the runtime's threads and waits for it at most the budget; returns what
    /// it published by its end, or by the budget.
    pub(crate) async fn run<P, F>(&mut self, read: F) -> Finished<P>
    where
        P: Default + Send + 'static,
        F: FnOnce(&Progress<P>) + Send + 'static,
    {
        if self.stuck.load(Ordering::Acquire) >= MAX_STUCK_THREADS {
            return Finished {
                published: P::default(),
                stopped: Some((CutReason::StuckReads, None)),
            };
        }
        let progress = Arc::new(Progress {
            state: Mutex::new(State {
                published: P::default(),
                reading: None,
                phase: Phase::Running,
            }),
            deadline: Instant::now() + self.budget,
        });
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let job: Job = Box::new({
            let progress = Arc::clone(&progress);
            let stuck = Arc::clone(&self.stuck);
            move || {
                read(&progress);
                let mut state = progress.lock();
                match state.phase {
                    Phase::Running => state.phase = Phase::Done,
                    // It answered after all: the thread is free again, but another has taken
                    // its place; it ends.
                    Phase::Abandoned => {
                        stuck.fetch_sub(1, Ordering::AcqRel);
                    }
                    Phase::Done => {}
                }
                drop(state);
                let _ = done.send(());
            }
        });
        let sent = match &self.worker {
            Some(worker) => worker.send(job).map_err(|mpsc::SendError(job)| job),
            None => Err(job),
        };
        // No thread yet, or it is gone (a read panicked): start one.
        let started = match sent {
            Ok(()) => Ok(()),
            Err(job) => self.spawn(job),
        };
        if let Err(err) = started {
            log::error!("reads of /proc and cgroupfs: no thread to run them: {err}");
            return Finished {
                published: P::default(),
                stopped: Some((CutReason::NoAnswer, None)),
            };
        }
        let answered = tokio::time::timeout_at(progress.deadline.into(), finished).await;
        let mut state = progress.lock();
        let stopped = match (answered, state.phase) {
            (_, Phase::Done) => None,
            (Ok(_), _) => {
                // The thread ended without finishing: a read panicked, which is the agent's
                // bug, and was printed as such.
                self.worker = None;
                Some((CutReason::NoAnswer, state.reading))
            }
            (Err(_), _) => {
                state.phase = Phase::Abandoned;
                self.stuck.fetch_add(1, Ordering::AcqRel);
                self.given_up += 1;
                // Its thread is kept by the read; the next event's reads get a new one.
                self.worker = None;
                Some((CutReason::NoAnswer, state.reading))
            }
        };
        Finished {
            published: std::mem::take(&mut state.published),
            stopped,
        }
    }

    fn spawn(&mut self, first: Job) -> std::io::Result<()> {
        let (sender, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("oomtrace-reads".to_owned())
            .spawn(move || {
                first();
                // Until the event side lets go of it: after a read it gave up on, or at exit.
                for job in jobs {
                    job();
                }
            })?;
        self.worker = Some(sender);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A read that answers only when the test lets it.
    fn held() -> (mpsc::Sender<()>, Arc<Mutex<mpsc::Receiver<()>>>) {
        let (release, held) = mpsc::channel();
        (release, Arc::new(Mutex::new(held)))
    }

    #[derive(Default)]
    struct Parts {
        first: Option<u32>,
        second: Option<u32>,
    }

    fn missing(parts: &Parts) -> Vec<ObservedPart> {
        let mut missing = Vec::new();
        if parts.first.is_none() {
            missing.push(ObservedPart::Domain);
        }
        if parts.second.is_none() {
            missing.push(ObservedPart::SnapshotProcesses);
        }
        missing
    }

    const BUDGET: Duration = Duration::from_millis(200);

    #[tokio::test]
    async fn reads_that_answer_are_all_there() {
        let mut reads = BoundedReads::new(BUDGET);
        for round in 0..3 {
            let finished = reads
                .run(move |progress: &Progress<Parts>| {
                    assert!(progress.reading(ObservedPart::Domain));
                    progress.publish(|parts| parts.first = Some(round));
                    assert!(progress.reading(ObservedPart::SnapshotProcesses));
                    progress.publish(|parts| parts.second = Some(round + 1));
                })
                .await;
            assert!(finished.stopped.is_none(), "round {round}");
            assert_eq!(finished.published.first, Some(round));
            assert_eq!(finished.published.second, Some(round + 1));
            assert!(finished.cut(BUDGET, missing(&finished.published)).is_none());
        }
        assert_eq!(reads.given_up(), 0);
    }

    #[tokio::test]
    async fn a_read_that_never_answers_is_cut_at_the_budget_and_the_next_is_not_delayed() {
        let mut reads = BoundedReads::new(BUDGET);
        let (release, held_read) = held();
        let started = Instant::now();
        let finished = reads
            .run({
                let held_read = Arc::clone(&held_read);
                move |progress: &Progress<Parts>| {
                    progress.reading(ObservedPart::Domain);
                    progress.publish(|parts| parts.first = Some(7));
                    progress.reading(ObservedPart::SnapshotProcesses);
                    // Never answers while the test holds it.
                    let _ = held_read.lock().unwrap().recv();
                    progress.publish(|parts| parts.second = Some(8));
                }
            })
            .await;
        let took = started.elapsed();
        assert!(
            took >= BUDGET && took < BUDGET + Duration::from_millis(150),
            "the record waited {took:?} for a budget of {BUDGET:?}"
        );
        assert_eq!(finished.published.first, Some(7), "what was read is kept");
        assert_eq!(finished.published.second, None);
        let cut = finished
            .cut(BUDGET, missing(&finished.published))
            .expect("a cut record");
        assert_eq!(cut.reason, CutReason::NoAnswer);
        assert_eq!(cut.parts, [ObservedPart::SnapshotProcesses]);
        assert_eq!(cut.waiting_on, Some(ObservedPart::SnapshotProcesses));
        assert_eq!(cut.budget_ms, 200);
        assert_eq!(reads.given_up(), 1);
        assert_eq!(reads.stuck.load(Ordering::Acquire), 1);

        // The next event's reads run at once, on another thread.
        let started = Instant::now();
        let next = reads
            .run(|progress: &Progress<Parts>| {
                progress.reading(ObservedPart::Domain);
                progress.publish(|parts| parts.first = Some(1));
                progress.reading(ObservedPart::SnapshotProcesses);
                progress.publish(|parts| parts.second = Some(2));
            })
            .await;
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "the next record waited {:?}",
            started.elapsed()
        );
        assert!(next.stopped.is_none());
        assert_eq!(next.published.second, Some(2));

        // Once the stuck read answers, its thread is no longer counted, and what it read late
        // is not taken into a record already written.
        release.send(()).unwrap();
        until_none_stuck(&reads, "the answered read is still counted").await;
        assert_eq!(reads.given_up(), 1);
    }

    /// Waits (at most 5 s) until no read thread is counted as stuck; `still` says what failed.
    async fn until_none_stuck(reads: &BoundedReads, still: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while reads.stuck.load(Ordering::Acquire) != 0 {
            assert!(Instant::now() < deadline, "{still}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn past_the_cap_of_stuck_threads_nothing_is_read() {
        let mut reads = BoundedReads::new(Duration::from_millis(50));
        let (release, held_read) = held();
        for _ in 0..MAX_STUCK_THREADS {
            let held_read = Arc::clone(&held_read);
            let finished = reads
                .run(move |progress: &Progress<Parts>| {
                    progress.reading(ObservedPart::Domain);
                    let _ = held_read.lock().unwrap().recv();
                })
                .await;
            assert_eq!(
                finished.stopped,
                Some((CutReason::NoAnswer, Some(ObservedPart::Domain)))
            );
        }
        assert_eq!(reads.stuck.load(Ordering::Acquire), MAX_STUCK_THREADS);
        let ran = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let finished = reads
            .run({
                let ran = Arc::clone(&ran);
                move |_: &Progress<Parts>| {
                    ran.fetch_add(1, Ordering::AcqRel);
                }
            })
            .await;
        assert!(started.elapsed() < Duration::from_millis(20));
        assert_eq!(
            ran.load(Ordering::Acquire),
            0,
            "no read is started past the cap"
        );
        let cut = finished
            .cut(reads.budget(), missing(&finished.published))
            .expect("a cut record");
        assert_eq!(cut.reason, CutReason::StuckReads);
        assert_eq!(cut.waiting_on, None);
        assert_eq!(reads.given_up(), MAX_STUCK_THREADS as u64);
        // Each stuck thread answers in turn (they share the held read): reads start again.
        for _ in 0..MAX_STUCK_THREADS {
            release.send(()).unwrap();
        }
        until_none_stuck(&reads, "answered reads are still counted").await;
        let finished = reads
            .run(|progress: &Progress<Parts>| {
                progress.reading(ObservedPart::Domain);
                progress.publish(|parts| parts.first = Some(1));
                progress.publish(|parts| parts.second = Some(1));
            })
            .await;
        assert!(finished.stopped.is_none());
    }
}
