//! Join: the parts that the programs capture for one victim become one [`OomKill`], and the
//! kills of one `oom_kill_process` invocation one [`OomIncident`].
//!
//! Both `mark_victim` programs fire inside the same call on the same CPU, so `(cpu, victim pid)`
//! pairs them whatever order their records arrive in. A part whose partner never comes (its
//! reserve failed, or that program is not attached) is reported on its own after a short wait.
//!
//! Where `oom_kill_process` is hooked, its entry opens an incident for the trigger's thread and
//! its return closes it; every victim marked on that thread in between belongs to it (one for a
//! plain kill, every member for `memory.oom.group`). A victim marked with no incident open was
//! not killed: the kernel gave an already exiting task access to memory reserves.
//!
//! A SIGKILL is held for [`PARTNER_TIMEOUT`] before it is reported: the OOM killer sends its
//! victim SIGKILL right before it marks it, so a `mark_victim` part for the same pid that comes
//! in that time means the SIGKILL is part of an OOM kill: it joins that kill instead of being
//! reported, unless a process sent it (`si_code` ≤ 0): the OOM killer sends as the kernel. The
//! OOM killer also SIGKILLs every other process sharing the victim's memory (`CLONE_VM` without
//! `CLONE_THREAD`, e.g. a `vfork()` child) without marking it; those are reported as SIGKILLs
//! sent by the kernel from the OOM trigger's thread, the truth of it.
//!
//! Where `mark_victim` passes only a pid (before 6.9), the victim's name, memory and cgroups
//! come from what else saw its task: `oom_kill_process`'s `oc->chosen` and the target of that
//! SIGKILL. Each field is taken from the first part that has it, in the order of [`Parts`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    Event, IncidentContext, OomIncident, OomKill, Parts, SenderKind, Sigkill, TargetProc, Trigger,
    Victim,
};
use crate::badness::Badness;
use crate::decode::{
    ContextEndPart, ContextPart, Part, SigkillTargetPart, TaskDetails, TaskPart, TracepointPart,
};

/// How long a part waits for its partner. They are submitted microseconds apart, so this only
/// matters when one was lost.
pub(crate) const PARTNER_TIMEOUT: Duration = Duration::from_millis(100);

/// How long an incident stays open past its last victim without its end record (lost to a
/// full ring buffer). Counted from the last victim, not the start: killing a
/// `memory.oom.group` of 1,000 takes the kernel seconds on a slow machine.
pub(crate) const INCIDENT_TIMEOUT: Duration = Duration::from_secs(2);

/// Pairs parts into kills, and kills into incidents.
pub(crate) struct Joiner {
    /// Whether a task program is attached, so a tracepoint part should wait for its partner.
    expect_task_parts: bool,
    /// Whether `oom_kill_process` is hooked, so kills belong to incidents.
    expect_incidents: bool,
    /// Whether a program reads each SIGKILL's target in the kernel, so a SIGKILL waits for its
    /// target part.
    expect_sigkill_targets: bool,
    pending: Vec<Pending>,
    open: Vec<OpenIncident>,
    /// SIGKILLs waiting to see whether the OOM killer marks their target.
    held: Vec<HeldSigkill>,
    /// Target parts waiting for their SIGKILL (both programs fire in the same call), each with
    /// what /proc said of the target, where it was asked.
    targets: Vec<(Instant, SigkillTargetPart, Option<TargetProc>)>,
    /// SIGKILLs dropped because they were the OOM killer's to a victim it then marked.
    oom_sigkills: u64,
    /// The denominator of an estimated badness when no incident gives one: RAM + swap.
    host_totalpages: u64,
    page_kb: u64,
}

struct Pending {
    cpu: u32,
    /// `None` when the tracepoint record could not be decoded.
    victim_pid: Option<u32>,
    since: Instant,
    incident: Option<Arc<IncidentContext>>,
    tracepoint: Option<TracepointPart>,
    task: Option<TaskPart>,
    /// The OOM killer's SIGKILL to the victim, taken when the first part came.
    sigkill: Option<Sigkill>,
}

struct HeldSigkill {
    since: Instant,
    sigkill: Sigkill,
}

struct OpenIncident {
    /// When it opened, or when its last victim was marked.
    since: Instant,
    incident: OomIncident,
}

impl Joiner {
    pub(crate) fn new(expect_task_parts: bool, expect_incidents: bool) -> Self {
        Joiner {
            expect_task_parts,
            expect_incidents,
            expect_sigkill_targets: false,
            pending: Vec::new(),
            open: Vec::new(),
            held: Vec::new(),
            oom_sigkills: 0,
            targets: Vec::new(),
            host_totalpages: 0,
            page_kb: 4,
        }
    }

    /// Says that each SIGKILL comes with a target part (the signal's task program is attached).
    pub(crate) fn with_sigkill_targets(mut self, expected: bool) -> Self {
        self.expect_sigkill_targets = expected;
        self
    }

    /// Sets what an estimated badness is relative to when no incident says.
    pub(crate) fn with_host_memory(mut self, totalpages: u64, page_kb: u64) -> Self {
        self.host_totalpages = totalpages;
        self.page_kb = page_kb;
        self
    }

    /// Takes one part; returns what it completes.
    #[cfg(test)]
    pub(crate) fn push(&mut self, part: Part, now: Instant) -> Vec<Event> {
        self.push_with(part, None, now)
    }

