//! The records' ring buffer, read through tokio's `AsyncFd`: the agent sleeps in epoll until the
//! kernel has something, never in a polling loop.

use std::os::fd::AsRawFd;

use aya::maps::{Map, MapData, RingBuf};
use bytes::Bytes;
use tokio::io::{Interest, unix::AsyncFd};

pub struct RecordReader(AsyncFd<RingBuf<MapData>>);

impl RecordReader {
    pub fn new(map: Map) -> anyhow::Result<Self> {
        let ring = RingBuf::try_from(map)?;
        Ok(Self(readable(ring)?))
    }

    /// Waits until records are available, then moves all of them into `out`.
    pub async fn read(&mut self, out: &mut Vec<Bytes>) -> std::io::Result<()> {
        let mut guard = self.0.readable_mut().await?;
        drain(guard.get_inner_mut(), out);
        guard.clear_ready();
        Ok(())
    }

    /// Moves whatever is there now into `out`, without waiting.
    pub fn read_now(&mut self, out: &mut Vec<Bytes>) {
        drain(self.0.get_mut(), out);
    }
}

fn drain(ring: &mut RingBuf<MapData>, out: &mut Vec<Bytes>) {
    // Copy out so the kernel gets the space back at once, before decoding.
    while let Some(item) = ring.next() {
        out.push(Bytes::copy_from_slice(&item));
    }
}

/// Registers a ring buffer (ours, or aya-log's) with tokio for readability.
pub fn readable<T: AsRawFd>(ring: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `ring` owns its descriptor and keeps it open until it is dropped, which happens
    // only after the AsyncFd has deregistered it.
    unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| std::io::Error::other(format!("registering a ring buffer: {err}")))
}
