//! What the recorder keeps per domain (pressure stalls, limit events) and per cgroup (usage),
//! and how each is sampled and read back relative to a kill.

use std::fs::File;
use std::time::Duration;

use super::files::Reread;
use super::psi::{self, Totals};
use super::query::offset_ms;
use super::series::{Series, Timed};
use super::{EventsAt, Pressure, Stall};
use crate::observe::cgroupfs::CgroupVersion;

pub(super) struct Domain {
    pub(super) path: String,
    pub(super) limit_bytes: u64,
    pub(super) members: Vec<String>,
    /// Whether it is in the current plan; a retired domain keeps only its series.
    pub(super) active: bool,
    pub(super) pressure: Option<PressureFile>,
    pub(super) trigger: Option<File>,
    pub(super) events: Option<EventsFile>,
    /// v1: the eventfd its usage thresholds signal.
    pub(super) thresholds: Option<File>,
}

pub(super) struct PressureFile {
    pub(super) source: String,
    pub(super) file: Reread,
    pub(super) series: Series<PressureSample>,
}

pub(super) struct EventsFile {
    /// v2 `memory.events`, also polled for its notifications; v1 `memory.failcnt`.
    pub(super) file: Option<Reread>,
    pub(super) version: CgroupVersion,
    pub(super) series: Series<EventsSample>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct UsageSample {
    pub(super) at_ns: u64,
    pub(super) usage_bytes: u64,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct PressureSample {
    pub(super) at_ns: u64,
    pub(super) totals: Totals,
}

/// Cumulative counters.
#[derive(Clone, Copy, Debug)]
pub(super) struct EventsSample {
    pub(super) at_ns: u64,
    pub(super) high: u64,
    pub(super) max: u64,
}

impl Timed for UsageSample {
    fn at_ns(&self) -> u64 {
        self.at_ns
    }
}

impl Timed for PressureSample {
    fn at_ns(&self) -> u64 {
        self.at_ns
    }
}

impl Timed for EventsSample {
    fn at_ns(&self) -> u64 {
        self.at_ns
    }
}

impl Domain {
    pub(super) fn last_sample_ns(&self) -> u64 {
        self.pressure
            .as_ref()
            .and_then(|p| p.series.last())
            .map_or(0, |sample| sample.at_ns)
    }
}

impl PressureFile {
    /// False once the file is gone.
    pub(super) fn sample(&mut self, now_ns: u64, window: Duration) -> bool {
        match self.file.read(psi::parse) {
            Ok(Some(totals)) => {
                self.series.push(
                    PressureSample {
                        at_ns: now_ns,
                        totals,
                    },
                    window,
                );
                true
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    pub(super) fn intervals(&self, kill_ns: u64) -> Pressure {
        let samples: Vec<&PressureSample> = self.series.until(kill_ns).collect();
        Pressure {
            source: self.source.clone(),
            intervals: samples
                .windows(2)
                .map(|pair| Stall {
                    offset_ms: offset_ms(pair[1].at_ns, kill_ns),
                    interval_us: (pair[1].at_ns - pair[0].at_ns) / 1000,
                    some_us: pair[1]
                        .totals
                        .some_us
                        .saturating_sub(pair[0].totals.some_us),
                    full_us: pair[1]
                        .totals
                        .full_us
                        .saturating_sub(pair[0].totals.full_us),
                })
                // Intervals without a stall say nothing a reader needs.
                .filter(|stall| stall.some_us > 0 || stall.full_us > 0)
                .collect(),
        }
    }
}

impl EventsFile {
    /// False once the file is gone.
    pub(super) fn sample(&mut self, now_ns: u64, window: Duration) -> bool {
        let Some(file) = &self.file else {
            return true;
        };
        let read = match self.version {
            CgroupVersion::V1 => file.number().map(|failcnt| {
                failcnt.map(|max| EventsSample {
                    at_ns: now_ns,
                    high: 0,
                    max,
                })
            }),
            CgroupVersion::V2 => file.read(|text| {
                let counter = |name: &str| {
                    text.lines()
                        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                        .and_then(|value| value.trim().parse().ok())
                };
                Some(EventsSample {
                    at_ns: now_ns,
                    high: counter("high")?,
                    max: counter("max")?,
                })
            }),
        };
        match read {
            Ok(Some(sample)) => {
                self.series.push(sample, window);
                true
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// The intervals in which the counters moved.
    pub(super) fn deltas(&self, kill_ns: u64) -> Vec<EventsAt> {
        let samples: Vec<&EventsSample> = self.series.until(kill_ns).collect();
        samples
            .windows(2)
            .map(|pair| EventsAt {
                offset_ms: offset_ms(pair[1].at_ns, kill_ns),
                high: pair[1].high.saturating_sub(pair[0].high),
                max: pair[1].max.saturating_sub(pair[0].max),
            })
            .filter(|delta| delta.high > 0 || delta.max > 0)
            .collect()
    }
}
