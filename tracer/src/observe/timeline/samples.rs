//! What the recorder keeps: usage per cgroup, pressure stalls and limit events per domain, each
//! a series of samples, and how each is read back relative to a kill. A sample equal to the two
//! before it only moves the end of their flat stretch, so a steady cgroup holds two samples.
//!
//! A sample is one kind of reading at one time; a new kind of reading (a cgroup's memory
//! composition, say) is a new sample type here, a series of it where it belongs, and a field
//! of [`super::sampler::Reading`].

use std::time::Duration;

use super::psi::Totals;
use super::query::offset_ms;
use super::series::{Series, Timed};
use super::{CompositionAt, EventsAt, Parts, Pressure, Stall};
use crate::observe::cgroupfs::CgroupVersion;
use crate::observe::composition::stat_parts;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct UsageSample {
    pub(super) at_ns: u64,
    pub(super) usage_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PressureSample {
    pub(super) at_ns: u64,
    pub(super) totals: Totals,
}

/// Cumulative counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct EventsSample {
    pub(super) at_ns: u64,
    pub(super) high: u64,
    pub(super) max: u64,
}

/// A domain's memory by kind, from its `memory.stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct CompositionSample {
    pub(super) at_ns: u64,
    pub(super) parts: Parts,
}

impl Timed for CompositionSample {
    fn at_ns(&self) -> u64 {
        self.at_ns
    }
}

impl CompositionSample {
    pub(super) fn push(series: &mut Series<Self>, sample: Self, window: Duration) {
        series.push_merging(sample, window, |a, b| a.parts == b.parts);
    }

    /// The parts of a `memory.stat` (v1: `rss`, `cache`, `shmem`, with `kmem`, v1's
    /// `memory.kmem.usage_in_bytes`, for the kernel's; v2: `anon`, `file`, `shmem`, `kernel` or
    /// its parts, and `sock`), as the composition at a kill reads them.
    pub(super) fn parse(text: &str, version: CgroupVersion, kmem: Option<u64>) -> Option<Parts> {
        let stats: Vec<(String, u64)> = text
            .lines()
            .filter_map(|line| {
                let (key, value) = line.split_once(' ')?;
                Some((key.to_owned(), value.trim().parse().ok()?))
            })
            .collect();
        let parts = stat_parts(&stats, kmem.filter(|_| version == CgroupVersion::V1));
        Some(Parts {
            anon_bytes: parts.anon?,
            file_bytes: parts.file?,
            shmem_bytes: parts.shmem.unwrap_or(0),
            kernel_bytes: parts.kernel,
        })
    }

    /// The samples up to the kill, offsets relative to it; the last one from before the window
    /// stands for its start (the domain's memory was read again only once usage moved).
    pub(super) fn until(series: &Series<Self>, kill_ns: u64, window_ms: i64) -> Vec<CompositionAt> {
        let mut samples: Vec<CompositionAt> = series
            .until(kill_ns)
            .map(|sample| CompositionAt {
                offset_ms: offset_ms(sample.at_ns, kill_ns),
                parts: sample.parts,
            })
            .collect();
        let before = samples
            .iter()
            .take_while(|sample| sample.offset_ms <= -window_ms)
            .count();
        if before > 0 {
            samples.drain(..before - 1);
            samples[0].offset_ms = samples[0].offset_ms.max(-window_ms);
        }
        samples
    }
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

impl UsageSample {
    pub(super) fn push(series: &mut Series<Self>, sample: Self, window: Duration) {
        series.push_merging(sample, window, |a, b| a.usage_bytes == b.usage_bytes);
    }
}

/// Memory stalls of a domain (its `memory.pressure`), or of the host.
pub(super) struct PressureSeries {
    /// `/proc/pressure/memory`, or the cgroup whose `memory.pressure` it is.
    pub(super) source: String,
    pub(super) series: Series<PressureSample>,
}

impl PressureSeries {
    pub(super) fn new(source: String) -> Self {
        PressureSeries {
            source,
            series: Series::default(),
        }
    }

    pub(super) fn push(&mut self, sample: PressureSample, window: Duration) {
        self.series
            .push_merging(sample, window, |a, b| a.totals == b.totals);
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

impl EventsSample {
    pub(super) fn push(series: &mut Series<Self>, sample: Self, window: Duration) {
        series.push_merging(sample, window, |a, b| (a.high, a.max) == (b.high, b.max));
    }

    /// v2 `memory.events`: its `high` and `max` counters.
    pub(super) fn parse_v2(text: &str) -> Option<(u64, u64)> {
        let counter = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|value| value.trim().parse().ok())
        };
        Some((counter("high")?, counter("max")?))
    }