    /// As [`push`](Self::push); `target_proc` is what /proc says of the target of a SIGKILL
    /// or of a SIGKILL's target part, whichever it was asked for.
    pub(crate) fn push_with(
        &mut self,
        part: Part,
        target_proc: Option<TargetProc>,
        now: Instant,
    ) -> Vec<Event> {
        match part {
            Part::Context(context) => self.open_incident(*context, now),
            Part::ContextEnd(end) => self.close_incident(&end),
            Part::Sigkill(sigkill) => {
                let sender_kind = SenderKind::from_code(sigkill.target.code);
                let (target_task, target_part_proc) = self
                    .targets
                    .iter()
                    .position(|(_, target, _)| {
                        target.cpu == sigkill.cpu && target.target.pid == sigkill.target.pid
                    })
                    .map(|index| {
                        let (_, target, proc) = self.targets.swap_remove(index);
                        (Some(target), proc)
                    })
                    .unwrap_or_default();
                let sigkill = Sigkill {
                    part: *sigkill,
                    target_task,
                    target_proc: target_proc.or(target_part_proc),
                    sender_kind,
                };
                if self.is_complete(&sigkill) {
                    return vec![Event::Sigkill(Box::new(sigkill))];
                }
                self.held.push(HeldSigkill {
                    since: now,
                    sigkill,
                });
                Vec::new()
            }
            Part::SigkillTarget(target) => {
                let waiting = self.held.iter().position(|held| {
                    let part = &held.sigkill.part;
                    held.sigkill.target_task.is_none()
                        && part.cpu == target.cpu
                        && part.target.pid == target.target.pid
                });
                let Some(index) = waiting else {
                    self.targets.push((now, *target, target_proc));
                    return Vec::new();
                };
                let held = &mut self.held[index];
                held.sigkill.target_task = Some(*target);
                if held.sigkill.target_proc.is_none() {
                    held.sigkill.target_proc = target_proc;
                }
                if self.is_complete(&self.held[index].sigkill) {
                    let held = self.held.remove(index);
                    return vec![Event::Sigkill(Box::new(held.sigkill))];
                }
                Vec::new()
            }
            Part::Tracepoint(_) | Part::Task(_) => self
                .push_victim_part(part, now)
                .map(|kill| Event::Kill(Box::new(kill)))
                .into_iter()
                .collect(),
        }
    }

    fn open_incident(&mut self, entry: ContextPart, now: Instant) -> Vec<Event> {
        // An incident still open on this thread lost its end record.
        let events = self.take_open(entry.trigger.pid, false);
        let context = IncidentContext {
            id: format!("{}-{}", entry.ktime_ns, entry.trigger.pid),
            entry,
        };
        self.open.push(OpenIncident {
            since: now,
            incident: OomIncident {
                context: Arc::new(context),
                victims: Vec::new(),
                ended: false,
            },
        });
        events
    }

    fn close_incident(&mut self, end: &ContextEndPart) -> Vec<Event> {
        self.take_open(end.trigger.pid, true)
    }

    /// Removes the incident open on thread `tid`, if any, as an event.
    fn take_open(&mut self, tid: u32, ended: bool) -> Vec<Event> {
        match self
            .open
            .iter()
            .position(|open| open.incident.context.entry.trigger.pid == tid)
        {
            Some(index) => {
                let mut incident = self.open.swap_remove(index).incident;
                incident.ended = ended;
                vec![Event::Incident(incident)]
            }
            None => Vec::new(),
        }
    }

    /// The incident open on the trigger's thread, noting the victim in it.
    fn incident_for(
        &mut self,
        trigger_tid: u32,
        victim: Option<u32>,
        now: Instant,
    ) -> Option<Arc<IncidentContext>> {
        let open = self
            .open
            .iter_mut()
            .find(|open| open.incident.context.entry.trigger.pid == trigger_tid)?;
        if let Some(victim) = victim
            && !open.incident.victims.contains(&victim)
        {
            open.incident.victims.push(victim);
            open.since = now;
        }
        Some(Arc::clone(&open.incident.context))
    }

    /// The OOM killer marks `pid`: the SIGKILL it sent it just before is part of this kill,
    /// and is returned to join it.
    /// Whether `sigkill` can be reported at once: a process's (the OOM killer never sends
    /// one of those, so no kill will claim it) with everything its programs send. The OOM
    /// killer's, and any whose sender the kernel did not say, wait for the kill that may claim
    /// them. Not holding a process's saves a wakeup per SIGKILL, which is most of what a
    /// flood of them costs the agent.
    fn is_complete(&self, sigkill: &Sigkill) -> bool {
        sigkill.sender_kind == SenderKind::Process
            && (sigkill.target_task.is_some() || !self.expect_sigkill_targets)
    }

    fn take_oom_sigkill(&mut self, pid: u32) -> Option<Sigkill> {
        // The OOM killer sends with SEND_SIG_PRIV (SI_KERNEL): a `kill -9` from a process just
        // before is another story (its target may then be marked as exiting, not killed).
        let (taken, held): (Vec<_>, _) =
            std::mem::take(&mut self.held)
                .into_iter()
                .partition(|held| {
                    held.sigkill.part.target.pid == pid
                        && held.sigkill.sender_kind != SenderKind::Process
                });
        self.held = held;
        self.oom_sigkills += taken.len() as u64;
        taken.into_iter().last().map(|held| held.sigkill)
    }

    /// How many SIGKILLs were found to be part of an OOM kill, and so not reported.
    pub(crate) fn oom_sigkills(&self) -> u64 {
        self.oom_sigkills
    }

