//! Explain: each kill becomes a verdict a person can act on (whose limit, who caused it, who
//! else held memory, whether the runtime will say OOMKilled), and kills are watched for the
//! patterns one kill alone does not show.

pub mod patterns;
pub mod verdict;

use std::time::{Duration, Instant};

use self::patterns::{Flags, Patterns, Seen};
use self::verdict::Top;
use crate::attribute::{AttributedKill, Attribution, Attributor, DomainKind};
use crate::names::{printable, short_name};
use crate::observe::snapshot::Snapshot;

/// What the explain stage adds to a kill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub verdict: String,
    pub snapshot: Snapshot,
    /// The snapshot's cgroups, named as far as the cache knows, in the same order.
    pub cgroup_names: Vec<Attribution>,
    /// The snapshot's processes' cgroups, named likewise.
    pub process_names: Vec<Option<Attribution>>,
    pub flags: Flags,
    /// The window the patterns are counted in.
    pub window: Duration,
}

pub struct Explainer {
    patterns: Patterns,
}

impl Explainer {
    pub fn new(window: Duration) -> Self {
        Explainer {
            patterns: Patterns::new(window),
        }
    }

    /// Explains `kill` with the `snapshot` taken at its moment.
    pub fn explain(
        &mut self,
        kill: &AttributedKill,
        snapshot: Snapshot,
        attributor: &Attributor,
        now: Instant,
    ) -> Explanation {
        // Names from the cache only: nothing here waits for a runtime.
        let cgroup_names: Vec<Attribution> = snapshot
            .cgroups
            .iter()
            .map(|cgroup| attributor.named_from_cache(&cgroup.path))
            .collect();
        let process_names: Vec<Option<Attribution>> = snapshot
            .processes
            .iter()
            .map(|process| {
                process
                    .cgroup
                    .as_deref()
                    .map(|path| attributor.named_from_cache(path))
            })
            .collect();
        let top = Top {
            cgroups: snapshot
                .cgroups
                .iter()
                .zip(&cgroup_names)
                .map(|(cgroup, names)| {
                    let name = short_name(names)
                        .unwrap_or_else(|| format!("cgroup {}", printable(&cgroup.path)));
                    (name, cgroup.usage_bytes)
                })
                .collect(),
            processes: snapshot
                .processes
                .iter()
                .zip(&process_names)
                .map(|(process, names)| {
                    let mut name = format!("{} (pid {})", printable(&process.comm), process.pid);
                    if let Some(container) = names.as_ref().and_then(|n| n.container.as_ref()) {
                        name = format!("{name} in {}", printable(&container.name));
                    }
                    (name, process.rss_bytes)
                })
                .collect(),
        };
        let flags = if kill.kill.marked_without_kill {
            Flags::default()
        } else {
            self.patterns.record(seen(kill), now)
        };
        let verdict = verdict::verdict(kill, &top, flags, self.patterns.window());
        Explanation {
            verdict,
            snapshot,
            cgroup_names,
            process_names,
            flags,
            window: self.patterns.window(),
        }
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
