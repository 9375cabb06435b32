//! Early warning (`--warn-pressure`): a cgroup with a memory limit comes near it, said before
//! any kill. The recorder already samples every limited cgroup's usage and pressure, and
//! samples fast once memory runs short, so the warning costs one comparison per sample.
//!
//! A domain is warned of when its working set (usage less inactive file pages, which the kernel
//! reclaims before it kills: the kubelet's eviction signal) reaches a share of its limit, or
//! when its tasks stalled on memory for a share of the last second (cgroup v2's
//! `memory.pressure`). It is warned of once per approach: again only after it fell back below
//! the threshold by a margin, and never more than once per [`MIN_GAP`].

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use super::Stall;
use super::series::{Series, Timed};

/// How far back a growth rate is measured.
pub(crate) const GROWTH_SPAN: Duration = Duration::from_secs(10);
/// How far back the share of time stalled is measured.
pub(crate) const STALL_SPAN: Duration = Duration::from_secs(1);
/// Below the usage threshold by this many points re-arms a domain's warning.
pub(crate) const REARM_MARGIN_PERCENT: u8 = 5;
/// Between two warnings of one domain, at least: a restart loop warns once, not every cycle.
pub(crate) const MIN_GAP: Duration = Duration::from_secs(30);
/// Domains whose warning state is kept, at most (the recorder watches fewer).
const MAX_TRACKED: usize = 256;

/// A share, as `90%` or `90`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percent(pub u8);

impl FromStr for Percent {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let number = text.trim().trim_end_matches('%').trim();
        match number.parse::<u8>() {
            Ok(percent @ 1..=100) => Ok(Percent(percent)),
            _ => Err(format!("`{text}` is not a percentage from 1% to 100%")),
        }
    }
}

/// When to warn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Thresholds {
    /// Of the limit, by the working set.
    pub usage: Percent,
    /// Of the last second, during which some task in the cgroup stalled on memory.
    pub stall: Percent,
}

/// A domain near its limit, as the recorder saw it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PressureWarning {
    /// CLOCK_MONOTONIC nanoseconds of the sample that crossed.
    pub at_ns: u64,
    pub reason: Reason,
    pub thresholds: Thresholds,
    /// The limited cgroup.
    pub domain: String,
    pub limit_bytes: u64,
    pub usage_bytes: u64,
    /// Usage less inactive file pages, where the controller said.
    pub working_set_bytes: Option<u64>,
    /// The domain's own growth over the last [`GROWTH_SPAN`] or less.
    pub growth: Option<Growth>,
    /// Over the last [`STALL_SPAN`], where the cgroup has a `memory.pressure`.
    pub stall: Option<StallShare>,
    /// The member below the domain that grew fastest, when one grew.
    pub grower: Option<Grower>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    Usage,
    Stall,
}

/// Growth between two samples; negative when it shrank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Growth {
    pub bytes_per_second: i64,
    pub over_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct StallShare {
    pub some_percent: f64,
    pub full_percent: f64,
    pub over_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Grower {
    pub path: String,
    pub usage_bytes: u64,
    pub growth: Growth,
}

/// One domain as a sample found it: what [`Warner::check`] decides on.
pub(crate) struct DomainReading<'a> {
    pub path: &'a str,
    pub limit_bytes: u64,
    pub usage_bytes: u64,
    pub growth: Option<Growth>,
    pub stall: Option<StallShare>,
}

/// Which domains were warned of, and when.
#[derive(Debug)]
pub(crate) struct Warner {
    thresholds: Thresholds,
    states: HashMap<String, State>,
}

#[derive(Clone, Copy, Debug)]
struct State {
    armed: bool,
    warned_at_ns: u64,
}

impl Warner {
    pub(crate) fn new(thresholds: Thresholds) -> Self {
        Warner {
            thresholds,
            states: HashMap::new(),
        }
    }

