//! Where an event's time goes between its capture in the kernel and its output: wake (until the
//! ring-buffer thread, woken by the kernel, copies the record out), handover (that thread to the
//! capture side), decode, join, the `/proc` reads made right after the join, the queue to the
//! output side, observe, attribute, explain, history commit and write.
//! Logged per OOM kill at debug level under the `oomtrace::stages` target, for `cargo xtask
//! bench`; off, it costs a few clock reads per event.

use std::fmt::Write as _;

pub(crate) const LOG_TARGET: &str = "oomtrace::stages";

/// The spans of one event, each measured from the end of the one before.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stages {
    /// When the last span ended, CLOCK_MONOTONIC nanoseconds (the kernel's `ktime`).
    last_ns: u64,
    spans: Vec<(&'static str, u64)>,
}

impl Stages {
    /// Starts at `ktime_ns`, the kernel's capture time (or any earlier moment on its clock).
    pub(crate) fn since(ktime_ns: u64) -> Self {
        Stages {
            last_ns: ktime_ns,
            spans: Vec::with_capacity(11),
        }
    }

    /// Ends the span `name` now.
    pub(crate) fn mark(&mut self, name: &'static str) {
        self.mark_at(name, crate::clock::monotonic_ns());
    }

    pub(crate) fn mark_at(&mut self, name: &'static str, now_ns: u64) {
        self.spans.push((name, now_ns.saturating_sub(self.last_ns)));
        self.last_ns = self.last_ns.max(now_ns);
    }

    /// `read=812us decode=3us … total=1662us`.
    pub(crate) fn describe(&self) -> String {
        let mut text = String::new();
        for (name, ns) in &self.spans {
            let _ = write!(text, "{name}={}us ", ns / 1000);
        }
        let total: u64 = self.spans.iter().map(|(_, ns)| ns).sum();
        let _ = write!(text, "total={}us", total / 1000);
        text
    }

    pub(crate) fn enabled() -> bool {
        log::log_enabled!(target: LOG_TARGET, log::Level::Debug)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_span_runs_from_the_end_of_the_one_before() {
        let mut stages = Stages::since(1_000_000);
        stages.mark_at("read", 1_800_000);
        stages.mark_at("decode", 1_803_000);
        // A clock read that comes out earlier (another CPU) is a zero span, not a wrap.
        stages.mark_at("join", 1_802_000);
        stages.mark_at("write", 2_000_000);
        assert_eq!(
            stages.describe(),
            "read=800us decode=3us join=0us write=197us total=1000us"
        );
    }
}
