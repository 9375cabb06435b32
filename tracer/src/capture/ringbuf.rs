//! The records' ring buffer, read through tokio's `AsyncFd`: the agent sleeps in epoll until the
//! kernel has something, never in a polling loop.
//!
//! It is read on a thread of its own ([`RecordDrain`]), which only copies records out: a burst
//! of kills leaves the kernel's ring as fast as it arrives, however long the agent then takes
//! over each kill, so the ring never has to hold a whole burst.

use std::os::fd::AsRawFd;
use std::thread::JoinHandle;

use anyhow::Context as _;
use aya::maps::{Map, MapData, RingBuf};
use bytes::Bytes;
use tokio::io::{Interest, unix::AsyncFd};
use tokio::sync::{mpsc, oneshot};

/// Records copied out of the ring but not yet decoded. Bounded: past this, the drain waits and
/// the kernel's ring absorbs the rest (and counts what it cannot hold). At most about 3.3 KiB a
/// record, so about 13 MiB when full, which only a burst of a thousand kills can do.
const QUEUE_RECORDS: usize = 4096;

/// A record copied out of the ring, and when: CLOCK_MONOTONIC nanoseconds (the kernel's
/// `ktime`) at the wakeup that found it, so a kill's time can be split between the kernel's
/// wakeup of this thread and the hand-over to the capture side.
pub struct Drained {
    pub record: Bytes,
    pub at_ns: u64,
}

struct RecordReader(AsyncFd<RingBuf<MapData>>);

impl RecordReader {
    pub fn new(map: Map) -> anyhow::Result<Self> {
        let ring = RingBuf::try_from(map)?;
        Ok(Self(readable(ring)?))
    }

    /// Waits until records are available, then moves all of them into `out`.
    pub async fn read(&mut self, out: &mut Vec<Drained>) -> std::io::Result<()> {
        let mut guard = self.0.readable_mut().await?;
        drain(guard.get_inner_mut(), out);
        guard.clear_ready();
        Ok(())
    }

    /// Moves whatever is there now into `out`, without waiting.
    pub fn read_now(&mut self, out: &mut Vec<Drained>) {
        drain(self.0.get_mut(), out);
    }
}

/// The ring buffer read on its own thread into a bounded queue.
pub struct RecordDrain {
    queue: mpsc::Receiver<Drained>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RecordDrain {
    /// Starts the thread. Start it after the capabilities are dropped: it inherits the
    /// current thread's sets.
    pub fn start(map: Map) -> anyhow::Result<Self> {
        let (sender, queue) = mpsc::channel(QUEUE_RECORDS);
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("oomtrace-ring".to_owned())
            .spawn(move || drain_thread(map, sender, stopped))
            .context("starting the ring-buffer thread")?;
        Ok(Self {
            queue,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Waits for records, then moves what has arrived (one at least) into `out`. Fails once
    /// the thread has ended, saying why.
    pub async fn read(&mut self, out: &mut Vec<Drained>) -> anyhow::Result<()> {
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

    /// Stops the thread after a last read of the ring, and moves every record still queued
    /// into `out`.
    pub async fn finish(&mut self, out: &mut Vec<Drained>) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        while let Some(record) = self.queue.recv().await {
            out.push(record);
        }
        self.join()
    }

    /// Why the thread ended, once its queue has closed.
    fn ended(&mut self) -> anyhow::Error {
        self.join()
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the ring-buffer thread ended"))
    }

    fn join(&mut self) -> anyhow::Result<()> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => anyhow::bail!("the ring-buffer thread panicked"),
            None => Ok(()),
        }
    }
}

fn drain_thread(
    map: Map,
    queue: mpsc::Sender<Drained>,
    mut stopped: oneshot::Receiver<()>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .context("starting the ring-buffer thread's runtime")?;
    runtime.block_on(async move {
        let mut reader = RecordReader::new(map)?;
        let mut batch = Vec::new();
        loop {
            let stopping = tokio::select! {
                read = reader.read(&mut batch) => {
                    read.context("reading the ring buffer")?;
                    false
                }
                _ = &mut stopped => {
                    // Whatever the kernel already wrote goes out before the queue closes.
                    reader.read_now(&mut batch);
                    true
                }
            };
            for record in batch.drain(..) {
                if queue.send(record).await.is_err() {
                    return Ok(());
                }
            }
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

/// Registers a ring buffer (ours, or aya-log's) with tokio for readability.
pub fn readable<T: AsRawFd>(ring: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `ring` owns its descriptor and keeps it open until it is dropped, which happens
    // only after the AsyncFd has deregistered it.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| std::io::Error::other(format!("registering a ring buffer: {err}")))
}
