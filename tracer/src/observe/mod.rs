//! Observe: what must be read the moment a kill arrives, before it changes. The victim's cgroup
//! is removed within milliseconds when its container goes, the memory counters move, and the
//! process that spiked frees its memory a second later. Everything here is synchronous and
//! bounded; the attribute stage, which may wait for a runtime, comes after.

pub(crate) mod cgroupfs;
pub(crate) mod composition;
pub(crate) mod invocation;
pub(crate) mod snapshot;
pub(crate) mod timeline;
pub(crate) mod tmpfs;

use std::sync::Arc;
use std::time::Duration;

use self::cgroupfs::{Inference, MemoryHierarchy};
use self::composition::{Composition, KernelLog, Processes, VictimMemory};
use self::invocation::{InvocationKey, Invocations};
use self::snapshot::{ReportedProcess, Scope, Snapshot};
use self::timeline::{Prepared, Recorder, Timeline, Warnings};
use crate::cgroup_path::{self, PathKind};
use crate::decode::{CgroupRef, Domain};
use crate::incident::OomKill;
use crate::kmsg::follow::{self, Lookup};
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
    /// The cgroup of a `memory.oom.group` kill, as the kernel's report of it says.
    pub kmsg_oom_group: Option<String>,
}

/// The domain as far as the moment tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainSeen {
    /// The OOM killer's own `oom_control` (full tier), with the cgroup's limit as read now.
    Kernel {
        domain: Domain,
        limit_bytes: Option<u64>,
    },
    /// The kernel's OOM report in its log: the memory cgroup whose limit was hit (`None`:
    /// host-wide), with its limit as the kernel printed it.
    KernelLog {
        cgroup: Option<String>,
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
/// as `statm` counts it), where it did; in its memory cgroup `memcg`.
fn reported_victim(kill: &OomKill, memcg: Option<&str>) -> Option<ReportedProcess> {
    let fields = kill.victim.fields.as_ref()?;
    let kb = fields.anon_rss_kb? + fields.file_rss_kb? + fields.shmem_rss_kb?;
    Some(ReportedProcess {
        pid: kill.victim.tgid.unwrap_or(kill.victim.pid),
        comm: kill.victim.comm.clone().or_else(|| fields.comm.clone()),
        rss_bytes: kb.saturating_mul(1024),
        memcg: memcg.map(str::to_owned),
    })
}

/// What was seen of one invocation of the OOM killer, which its kills share.
type Seen = (Snapshot, Option<Arc<Timeline>>, Option<Arc<Composition>>);

pub(crate) struct Observer {
    memory: Option<MemoryHierarchy>,
    /// One snapshot (and timeline, and composition) per invocation of the OOM killer: a
    /// `memory.oom.group` kill marks hundreds of victims within a millisecond, and they share
    /// the moment.
    invocations: Invocations<Seen>,
    recorder: Option<Recorder>,
    /// The kernel log followed for the OOM reports, or why it is not.
    kernel_log: Result<follow::KernelLog, String>,
}

impl Observer {
    /// Starts the memory timeline's recorder over `window`, sampling at most `max_cgroups`
    /// (opened beforehand in `prepared`, while the agent held its privileges), unless there is
    /// none; it sends `warnings` too.
    pub(crate) fn new(
        memory: Option<MemoryHierarchy>,
        window: Duration,
        max_cgroups: usize,
        prepared: Option<Prepared>,
        warnings: Option<Warnings>,
        kernel_log: Result<follow::KernelLog, String>,
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
            kernel_log,
        }
    }

    /// How the memory timeline's recorder runs, and over what window; `None` when it is off.
    pub(crate) fn timeline_coverage(&self) -> Option<(timeline::Coverage, Duration)> {
        let recorder = self.recorder.as_ref()?;
        Some((recorder.coverage(), recorder.window()))
    }

    /// Reads what the kill's explanation needs from the running system, now: its moment, the
    /// snapshot of its invocation, the recording of its domain's lead-up, and what filled the
    /// domain.
    pub(crate) fn observe(
        &mut self,
        kill: &OomKill,
    ) -> (
        Moment,
        Snapshot,
        Option<Arc<Timeline>>,
        Option<Arc<Composition>>,
    ) {
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
        // The kernel printed its report before it marked the victim: it is in the log now,
        // unless the kernel left it out (rate-limited).
        let victim_tgid = kill.victim.tgid.unwrap_or(kill.victim.pid);
        let lookup = match &self.kernel_log {
            Ok(log) => log.lookup(&[kill.victim.pid, victim_tgid], victim.memcg.as_deref()),
            Err(why) => Lookup::Unreadable(why.clone()),
        };
        let kmsg_oom_group = kernel_log_group(&lookup);
        // Where the victim was: as captured, else as the kernel's report says (a victim gone
        // before the tracepoint-only tier could ask /proc).
        let victim_memcg = victim.memcg.clone().or_else(|| match &lookup {
            Lookup::Report(seen) => seen
                .task_memcg
                .as_ref()
                .map(|path| String::from_utf8_lossy(&path.0).into_owned()),
            _ => None,
        });
        let domain = match (&kill.incident, &self.memory, &victim.memcg) {
            (None, _, _) if let Some(domain) = kernel_log_domain(&lookup) => domain,
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
            DomainSeen::KernelLog {
                cgroup: Some(path), ..
            } => Scope::Cgroup(path.clone()),
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
        let (snapshot, timeline, composition) =
            match self.invocations.continued(&key, kill.ktime_ns) {
                Some(seen) => seen,
                None => {
                    let timeline = self
                        .recorder
                        .as_ref()
                        .map(|recorder| Arc::new(recorder.timeline(&scope, kill.ktime_ns)));
                    // Before the snapshot: its reads take a while, and a late reading of the
                    // domain's files finds less of what the victim held.
                    let composition = self.composition(kill, &scope, &victim, lookup);
                    let reported = reported_victim(kill, victim_memcg.as_deref());
                    let snapshot = snapshot::take(self.memory.as_ref(), scope, reported);
                    let composition = composition.map(|mut composition| {
                        if composition.processes.is_none() {
                            composition.processes = Some(Processes {
                                count: snapshot.process_scan.read as u64,
                                resident_bytes: snapshot.process_scan.resident_bytes,
                                shmem_bytes: None,
                            });
                        }
                        Arc::new(composition)
                    });
                    let seen = (snapshot, timeline, composition);
                    self.invocations.started(key, kill.ktime_ns, seen.clone());
                    seen
                }
            };
        let moment = Moment {
            victim,
            trigger,
            domain,
            victim_is_pid_one,
            kmsg_oom_group,
        };
        (moment, snapshot, timeline, composition)
    }

    /// What filled the domain: as the kernel reported it, else read now and corrected for what
    /// the victim freed since its kill.
    fn composition(
        &self,
        kill: &OomKill,
        scope: &Scope,
        victim_paths: &PartyPaths,
        lookup: Lookup,
    ) -> Option<Composition> {
        let kernel_log = match lookup {
            Lookup::Report(seen) => {
                match Composition::from_report(&seen.report, seen.seq, procfs::page_size()) {
                    Some(mut composition) => {
                        composition.victim_shmem_bytes = victim_memory(kill).map(|v| v.shmem_bytes);
                        composition.place_shmem(self.memory.as_ref());
                        return Some(composition);
                    }
                    // A report without the domain's figures (cut short): as if there were none.
                    None => KernelLog::NoReport,
                }
            }
            Lookup::NoReport => KernelLog::NoReport,
            Lookup::Unreadable(why) => KernelLog::Unreadable(why),
        };
        let mut composition = match scope {
            Scope::Cgroup(path) => {
                Composition::read_cgroup(self.memory.as_ref()?, path, kernel_log)?
            }
            Scope::Host => Composition::read_host(kernel_log),
        };
        if let Some(victim) = victim_memory(kill) {
            // Gone from its cgroup: it has exited, and its memory was freed with its mm.
            let tgid = kill.victim.tgid.unwrap_or(kill.victim.pid);
            let gone = match (&self.memory, &victim_paths.memcg) {
                (Some(memory), Some(memcg)) => !memory.procs(memcg).contains(&tgid),
                _ => false,
            };
            composition.victim_shmem_bytes = Some(victim.shmem_bytes);
            composition.add_back(&victim, gone);
        }
        composition.place_shmem(self.memory.as_ref());
        Some(composition)
    }
}

/// The domain the kernel's report names, where it was found.
fn kernel_log_domain(lookup: &Lookup) -> Option<DomainSeen> {
    let Lookup::Report(seen) = lookup else {
        return None;
    };
    let limit_bytes = seen.report.memory.map(|memory| memory.limit_kb * 1024);
    match (&seen.oom_memcg, &seen.report.mem_info) {
        (Some(path), _) => Some(DomainSeen::KernelLog {
            cgroup: Some(String::from_utf8_lossy(&path.0).into_owned()),
            limit_bytes: limit_bytes.filter(|&limit| limit < 1 << 62),
        }),
        (None, Some(_)) => Some(DomainSeen::KernelLog {
            cgroup: None,
            limit_bytes: None,
        }),
        (None, None) => None,
    }
}

/// The cgroup whose every task the kernel's report kills (`memory.oom.group`), if it says so.
fn kernel_log_group(lookup: &Lookup) -> Option<String> {
    let Lookup::Report(seen) = lookup else {
        return None;
    };
    let group = seen.group.as_ref()?;
    Some(String::from_utf8_lossy(&group.0).into_owned())
}

/// What the kernel reported of the victim with its kill, in bytes.
fn victim_memory(kill: &OomKill) -> Option<VictimMemory> {
    let fields = kill.victim.fields.as_ref()?;
    Some(VictimMemory {
        anon_bytes: fields.anon_rss_kb? * 1024,
        file_bytes: fields.file_rss_kb.unwrap_or(0) * 1024,
        shmem_bytes: fields.shmem_rss_kb.unwrap_or(0) * 1024,
        page_tables_bytes: fields.pgtables_kb.unwrap_or(0) * 1024,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Lookup, kernel_log_group};
    use crate::kmsg::follow::Seen;
    use crate::kmsg::parse::KernelText;

    /// Each victim of a `memory.oom.group` kill carries the group the kernel named: the pod's
    /// container whose `memory.oom.group` the kubelet set, as the whole-system guest shows it.
    #[test]
    fn the_group_of_the_kernels_report_is_the_kills() {
        let group = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podc6292756_85cc_b4e2_1981_e10c5d015a64.slice/cri-containerd-f8c41ddba4b0.scope";
        let seen = |group: Option<&str>| {
            Lookup::Report(Seen {
                pid: 1666,
                seq: 7,
                oom_memcg: Some(KernelText(group.unwrap_or("/a").as_bytes().to_vec())),
                group: group.map(|group| KernelText(group.as_bytes().to_vec())),
                task_memcg: None,
                report: Arc::default(),
            })
        };
        assert_eq!(kernel_log_group(&seen(Some(group))).as_deref(), Some(group));
        assert_eq!(kernel_log_group(&seen(None)), None);
        assert_eq!(kernel_log_group(&Lookup::NoReport), None);
    }
}
