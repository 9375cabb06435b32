//! The join model: what the programs' parts become once joined. One process killed by the OOM
//! killer is an [`OomKill`], one invocation of the OOM killer an [`OomIncident`], and a SIGKILL
//! the OOM killer did not send to its victim a [`Sigkill`]. The [`joiner`] builds them.

pub(crate) mod joiner;

use std::sync::Arc;

pub(crate) use self::joiner::Joiner;
use crate::badness::Badness;
use crate::decode::mark_victim::MarkVictimFields;
use crate::decode::{CgroupRef, ContextPart, SigkillPart, SigkillTargetPart, Task};
use crate::procfs::ProcCgroups;

/// What the join stage hands the sinks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Kill(Box<OomKill>),
    Incident(OomIncident),
    Sigkill(Box<Sigkill>),
}

/// A SIGKILL that the OOM killer did not send to its victim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sigkill {
    pub part: SigkillPart,
    /// The target's task and cgroups as the BTF program read them, where it is attached.
    pub target_task: Option<SigkillTargetPart>,
    /// The target's thread group and cgroups, read from /proc when the record arrived.
    pub target_proc: Option<TargetProc>,
    pub sender_kind: SenderKind,
}

impl Sigkill {
    /// The target's process (thread group), from the kernel where BTF allows, else from /proc.
    pub fn target_tgid(&self) -> Option<u32> {
        self.target_task
            .as_ref()
            .map(|task| task.target.tgid)
            .or_else(|| self.target_proc.as_ref().and_then(|proc| proc.tgid))
    }
}

/// What /proc said of a SIGKILL's target when its record arrived; `None` fields: already gone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TargetProc {
    pub tgid: Option<u32>,
    pub cgroups: Option<ProcCgroups>,
}

impl TargetProc {
    pub fn read(pid: u32) -> Self {
        TargetProc {
            tgid: crate::procfs::tgid(pid),
            cgroups: crate::procfs::cgroups(pid),
        }
    }
}

/// Who generated a signal, by its `si_code`: positive codes come from the kernel
/// (`SI_FROMKERNEL`), the rest from a process calling `kill()`, `tkill()` or `sigqueue()`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderKind {
    Kernel,
    Process,
    /// The kernel's record has no `code` field.
    #[default]
    Unknown,
}

impl SenderKind {
    pub fn from_code(code: Option<i32>) -> Self {
        match code {
            Some(code) if code > 0 => SenderKind::Kernel,
            Some(_) => SenderKind::Process,
            None => SenderKind::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SenderKind::Kernel => "kernel",
            SenderKind::Process => "process",
            SenderKind::Unknown => "unknown",
        }
    }
}

/// One invocation of the OOM killer, as `oom_kill_process` saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncidentContext {
    /// Unique per boot: `<ktime_ns of the entry>-<trigger tid>`.
    pub id: String,
    /// What the entry of `oom_kill_process` captured.
    pub entry: ContextPart,
}

/// An invocation and every victim it marked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OomIncident {
    pub context: Arc<IncidentContext>,
    /// Victim pids, in the order they were marked.
    pub victims: Vec<u32>,
    /// False when the end record never came and the incident timed out.
    pub ended: bool,
}

/// One process killed by the OOM killer, and the task whose allocation set it off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomKill {
    /// CLOCK_MONOTONIC nanoseconds at capture.
    pub ktime_ns: u64,
    pub victim: Victim,
    pub trigger: Trigger,
    /// Which programs contributed: tells a consumer why a field is missing.
    pub parts: Parts,
    /// The `oom_kill_process` invocation that killed it, where that function is hooked.
    pub incident: Option<Arc<IncidentContext>>,
    /// `oom_kill_process` is hooked, yet no invocation was open: the kernel marked an exiting
    /// task so it can use memory reserves, and killed nothing.
    pub marked_without_kill: bool,
    /// The kernel's figure for the victim it chose; an estimate for other group members and in
    /// the lower tiers.
    pub badness: Option<Badness>,
    /// Whether the victim is PID 1 of its own pid namespace (a container's main process): read
    /// in the kernel with the victim's `task_struct`, else from `/proc` the moment the kill is
    /// joined. A runtime reaps its killed main process within a millisecond, so `/proc` alone
    /// often comes too late; `None` when neither could tell.
    pub namespace_init: Option<bool>,
}

/// Which parts a kill was joined from, in the order a field is taken from them: the classic
/// tracepoint's own fields first (memory, uid, oom_score_adj, where the kernel has them), then
/// what the programs read of the victim's task: at `mark_victim` (`task`), as
/// `oom_kill_process`'s `oc->chosen` (`chosen`), as the target of the OOM killer's SIGKILL
/// (`sigkill`; the trigger's cgroups come from its sender, which is the trigger).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Parts {
    pub tracepoint: bool,
    pub task: bool,
    pub chosen: bool,
    pub sigkill: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Victim {
    /// Kernel task id of the victim (its thread group leader, as the OOM killer picks it).
    pub pid: u32,
    pub tgid: Option<u32>,
    pub comm: Option<String>,
    /// The tracepoint's fields: memory in kB, uid, oom_score_adj; absent on old kernels.
    pub fields: Option<MarkVictimFields>,
    /// cgroup2 cgroup.
    pub cgroup: Option<CgroupRef>,
    /// Memory-controller cgroup.
    pub memcg: Option<CgroupRef>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    pub task: Task,
    /// cgroup2 id, from a helper that needs no BTF.
    pub cgroup_id: Option<u64>,
    pub cgroup: Option<CgroupRef>,
    pub memcg: Option<CgroupRef>,
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::{Event, Joiner, Sigkill, TargetProc};
    use crate::decode::signal::SI_USER;

    /// Pid 456 sends SIGKILL to pid 123 with kill(2), joined as the agent joins it: what the
    /// sinks' tests start from.
    pub(crate) fn user_sigkill() -> Box<Sigkill> {
        let mut joiner = Joiner::new(true, false);
        let proc = TargetProc {
            tgid: Some(123),
            cgroups: None,
        };
        let mut events = joiner.push_with(
            crate::decode::tests::sigkill(123, 456, SI_USER),
            Some(proc),
            std::time::Instant::now(),
        );
        events.extend(joiner.flush());
        let [Event::Sigkill(sigkill)]: [Event; 1] = events.try_into().unwrap() else {
            panic!("one SIGKILL");
        };
        sigkill
    }
}
