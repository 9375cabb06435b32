//! The memory timeline: what memory looked like in the minute before a kill. The cause of an
//! OOM kill is usually growth ("a build job spiked"), which the snapshot taken at the kill
//! cannot show. A recorder samples, before any kill happens, every cgroup a kill's domain may
//! be: each cgroup with a memory limit with its biggest members, and the host's biggest
//! entries; usage of each, the domains' pressure stalls and limit events. Slowly (once a
//! second) while nothing happens; a domain fast (ten a second) once the kernel says it runs
//! short: a pressure trigger, a usage threshold near its limit, a limit event, or fast growth.
//! A kill takes the part of the recording that concerns its domain.
//!
//! - [`tree`] keeps the hierarchy (walked once, then followed with inotify) and [`plan`]
//!   decides from it what to sample, within `--timeline-max-cgroups`;
//! - the recorder's thread ([`recorder`]) reads the files ([`sampler`]) and adds what it read
//!   to the [`recording`], which a kill asks ([`query`]).

mod arming;
mod files;
mod mechanisms;
mod plan;
pub(crate) mod psi;
mod query;
mod recorder;
mod recording;
mod sampler;
mod samples;
pub(crate) mod series;
mod tree;
pub(crate) mod warning;

use std::str::FromStr;
use std::time::Duration;

pub(crate) use mechanisms::mechanisms;
pub(crate) use recorder::{Prepared, Recorder, Warnings};
pub(crate) use sampler::Coverage;

/// The longest window `--timeline` takes: the recorder's memory grows with it.
pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(600);

/// `--timeline-max-cgroups`: cgroups sampled at most. A node's pods and containers, or a Docker
/// host's hundreds of containers, fit well; the recorder's memory grows linearly up to it.
pub(crate) const DEFAULT_MAX_CGROUPS: usize = 4096;

/// Cgroups no longer sampled (removed, or out of the plan) are kept for a window, for kills
/// reported late, up to this share of the bound (or 64).
pub(crate) const MAX_RETIRED_SHARE: usize = 8;

/// `--timeline`: how far back before a kill the recording goes; `0` turns the recorder off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window(pub Duration);

impl FromStr for Window {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.trim() == "0" {
            return Ok(Window(Duration::ZERO));
        }
        let window: Duration = text.parse::<crate::units::HumanDuration>()?.into();
        if window > MAX_WINDOW {
            return Err(format!(
                "`{text}` is longer than the {} min the recorder keeps",
                MAX_WINDOW.as_secs() / 60
            ));
        }
        Ok(Window(window))
    }
}

/// The recording of one domain over the window before a kill. Offsets are milliseconds
/// relative to the kill's capture time: negative, before it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Timeline {
    pub window: Duration,
    pub pressure: Option<Pressure>,
    /// The domain itself first (when it is a cgroup), then its biggest members.
    pub cgroups: Vec<CgroupTimeline>,
    /// Cgroups of the domain the recorder has no samples of, and why; the domain itself
    /// always, when it has none.
    pub not_covered: Vec<(String, NotCovered)>,
}

/// Why the recorder has no samples of a cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum NotCovered {
    /// It samples at most `max` cgroups (`--timeline-max-cgroups`), the fullest limits first.
    CgroupBound { max: usize },
    /// The hierarchy has more directories, or deeper ones, than the recorder walks.
    WalkBound,
    /// The agent had no file descriptor left (its RLIMIT_NOFILE).
    Descriptors,
    /// Its usage file could not be opened.
    Unreadable(String),
    /// Not seen before the kill: made, or given its limit, within the last moment.
    NotSeenYet,
}

impl NotCovered {
    /// In words, for the log and the record.
    pub(crate) fn describe(&self) -> String {
        match self {
            NotCovered::CgroupBound { max } => format!(
                "the recorder samples at most {max} cgroups (--timeline-max-cgroups), the \
                 fullest limits first"
            ),
            NotCovered::WalkBound => format!(
                "the hierarchy has more cgroups, or deeper ones (past {} levels), than the \
                 recorder walks",
                tree::MAX_DEPTH
            ),
            NotCovered::Descriptors => {
                "the agent had no file descriptor left (raise its RLIMIT_NOFILE)".to_owned()
            }
            NotCovered::Unreadable(err) => format!("its usage could not be read: {err}"),
            NotCovered::NotSeenYet => {
                "it was made, or given its limit, too shortly before the kill to be sampled"
                    .to_owned()
            }
        }
    }
}

/// Memory stalls between consecutive samples.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pressure {
    /// `/proc/pressure/memory`, or the cgroup whose `memory.pressure` it is.
    pub source: String,
    pub intervals: Vec<Stall>,
}

/// One interval, ending at `offset_ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stall {
    pub offset_ms: i64,
    pub interval_us: u64,
    /// Time during which some task stalled on memory.
    pub some_us: u64,
    /// Time during which all non-idle tasks stalled at once.
    pub full_us: u64,
}

impl Stall {
    /// A stall time as a percentage of the interval, to a tenth.
    pub(crate) fn percent(&self, stalled_us: u64) -> f64 {
        if self.interval_us == 0 {
            return 0.0;
        }
        let percent = stalled_us as f64 * 100.0 / self.interval_us as f64;
        (percent.min(100.0) * 10.0).round() / 10.0
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CgroupTimeline {
    pub path: String,
    pub limit_bytes: Option<u64>,
    pub samples: Vec<UsageAt>,
    /// The domain's limit events between samples, where any happened: v2 `memory.events`
    /// `high` and `max`, v1 `memory.failcnt` (as `max`).
    pub events: Vec<EventsAt>,
    /// The domain's memory by kind, where it was read ([`sampler`] says when).
    pub composition: Vec<CompositionAt>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct UsageAt {
    pub offset_ms: i64,
    pub usage_bytes: u64,
}

/// A domain's memory by kind at one time, from its `memory.stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CompositionAt {
    pub offset_ms: i64,
    pub parts: Parts,
}

/// The kinds of memory a composition sample tells apart: what the lead-up compares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Parts {
    /// Anonymous memory (v1 `rss`, v2 `anon`).
    pub anon_bytes: u64,
    /// The page cache without shared memory (v1 `cache` less `shmem`, v2 `file` less `shmem`).
    pub file_bytes: u64,
    /// tmpfs, `/dev/shm`, memfd, SysV and shared anonymous memory.
    pub shmem_bytes: u64,
    /// The kernel's own memory charged to the domain (v2 `kernel`, or its parts, and `sock`;
    /// v1 `memory.kmem.usage_in_bytes`); `None` where the kernel does not say.
    pub kernel_bytes: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EventsAt {
    pub offset_ms: i64,
    pub high: u64,
    pub max: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_a_duration_or_zero() {
        assert_eq!("60s".parse(), Ok(Window(Duration::from_secs(60))));
        assert_eq!("2m".parse(), Ok(Window(Duration::from_secs(120))));
        assert_eq!("0".parse(), Ok(Window(Duration::ZERO)));
        assert!("11m".parse::<Window>().is_err());
        assert!("soon".parse::<Window>().is_err());
    }

    #[test]
    fn stall_percentages_are_of_the_interval() {
        let stall = Stall {
            offset_ms: -100,
            interval_us: 1_000_000,
            some_us: 123_456,
            full_us: 2_000_000,
        };
        assert_eq!(stall.percent(stall.some_us), 12.3);
        // Rounding between the kernel's clocks never makes it more than all of the time.
        assert_eq!(stall.percent(stall.full_us), 100.0);
        assert_eq!(Stall::default().percent(5), 0.0);
    }
}
