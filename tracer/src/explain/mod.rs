//! Explain: each kill becomes a verdict a person can act on (whose limit, who caused it, who
//! else held memory, whether the runtime will say OOMKilled), and kills are watched for the
//! patterns one kill alone does not show.

pub mod patterns;
pub mod verdict;

use std::time::{Duration, Instant};

use self::patterns::{Flags, Patterns, Seen};
use self::verdict::Top;
use crate::attribute::{AttributedKill, Attributor, DomainKind};
use crate::names::{printable, short_name};
use crate::observe::snapshot::{self, DomainMemory, Scope};
use crate::record::build::names;
use crate::record::kill::{
    CgroupPath, CgroupUsage, Count, Explanation, ProcessUsage, Snapshot, Usage, UsingProcess,
};
use crate::record::party::Executable;

pub struct Explainer {
    patterns: Patterns,
}

impl Explainer {
    pub fn new(window: Duration) -> Self {
        Explainer {
            patterns: Patterns::new(window),
        }
    }

    /// Explains `kill` with the `snapshot` taken at its moment: the record's `explanation`,
    /// and the domain's memory as the snapshot read it (the record's `domain.memory`).
    pub fn explain(
        &mut self,
        kill: &AttributedKill,
        snapshot: snapshot::Snapshot,
        attributor: &Attributor,
        now: Instant,
    ) -> (Explanation, DomainMemory) {
        let snapshot::Snapshot {
            scope,
            domain,
            cgroups,
            processes,
            took,
        } = snapshot;
        // Names from the cache only: nothing here waits for a runtime.
        let cgroups: Vec<CgroupUsage> = cgroups
            .into_iter()
            .map(|cgroup| CgroupUsage {
                names: names(Some(&attributor.named_from_cache(&cgroup.path)), None),
                cgroup: CgroupPath { path: cgroup.path },
                memory: Usage {
                    usage_bytes: cgroup.usage_bytes,
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
                } = process;
                let named = cgroup.map(|path| attributor.named_from_cache(&path));
                ProcessUsage {
                    process: UsingProcess {
                        pid,
                        executable: Executable { name: comm },
                        memory: Usage {
                            usage_bytes: rss_bytes,
                        },
                    },
                    names: names(named.as_ref(), None),
                }
            })
            .collect();
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
                    let mut name = format!("{} (pid {pid})", printable(&executable.name));
                    if let Some(container) = usage.names.container_name() {
                        name = format!("{name} in {}", printable(container));
                    }
                    (name, memory.usage_bytes)
                })
                .collect(),
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
                took_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            },
            restart_loop: restart_loop.map(count),
            recurring_trigger: recurring_trigger.map(count),
        };
        (explanation, domain)
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
