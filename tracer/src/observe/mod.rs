//! Observe: what must be read the moment a kill arrives, before it changes. The victim's cgroup
//! is removed within milliseconds when its container goes, the memory counters move, and the
//! process that spiked frees its memory a second later. Everything here is synchronous and
//! bounded; the attribute stage, which may wait for a runtime, comes after.

pub mod cgroupfs;
pub mod snapshot;

use std::time::{Duration, Instant};

use self::cgroupfs::{Inference, MemoryHierarchy};
use self::snapshot::{Scope, Snapshot};
use crate::cgroup_path::{self, PathKind};
use crate::decode::{CgroupRef, Domain};
use crate::incident::OomKill;
use crate::procfs;

/// What was seen at the moment of one kill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moment {
    pub victim: PartyPaths,
    pub trigger: PartyPaths,
    pub domain: DomainSeen,
    /// Whether the victim was PID 1 of its pid namespace (a container's main process), while
    /// it could still be asked.
    pub victim_is_pid_one: Option<bool>,
}

/// The domain as far as the moment tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainSeen {
    /// The OOM killer's own `oom_control` (full tier), with the cgroup's limit as read now.
    Kernel {
        domain: Domain,
        limit_bytes: Option<u64>,
    },
    /// Inferred from the counters along the victim's memory cgroup ancestry.
    Inferred {
        victim_memcg: String,
        inference: Inference,
    },
    /// Neither: no memory hierarchy mounted, or no path for the victim.
    Unknown,
}

/// A party's cgroup paths: as the kernel captured them, else (tracepoint-only) from /proc.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartyPaths {
    pub cgroup: Option<String>,
    pub memcg: Option<String>,
}

impl PartyPaths {
    pub fn of(cgroup: Option<&CgroupRef>, memcg: Option<&CgroupRef>, pid: u32) -> Self {
        let captured = PartyPaths {
            cgroup: cgroup.map(|c| c.path.clone()),
            memcg: memcg.map(|c| c.path.clone()),
        };
        if captured.cgroup.is_some() || captured.memcg.is_some() {
            return captured;
        }
        // Nothing captured in the kernel: the process may still be there (the trigger usually
        // is).
        match procfs::cgroups(pid) {
            Some(paths) => PartyPaths {
                cgroup: paths.unified,
                memcg: paths.memory,
            },
            None => captured,
        }
    }

    /// The path that says the most: a container beats a pod, a unit, the host; on a tie the
    /// unified hierarchy's, which is what systemd and the runtimes manage.
    pub fn best(&self) -> Option<&str> {
        let rank = |path: &str| match cgroup_path::parse(path).kind {
            PathKind::Container => 4,
            PathKind::Pod => 3,
            PathKind::SystemdUnit => 2,
            PathKind::Unrecognised => 1,
            PathKind::Host => 0,
        };
        match (self.cgroup.as_deref(), self.memcg.as_deref()) {
            (Some(cgroup), Some(memcg)) if rank(memcg) > rank(cgroup) => Some(memcg),
            (Some(cgroup), _) => Some(cgroup),
            (None, memcg) => memcg,
        }
    }
}

/// A snapshot is reused for kills this close together in the same domain: one
/// `memory.oom.group` kill marks hundreds of victims within a millisecond.
const SNAPSHOT_REUSE: Duration = Duration::from_secs(1);

pub struct Observer {
    memory: Option<MemoryHierarchy>,
    last_snapshot: Option<(Instant, Snapshot)>,
}

impl Observer {
    pub fn new(memory: Option<MemoryHierarchy>) -> Self {
        if memory.is_none() {
            log::warn!(
                "no memory cgroup hierarchy is mounted: below the full tier, whose limit was \
                 hit is unknown, and snapshots list processes only"
            );
        }
        Observer {
            memory,
            last_snapshot: None,
        }
    }

    /// Reads what the kill's explanation needs from the running system, now.
    pub fn observe(&mut self, kill: &OomKill) -> (Moment, Snapshot) {
        let victim = PartyPaths::of(
            kill.victim.cgroup.as_ref(),
            kill.victim.memcg.as_ref(),
            kill.victim.pid,
        );
        let trigger = PartyPaths::of(
            kill.trigger.cgroup.as_ref(),
            kill.trigger.memcg.as_ref(),
            kill.trigger.task.pid,
        );
        let domain = match (&kill.incident, &self.memory, &victim.memcg) {
            (Some(incident), memory, _) => {
                let domain = incident.entry.domain.clone();
                let limit_bytes = match (&domain, memory) {
                    (Domain::Cgroup(cgroup), Some(memory)) => memory.limit_bytes(&cgroup.path),
                    _ => None,
                };
                DomainSeen::Kernel {
                    domain,
                    limit_bytes,
                }
            }
            (None, Some(memory), Some(memcg)) => DomainSeen::Inferred {
                victim_memcg: memcg.clone(),
                inference: memory.infer(memcg),
            },
            (None, _, _) => DomainSeen::Unknown,
        };
        // Read on the capture side (kernel, else /proc): a second read here would find less.
        let victim_is_pid_one = kill.namespace_init;
        let scope = match &domain {
            DomainSeen::Kernel {
                domain: Domain::Cgroup(cgroup),
                ..
            } => Scope::Cgroup(cgroup.path.clone()),
            DomainSeen::Inferred {
                inference: Inference::Cgroup { path, .. },
                ..
            } => Scope::Cgroup(path.clone()),
            _ => Scope::Host,
        };
        let snapshot = self.snapshot(scope);
        let moment = Moment {
            victim,
            trigger,
            domain,
            victim_is_pid_one,
        };
        (moment, snapshot)
    }

    fn snapshot(&mut self, scope: Scope) -> Snapshot {
        let now = Instant::now();
        if let Some((at, snapshot)) = &self.last_snapshot
            && now.duration_since(*at) < SNAPSHOT_REUSE
            && snapshot.scope == scope
        {
            return snapshot.clone();
        }
        let snapshot = snapshot::take(self.memory.as_ref(), scope);
        self.last_snapshot = Some((now, snapshot.clone()));
        snapshot
    }
}
