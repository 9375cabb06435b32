//! A kill's question to the recorder: the recording of its domain up to the kill, with
//! offsets relative to it. And the startup log's account of how the recorder runs.

use super::discover;
use super::psi;
use super::recorder::{
    FAST_HOLD, FAST_INTERVAL, GROWTH_FRACTION, GROWTH_UNLIMITED, HOST_PRESSURE,
    MAX_RETIRED_CGROUPS, MAX_RETIRED_DOMAINS, SLOW_INTERVAL, State, THRESHOLDS_PERCENT,
};
use super::samples::{Domain, EventsSample, PressureSample, UsageSample};
use super::series::Series;
use super::{CgroupTimeline, Timeline, UsageAt};
use crate::observe::cgroupfs::CgroupVersion;
use crate::observe::snapshot::Scope;
use std::time::Duration;

impl State {
    pub(super) fn timeline(&self, scope: &Scope, kill_ns: u64) -> Timeline {
        let domain = match scope {
            Scope::Cgroup(path) => self.domains.iter().find(|domain| domain.path == *path),
            Scope::Host => None,
        };
        let members: Vec<String> = match (scope, domain) {
            (Scope::Host, _) => self.host_members.clone(),
            (Scope::Cgroup(_), Some(domain)) => domain.members.clone(),
            // Not a watched domain: whatever is recorded at or below it.
            (Scope::Cgroup(path), None) => {
                let mut below: Vec<(&String, u64)> = self
                    .cgroups
                    .iter()
                    .filter(|(watched, _)| is_at_or_below(watched, path))
                    .map(|(watched, cgroup)| {
                        (watched, cgroup.series.last().map_or(0, |s| s.usage_bytes))
                    })
                    .collect();
                below.sort_by_key(|&(watched, usage)| (watched != path, std::cmp::Reverse(usage)));
                below
                    .into_iter()
                    .take(discover::PER_DOMAIN)
                    .map(|(watched, _)| watched.clone())
                    .collect()
            }
        };
        let cgroups = members
            .iter()
            .filter_map(|path| {
                let watched = self.cgroups.get(path)?;
                let samples = without_repeats(
                    watched
                        .series
                        .until(kill_ns)
                        .map(|sample| UsageAt {
                            offset_ms: offset_ms(sample.at_ns, kill_ns),
                            usage_bytes: sample.usage_bytes,
                        })
                        .collect(),
                );
                if samples.is_empty() {
                    return None;
                }
                let own = domain.filter(|domain| domain.path == *path);
                Some(CgroupTimeline {
                    path: path.clone(),
                    limit_bytes: own.map(|domain| domain.limit_bytes),
                    samples,
                    events: own
                        .and_then(|domain| domain.events.as_ref())
                        .map(|events| events.deltas(kill_ns))
                        .unwrap_or_default(),
                })
            })
            .collect();
        let pressure = domain
            .and_then(|domain| domain.pressure.as_ref())
            .or(self.host_pressure.as_ref())
            .map(|pressure| pressure.intervals(kill_ns));
        Timeline {
            window: self.window,
            pressure,
            cgroups,
        }
    }