    fn push_victim_part(&mut self, part: Part, now: Instant) -> Option<OomKill> {
        let sigkill = match &part {
            Part::Tracepoint(TracepointPart {
                victim: Some(victim),
                ..
            }) => self.take_oom_sigkill(victim.pid),
            Part::Task(task) => self.take_oom_sigkill(task.victim.pid),
            _ => None,
        };
        match part {
            Part::Tracepoint(tracepoint) => {
                let victim_pid = tracepoint.victim.as_ref().map(|victim| victim.pid);
                let partner = self.pending.iter().position(|p| {
                    self.expect_task_parts
                        && p.tracepoint.is_none()
                        && p.cpu == tracepoint.cpu
                        && victim_pid.is_none_or(|pid| p.victim_pid == Some(pid))
                });
                if let Some(index) = partner {
                    let mut pending = self.pending.swap_remove(index);
                    pending.tracepoint = Some(tracepoint);
                    pending.sigkill = pending.sigkill.or(sigkill);
                    return Some(self.join(pending));
                }
                let pending = Pending {
                    cpu: tracepoint.cpu,
                    victim_pid,
                    since: now,
                    incident: self.incident_for(tracepoint.trigger.pid, victim_pid, now),
                    tracepoint: Some(tracepoint),
                    task: None,
                    sigkill,
                };
                // Without a task program there is no partner to wait for.
                if !self.expect_task_parts {
                    return Some(self.join(pending));
                }
                self.pending.push(pending);
                None
            }
            Part::Task(task) => {
                let partner = self.pending.iter().position(|p| {
                    p.task.is_none()
                        && p.cpu == task.cpu
                        && p.victim_pid.is_none_or(|pid| pid == task.victim.pid)
                });
                match partner {
                    Some(index) => {
                        let mut pending = self.pending.swap_remove(index);
                        pending.task = Some(*task);
                        pending.sigkill = pending.sigkill.or(sigkill);
                        Some(self.join(pending))
                    }
                    None => {
                        let incident =
                            self.incident_for(task.trigger.pid, Some(task.victim.pid), now);
                        self.pending.push(Pending {
                            cpu: task.cpu,
                            victim_pid: Some(task.victim.pid),
                            since: now,
                            incident,
                            tracepoint: None,
                            task: Some(*task),
                            sigkill,
                        });
                        None
                    }
                }
            }
            Part::Context(_) | Part::ContextEnd(_) | Part::Sigkill(_) | Part::SigkillTarget(_) => {
                None
            }
        }
    }

    /// When the oldest waiting part or incident gives up on its partner or end.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let parts = self.pending.iter().map(|p| p.since + PARTNER_TIMEOUT);
        let incidents = self.open.iter().map(|open| open.since + INCIDENT_TIMEOUT);
        let sigkills = self.held.iter().map(|held| held.since + PARTNER_TIMEOUT);
        let targets = self
            .targets
            .iter()
            .map(|(since, _, _)| *since + PARTNER_TIMEOUT);
        parts.chain(incidents).chain(sigkills).chain(targets).min()
    }

    /// Reports the parts and incidents that waited too long on their own.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Event> {
        let (expired, waiting): (Vec<_>, _) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| now >= p.since + PARTNER_TIMEOUT);
        self.pending = waiting;
        let mut events: Vec<Event> = expired
            .into_iter()
            .map(|pending| Event::Kill(Box::new(self.join(pending))))
            .collect();
        let (expired, open): (Vec<_>, _) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|open| now >= open.since + INCIDENT_TIMEOUT);
        self.open = open;
        events.extend(
            expired
                .into_iter()
                .map(|open| Event::Incident(open.incident)),
        );
        // A target part whose SIGKILL record was lost says too little to report.
        self.targets
            .retain(|(since, _, _)| now < *since + PARTNER_TIMEOUT);
        let (expired, held): (Vec<_>, _) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|held| now >= held.since + PARTNER_TIMEOUT);
        self.held = held;
        events.extend(
            expired
                .into_iter()
                .map(|held| Event::Sigkill(Box::new(held.sigkill))),
        );
        events
    }

    /// Reports everything waiting: on shutdown, nothing is kept back.
    pub(crate) fn flush(&mut self) -> Vec<Event> {
        let pending = std::mem::take(&mut self.pending);
        let mut events: Vec<Event> = pending
            .into_iter()
            .map(|pending| Event::Kill(Box::new(self.join(pending))))
            .collect();
        events.extend(
            self.open
                .drain(..)
                .map(|open| Event::Incident(open.incident)),
        );
        events.extend(
            self.held
                .drain(..)
                .map(|held| Event::Sigkill(Box::new(held.sigkill))),
        );
        self.targets.clear();
        events
    }

    fn join(&self, pending: Pending) -> OomKill {
        let Pending {
            cpu: _,
            victim_pid: _,
            since: _,
            incident,
            tracepoint,
            task,
            sigkill,
        } = pending;
        let marked_without_kill = self.expect_incidents && incident.is_none();
        let victim_pid = task.as_ref().map(|task| task.victim.pid).or_else(|| {
            tracepoint
                .as_ref()?
                .victim
                .as_ref()
                .map(|victim| victim.pid)
        });
        let chosen = incident
            .as_ref()
            .and_then(|incident| incident.entry.chosen.as_ref())
            .filter(|chosen| Some(chosen.task.pid) == victim_pid);
        let kill = join(
            tracepoint,
            task,
            chosen.cloned(),
            sigkill.as_ref(),
            self.page_kb,
        );
        let control = incident
            .as_ref()
            .and_then(|incident| incident.entry.control);
        let badness = match (chosen, control, &kill.victim.fields) {
            (Some(_), Some(control), _) => Some(Badness::from_kernel(&control)),
            // Another member of a group kill: same domain, so the same denominator.
            (None, Some(control), Some(fields)) => {
                Badness::estimate(fields, control.totalpages, self.page_kb)
            }
            (_, None, Some(fields)) => {
                Badness::estimate(fields, self.host_totalpages, self.page_kb)
            }
            (_, _, None) => None,
        };
        OomKill {
            incident,
            marked_without_kill,
            badness,
            ..kill
        }
    }
}

