//! Observe: what must be read the moment a kill arrives, before it changes. The victim's cgroup
//! is removed within milliseconds when its container goes, the memory counters move, and the
//! process that spiked frees its memory a second later. Everything here is synchronous and
//! bounded; the attribute stage, which may wait for a runtime, comes after.

pub mod cgroupfs;
pub mod invocation;
pub mod snapshot;
pub mod timeline;

use std::sync::Arc;
use std::time::Duration;

use self::cgroupfs::{Inference, MemoryHierarchy};
use self::invocation::{InvocationKey, Invocations};
use self::snapshot::{ReportedProcess, Scope, Snapshot};
use self::timeline::{Prepared, Recorder, Timeline, Warnings};
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

/// The victim's size as the kernel reported it (resident: anonymous, file and shared memory,
/// as `statm` counts it), where it did.
fn reported_victim(kill: &OomKill) -> Option<ReportedProcess> {
    let fields = kill.victim.fields.as_ref()?;
    let kb = fields.anon_rss_kb? + fields.file_rss_kb? + fields.shmem_rss_kb?;
    Some(ReportedProcess {
        pid: kill.victim.tgid.unwrap_or(kill.victim.pid),
        comm: kill.victim.comm.clone().or_else(|| fields.comm.clone()),
        rss_bytes: kb.saturating_mul(1024),
    })
}

pub struct Observer {
    memory: Option<MemoryHierarchy>,
    /// One snapshot (and timeline) per invocation of the OOM killer: a `memory.oom.group` kill
    /// marks hundreds of victims within a millisecond, and they share the moment.
    invocations: Invocations<(Snapshot, Option<Arc<Timeline>>)>,
    recorder: Option<Recorder>,
}

impl Observer {
    /// Starts the memory timeline's recorder over `window`, sampling at most `max_cgroups`
    /// (opened beforehand in `prepared`, while the agent held its privileges), unless there is
    /// none; it sends `warnings` too.
    pub fn new(
        memory: Option<MemoryHierarchy>,
        window: Duration,
        max_cgroups: usize,
        prepared: Option<Prepared>,
        warnings: Option<Warnings>,
    ) -> Self {
        if memory.is_none() {
            log::warn!(
                "no memory cgroup hierarchy is mounted: below the full tier, whose limit was \
                 hit is unknown, and snapshots list processes only"
            );
        }
        let warned = warnings.is_some();
        let recorder = match (&memory, prepared) {
            (_, None) => {
                log::info!("memory timeline: off (--timeline 0)");
                None
            }
            (None, Some(_)) => {
                log::warn!("memory timeline: off, there is no memory cgroup hierarchy to sample");
                None
            }
            (Some(memory), Some(prepared)) => {
                match Recorder::start(prepared, memory.clone(), window, max_cgroups, warnings) {
                    Ok(recorder) => Some(recorder),
                    Err(err) => {
                        log::error!("memory timeline: off, the recorder did not start: {err}");
                        None
                    }
                }
            }
        };
        if warned && recorder.is_none() {
            log::warn!("--warn-pressure: no warnings, the memory timeline's recorder is off");
        }
        Observer {
            memory,
            invocations: Invocations::new(),
            recorder,
        }
    }

    /// How the memory timeline's recorder runs, and over what window; `None` when it is off.
    pub fn timeline_coverage(&self) -> Option<(timeline::Coverage, Duration)> {
        let recorder = self.recorder.as_ref()?;
        Some((recorder.coverage(), recorder.window()))
    }

    /// Reads what the kill's explanation needs from the running system, now: its moment, the
    /// snapshot of its invocation, and the recording of its domain's lead-up.
    pub fn observe(&mut self, kill: &OomKill) -> (Moment, Snapshot, Option<Arc<Timeline>>) {
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
        let key = match &kill.incident {
            Some(incident) => InvocationKey::Incident(incident.id.clone()),
            None => InvocationKey::Trigger {
                tid: kill.trigger.task.pid,
                scope: scope.clone(),
            },
        };
        let (snapshot, timeline) = match self.invocations.continued(&key, kill.ktime_ns) {
            Some(seen) => seen,
            None => {
                let timeline = self
                    .recorder
                    .as_ref()
                    .map(|recorder| Arc::new(recorder.timeline(&scope, kill.ktime_ns)));
                let snapshot = snapshot::take(self.memory.as_ref(), scope, reported_victim(kill));
                self.invocations
                    .started(key, kill.ktime_ns, (snapshot.clone(), timeline.clone()));
                (snapshot, timeline)
            }
        };
        let moment = Moment {
            victim,
            trigger,
            domain,
            victim_is_pid_one,
        };
        (moment, snapshot, timeline)
    }
}