    /// The intervals in which the counters moved.
    pub(super) fn deltas(series: &Series<Self>, kill_ns: u64) -> Vec<EventsAt> {
        let samples: Vec<&EventsSample> = series.until(kill_ns).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn a_steady_cgroup_holds_the_ends_of_its_flat_stretch() {
        let mut series = Series::default();
        for (second, usage_bytes) in [(0, 5), (1, 5), (2, 5), (3, 5), (4, 7), (5, 7), (6, 7)] {
            let sample = UsageSample {
                at_ns: second * 1000 * MS,
                usage_bytes,
            };
            UsageSample::push(&mut series, sample, WINDOW);
        }
        let kept: Vec<(u64, u64)> = series
            .until(u64::MAX)
            .map(|sample| (sample.at_ns / 1000 / MS, sample.usage_bytes))
            .collect();
        assert_eq!(kept, [(0, 5), (3, 5), (4, 7), (6, 7)]);
    }

    #[test]
    fn stalls_are_the_growth_between_samples_where_there_was_any() {
        let mut pressure = PressureSeries::new("/pod".to_owned());
        for (ms, some_us) in [
            (0, 100),
            (1000, 100),
            (2000, 100),
            (2100, 40_100),
            (3000, 40_100),
        ] {
            let totals = Totals {
                some_us,
                full_us: 0,
            };
            pressure.push(
                PressureSample {
                    at_ns: ms * MS,
                    totals,
                },
                WINDOW,
            );
        }
        let intervals = pressure.intervals(3000 * MS).intervals;
        assert_eq!(
            intervals,
            [Stall {
                offset_ms: -900,
                interval_us: 100_000,
                some_us: 40_000,
                full_us: 0
            }]
        );
    }

    /// A v2 `memory.stat` of 6.x, shortened.
    const STAT_V2: &str = "anon 20971520\nfile 109051904\nkernel 2097152\nkernel_stack 65536\n\
        pagetables 131072\nsec_pagetables 0\npercpu 0\nsock 4096\nvmalloc 0\nshmem 104857600\n\
        file_mapped 0\nfile_dirty 0\nslab_reclaimable 1000000\nslab_unreclaimable 800000\n";
    /// A v1 `memory.stat`, shortened: the cgroup's own, then the hierarchy's totals.
    const STAT_V1: &str = "cache 4096\nrss 4096\nshmem 0\nmapped_file 0\n\
        total_cache 109051904\ntotal_rss 20971520\ntotal_shmem 104857600\n\
        total_mapped_file 8192\ntotal_swap 0\n";

    #[test]
    fn a_memory_stat_is_read_in_either_versions_keys() {
        const MIB: u64 = 1 << 20;
        assert_eq!(
            CompositionSample::parse(STAT_V2, CgroupVersion::V2, None),
            Some(Parts {
                anon_bytes: 20 * MIB,
                file_bytes: 4 * MIB,
                shmem_bytes: 100 * MIB,
                kernel_bytes: Some(2 * MIB + 4096),
            })
        );
        // v1's kernel memory is in memory.kmem.usage_in_bytes, not in memory.stat.
        assert_eq!(
            CompositionSample::parse(STAT_V1, CgroupVersion::V1, Some(3 * MIB)),
            Some(Parts {
                anon_bytes: 20 * MIB,
                file_bytes: 4 * MIB,
                shmem_bytes: 100 * MIB,
                kernel_bytes: Some(3 * MIB),
            })
        );
        let v1 = CompositionSample::parse(STAT_V1, CgroupVersion::V1, None);
        assert_eq!(v1.map(|parts| parts.kernel_bytes), Some(None));
        // v2 before 5.18: no `kernel` line, its parts summed.
        let old = STAT_V2.replace("kernel 2097152\n", "");
        let parts = CompositionSample::parse(&old, CgroupVersion::V2, None);
        assert_eq!(
            parts.and_then(|parts| parts.kernel_bytes),
            Some(65536 + 131072 + 1_000_000 + 800_000 + 4096)
        );
        assert_eq!(
            CompositionSample::parse("garbage\n", CgroupVersion::V2, None),
            None
        );
        assert_eq!(CompositionSample::parse("", CgroupVersion::V1, None), None);
    }

    #[test]
    fn compositions_before_the_window_stand_for_its_start() {
        let mut series = Series::default();
        let parts = |shmem_bytes| Parts {
            shmem_bytes,
            ..Parts::default()
        };
        // Read at 0 s and 10 s, then only when usage moved: at 75 s and 79 s.
        for (second, shmem) in [(0, 1), (10, 4), (75, 50), (79, 100)] {
            let sample = CompositionSample {
                at_ns: second * 1000 * MS,
                parts: parts(shmem),
            };
            CompositionSample::push(&mut series, sample, WINDOW);
        }
        let kept: Vec<(i64, u64)> = CompositionSample::until(&series, 80_000 * MS, 60_000)
            .iter()
            .map(|sample| (sample.offset_ms, sample.parts.shmem_bytes))
            .collect();
        assert_eq!(kept, [(-60_000, 4), (-5_000, 50), (-1_000, 100)]);
        let before_the_last: Vec<i64> = CompositionSample::until(&series, 78_000 * MS, 60_000)
            .iter()
            .map(|sample| sample.offset_ms)
            .collect();
        assert_eq!(before_the_last, [-60_000, -3_000]);
    }

    #[test]
    fn memory_events_counters_are_read_and_differenced() {
        let text = "low 0\nhigh 3\nmax 17\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(EventsSample::parse_v2(text), Some((3, 17)));
        assert_eq!(EventsSample::parse_v2("garbage"), None);
        let mut series = Series::default();
        for (ms, max) in [(0, 17), (1000, 17), (2000, 17), (2500, 20)] {
            let sample = EventsSample {
                at_ns: ms * MS,
                high: 3,
                max,
            };
            EventsSample::push(&mut series, sample, WINDOW);
        }
        assert_eq!(
            EventsSample::deltas(&series, 3000 * MS),
            [EventsAt {
                offset_ms: -500,
                high: 0,
                max: 3
            }]
        );
    }
}