/// Merges what each program saw: each field from the first part that has it, in the order of
/// [`Parts`]. At least the tracepoint or the task part is present.
fn join(
    tracepoint: Option<TracepointPart>,
    task: Option<TaskPart>,
    chosen: Option<TaskDetails>,
    sigkill: Option<&Sigkill>,
    page_kb: u64,
) -> OomKill {
    let parts = Parts {
        tracepoint: tracepoint.is_some(),
        task: task.is_some(),
        chosen: chosen.is_some(),
        sigkill: sigkill.is_some(),
    };
    let target = sigkill.and_then(|sigkill| sigkill.target_task.as_ref());
    // The victim as each task reader saw it, in order.
    let readers: Vec<TaskDetails> = [
        task.as_ref().map(|task| TaskDetails {
            task: task.victim.clone(),
            ns_pid: task.victim_ns_pid,
            memory: task.victim_memory,
            cgroup: task.victim_cgroup.clone(),
            memcg: task.victim_memcg.clone(),
        }),
        chosen,
        target.map(|target| TaskDetails {
            task: target.target.clone(),
            ns_pid: target.target_ns_pid,
            memory: target.target_memory,
            cgroup: target.target_cgroup.clone(),
            memcg: target.target_memcg.clone(),
        }),
    ]
    .into_iter()
    .flatten()
    .collect();

    let (ktime_ns, trigger_task) = match (&tracepoint, &task) {
        (_, Some(task)) => (task.ktime_ns, task.trigger.clone()),
        (Some(tracepoint), None) => (tracepoint.ktime_ns, tracepoint.trigger.clone()),
        (None, None) => unreachable!("a pending kill always holds a part"),
    };
    // From a helper that needs no BTF.
    let trigger_cgroup_id = tracepoint
        .as_ref()
        .map(|tracepoint| tracepoint.trigger_cgroup_id);
    let tracepoint_fields = tracepoint.and_then(|tracepoint| tracepoint.victim);
    let pid = readers
        .first()
        .map(|reader| reader.task.pid)
        .or_else(|| tracepoint_fields.as_ref().map(|fields| fields.pid))
        .unwrap_or(0);
    let comm = readers
        .first()
        .map(|reader| reader.task.comm.clone())
        .or_else(|| sigkill.and_then(|sigkill| sigkill.part.target.comm.clone()))
        .or_else(|| tracepoint_fields.as_ref()?.comm.clone());
    let from_task = readers
        .iter()
        .find(|reader| reader.memory.mm.is_some())
        .or(readers.first())
        .map(|reader| reader.memory.to_fields(pid, comm.clone(), page_kb));
    let fields = match (tracepoint_fields, from_task) {
        (Some(fields), Some(from_task)) => Some(fields.or(from_task)),
        (fields, from_task) => fields.or(from_task),
    };
    // The OOM killer's SIGKILL is sent from the trigger's thread: its sender is the trigger.
    let sender = sigkill
        .map(|sigkill| &sigkill.part)
        .filter(|sender| sender.sender.pid == trigger_task.pid);
    let trigger_cgroup = task
        .as_ref()
        .and_then(|task| task.trigger_cgroup.clone())
        .or_else(|| sender?.sender_cgroup.clone());
    let trigger_memcg = task
        .as_ref()
        .and_then(|task| task.trigger_memcg.clone())
        .or_else(|| sender?.sender_memcg.clone());
    OomKill {
        ktime_ns,
        victim: Victim {
            pid,
            tgid: readers
                .first()
                .map(|reader| reader.task.tgid)
                .or_else(|| sigkill?.target_tgid()),
            comm,
            fields,
            cgroup: readers.iter().find_map(|reader| reader.cgroup.clone()),
            memcg: readers.iter().find_map(|reader| reader.memcg.clone()),
        },
        trigger: Trigger {
            task: trigger_task,
            cgroup_id: trigger_cgroup
                .as_ref()
                .map(|cgroup| cgroup.id)
                .or(trigger_cgroup_id),
            cgroup: trigger_cgroup,
            memcg: trigger_memcg,
        },
        parts,
        incident: None,
        marked_without_kill: false,
        badness: None,
        namespace_init: readers
            .iter()
            .find_map(|reader| reader.ns_pid)
            .map(|pid| pid == 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Task;
    use crate::decode::mark_victim::MarkVictimLayout;
    use crate::decode::signal::{SI_KERNEL, SI_USER};
    use crate::decode::tests::{
        as_bytes, context_end_record, context_record, layout_6_18, mark_victim_record, sigkill,
        sigkill_target, victim_task_record,
    };
    use crate::decode::{Part, decode};

    fn tracepoint(cpu: u32, pid: u32) -> Part {
        decode(
            &as_bytes(&mark_victim_record(cpu, pid, 100)),
            &layout_6_18(),
        )
        .unwrap()
    }

    fn task(cpu: u32, pid: u32) -> Part {
        decode(&as_bytes(&victim_task_record(cpu, pid)), &layout_6_18()).unwrap()
    }

    /// The test records' trigger is the victim itself, as in a self-inflicted memcg OOM.
    fn context(trigger: u32, victim: u32) -> Part {
        decode(
            &as_bytes(&context_record(0, trigger, victim, Some(4242))),
            &layout_6_18(),
        )
        .unwrap()
    }

    fn end(trigger: u32) -> Part {
        decode(&as_bytes(&context_end_record(0, trigger)), &layout_6_18()).unwrap()
    }

    fn kills(events: Vec<Event>) -> Vec<OomKill> {
        events
            .into_iter()
            .filter_map(|event| match event {
                Event::Kill(kill) => Some(*kill),
                Event::Incident(_) | Event::Sigkill(_) => None,
            })
            .collect()
    }

    fn sigkills(events: Vec<Event>) -> Vec<Sigkill> {
        events
            .into_iter()
            .filter_map(|event| match event {
                Event::Sigkill(sigkill) => Some(*sigkill),
                Event::Incident(_) | Event::Kill(_) => None,
            })
            .collect()
    }

    /// `mark_victim` as kernels before 6.9 record it: the pid, nothing else.
    fn pid_only_tracepoint(pid: u32) -> Part {
        let format = crate::capture::tracefs::TracepointFormat::parse(
            crate::capture::tracefs::fixtures::PID_ONLY,
        )
        .unwrap();
        let layout = MarkVictimLayout::from_format(&format).unwrap();
        let mut record = mark_victim_record(0, pid, 0);
        record.raw = [0; tracer_common::TRACEPOINT_RAW_LEN];
        record.raw[8..12].copy_from_slice(&pid.to_le_bytes());
        decode(&as_bytes(&record), &layout).unwrap()
    }

    /// Where `mark_victim` passes only a pid, `oc->chosen` names the victim (full tier)...
    #[test]
    fn a_pid_only_victim_is_named_from_oc_chosen_first() {
        let now = Instant::now();
        let mut joiner = Joiner::new(false, true);
        let mut events = joiner.push(context(5, 5), now);
        events.extend(joiner.push(sigkill(5, 5, SI_KERNEL), now));
        events.extend(joiner.push(sigkill_target(5), now));
        events.extend(joiner.push(pid_only_tracepoint(5), now));
        events.extend(joiner.push(end(5), now));
        let [kill] = kills(events.clone()).try_into().expect("one kill");
        assert_eq!(sigkills(events), []);
        assert_eq!(
            kill.parts,
            Parts {
                tracepoint: true,
                chosen: true,
                sigkill: true,
                ..Parts::default()
            }
        );
        // oc->chosen before the SIGKILL's target: "hog", not "postgres".
        assert_eq!(
            (
                kill.victim.pid,
                kill.victim.tgid,
                kill.victim.comm.as_deref()
            ),
            (5, Some(5), Some("hog"))
        );
        let fields = kill.victim.fields.unwrap();
        assert_eq!(fields.anon_rss_kb, Some(16_000 * 4));
        assert_eq!(fields.shmem_rss_kb, Some(239 * 4));
        assert_eq!(fields.pgtables_kb, Some(168));
        assert_eq!((fields.uid, fields.oom_score_adj), (Some(1000), Some(0)));
        assert_eq!(kill.victim.memcg.unwrap().path, "/oomtrace-test-1");
        assert!(kill.badness.is_some_and(|badness| !badness.estimated));
        // Only the SIGKILL's target read the namespace pid.
        assert_eq!(kill.namespace_init, Some(true));
        // The SIGKILL's sender is the trigger: its cgroups are the trigger's.
        assert_eq!(
            kill.trigger.cgroup.unwrap().path,
            "/user.slice/session-1.scope"
        );
    }

    /// ...and in every tier the OOM killer's SIGKILL does: its target's task where BTF lets
    /// the program read it, else the comm of the signal tracepoint.
    #[test]
    fn a_pid_only_victim_is_named_from_the_oom_killers_sigkill() {
        let now = Instant::now();
        let mut joiner = Joiner::new(false, false);
        let mut events = joiner.push(sigkill(5, 5, SI_KERNEL), now);
        events.extend(joiner.push(sigkill_target(5), now));
        events.extend(joiner.push(pid_only_tracepoint(5), now));
        let [kill] = kills(events).try_into().expect("one kill");
        assert_eq!(
            kill.parts,
            Parts {
                tracepoint: true,
                sigkill: true,
                ..Parts::default()
            }
        );
        assert_eq!(kill.victim.comm.as_deref(), Some("postgres"));
        assert_eq!(kill.victim.fields.unwrap().anon_rss_kb, Some(30_000 * 4));
        assert_eq!(kill.victim.memcg.unwrap().path, "/libpod_parent/libpod-abc");
        assert!(kill.badness.is_some_and(|badness| badness.estimated));

        let mut joiner = Joiner::new(false, false);
        let mut events = joiner.push(sigkill(6, 6, SI_KERNEL), now);
        events.extend(joiner.push(pid_only_tracepoint(6), now));
        let [kill] = kills(events).try_into().expect("one kill");
        assert_eq!(kill.victim.comm.as_deref(), Some("postgres"));
        assert_eq!(kill.victim.fields.unwrap().anon_rss_kb, None);
        assert_eq!(kill.victim.memcg, None);
    }

    /// The tracepoint's own figures win over the task's, field by field.
    #[test]
    fn the_tracepoints_fields_come_first() {
        let now = Instant::now();
        let mut joiner = Joiner::new(true, false);
        let mut events = joiner.push(tracepoint(0, 5), now);
        events.extend(joiner.push(task(0, 5), now));
        let [kill] = kills(events).try_into().expect("one kill");
        let fields = kill.victim.fields.unwrap();
        // 100 kB from the tracepoint record, not the task's 16,000 pages.
        assert_eq!(fields.anon_rss_kb, Some(100));
        assert_eq!(fields.comm.as_deref(), Some("hog"));
    }

    /// The OOM killer's SIGKILL comes right before it marks the victim: one OOM kill, no
    /// SIGKILL, in every tier.
    #[test]
    fn the_oom_killers_sigkill_is_not_reported_twice() {
        let start = Instant::now();
        for expect_task_parts in [false, true] {
            let mut joiner = Joiner::new(expect_task_parts, false);
            let mut events = joiner.push(sigkill(5, 5, SI_KERNEL), start);
            events.extend(joiner.push(tracepoint(0, 5), start));
            if expect_task_parts {
                events.extend(joiner.push(task(0, 5), start));
            }
            events.extend(joiner.expire(start + PARTNER_TIMEOUT));
            events.extend(joiner.flush());
            assert_eq!(sigkills(events.clone()), []);
            assert_eq!(kills(events).len(), 1);
            assert_eq!(joiner.oom_sigkills(), 1);
        }
    }

    /// `kill -9` of a task that then allocates while exiting: the kernel marks it to give it
    /// reserves (no kill). The SIGKILL was a process's, and is reported.
    #[test]
    fn a_processs_sigkill_is_kept_even_if_the_target_is_then_marked() {
        let start = Instant::now();
        let mut joiner = Joiner::new(false, false).with_sigkill_targets(true);
        joiner.push(sigkill(5, 456, SI_USER), start);
        let events = joiner.push(tracepoint(0, 5), start);
        assert_eq!(kills(events).len(), 1);
        assert_eq!(sigkills(joiner.expire(start + PARTNER_TIMEOUT)).len(), 1);
        assert_eq!(joiner.oom_sigkills(), 0);
    }

    /// Its target part lost: the SIGKILL is reported without it, once the wait is over.
    #[test]
    fn a_sigkill_alone_is_reported_after_the_timeout() {
        let start = Instant::now();
        let mut joiner = Joiner::new(true, true).with_sigkill_targets(true);
        assert_eq!(joiner.push(sigkill(4242, 456, SI_USER), start), []);
        assert_eq!(joiner.next_deadline(), Some(start + PARTNER_TIMEOUT));
        assert_eq!(joiner.expire(start + PARTNER_TIMEOUT / 2), []);
        // A mark for another pid leaves it alone.
        joiner.push(tracepoint(0, 7), start);
        let [sigkill] = sigkills(joiner.expire(start + PARTNER_TIMEOUT))
            .try_into()
            .expect("one SIGKILL");
        assert_eq!(sigkill.part.target.pid, 4242);
        assert_eq!(sigkill.part.sender.pid, 456);
        assert_eq!(sigkill.sender_kind, SenderKind::Process);
        assert!(sigkill.target_task.is_none());
        assert!(joiner.held.is_empty());
    }

    /// A process's SIGKILL is never the OOM killer's: it goes out as soon as it is whole, with
    /// no wait (and no wakeup) for a kill that could claim it. The OOM killer's waits.
    #[test]
    fn a_processs_sigkill_goes_out_once_whole_the_kernels_waits() {
        let now = Instant::now();
        // No program for the target: the SIGKILL's own record is all there is.
        let mut joiner = Joiner::new(true, false);
        let [reported] = sigkills(joiner.push(sigkill(4242, 456, SI_USER), now))
            .try_into()
            .expect("reported at once");
        assert_eq!(reported.part.target.pid, 4242);
        assert_eq!(joiner.next_deadline(), None);
        // The kernel's may be claimed by a kill of its target.
        assert_eq!(joiner.push(sigkill(5, 5, SI_KERNEL), now), []);
        assert_eq!(joiner.next_deadline(), Some(now + PARTNER_TIMEOUT));
        assert_eq!(sigkills(joiner.expire(now + PARTNER_TIMEOUT)).len(), 1);
    }

    #[test]
    fn a_sigkill_takes_its_targets_cgroups_in_either_order() {
        let now = Instant::now();
        for target_first in [false, true] {
            let mut joiner = Joiner::new(true, false).with_sigkill_targets(true);
            let [first, second] = if target_first {
                [sigkill_target(4242), sigkill(4242, 456, SI_USER)]
            } else {
                [sigkill(4242, 456, SI_USER), sigkill_target(4242)]
            };
            assert_eq!(joiner.push(first, now), []);
            // Whole with its second part: reported then, not at the timeout.
            let [sigkill] = sigkills(joiner.push(second, now))
                .try_into()
                .expect("one SIGKILL");
            let target = sigkill.target_task.expect("paired");
            assert_eq!(
                target.target_memcg.unwrap().path,
                "/libpod_parent/libpod-abc"
            );
            // Another target's part stays out of it and is forgotten.
            joiner.push(sigkill_target(99), now);
            assert_eq!(joiner.expire(now + PARTNER_TIMEOUT), []);
            assert_eq!(joiner.next_deadline(), None);
        }
    }

    #[test]
    fn what_proc_said_of_a_target_part_reaches_its_sigkill_in_either_order() {
        let now = Instant::now();
        let proc = TargetProc {
            tgid: Some(4240),
            cgroups: None,
        };
        for target_first in [false, true] {
            let mut joiner = Joiner::new(true, false).with_sigkill_targets(true);
            let parts = [
                (sigkill(4242, 456, SI_USER), None),
                (sigkill_target(4242), Some(proc.clone())),
            ];
            let [(first, first_proc), (second, second_proc)] = if target_first {
                [parts[1].clone(), parts[0].clone()]
            } else {
                parts
            };
            assert_eq!(joiner.push_with(first, first_proc, now), []);
            let [sigkill] = sigkills(joiner.push_with(second, second_proc, now))
                .try_into()
                .expect("one SIGKILL");
            assert_eq!(sigkill.target_proc.as_ref(), Some(&proc));
            assert!(sigkill.target_task.is_some());
        }
        // What /proc said when the SIGKILL came is kept over a later answer.
        let mut joiner = Joiner::new(true, false).with_sigkill_targets(true);
        let first = TargetProc {
            tgid: Some(1),
            cgroups: None,
        };
        joiner.push_with(sigkill(4242, 456, SI_USER), Some(first.clone()), now);
        let [sigkill] = sigkills(joiner.push_with(sigkill_target(4242), Some(proc), now))
            .try_into()
            .expect("one SIGKILL");
        assert_eq!(sigkill.target_proc, Some(first));
    }

    #[test]
    fn the_sender_kind_follows_si_code() {
        assert_eq!(SenderKind::from_code(Some(SI_KERNEL)), SenderKind::Kernel);
        assert_eq!(SenderKind::from_code(Some(SI_USER)), SenderKind::Process);
        // SI_TKILL: tgkill() from a process.
        assert_eq!(SenderKind::from_code(Some(-6)), SenderKind::Process);
        assert_eq!(SenderKind::from_code(None), SenderKind::Unknown);
    }

    fn incidents(events: Vec<Event>) -> Vec<OomIncident> {
        events
            .into_iter()
            .filter_map(|event| match event {
                Event::Incident(incident) => Some(incident),
                Event::Kill(_) | Event::Sigkill(_) => None,
            })
            .collect()
    }

    #[test]
    fn pairs_in_either_order() {
        let now = Instant::now();
        for (first, second) in [
            (tracepoint(0, 5), task(0, 5)),
            (task(0, 5), tracepoint(0, 5)),
        ] {
            let mut joiner = Joiner::new(true, false);
            assert_eq!(joiner.push(first, now), []);
            let [kill] = kills(joiner.push(second, now))
                .try_into()
                .expect("pair completes");
            assert_eq!(kill.victim.pid, 5);
            assert_eq!(
                kill.parts,
                Parts {
                    tracepoint: true,
                    task: true,
                    ..Parts::default()
                }
            );
            assert_eq!(kill.victim.fields.unwrap().anon_rss_kb, Some(100));
            assert_eq!(kill.victim.memcg.unwrap().path, "/oomtrace-test-1");
            assert!(!kill.marked_without_kill && kill.incident.is_none());
            assert_eq!(joiner.next_deadline(), None);
        }
    }

    #[test]
    fn interleaved_group_victims_pair_by_pid_and_cpu() {
        let now = Instant::now();
        let mut joiner = Joiner::new(true, false);
        let mut all = Vec::new();
        for part in [
            tracepoint(0, 10),
            tracepoint(1, 20),
            tracepoint(0, 11),
            task(0, 11),
            task(1, 20),
            task(0, 10),
        ] {
            all.extend(kills(joiner.push(part, now)));
        }
        let pids: Vec<u32> = all.iter().map(|kill| kill.victim.pid).collect();
        assert_eq!(pids, [11, 20, 10]);
        assert!(
            all.iter()
                .all(|kill| kill.parts.tracepoint && kill.parts.task)
        );
        // The same pid on another CPU is another kill, not a partner.
        assert_eq!(joiner.push(tracepoint(0, 30), now), []);
        assert_eq!(joiner.push(task(1, 30), now), []);
    }

    #[test]
    fn a_lone_part_is_reported_after_the_timeout() {
        let start = Instant::now();
        let mut joiner = Joiner::new(true, false);
        assert_eq!(joiner.push(tracepoint(0, 5), start), []);
        assert_eq!(joiner.next_deadline(), Some(start + PARTNER_TIMEOUT));
        assert!(joiner.expire(start + PARTNER_TIMEOUT / 2).is_empty());
        let expired = kills(joiner.expire(start + PARTNER_TIMEOUT));
        assert_eq!(expired.len(), 1);
        assert_eq!(
            expired[0].parts,
            Parts {
                tracepoint: true,
                ..Parts::default()
            }
        );
        assert_eq!(expired[0].trigger.cgroup_id, Some(1));
        assert_eq!(joiner.next_deadline(), None);
    }

    #[test]
    fn tracepoint_only_tier_reports_at_once_and_flush_empties() {
        let now = Instant::now();
        let mut joiner = Joiner::new(false, false);
        let [kill] = kills(joiner.push(tracepoint(0, 5), now))
            .try_into()
            .expect("no partner");
        assert_eq!(kill.victim.tgid, None);
        let mut joiner = Joiner::new(true, false);
        joiner.push(task(0, 6), now);
        let flushed = kills(joiner.flush());
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0].victim.pid, 6);
        assert!(joiner.flush().is_empty());
    }

    /// `memory.oom.group`: one invocation, several victims, all on the trigger's thread.
    #[test]
    fn a_group_kill_is_one_incident_with_every_victim() {
        let now = Instant::now();
        let mut joiner = Joiner::new(true, true);
        let trigger = 7; // The test victims' trigger is themselves; use the first one.
        let mut events = joiner.push(context(trigger, trigger), now);
        for pid in [7, 8, 9] {
            // Every member is marked by the trigger's thread: the test records say pid itself,
            // so rewrite the trigger to the invoking thread as the kernel would report it.
            for part in [tracepoint(0, pid), task(0, pid)] {
                events.extend(joiner.push(with_trigger(part, trigger), now));
            }
        }
        events.extend(joiner.push(end(trigger), now));
        let all_kills = kills(events.clone());
        assert_eq!(all_kills.len(), 3);
        let ids: Vec<&str> = all_kills
            .iter()
            .map(|kill| kill.incident.as_ref().expect("in the incident").id.as_str())
            .collect();
        assert_eq!(ids, ["999-7"; 3]);
        // The chosen victim has the kernel's badness; the other members an estimate.
        let badness: Vec<(i64, bool)> = all_kills
            .iter()
            .map(|kill| {
                let badness = kill.badness.expect("every member has a badness");
                (badness.points, badness.estimated)
            })
            .collect();
        assert_eq!(badness, [(16_500, false), (25, true), (25, true)]);
        let [incident] = incidents(events).try_into().expect("one incident");
        assert_eq!(incident.victims, [7, 8, 9]);
        assert!(incident.ended);
        let chosen = incident.context.entry.chosen.as_ref().unwrap();
        assert_eq!((chosen.task.pid, chosen.task.tgid), (7, 7));
        assert_eq!(joiner.next_deadline(), None);
    }

    #[test]
    fn a_mark_outside_any_invocation_is_not_a_kill() {
        let now = Instant::now();
        let mut joiner = Joiner::new(true, true);
        joiner.push(tracepoint(0, 5), now);
        let [kill] = kills(joiner.push(task(0, 5), now))
            .try_into()
            .expect("a mark");
        assert!(kill.marked_without_kill);
        // Without the function hooks nothing can be said either way.
        let mut joiner = Joiner::new(true, false);
        joiner.push(tracepoint(0, 5), now);
        let [kill] = kills(joiner.push(task(0, 5), now))
            .try_into()
            .expect("a kill");
        assert!(!kill.marked_without_kill);
    }

    #[test]
    fn a_long_group_kill_stays_open_while_victims_keep_coming() {
        let start = Instant::now();
        let mut joiner = Joiner::new(false, true);
        joiner.push(context(5, 5), start);
        // One victim a second, for longer than the timeout: all in the one incident.
        for (second, victim) in (0..5).zip(100..) {
            let at = start + Duration::from_secs(second);
            assert!(
                incidents(joiner.expire(at)).is_empty(),
                "still open at {second} s"
            );
            let [kill] = kills(joiner.push(with_trigger(tracepoint(0, victim), 5), at))
                .try_into()
                .expect("a kill");
            assert!(!kill.marked_without_kill, "victim {victim} is a kill");
        }
        let last = start + Duration::from_secs(4);
        let [incident] = incidents(joiner.expire(last + INCIDENT_TIMEOUT))
            .try_into()
            .unwrap();
        assert_eq!(incident.victims, [100, 101, 102, 103, 104]);
    }

    #[test]
    fn an_incident_whose_end_is_lost_times_out_or_is_replaced() {
        let start = Instant::now();
        let mut joiner = Joiner::new(false, true);
        joiner.push(context(5, 5), start);
        joiner.push(tracepoint(0, 5), start);
        assert_eq!(joiner.next_deadline(), Some(start + INCIDENT_TIMEOUT));
        let [incident] = incidents(joiner.expire(start + INCIDENT_TIMEOUT))
            .try_into()
            .unwrap();
        assert!(!incident.ended);
        assert_eq!(incident.victims, [5]);

        joiner.push(context(5, 5), start);
        let [replaced] = incidents(joiner.push(context(5, 6), start))
            .try_into()
            .unwrap();
        assert!(
            !replaced.ended,
            "a new invocation on the thread ends the old one"
        );
        let [open] = incidents(joiner.flush()).try_into().unwrap();
        let chosen = open.context.entry.chosen.as_ref().unwrap();
        assert_eq!((chosen.task.pid, chosen.task.tgid), (6, 6));
    }

    /// A part is tied to its incident when it arrives, so a kill still waiting for its partner
    /// when the end record comes stays in the incident.
    #[test]
    fn a_kill_completed_after_the_end_keeps_its_incident() {
        let now = Instant::now();
        let mut joiner = Joiner::new(true, true);
        joiner.push(context(5, 5), now);
        joiner.push(tracepoint(0, 5), now);
        let [incident] = incidents(joiner.push(end(5), now)).try_into().unwrap();
        assert_eq!(incident.victims, [5]);
        let [kill] = kills(joiner.push(task(0, 5), now)).try_into().unwrap();
        assert_eq!(kill.incident.unwrap().id, incident.context.id);
        assert!(!kill.marked_without_kill);
    }

    fn with_trigger(part: Part, tid: u32) -> Part {
        let trigger = Task {
            pid: tid,
            tgid: tid,
            comm: "hog".into(),
        };
        match part {
            Part::Tracepoint(mut tracepoint) => {
                tracepoint.trigger = trigger;
                Part::Tracepoint(tracepoint)
            }
            Part::Task(mut task) => {
                task.trigger = trigger;
                Part::Task(task)
            }
            other => other,
        }
    }
}
