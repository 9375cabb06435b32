//! Observe: what must be read the moment a kill arrives, before it changes. The victim's cgroup
//! is removed within milliseconds when its container goes, the memory counters move, and the
//! process that spiked frees its memory a second later. The reads run off the runtime's threads
//! and within a budget (see [`bounded`]); the attribute stage, which may wait for a runtime,
//! comes after.

pub(crate) mod bounded;
pub(crate) mod cgroupfs;
pub(crate) mod composition;
pub(crate) mod invocation;
pub(crate) mod snapshot;
pub(crate) mod timeline;
pub(crate) mod tmpfs;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use self::bounded::{BoundedReads, Progress};

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
use crate::record::{Cut, ObservedPart};

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
    /// As captured, else read from `/proc` now. The read may wait: not on the runtime's
    /// threads.
    pub(crate) fn of(cgroup: Option<&CgroupRef>, memcg: Option<&CgroupRef>, pid: u32) -> Self {
        let captured = Self::captured(cgroup, memcg);
        if captured.cgroup.is_some() || captured.memcg.is_some() {
            return captured;
        }
        // Nothing captured in the kernel: the process may still be there (the trigger usually
        // is).
        Self::from_proc(pid)
    }

    /// What the kernel captured, without reading anything.
    pub(crate) fn captured(cgroup: Option<&CgroupRef>, memcg: Option<&CgroupRef>) -> Self {
        PartyPaths {
            cgroup: cgroup.map(|c| c.path.clone()),
            memcg: memcg.map(|c| c.path.clone()),
        }
    }

    /// `/proc/<pid>/cgroup`; nothing once the process is gone. The read may wait.
    pub(crate) fn from_proc(pid: u32) -> Self {
        match procfs::cgroups(pid) {
            Some(paths) => PartyPaths {
                cgroup: paths.unified,
                memcg: paths.memory,
            },
            None => PartyPaths::default(),
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

/// What was seen of one invocation of the OOM killer, which its kills share: each part `None`
/// where its read was cut (see [`bounded`]).
#[derive(Clone, Default)]
struct Seen {
    timeline: Option<Option<Arc<Timeline>>>,
    composition: Option<Option<Arc<Composition>>>,
    /// Its cgroups, with the processes once those were read.
    snapshot: Option<Snapshot>,
    snapshot_processes: bool,
}

impl Seen {
    /// The parts cut from it.
    fn missing(&self, missing: &mut Vec<ObservedPart>) {
        if self.timeline.is_none() {
            missing.push(ObservedPart::Timeline);
        }
        if self.composition.is_none() {
            missing.push(ObservedPart::Composition);
        }
        if self.snapshot.is_none() {
            missing.push(ObservedPart::SnapshotCgroups);
        }
        if !self.snapshot_processes {
            missing.push(ObservedPart::SnapshotProcesses);
        }
    }
}

/// What one kill's reads published, in the order they are read.
#[derive(Default)]
struct KillRead {
    paths: Option<(PartyPaths, PartyPaths)>,
    domain: Option<(DomainSeen, Scope, InvocationKey)>,
    /// The `memory.oom.group` cgroup the kernel's report names.
    kmsg_oom_group: Option<String>,
    seen: Seen,
}

/// What each kill's reads go through, shared with reads still under way (or stuck).
struct Sources {
    memory: Option<MemoryHierarchy>,
    /// One snapshot (and timeline, and composition) per invocation of the OOM killer: a
    /// `memory.oom.group` kill marks hundreds of victims within a millisecond, and they share
    /// the moment. Never held across a read.
    invocations: Mutex<Invocations<Seen>>,
    recorder: Option<Recorder>,
    /// The kernel log followed for the OOM reports, or why it is not.
    kernel_log: Result<follow::KernelLog, String>,
}

/// What [`Observer::observe`] read of a kill, and what its record goes out without.
pub(crate) struct Observed {
    pub(crate) moment: Moment,
    pub(crate) snapshot: Snapshot,
    pub(crate) timeline: Option<Arc<Timeline>>,
    pub(crate) composition: Option<Arc<Composition>>,
    pub(crate) cut: Option<Cut>,
}

pub(crate) struct Observer {
    sources: Arc<Sources>,
    reads: BoundedReads,
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
            sources: Arc::new(Sources {
                memory,
                invocations: Mutex::new(Invocations::new()),
                recorder,
                kernel_log,
            }),
            reads: BoundedReads::new(bounded::READ_BUDGET),
        }
    }

    /// How the memory timeline's recorder runs, and over what window; `None` when it is off.
    pub(crate) fn timeline_coverage(&self) -> Option<(timeline::Coverage, Duration)> {
        let recorder = self.sources.recorder.as_ref()?;
        Some((recorder.coverage(), recorder.window()))
    }

    /// Events whose reads were given up after their budget, since the start.
    pub(crate) fn reads_given_up(&self) -> u64 {
        self.reads.given_up()
    }

    /// Reads what the kill's explanation needs from the running system, now, off the
    /// runtime's threads and within [`bounded::READ_BUDGET`]: its moment, the snapshot of its
    /// invocation, the recording of its domain's lead-up, and what filled the domain. What did
    /// not answer in time is left out, and `cut` says so.
    pub(crate) async fn observe(&mut self, kill: Box<OomKill>) -> (Box<OomKill>, Observed) {
        let kill: Arc<OomKill> = Arc::from(kill);
        let finished = self
            .reads
            .run({
                let sources = Arc::clone(&self.sources);
                let kill = Arc::clone(&kill);
                move |progress: &Progress<KillRead>| sources.read(&kill, progress)
            })
            .await;
        let KillRead {
            paths,
            domain,
            kmsg_oom_group,
            seen,
        } = &finished.published;
        let mut missing = Vec::new();
        let (victim, trigger) = match paths {
            Some(paths) => paths.clone(),
            None => {
                missing.push(ObservedPart::PartyCgroups);
                (
                    PartyPaths::captured(kill.victim.cgroup.as_ref(), kill.victim.memcg.as_ref()),
                    PartyPaths::captured(kill.trigger.cgroup.as_ref(), kill.trigger.memcg.as_ref()),
                )
            }
        };
        let (domain, scope) = match domain {
            Some((domain, scope, key)) => {
                if finished.stopped.is_some() {
                    // Later kills of its invocation take what was read, rather than wait on
                    // the same reads.
                    self.sources
                        .lock_invocations()
                        .keep(key.clone(), kill.ktime_ns, seen.clone());
                }
                (domain.clone(), scope.clone())
            }
            None => {
                missing.push(ObservedPart::Domain);
                unread_domain(&kill)
            }
        };
        seen.missing(&mut missing);
        let cut = finished.cut(self.reads.budget(), missing);
        if let Some(cut) = &cut {
            log::warn!(
                "the OOM kill of pid {} is written {}",
                kill.victim.pid,
                cut.describe()
            );
        }
        let snapshot = seen
            .snapshot
            .clone()
            .unwrap_or_else(|| Snapshot::unread(scope));
        let observed = Observed {
            moment: Moment {
                victim,
                trigger,
                domain,
                // Read on the capture side (kernel, else /proc): a second read here would
                // find less.
                victim_is_pid_one: kill.namespace_init,
                kmsg_oom_group: kmsg_oom_group.clone(),
            },
            snapshot,
            timeline: seen.timeline.clone().flatten(),
            composition: seen.composition.clone().flatten(),
            cut,
        };
        drop(finished);
        let kill = Arc::try_unwrap(kill).unwrap_or_else(|shared| (*shared).clone());
        (Box::new(kill), observed)
    }

    /// A SIGKILL sender's cgroups: as the kernel captured them, else from `/proc` within
    /// [`bounded::READ_BUDGET`], off the runtime's threads.
    pub(crate) async fn sender_paths(
        &mut self,
        cgroup: Option<&CgroupRef>,
        memcg: Option<&CgroupRef>,
        pid: u32,
    ) -> (PartyPaths, Option<Cut>) {
        let captured = PartyPaths::captured(cgroup, memcg);
        if captured.cgroup.is_some() || captured.memcg.is_some() {
            return (captured, None);
        }
        let finished = self
            .reads
            .run(move |progress: &Progress<Option<PartyPaths>>| {
                if progress.reading(ObservedPart::PartyCgroups) {
                    let paths = PartyPaths::from_proc(pid);
                    progress.publish(|published| *published = Some(paths));
                }
            })
            .await;
        match &finished.published {
            Some(paths) => (paths.clone(), None),
            None => {
                let cut = finished.cut(self.reads.budget(), vec![ObservedPart::PartyCgroups]);
                if let Some(cut) = &cut {
                    log::warn!(
                        "the SIGKILL sent by pid {pid} is written {}",
                        cut.describe()
                    );
                }
                (captured, cut)
            }
        }
    }
}

