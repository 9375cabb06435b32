//! The records' ring buffer, read through tokio's `AsyncFd`: the agent sleeps in epoll until the
//! kernel has something, never in a polling loop.
//!
//! It is read on threads of their own ([`RecordDrain`]), which only copy records out: a burst
//! of kills leaves the kernel's ring as fast as it arrives, however long the agent then takes
//! over each kill, so the ring never has to hold a whole burst.
//!
//! Two readers, each pinned to a CPU of its own, wait on the ring, and whichever the kernel runs
//! first copies the records out. The kernel wakes a reader from the CPU that wrote the record,
//! which is the CPU the OOM killer runs on, and prefers to queue it there; that CPU then goes on
//! in the kernel without a chance to switch (it prints `Killed process …` to the console and
//! walks every process on the host for others sharing the victim's memory: 4–5 ms with 10,000
//! processes), and a reader queued behind it waits as long. Pinned to two CPUs, one reader is
//! always elsewhere.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;
use aya::maps::{Map, MapData, RingBuf};
use bytes::Bytes;
use tokio::io::{Interest, unix::AsyncFd};
use tokio::sync::{Mutex, mpsc, oneshot};

/// Records copied out of the ring but not yet decoded. Bounded: past this, the drain waits and
/// the kernel's ring absorbs the rest (and counts what it cannot hold). At most about 3.3 KiB a
/// record, so about 13 MiB when full, which only a burst of a thousand kills can do.
const QUEUE_RECORDS: usize = 4096;

/// Readers waiting on the ring, each on a CPU of its own: two, so that one is never the CPU
/// the OOM killer holds.
const READERS: usize = 2;

/// A record copied out of the ring, and when: CLOCK_MONOTONIC nanoseconds (the kernel's
/// `ktime`) at the wakeup that found it, so a kill's time can be split between the kernel's
/// wakeup of a reader and the hand-over to the capture side.
pub(crate) struct Drained {
    pub record: Bytes,
    pub at_ns: u64,
}

/// The ring, shared by its readers: one of them copies out at a time, so records keep their
/// order.
type SharedRing = Arc<Mutex<RingBuf<MapData>>>;

/// The ring's descriptor, watched by one reader; the ring itself outlives it.
struct RingFd(RawFd);

impl AsRawFd for RingFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// The ring buffer read on threads of their own into a bounded queue.
pub(crate) struct RecordDrain {
    queue: mpsc::Receiver<Drained>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl RecordDrain {
    /// Starts the readers. Start them after the capabilities are dropped: each thread inherits
    /// the current thread's sets.
    pub(crate) fn start(map: Map) -> anyhow::Result<Self> {
        let ring: SharedRing = Arc::new(Mutex::new(RingBuf::try_from(map)?));
        let cpus = reader_cpus(&allowed_cpus());
        let (sender, queue) = mpsc::channel(QUEUE_RECORDS);
        let mut drain = Self {
            queue,
            stops: Vec::new(),
            threads: Vec::new(),
        };
        let pinned: Vec<Option<usize>> = if cpus.len() >= 2 {
            cpus.iter().copied().map(Some).collect()
        } else {
            vec![None]
        };
        for (index, cpu) in pinned.iter().copied().enumerate() {
            let (stop, stopped) = oneshot::channel();
            let ring = Arc::clone(&ring);
            let sender = sender.clone();
            let thread = std::thread::Builder::new()
                .name(format!("oomtrace-ring{index}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        pin_to(cpu);
                    }
                    drain_thread(&ring, sender, stopped)
                })
                .context("starting a ring-buffer thread")?;
            drain.stops.push(stop);
            drain.threads.push(thread);
        }
        match pinned.as_slice() {
            [Some(first), Some(second)] => log::debug!(
                "ring buffer read on CPUs {first} and {second}: the OOM killer's CPU goes on \
                 without switching for milliseconds after a kill, the other reads at once"
            ),
            _ => log::debug!("ring buffer read by one thread: this process may run on one CPU"),
        }
        Ok(drain)
    }

