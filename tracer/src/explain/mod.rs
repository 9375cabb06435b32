//! Explain: each kill becomes a verdict a person can act on (whose limit, who caused it, who
//! else held memory, whether the runtime will say OOMKilled), and kills are watched for the
//! patterns one kill alone does not show.

pub(crate) mod filled;
pub(crate) mod lead_up;
pub(crate) mod patterns;
pub(crate) mod verdict;

use std::time::{Duration, Instant};

use self::patterns::{Flags, Patterns, Seen};
use self::verdict::{Top, TopProcess};
use crate::attribute::{AttributedKill, Attributor, DomainKind};
use crate::observe::composition as observed;
use crate::observe::snapshot::{self, DomainMemory, ProcessScan, Scope};
use crate::observe::timeline;
use crate::record::build::{self, names};
use crate::record::composition::Composition as RecordComposition;
use crate::record::kill::{
    CgroupPath, CgroupUsage, Count, Explanation, ProcessUsage, Snapshot, Usage, UsingProcess,
};
use crate::record::party::Executable;
use crate::record::timeline::{
    CgroupTimeline, CompositionSample, LimitEvents, NotCovered, NotCoveredReason, Percent, Stall,
    Timeline, UsageSample,
};
use crate::wording::{printable, short_name};

pub(crate) struct Explainer {
    patterns: Patterns,
}

impl Explainer {
    pub(crate) fn new(window: Duration) -> Self {
        Explainer {
            patterns: Patterns::new(window),
        }
    }

    /// Explains `kill` with the `snapshot` taken at its moment and the `timeline` recorded
    /// before it: the record's `explanation`, and the domain's memory as the snapshot read it
    /// (the record's `domain.memory`).
    pub(crate) fn explain(
        &mut self,
        kill: &AttributedKill,
        snapshot: snapshot::Snapshot,
        timeline: Option<&timeline::Timeline>,
        composition: Option<&observed::Composition>,
        attributor: &Attributor,
        now: Instant,
    ) -> (Explanation, DomainMemory, Option<RecordComposition>) {
        let snapshot::Snapshot {
            scope,
            domain,
            cgroups,
            processes,
            process_scan:
                ProcessScan {
                    read,
                    unread,
                    // The composition's.
                    resident_bytes: _,
                },
            taken_ns,
            took,
            charged_to_scope_bytes,
        } = snapshot;
        let composition = composition.map(|composition| {
            build::composition(composition, tmpfs_named(composition, attributor))
        });
        // Names from the cache only: nothing here waits for a runtime.
        let cgroups: Vec<CgroupUsage> = cgroups
            .into_iter()
            .map(|cgroup| CgroupUsage {
                names: names(Some(&attributor.named_from_cache(&cgroup.path)), None),
                cgroup: CgroupPath { path: cgroup.path },
                memory: Usage {
                    usage_bytes: cgroup.usage_bytes,
                    read_after_kill_bytes: cgroup.read_after_kill_bytes,
                },
            })
            .collect();
        let processes: Vec<ProcessUsage> = processes
            .into_iter()
            .map(|process| {
                let snapshot::ProcessUsage {
                    pid,
                    comm,
                    rss_bytes,
                    cgroup,
                    read_after_kill_bytes,
                } = process;
                let named = cgroup.map(|path| attributor.named_from_cache(&path));
                ProcessUsage {
                    process: UsingProcess {
                        pid,
                        executable: Executable { name: comm },
                        memory: Usage {
                            usage_bytes: rss_bytes,
                            read_after_kill_bytes,
                        },
                    },
                    names: names(named.as_ref(), None),
                }
            })
            .collect();
        let timeline = timeline.map(|timeline| timeline_record(timeline, attributor));
        let lead_up = timeline.as_ref().and_then(lead_up::lead_up);
        let top = Top {
            cgroups: cgroups
                .iter()
                .map(|usage| {
                    let name = short_name(&usage.names)
                        .unwrap_or_else(|| format!("cgroup {}", printable(&usage.cgroup.path)));
                    (name, usage.memory.usage_bytes)
                })
                .collect(),
            processes: processes
                .iter()
                .map(|usage| {
                    let UsingProcess {
                        pid,
                        executable,
                        memory,
                    } = &usage.process;
                    TopProcess {
                        comm: printable(&executable.name),
                        pid: *pid,
                        container: usage.names.container_name().map(printable),
                        bytes: memory.usage_bytes,
                    }
                })
                .collect(),
            lead_up,
            filled: composition.clone(),
            charged_to_domain: charged_to_scope_bytes.map(|bytes| (scope_owner(&scope), bytes)),
        };
        let flags = if kill.kill.marked_without_kill {
            Flags::default()
        } else {
            self.patterns.record(seen(kill), now)
        };
        let window = self.patterns.window();
        let verdict = verdict::verdict(kill, &top, flags, window);
        let Flags {
            restart_loop,
            recurring_trigger,
            // In the verdict's words only.
            restarts: _,
        } = flags;
        let count = |count: u32| Count {
            count,
            window_seconds: window.as_secs(),
        };
        let explanation = Explanation {
            verdict,
            snapshot: Snapshot {
                scope: match scope {
                    Scope::Host => "host".to_owned(),
                    Scope::Cgroup(path) => path,
                },
                cgroups,
                processes,
                processes_read: Some(read as u64),
                processes_unread: Some(unread as u64),
                charged_to_scope_bytes,
                ktime_ns: Some(taken_ns),
                took_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            },
            timeline,
            restart_loop: restart_loop.map(count),
            recurring_trigger: recurring_trigger.map(count),
        };
        (explanation, domain, composition)
    }
}

