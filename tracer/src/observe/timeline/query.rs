//! A kill's question to the recording: the recording of its domain up to the kill, with
//! offsets relative to it, and what of it the recorder could not cover, and why.

use super::plan::PER_DOMAIN;
use super::recording::Recording;
use super::samples::{CompositionSample, EventsSample, UsageSample};
use super::series::Series;
use super::tree::CgroupId;
use super::{CgroupTimeline, NotCovered, Timeline, UsageAt};
use crate::observe::snapshot::Scope;

impl Recording {
    pub(super) fn timeline(&self, scope: &Scope, kill_ns: u64) -> Timeline {
        let domain = match scope {
            Scope::Cgroup(path) => self.domains.get(path.as_str()),
            Scope::Host => None,
        };
        let members: Vec<CgroupId> = match (scope, domain) {
            (Scope::Host, _) => self.host.clone(),
            (Scope::Cgroup(_), Some(domain)) => domain.members.clone(),
            // Not a sampled domain: whatever is recorded at or below it.
            (Scope::Cgroup(path), None) => {
                let mut below: Vec<(&CgroupId, u64)> = self
                    .cgroups
                    .iter()
                    .filter(|(recorded, _)| is_at_or_below(recorded, path))
                    .map(|(recorded, cgroup)| {
                        (recorded, cgroup.series.last().map_or(0, |s| s.usage_bytes))
                    })
                    .collect();
                below.sort_by_key(|&(recorded, usage)| {
                    (**recorded != **path, std::cmp::Reverse(usage))
                });
                below
                    .into_iter()
                    .take(PER_DOMAIN)
                    .map(|(recorded, _)| recorded.clone())
                    .collect()
            }
        };
        let mut not_covered: Vec<(String, NotCovered)> = Vec::new();
        let mut cgroups = Vec::new();
        let window_ms = i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX);
        for path in &members {
            let samples = self
                .cgroups
                .get(path)
                .map(|cgroup| {
                    within_window(
                        without_repeats(usage_until(&cgroup.series, kill_ns)),
                        window_ms,
                    )
                })
                .unwrap_or_default();
            if samples.is_empty() {
                if let Some(why) = self.not_covered.get(path) {
                    not_covered.push((path.to_string(), why.clone()));
                }
                continue;
            }
            let own = domain.filter(|_| Some(&**path) == scope_path(scope));
            cgroups.push(CgroupTimeline {
                path: path.to_string(),
                limit_bytes: own.map(|domain| domain.limit_bytes),
                samples,
                events: own
                    .map(|domain| EventsSample::deltas(&domain.events, kill_ns))
                    .unwrap_or_default(),
                composition: own
                    .map(|domain| CompositionSample::until(&domain.composition, kill_ns, window_ms))
                    .unwrap_or_default(),
            });
        }
        // The domain itself is never left out without a word.
        if let Some(path) = scope_path(scope)
            && !cgroups.iter().any(|cgroup| cgroup.path == path)
            && !not_covered.iter().any(|(uncovered, _)| uncovered == path)
        {
            let why = match self.not_covered.get(path) {
                Some(why) => why.clone(),
                None if domain.is_none() && !self.cgroups.contains_key(path) => {
                    self.beyond.clone().unwrap_or(NotCovered::NotSeenYet)
                }
                None => NotCovered::NotSeenYet,
            };
            not_covered.insert(0, (path.to_owned(), why));
        }
        let pressure = domain
            .and_then(|domain| domain.pressure.as_ref())
            .or(self.host_pressure.as_ref())
            .map(|pressure| pressure.intervals(kill_ns));
        Timeline {
            window: self.window,
            pressure,
            cgroups,
            not_covered,
        }
    }
}

fn scope_path(scope: &Scope) -> Option<&str> {
    match scope {
        Scope::Cgroup(path) => Some(path),
        Scope::Host => None,
    }
}