    /// Waits for records, then moves what has arrived (one at least) into `out`. Fails once
    /// the threads have ended, saying why.
    pub(crate) async fn read(&mut self, out: &mut Vec<Drained>) -> anyhow::Result<()> {
        let Some(record) = self.queue.recv().await else {
            return Err(self.ended());
        };
        out.push(record);
        while out.len() < QUEUE_RECORDS {
            match self.queue.try_recv() {
                Ok(record) => out.push(record),
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Stops the threads after a last read of the ring, and moves every record still queued
    /// into `out`.
    pub(crate) async fn finish(&mut self, out: &mut Vec<Drained>) -> anyhow::Result<()> {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        while let Some(record) = self.queue.recv().await {
            out.push(record);
        }
        self.join()
    }

    /// Why the threads ended, once the queue has closed.
    fn ended(&mut self) -> anyhow::Error {
        self.join()
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the ring-buffer threads ended"))
    }

    fn join(&mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        for thread in self.threads.drain(..) {
            let ended = match thread.join() {
                Ok(ended) => ended,
                Err(_) => Err(anyhow::anyhow!("a ring-buffer thread panicked")),
            };
            result = result.and(ended);
        }
        result
    }
}

fn drain_thread(
    ring: &SharedRing,
    queue: mpsc::Sender<Drained>,
    mut stopped: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting a ring-buffer thread's runtime")?;
    runtime.block_on(async move {
        let fd = readable(RingFd(ring.lock().await.as_raw_fd()))?;
        let mut batch = Vec::new();
        loop {
            let stopping = tokio::select! {
                ready = fd.readable() => {
                    let mut guard = ready.context("reading the ring buffer")?;
                    guard.clear_ready();
                    false
                }
                _ = &mut stopped => true,
            };
            // One reader at a time copies out and queues, so records keep their order; the
            // other, woken by the same records, finds the ring empty. Whatever the kernel
            // already wrote goes out before the queue closes.
            let mut ring = ring.lock().await;
            drain(&mut ring, &mut batch);
            for record in batch.drain(..) {
                if queue.send(record).await.is_err() {
                    return Ok(());
                }
            }
            drop(ring);
            if stopping {
                return Ok(());
            }
        }
    })
}

fn drain(ring: &mut RingBuf<MapData>, out: &mut Vec<Drained>) {
    let at_ns = crate::clock::monotonic_ns();
    // Copy out so the kernel gets the space back at once, before decoding.
    while let Some(item) = ring.next() {
        out.push(Drained {
            record: Bytes::copy_from_slice(&item),
            at_ns,
        });
    }
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set, and sched_getaffinity fills at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// The CPUs the readers are pinned to: the first [`READERS`] allowed.
fn reader_cpus(allowed: &[usize]) -> Vec<usize> {
    allowed.iter().copied().take(READERS).collect()
}

/// Pins the calling thread to `cpu`; left unpinned if that is refused.
fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (it came from a cpu_set_t), `set` is valid.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size given; 0 is the calling thread.
    let pinned =
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if pinned != 0 {
        log::debug!(
            "a ring-buffer thread stays unpinned: CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Registers a ring buffer (ours, or aya-log's) with tokio for readability.
pub(crate) fn readable<T: AsRawFd>(ring: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `ring` owns its descriptor, or borrows one that outlives it, and keeps it open
    // until it is dropped, which happens only after the AsyncFd has deregistered it.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| std::io::Error::other(format!("registering a ring buffer: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_go_to_two_distinct_cpus_where_there_are_two() {
        assert_eq!(reader_cpus(&[0, 1, 2, 3]), [0, 1]);
        assert_eq!(reader_cpus(&[3, 7]), [3, 7]);
        assert_eq!(reader_cpus(&[5]), [5]);
        assert!(!allowed_cpus().is_empty(), "this process runs somewhere");
    }
}