/// Who a domain's own charge belongs to, in words: `the pod`, `cgroup /x`.
fn scope_owner(scope: &Scope) -> String {
    match scope {
        Scope::Cgroup(path)
            if crate::cgroup_path::parse(path).kind == crate::cgroup_path::PathKind::Pod =>
        {
            "the pod".to_owned()
        }
        Scope::Cgroup(path) => format!("cgroup {}", printable(path)),
        Scope::Host => "the host".to_owned(),
    }
}

/// The tmpfs mounts found for the domain, their owners named from the cache.
fn tmpfs_named(
    composition: &observed::Composition,
    attributor: &Attributor,
) -> Vec<crate::record::composition::TmpfsMount> {
    composition
        .tmpfs
        .iter()
        .map(|mount| {
            build::tmpfs_mount(
                mount,
                mount
                    .owner
                    .as_deref()
                    .map(|path| attributor.named_from_cache(path)),
            )
        })
        .collect()
}

/// The recorder's timeline as the record writes it, its cgroups named from the cache.
fn timeline_record(timeline: &timeline::Timeline, attributor: &Attributor) -> Timeline {
    let timeline::Timeline {
        window,
        pressure,
        cgroups,
        not_covered,
    } = timeline;
    Timeline {
        window_s: window.as_secs(),
        pressure_source: pressure.as_ref().map(|pressure| pressure.source.clone()),
        pressure: pressure
            .iter()
            .flat_map(|pressure| &pressure.intervals)
            .map(|stall| Stall {
                offset_ms: stall.offset_ms,
                some_pct: Percent(stall.percent(stall.some_us)),
                full_pct: Percent(stall.percent(stall.full_us)),
            })
            .collect(),
        cgroups: cgroups
            .iter()
            .map(|cgroup| {
                let timeline::CgroupTimeline {
                    path,
                    limit_bytes,
                    samples,
                    events,
                    composition,
                } = cgroup;
                CgroupTimeline {
                    cgroup: CgroupPath { path: path.clone() },
                    names: names(Some(&attributor.named_from_cache(path)), None),
                    limit_bytes: *limit_bytes,
                    samples: samples
                        .iter()
                        .map(|sample| UsageSample {
                            offset_ms: sample.offset_ms,
                            usage_bytes: sample.usage_bytes,
                        })
                        .collect(),
                    events: events
                        .iter()
                        .map(|events| LimitEvents {
                            offset_ms: events.offset_ms,
                            high: events.high,
                            max: events.max,
                        })
                        .collect(),
                    composition: composition
                        .iter()
                        .map(|sample| {
                            let timeline::Parts {
                                anon_bytes,
                                file_bytes,
                                shmem_bytes,
                                kernel_bytes,
                            } = sample.parts;
                            CompositionSample {
                                offset_ms: sample.offset_ms,
                                anon_bytes,
                                file_bytes,
                                shmem_bytes,
                                kernel_bytes,
                            }
                        })
                        .collect(),
                }
            })
            .collect(),
        not_covered: not_covered
            .iter()
            .map(|(path, why)| NotCovered {
                cgroup: CgroupPath { path: path.clone() },
                reason: match why {
                    timeline::NotCovered::CgroupBound { .. } => NotCoveredReason::CgroupBound,
                    timeline::NotCovered::WalkBound => NotCoveredReason::WalkBound,
                    timeline::NotCovered::Descriptors => NotCoveredReason::Descriptors,
                    timeline::NotCovered::Unreadable(_) => NotCoveredReason::Unreadable,
                    timeline::NotCovered::NotSeenYet => NotCoveredReason::NotSeenYet,
                },
                detail: why.describe(),
            })
            .collect(),
    }
}

/// What the patterns remember of a kill.
fn seen(kill: &AttributedKill) -> Seen {
    let victim_container = kill
        .victim
        .as_ref()
        .and_then(|victim| victim.container.as_ref())
        .map(|container| container.name.clone())
        .filter(|name| !name.is_empty());
    let victim = victim_container
        .clone()
        .or_else(|| kill.kill.victim.comm.clone())
        .unwrap_or_else(|| kill.kill.victim.pid.to_string());
    let host_wide_trigger = (kill.domain.kind == DomainKind::Host).then(|| {
        kill.trigger
            .as_ref()
            .and_then(|trigger| trigger.container.as_ref())
            .map(|container| container.name.clone())
            .unwrap_or_else(|| kill.kill.trigger.task.comm.clone())
    });
    let restart_count = kill
        .victim
        .as_ref()
        .and_then(|victim| victim.container.as_ref())
        .and_then(|container| container.restart_count);
    Seen {
        victim_container,
        victim,
        host_wide_trigger,
        restart_count,
    }
}