    pub(crate) fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// Whether `reading` calls for a warning now. `working_set` is asked only when the usage
    /// alone crosses (it costs a read of `memory.stat`); it returns the working set in bytes.
    pub(crate) fn check(
        &mut self,
        reading: &DomainReading<'_>,
        now_ns: u64,
        working_set: impl FnOnce() -> Option<u64>,
    ) -> Option<(Reason, Option<u64>)> {
        let Thresholds { usage, stall } = self.thresholds;
        let share = |bytes: u64| bytes as f64 * 100.0 / reading.limit_bytes.max(1) as f64;
        let stalled = reading
            .stall
            .map_or(0.0, |stall_share| stall_share.some_percent);
        let state = self.states.get(reading.path).copied().unwrap_or(State {
            armed: true,
            warned_at_ns: 0,
        });
        let usage_share = share(reading.usage_bytes);
        if usage_share < f64::from(usage.0.saturating_sub(REARM_MARGIN_PERCENT))
            && stalled < f64::from(stall.0) / 2.0
        {
            // Well clear of it: the next approach is warned of.
            if !state.armed {
                self.states.insert(
                    reading.path.to_owned(),
                    State {
                        armed: true,
                        ..state
                    },
                );
            }
            return None;
        }
        let quiet = state.warned_at_ns != 0
            && now_ns.saturating_sub(state.warned_at_ns) < MIN_GAP.as_nanos() as u64;
        if !state.armed || quiet {
            return None;
        }
        let mut working_set_bytes = None;
        let reason = if usage_share >= f64::from(usage.0) {
            working_set_bytes = working_set();
            let working = working_set_bytes.unwrap_or(reading.usage_bytes);
            (share(working) >= f64::from(usage.0)).then_some(Reason::Usage)
        } else {
            None
        };
        let reason = reason.or((stalled >= f64::from(stall.0)).then_some(Reason::Stall))?;
        if self.states.len() >= MAX_TRACKED && !self.states.contains_key(reading.path) {
            // Forget the armed ones first: they hold nothing a warning needs.
            self.states.retain(|_, state| !state.armed);
            if self.states.len() >= MAX_TRACKED {
                self.states.clear();
            }
        }
        self.states.insert(
            reading.path.to_owned(),
            State {
                armed: false,
                warned_at_ns: now_ns,
            },
        );
        Some((reason, working_set_bytes))
    }
}

/// Growth of `usage` from the sample at or before `now_ns - GROWTH_SPAN` (or the oldest) to the
/// newest.
pub(crate) fn growth<T: Timed>(series: &Series<T>, usage: impl Fn(&T) -> u64) -> Option<Growth> {
    let (oldest, newest, mut over_ns) = ends(series, GROWTH_SPAN)?;
    // Where the span starts inside a flat stretch (only its ends are kept), the usage at its
    // start is the stretch's: the growth came after, within the span.
    if let Some(next) = series.after(oldest.at_ns())
        && usage(next) == usage(oldest)
    {
        over_ns = over_ns.min(GROWTH_SPAN.as_nanos() as u64);
    }
    let grown = usage(newest) as i128 - usage(oldest) as i128;
    Some(Growth {
        bytes_per_second: (grown * 1_000_000_000 / over_ns as i128) as i64,
        over_ms: over_ns / 1_000_000,
    })
}

/// The share of the last [`STALL_SPAN`] (or the longest span the series has, if shorter) that
/// tasks stalled, from cumulative `(some_us, full_us)` totals.
pub(crate) fn stall_share<T: Timed>(
    series: &Series<T>,
    totals: impl Fn(&T) -> (u64, u64),
) -> Option<StallShare> {
    let (oldest, newest, over_ns) = ends(series, STALL_SPAN)?;
    let ((some_now, full_now), (some_then, full_then)) = (totals(newest), totals(oldest));
    // The same share of an interval as a timeline's stalls give.
    let stall = Stall {
        offset_ms: 0,
        interval_us: over_ns / 1000,
        some_us: some_now.saturating_sub(some_then),
        full_us: full_now.saturating_sub(full_then),
    };
    Some(StallShare {
        some_percent: stall.percent(stall.some_us),
        full_percent: stall.percent(stall.full_us),
        over_ms: over_ns / 1_000_000,
    })
}

