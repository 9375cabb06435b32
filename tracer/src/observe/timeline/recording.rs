//! The recording: every series the recorder keeps, behind the mutex a kill's question takes
//! briefly. The recorder's thread reads its files without it, then pushes a whole
//! [`Reading`] at once, and applies the [`Edit`]s of a new plan the same way.

use std::collections::HashMap;
use std::time::Duration;

use super::NotCovered;
use super::sampler::{Edit, Reading};
use super::samples::{
    CompositionSample, EventsSample, PressureSample, PressureSeries, UsageSample,
};
use super::series::Series;
use super::tree::CgroupId;

pub(super) struct Recording {
    pub(super) window: Duration,
    pub(super) cgroups: HashMap<CgroupId, CgroupRecord>,
    pub(super) domains: HashMap<CgroupId, DomainRecord>,
    /// The host's biggest entries.
    pub(super) host: Vec<CgroupId>,
    pub(super) host_pressure: Option<PressureSeries>,
    /// Cgroups the plan wants and could not sample, and why.
    pub(super) not_covered: HashMap<CgroupId, NotCovered>,
    /// Why a cgroup the recorder never saw may be missing: the walk's bounds, if met.
    pub(super) beyond: Option<NotCovered>,
    /// What kills asked of the recorder's thread since it last looked.
    pub(super) requests: Vec<Request>,
    /// Retired cgroups (or domains) kept at most, for kills reported late.
    pub(super) max_retired: usize,
    /// Whether any is retired: nothing to purge otherwise.
    any_retired: bool,
}

pub(super) struct CgroupRecord {
    pub(super) series: Series<UsageSample>,
    /// Since when it is no longer sampled (removed, or out of the plan); kept for a window.
    pub(super) retired_at_ns: Option<u64>,
}

pub(super) struct DomainRecord {
    pub(super) limit_bytes: u64,
    /// The domain itself, then its biggest entries.
    pub(super) members: Vec<CgroupId>,
    pub(super) pressure: Option<PressureSeries>,
    pub(super) events: Series<EventsSample>,
    pub(super) composition: Series<CompositionSample>,
    pub(super) retired_at_ns: Option<u64>,
}

/// A kill's request to the recorder's thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Request {
    /// Sample this domain fast for a while: a restart loop kills again soon. Look for it if it
    /// is not sampled.
    Fast(String),
    /// The same for the host's entries.
    HostFast,
}

impl Recording {
    pub(super) fn new(window: Duration, host_pressure: bool, max_retired: usize) -> Self {
        Recording {
            window,
            cgroups: HashMap::new(),
            domains: HashMap::new(),
            host: Vec::new(),
            host_pressure: host_pressure
                .then(|| PressureSeries::new(super::sampler::HOST_PRESSURE.to_owned())),
            not_covered: HashMap::new(),
            beyond: None,
            requests: Vec::new(),
            max_retired,
            any_retired: false,
        }
    }

    /// Adds one sample of everything read.
    pub(super) fn push(&mut self, reading: &Reading) {
        let window = self.window;
        let at_ns = reading.at_ns;
        for (path, usage_bytes) in &reading.usage {
            if let Some(cgroup) = self.cgroups.get_mut(path) {
                let sample = UsageSample {
                    at_ns,
                    usage_bytes: *usage_bytes,
                };
                UsageSample::push(&mut cgroup.series, sample, window);
            }
        }
        for (path, totals) in &reading.pressure {
            if let Some(pressure) = self
                .domains
                .get_mut(path)
                .and_then(|domain| domain.pressure.as_mut())
            {
                pressure.push(
                    PressureSample {
                        at_ns,
                        totals: *totals,
                    },
                    window,
                );
            }
        }
        for (path, high, max) in &reading.events {
            if let Some(domain) = self.domains.get_mut(path) {
                let sample = EventsSample {
                    at_ns,
                    high: *high,
                    max: *max,
                };
                EventsSample::push(&mut domain.events, sample, window);
            }
        }
        for (path, parts) in &reading.compositions {
            if let Some(domain) = self.domains.get_mut(path) {
                let sample = CompositionSample {
                    at_ns,
                    parts: *parts,
                };
                CompositionSample::push(&mut domain.composition, sample, window);
            }
        }
        if let (Some(host), Some(totals)) = (&mut self.host_pressure, reading.host_pressure) {
            host.push(PressureSample { at_ns, totals }, window);
        }
    }