    /// One paragraph for the startup log: what is recorded, how often, what wakes it, and the
    /// most memory it holds.
    pub(super) fn describe(&self) -> String {
        let active: Vec<&Domain> = self.domains.iter().filter(|d| d.active).collect();
        let mut wakes = Vec::new();
        match &self.host_trigger {
            Ok(_) => wakes.push(format!(
                "memory pressure ({HOST_PRESSURE} trigger: some {} ms in {} s)",
                psi::TRIGGER_STALL.as_millis(),
                psi::TRIGGER_WINDOW.as_secs()
            )),
            Err(err) => log::warn!(
                "memory timeline: no {HOST_PRESSURE} trigger ({err}): host-wide pressure does \
                 not wake the recorder"
            ),
        }
        let triggers = active.iter().filter(|d| d.trigger.is_some()).count();
        if triggers > 0 {
            wakes.push(format!(
                "per-cgroup memory.pressure triggers ({triggers} of {} limits)",
                active.len()
            ));
        }
        match self.memory.version {
            CgroupVersion::V1 => {
                let thresholds = active.iter().filter(|d| d.thresholds.is_some()).count();
                wakes.push(format!(
                    "usage thresholds at {} % of each limit (cgroup v1 cgroup.event_control; \
                     {thresholds} of {} limits)",
                    THRESHOLDS_PERCENT.map(|p| p.to_string()).join("/"),
                    active.len()
                ));
            }
            CgroupVersion::V2 => wakes.push("memory.events notifications".to_owned()),
        }
        wakes.push(format!(
            "growth of 1/{GROWTH_FRACTION} of a limit (or {} MiB) between samples",
            GROWTH_UNLIMITED >> 20
        ));
        if self.inotify.is_some() {
            wakes.push("new cgroups (inotify)".to_owned());
        }
        format!(
            "memory timeline: the {} s before each kill, for the host's and each limit's \
             biggest cgroups (watching {} cgroups under {} limits now; at most {}); sampled \
             every {} s, every {} ms for {} s after a wake-up by {}; holds at most {} KiB",
            self.window.as_secs(),
            self.cgroups.values().filter(|c| c.usage.is_some()).count(),
            active.len(),
            discover::MAX_WATCHED,
            SLOW_INTERVAL.as_secs(),
            FAST_INTERVAL.as_millis(),
            FAST_HOLD.as_secs(),
            wakes.join(", "),
            max_memory_bytes(self.window) >> 10
        )
    }
}

/// Leaves out each sample equal to the ones before and after it: a flat stretch keeps its
/// two ends, and a line through the rest is the same.
fn without_repeats(samples: Vec<UsageAt>) -> Vec<UsageAt> {
    let same = |a: Option<&UsageAt>, b: &UsageAt| a.is_some_and(|a| a.usage_bytes == b.usage_bytes);
    samples
        .iter()
        .enumerate()
        .filter(|&(index, sample)| {
            let before = index.checked_sub(1).and_then(|i| samples.get(i));
            !(same(before, sample) && same(samples.get(index + 1), sample))
        })
        .map(|(_, sample)| *sample)
        .collect()
}

pub(super) fn offset_ms(at_ns: u64, kill_ns: u64) -> i64 {
    (at_ns as i128 - kill_ns as i128).div_euclid(1_000_000) as i64
}

/// `/a/b` is at or below `/a`, not `/ab`.
fn is_at_or_below(path: &str, ancestor: &str) -> bool {
    path == ancestor
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The most the recorder's samples take: every series full, in the powers of two a
/// `VecDeque` grows in.
pub fn max_memory_bytes(window: Duration) -> usize {
    let samples = Series::<UsageSample>::capacity_for(window, FAST_INTERVAL).next_power_of_two();
    let cgroups = discover::MAX_WATCHED + MAX_RETIRED_CGROUPS;
    let domains = discover::MAX_DOMAINS + MAX_RETIRED_DOMAINS;
    samples
        * (cgroups * std::mem::size_of::<UsageSample>()
            + (domains + 1) * std::mem::size_of::<PressureSample>()
            + domains * std::mem::size_of::<EventsSample>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_negative_before_the_kill() {
        assert_eq!(offset_ms(1_000_000_000, 3_500_000_000), -2500);
        assert_eq!(offset_ms(3_500_000_000, 3_500_000_000), 0);
        assert_eq!(offset_ms(3_499_999_999, 3_500_000_000), -1);
    }

    #[test]
    fn flat_stretches_keep_their_ends() {
        let samples: Vec<UsageAt> = [5, 5, 5, 7, 7, 9, 9, 9]
            .iter()
            .enumerate()
            .map(|(i, &usage_bytes)| UsageAt {
                offset_ms: i as i64,
                usage_bytes,
            })
            .collect();
        let kept: Vec<(i64, u64)> = without_repeats(samples)
            .iter()
            .map(|s| (s.offset_ms, s.usage_bytes))
            .collect();
        assert_eq!(kept, [(0, 5), (2, 5), (3, 7), (4, 7), (5, 9), (7, 9)]);
    }

    #[test]
    fn at_or_below_means_the_path_or_under_it() {
        assert!(is_at_or_below("/a/b", "/a"));
        assert!(is_at_or_below("/a", "/a"));
        assert!(!is_at_or_below("/ab", "/a"));
    }

    #[test]
    fn the_memory_held_is_bounded() {
        // A minute: well under a mebibyte, whatever the host.
        assert!(max_memory_bytes(Duration::from_secs(60)) < 1 << 20);
    }
}