/// A cgroup's usage samples up to the kill, offsets relative to it. A flat stretch that runs
/// past the kill ends at the kill: a series keeps only a flat stretch's two ends, and a kill is
/// asked about a while after the kernel captured it, by when the stretch's end has moved past
/// the kill, so the samples up to the kill would stop at the stretch's start. Every read in
/// between found the same usage, the ones just before and after the kill too (a series keeps
/// every sample of its last seconds, see [`super::series::FINE_SPAN`]).
fn usage_until(series: &Series<UsageSample>, kill_ns: u64) -> Vec<UsageAt> {
    let mut samples: Vec<UsageAt> = series
        .until(kill_ns)
        .map(|sample| UsageAt {
            offset_ms: offset_ms(sample.at_ns, kill_ns),
            usage_bytes: sample.usage_bytes,
        })
        .collect();
    if let (Some(last), Some(next)) = (samples.last(), series.after(kill_ns))
        && last.offset_ms < 0
        && last.usage_bytes == next.usage_bytes
    {
        samples.push(UsageAt {
            offset_ms: 0,
            usage_bytes: next.usage_bytes,
        });
    }
    samples
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

/// The samples of the window: the one from before it that a series keeps starts the window
/// where the next is the same (a flat stretch that began earlier), and is left out otherwise.
fn within_window(mut samples: Vec<UsageAt>, window_ms: i64) -> Vec<UsageAt> {
    if samples
        .first()
        .is_some_and(|first| first.offset_ms < -window_ms)
    {
        match samples.get(1) {
            Some(next) if next.usage_bytes == samples[0].usage_bytes => {
                samples[0].offset_ms = -window_ms;
            }
            _ => {
                samples.remove(0);
            }
        }
    }
    samples
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::timeline::sampler::{Edit, Reading};
    use std::collections::HashMap;
    use std::time::Duration;

    const SECOND: u64 = 1_000_000_000;

    fn id(path: &str) -> CgroupId {
        CgroupId::from(path)
    }

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
    fn a_stretch_begun_before_the_window_begins_with_it() {
        let at = |offset_ms, usage_bytes| UsageAt {
            offset_ms,
            usage_bytes,
        };
        assert_eq!(
            within_window(vec![at(-75_000, 5), at(-2_000, 5), at(-1_000, 9)], 60_000),
            [at(-60_000, 5), at(-2_000, 5), at(-1_000, 9)]
        );
        assert_eq!(
            within_window(vec![at(-60_500, 5), at(-59_500, 7)], 60_000),
            [at(-59_500, 7)]
        );
    }

    #[test]
    fn at_or_below_means_the_path_or_under_it() {
        assert!(is_at_or_below("/a/b", "/a"));
        assert!(is_at_or_below("/a", "/a"));
        assert!(!is_at_or_below("/ab", "/a"));
    }

    fn recording() -> Recording {
        let mut recording = Recording::new(Duration::from_secs(60), false, 8);
        recording.apply(
            vec![
                Edit::Cgroup(id("/pod")),
                Edit::Cgroup(id("/pod/c1")),
                Edit::Domain {
                    path: id("/pod"),
                    limit_bytes: 1000,
                    members: vec![id("/pod"), id("/pod/c1"), id("/pod/c2")],
                    pressure: None,
                },
                Edit::NotCovered(HashMap::from([
                    (id("/pod/c2"), NotCovered::CgroupBound { max: 2 }),
                    (id("/other"), NotCovered::CgroupBound { max: 2 }),
                ])),
            ],
            0,
        );
        for second in 1..=5 {
            recording.push(&Reading {
                at_ns: second * SECOND,
                usage: vec![(id("/pod"), second * 100), (id("/pod/c1"), second * 90)],
                ..Reading::default()
            });
        }
        recording
    }

    #[test]
    fn a_domains_timeline_has_its_members_and_names_those_left_out() {
        let recording = recording();
        let timeline = recording.timeline(&Scope::Cgroup("/pod".to_owned()), 4 * SECOND + 1);
        let paths: Vec<&str> = timeline.cgroups.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/pod", "/pod/c1"]);
        assert_eq!(timeline.cgroups[0].limit_bytes, Some(1000));
        assert_eq!(timeline.cgroups[1].limit_bytes, None);
        // Only samples from before the kill.
        assert_eq!(timeline.cgroups[0].samples.len(), 4);
        assert_eq!(
            timeline.not_covered,
            [("/pod/c2".to_owned(), NotCovered::CgroupBound { max: 2 })]
        );
    }

    #[test]
    fn a_flat_stretch_past_the_kill_ends_at_the_kill() {
        let window = Duration::from_secs(60);
        let mut flat = Series::default();
        let mut grown = Series::default();
        // Read every 100 ms from 1 s to 5 s; the kill at 3.55 s is asked about at 5 s.
        for tenth in 10..=50 {
            let at_ns = tenth * SECOND / 10;
            UsageSample::push(
                &mut flat,
                UsageSample {
                    at_ns,
                    usage_bytes: 48,
                },
                window,
            );
            let usage_bytes = tenth * 10;
            UsageSample::push(&mut grown, UsageSample { at_ns, usage_bytes }, window);
        }
        let kill_ns = 3_550 * SECOND / 1000;
        let offsets = |samples: Vec<UsageAt>| -> Vec<(i64, u64)> {
            samples
                .iter()
                .map(|sample| (sample.offset_ms, sample.usage_bytes))
                .collect()
        };
        assert_eq!(offsets(usage_until(&flat, kill_ns)), [(-2550, 48), (0, 48)]);
        // A series that moved keeps its samples up to the kill, and no more.
        let moved = offsets(usage_until(&grown, kill_ns));
        assert_eq!(moved.len(), 26);
        assert_eq!(moved.last(), Some(&(-50, 350)));
        // Nothing after the kill yet: nothing added.
        let mut early = Series::default();
        UsageSample::push(
            &mut early,
            UsageSample {
                at_ns: SECOND,
                usage_bytes: 48,
            },
            window,
        );
        assert_eq!(offsets(usage_until(&early, kill_ns)), [(-2550, 48)]);
    }

    #[test]
    fn a_domain_not_sampled_says_why() {
        let recording = recording();
        let past_bound = recording.timeline(&Scope::Cgroup("/other".to_owned()), 5 * SECOND);
        assert!(past_bound.cgroups.is_empty());
        assert_eq!(
            past_bound.not_covered,
            [("/other".to_owned(), NotCovered::CgroupBound { max: 2 })]
        );
        let unseen = recording.timeline(&Scope::Cgroup("/new".to_owned()), 5 * SECOND);
        assert_eq!(
            unseen.not_covered,
            [("/new".to_owned(), NotCovered::NotSeenYet)]
        );
        // Below a sampled cgroup, what is recorded there stands in.
        let below = recording.timeline(&Scope::Cgroup("/pod/c1".to_owned()), 5 * SECOND);
        assert_eq!(below.cgroups.len(), 1);
        assert!(below.not_covered.is_empty());
    }
}