    /// Applies a new plan's changes.
    pub(super) fn apply(&mut self, edits: Vec<Edit>, now_ns: u64) {
        for edit in edits {
            match edit {
                Edit::Cgroup(path) => {
                    self.cgroups
                        .entry(path)
                        .or_insert_with(|| CgroupRecord {
                            series: Series::default(),
                            retired_at_ns: None,
                        })
                        .retired_at_ns = None;
                }
                Edit::RetireCgroup(path) => {
                    if let Some(cgroup) = self.cgroups.get_mut(&path) {
                        cgroup.retired_at_ns.get_or_insert(now_ns);
                        self.any_retired = true;
                    }
                }
                Edit::Domain {
                    path,
                    limit_bytes,
                    members,
                    pressure,
                } => {
                    let domain = self.domains.entry(path).or_insert_with(|| DomainRecord {
                        limit_bytes,
                        members: Vec::new(),
                        pressure: None,
                        events: Series::default(),
                        composition: Series::default(),
                        retired_at_ns: None,
                    });
                    domain.limit_bytes = limit_bytes;
                    domain.members = members;
                    domain.retired_at_ns = None;
                    // A changed limit keeps the recording.
                    match (pressure, &domain.pressure) {
                        (Some(source), None) => domain.pressure = Some(PressureSeries::new(source)),
                        (None, Some(_)) => domain.pressure = None,
                        _ => {}
                    }
                }
                Edit::RetireDomain(path) => {
                    if let Some(domain) = self.domains.get_mut(&path) {
                        domain.retired_at_ns.get_or_insert(now_ns);
                        self.any_retired = true;
                    }
                }
                Edit::Host(host) => self.host = host,
                Edit::NotCovered(not_covered) => self.not_covered = not_covered,
                Edit::Beyond(beyond) => self.beyond = beyond,
            }
        }
        self.purge(now_ns);
    }

    /// Lets go of what was retired longer than a window ago, and of the oldest retired past
    /// the cap.
    pub(super) fn purge(&mut self, now_ns: u64) {
        if !self.any_retired {
            return;
        }
        let window_ns = self.window.as_nanos() as u64;
        let expired =
            |retired: Option<u64>| retired.is_some_and(|at| now_ns.saturating_sub(at) > window_ns);
        self.cgroups
            .retain(|_, cgroup| !expired(cgroup.retired_at_ns));
        self.domains
            .retain(|_, domain| !expired(domain.retired_at_ns));
        cap_retired(&mut self.cgroups, self.max_retired, |c| c.retired_at_ns);
        cap_retired(&mut self.domains, self.max_retired, |d| d.retired_at_ns);
        self.any_retired = self
            .cgroups
            .values()
            .any(|cgroup| cgroup.retired_at_ns.is_some())
            || self
                .domains
                .values()
                .any(|domain| domain.retired_at_ns.is_some());
    }

    /// Bytes its samples take now, as allocated.
    pub(super) fn heap_bytes(&self) -> usize {
        let cgroups: usize = self
            .cgroups
            .values()
            .map(|cgroup| cgroup.series.heap_bytes())
            .sum();
        let domains: usize = self
            .domains
            .values()
            .map(|domain| {
                domain.events.heap_bytes()
                    + domain.composition.heap_bytes()
                    + domain
                        .pressure
                        .as_ref()
                        .map_or(0, |pressure| pressure.series.heap_bytes())
            })
            .sum();
        let host = self
            .host_pressure
            .as_ref()
            .map_or(0, |pressure| pressure.series.heap_bytes());
        cgroups + domains + host
    }
}