/// The sample at or before `span` ago (else the oldest), the newest, and the nanoseconds
/// between them; `None` for fewer than two samples.
fn ends<T: Timed>(series: &Series<T>, span: Duration) -> Option<(&T, &T, u64)> {
    let newest = series.last()?;
    let since = newest.at_ns().saturating_sub(span.as_nanos() as u64);
    let oldest = series.at_or_before(since)?;
    let over_ns = newest
        .at_ns()
        .checked_sub(oldest.at_ns())
        .filter(|&ns| ns > 0)?;
    Some((oldest, newest, over_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const SECOND: u64 = 1_000_000_000;
    const THRESHOLDS: Thresholds = Thresholds {
        usage: Percent(90),
        stall: Percent(10),
    };

    fn reading(usage_bytes: u64) -> DomainReading<'static> {
        DomainReading {
            path: "/shop",
            limit_bytes: 100 * MIB,
            usage_bytes,
            growth: None,
            stall: None,
        }
    }

    #[test]
    fn percentages_read_with_or_without_the_sign() {
        assert_eq!("90%".parse(), Ok(Percent(90)));
        assert_eq!(" 75 ".parse(), Ok(Percent(75)));
        for bad in ["0", "101%", "ninety", "-5", ""] {
            let err = bad.parse::<Percent>().unwrap_err();
            assert!(err.contains("percentage"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_domain_is_warned_of_once_per_approach() {
        let mut warner = Warner::new(THRESHOLDS);
        let no_stat = || None;
        assert_eq!(warner.check(&reading(80 * MIB), SECOND, no_stat), None);
        assert_eq!(
            warner.check(&reading(91 * MIB), 2 * SECOND, no_stat),
            Some((Reason::Usage, None))
        );
        // Still there, or a little lower: nothing new to say.
        assert_eq!(warner.check(&reading(95 * MIB), 3 * SECOND, no_stat), None);
        assert_eq!(warner.check(&reading(87 * MIB), 4 * SECOND, no_stat), None);
        assert_eq!(warner.check(&reading(92 * MIB), 5 * SECOND, no_stat), None);
        // Fell back (a kill freed it), came back: a new approach, once the gap has passed.
        assert_eq!(warner.check(&reading(10 * MIB), 6 * SECOND, no_stat), None);
        assert_eq!(warner.check(&reading(93 * MIB), 7 * SECOND, no_stat), None);
        assert_eq!(warner.check(&reading(10 * MIB), 40 * SECOND, no_stat), None);
        assert_eq!(
            warner.check(&reading(93 * MIB), 41 * SECOND, no_stat),
            Some((Reason::Usage, None))
        );
    }

    #[test]
    fn page_cache_the_kernel_would_reclaim_is_no_reason() {
        let mut warner = Warner::new(THRESHOLDS);
        // Full of cache: 95 MiB used, a working set of 40.
        assert_eq!(
            warner.check(&reading(95 * MIB), SECOND, || Some(40 * MIB)),
            None
        );
        // Then the working set itself climbs: warned, with the figure that decided.
        assert_eq!(
            warner.check(&reading(95 * MIB), 2 * SECOND, || Some(91 * MIB)),
            Some((Reason::Usage, Some(91 * MIB)))
        );
    }

    #[test]
    fn stalls_warn_below_the_usage_threshold() {
        let mut warner = Warner::new(THRESHOLDS);
        let stalled = |some_percent| DomainReading {
            stall: Some(StallShare {
                some_percent,
                full_percent: 0.0,
                over_ms: 1000,
            }),
            ..reading(60 * MIB)
        };
        assert_eq!(warner.check(&stalled(4.0), SECOND, || None), None);
        assert_eq!(
            warner.check(&stalled(25.0), 2 * SECOND, || None),
            Some((Reason::Stall, None))
        );
        assert_eq!(warner.check(&stalled(30.0), 3 * SECOND, || None), None);
    }

    #[derive(Clone, Copy)]
    struct Usage(u64, u64);

    impl Timed for Usage {
        fn at_ns(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn growth_is_over_the_last_ten_seconds_or_what_there_is() {
        let window = Duration::from_secs(60);
        let mut series = Series::default();
        assert_eq!(growth(&series, |u: &Usage| u.1), None);
        series.push(Usage(SECOND, 10 * MIB), window);
        assert_eq!(
            growth(&series, |u: &Usage| u.1),
            None,
            "one sample is no rate"
        );
        series.push(Usage(3 * SECOND, 30 * MIB), window);
        assert_eq!(
            growth(&series, |u: &Usage| u.1),
            Some(Growth {
                bytes_per_second: 10 * MIB as i64,
                over_ms: 2000
            })
        );
        for second in 4..=30 {
            series.push(Usage(second * SECOND, second * 2 * MIB), window);
        }
        let grown = growth(&series, |u: &Usage| u.1).expect("a rate");
        assert_eq!(grown.over_ms, 10_000);
        assert_eq!(grown.bytes_per_second, 2 * MIB as i64);
    }

    #[test]
    fn growth_after_a_long_flat_stretch_is_over_the_span() {
        let window = Duration::from_secs(60);
        let mut series = Series::default();
        for second in 0..=50 {
            series.push_merging(Usage(second * SECOND, 5 * MIB), window, |a, b| a.1 == b.1);
        }
        series.push_merging(Usage(55 * SECOND, 25 * MIB), window, |a, b| a.1 == b.1);
        assert_eq!(series.len(), 3, "the stretch's two ends and the new sample");
        assert_eq!(
            growth(&series, |u: &Usage| u.1),
            Some(Growth {
                bytes_per_second: 2 * MIB as i64,
                over_ms: 10_000
            })
        );
    }

    #[test]
    fn stall_shares_are_of_the_last_second() {
        let window = Duration::from_secs(60);
        let mut series = Series::default();
        // Cumulative microseconds: 300 ms of the last second stalled, 100 ms of it fully.
        for (at_ms, some_us, full_us) in [(0, 0, 0), (500, 0, 0), (1500, 300_000, 100_000)] {
            series.push(Usage(at_ms * 1_000_000, some_us << 32 | full_us), window);
        }
        let share = stall_share(&series, |u: &Usage| (u.1 >> 32, u.1 & 0xffff_ffff));
        assert_eq!(
            share,
            Some(StallShare {
                some_percent: 30.0,
                full_percent: 10.0,
                over_ms: 1000
            })
        );
    }
}