/// The domain as far as the kill itself tells, without reading anything.
fn unread_domain(kill: &OomKill) -> (DomainSeen, Scope) {
    match &kill.incident {
        Some(incident) => {
            let domain = incident.entry.domain.clone();
            let scope = match &domain {
                Domain::Cgroup(cgroup) => Scope::Cgroup(cgroup.path.clone()),
                _ => Scope::Host,
            };
            (
                DomainSeen::Kernel {
                    domain,
                    limit_bytes: None,
                },
                scope,
            )
        }
        None => (DomainSeen::Unknown, Scope::Host),
    }
}

impl Sources {
    fn lock_invocations(&self) -> MutexGuard<'_, Invocations<Seen>> {
        self.invocations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The reads of one kill, on the reads' thread: each part published as soon as it is read.
    fn read(&self, kill: &OomKill, progress: &Progress<KillRead>) {
        if !progress.reading(ObservedPart::PartyCgroups) {
            return;
        }
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
        progress.publish(|read| read.paths = Some((victim.clone(), trigger)));
        if !progress.reading(ObservedPart::Domain) {
            return;
        }
        // The kernel printed its report before it marked the victim: it is in the log now,
        // unless the kernel left it out (rate-limited).
        let victim_tgid = kill.victim.tgid.unwrap_or(kill.victim.pid);
        let lookup = match &self.kernel_log {
            Ok(log) => log.lookup(&[kill.victim.pid, victim_tgid], victim.memcg.as_deref()),
            Err(why) => Lookup::Unreadable(why.clone()),
        };
        let kmsg_oom_group = kernel_log_group(&lookup);
        progress.publish(|read| read.kmsg_oom_group = kmsg_oom_group);
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
                // The kernel's report, where the cgroup is gone already (a service's, removed
                // by systemd as its main process died).
                let limit_bytes = match (&domain, memory) {
                    (Domain::Cgroup(cgroup), Some(memory)) => memory.limit_bytes(&cgroup.path),
                    _ => None,
                }
                .or_else(|| reported_limit(&lookup, &domain));
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
        progress.publish(|read| read.domain = Some((domain, scope.clone(), key.clone())));
        let continued = self.lock_invocations().continued(&key, kill.ktime_ns);
        if let Some(seen) = continued {
            progress.publish(|read| read.seen = seen);
            return;
        }
        if !progress.reading(ObservedPart::Timeline) {
            return;
        }
        let timeline = self
            .recorder
            .as_ref()
            .map(|recorder| Arc::new(recorder.timeline(&scope, kill.ktime_ns)));
        progress.publish(|read| read.seen.timeline = Some(timeline.clone()));
        // Before the snapshot: its reads take a while, and a late reading of the domain's
        // files finds less of what the victim held.
        if !progress.reading(ObservedPart::Composition) {
            return;
        }
        let composition = self.composition(kill, &scope, &victim, lookup);
        progress.publish(|read| {
            read.seen.composition = Some(composition.clone().map(Arc::new));
        });
        if !progress.reading(ObservedPart::SnapshotCgroups) {
            return;
        }
        let reported = reported_victim(kill, victim_memcg.as_deref());
        let snapshot = snapshot::take_within(
            self.memory.as_ref(),
            scope,
            reported,
            progress.deadline(),
            |cgroups: &Snapshot| {
                progress.publish(|read| read.seen.snapshot = Some(cgroups.clone()));
                progress.reading(ObservedPart::SnapshotProcesses)
            },
        );
        let Some(snapshot) = snapshot else {
            return;
        };
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
        let seen = Seen {
            timeline: Some(timeline),
            composition: Some(composition),
            snapshot: Some(snapshot),
            snapshot_processes: true,
        };
        progress.publish(|read| read.seen = seen.clone());
        self.lock_invocations().started(key, kill.ktime_ns, seen);
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

/// The limit of `domain` as the kernel's report printed it, where the report is of that cgroup.
fn reported_limit(lookup: &Lookup, domain: &Domain) -> Option<u64> {
    let Domain::Cgroup(cgroup) = domain else {
        return None;
    };
    match kernel_log_domain(lookup)? {
        DomainSeen::KernelLog {
            cgroup: Some(path),
            limit_bytes,
        } if path == cgroup.path => limit_bytes,
        _ => None,
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
mod tests;