fn cap_retired<T>(map: &mut HashMap<CgroupId, T>, max: usize, retired: impl Fn(&T) -> Option<u64>) {
    let mut retired_at: Vec<(u64, CgroupId)> = map
        .iter()
        .filter_map(|(path, value)| Some((retired(value)?, path.clone())))
        .collect();
    if retired_at.len() <= max {
        return;
    }
    retired_at.sort();
    let excess = retired_at.len() - max;
    for (_, path) in retired_at.into_iter().take(excess) {
        map.remove(&path);
    }
}

/// The most bytes one cgroup's series take over `window`: every sample kept (the recorder fast
/// for the whole window), in the powers of two a series grows in, for a domain with its
/// pressure, events and composition (read at most once a COMPOSITION_INTERVAL).
pub(super) fn max_bytes_per_cgroup(window: Duration) -> usize {
    let samples = Series::<UsageSample>::capacity_for(window, super::sampler::FAST_INTERVAL)
        .next_power_of_two();
    let compositions =
        Series::<CompositionSample>::capacity_for(window, super::sampler::COMPOSITION_INTERVAL)
            .next_power_of_two();
    samples
        * (std::mem::size_of::<UsageSample>()
            + std::mem::size_of::<PressureSample>()
            + std::mem::size_of::<EventsSample>())
        + compositions * std::mem::size_of::<CompositionSample>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::timeline::Parts;
    use crate::observe::timeline::psi::Totals;

    const SECOND: u64 = 1_000_000_000;

    fn id(path: &str) -> CgroupId {
        CgroupId::from(path)
    }

    #[test]
    fn retired_cgroups_stay_a_window_and_no_more_than_the_cap() {
        let mut recording = Recording::new(Duration::from_secs(60), false, 2);
        let edits = (0..4)
            .map(|n| Edit::Cgroup(id(&format!("/c{n}"))))
            .collect();
        recording.apply(edits, 0);
        recording.apply(vec![Edit::RetireCgroup(id("/c0"))], SECOND);
        recording.apply(vec![Edit::RetireCgroup(id("/c1"))], 2 * SECOND);
        recording.apply(vec![Edit::RetireCgroup(id("/c2"))], 3 * SECOND);
        // The oldest retired goes past the cap of 2.
        assert!(!recording.cgroups.contains_key("/c0"));
        assert!(recording.cgroups.contains_key("/c1"));
        // Back in the plan: no longer retired.
        recording.apply(vec![Edit::Cgroup(id("/c1"))], 4 * SECOND);
        recording.purge(70 * SECOND);
        assert!(recording.cgroups.contains_key("/c1"));
        assert!(
            !recording.cgroups.contains_key("/c2"),
            "retired more than a window ago"
        );
        assert!(recording.cgroups.contains_key("/c3"));
    }

    #[test]
    fn samples_go_to_the_series_they_belong_to() {
        let mut recording = Recording::new(Duration::from_secs(60), true, 8);
        recording.apply(
            vec![
                Edit::Cgroup(id("/a")),
                Edit::Domain {
                    path: id("/a"),
                    limit_bytes: 100,
                    members: vec![id("/a")],
                    pressure: Some("/a".to_owned()),
                },
            ],
            0,
        );
        let totals = Totals {
            some_us: 5,
            full_us: 1,
        };
        recording.push(&Reading {
            at_ns: SECOND,
            usage: vec![(id("/a"), 42), (id("/unknown"), 7)],
            pressure: vec![(id("/a"), totals)],
            events: vec![(id("/a"), 0, 3)],
            compositions: vec![
                (id("/a"), Parts::default()),
                (id("/unknown"), Parts::default()),
            ],
            host_pressure: Some(totals),
            domains: vec![id("/a")],
            rearmed: false,
        });
        assert_eq!(recording.cgroups["/a"].series.len(), 1);
        let domain = &recording.domains["/a"];
        assert_eq!(domain.events.len(), 1);
        assert_eq!(domain.composition.len(), 1);
        assert_eq!(domain.pressure.as_ref().unwrap().series.len(), 1);
        assert_eq!(recording.host_pressure.as_ref().unwrap().series.len(), 1);
        assert!(recording.heap_bytes() > 0);
    }
}
