//! `oom_kill` (and `oom_mark_exiting`): one process killed by the OOM killer, whose limit it
//! was, why, and the invocation it belongs to; `oom_incident`: one invocation and its victims.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::party::{Badness, Names, Party};
use crate::attribute::DomainKind;
use crate::capture::Tier;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OomKillRecord {
    pub time: String,
    /// CLOCK_MONOTONIC nanoseconds at capture (the kernel log's clock for a recovered kill).
    pub ktime_ns: u64,
    #[serde(default)]
    pub capture: KillCapture,
    /// Where a kill was recovered from the kernel log: its record there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kmsg: Option<KmsgOrigin>,
    pub victim: Party,
    /// The task whose allocation invoked the OOM killer. The kernel log may not name it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Party>,
    /// Always written now; records from the first releases of schema 1 lack it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<Domain>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explanation: Option<Explanation>,
    /// The `oom_kill_process` invocation, where that function is hooked (or what the kernel
    /// log said of it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incident: Option<Incident>,
    /// The kernel log's `oom_memcg` of a `memory.oom.group` kill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kmsg_oom_group: Option<CgroupPath>,
    /// What the record went out without: reads of `/proc` and cgroupfs that did not answer in
    /// time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<super::cut::Cut>,
}

impl OomKillRecord {
    /// Whether the victim's own allocation set the OOM killer off: the trigger is the victim's
    /// process, or its very thread. The log line, `history` and `show` all say so this way.
    pub fn triggered_by_victim(&self) -> bool {
        let Some(trigger) = &self.trigger else {
            return false;
        };
        let victim = &self.victim;
        victim.process.pid.is_some() && victim.process.pid == trigger.process.pid
            || victim.thread.is_some() && victim.thread == trigger.thread
    }
}

/// How an event was seen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillCapture {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// Which programs contributed (or `kmsg`): tells a consumer why a field is missing.
    pub parts: Vec<CapturePart>,
    /// Records the kernel could not queue since the agent started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ringbuf_dropped_total: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapturePart {
    /// `oom:mark_victim`: the pid; comm, memory, uid, oom_score_adj where the kernel's
    /// tracepoint has them (6.9+, and backports).
    Tracepoint,
    /// The BTF program on the victim's `task_struct` at `mark_victim`, where the kernel passes
    /// the task: comm, tgid, memory, uid, oom_score_adj, cgroups; the trigger's cgroups.
    Task,
    /// The same read from `oom_kill_process`'s `oc->chosen`: the victim the OOM killer chose.
    Chosen,
    /// The same read from the target of the OOM killer's SIGKILL to the victim (only its comm
    /// without BTF); the trigger's cgroups from its sender.
    Sigkill,
    /// `oom_kill_process` (an incident).
    Function,
    /// `signal:signal_generate`.
    Signal,
    /// The kernel log, read at startup.
    Kmsg,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsgOrigin {
    /// The `Killed process` record's sequence number.
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupPath {
    pub path: String,
}

/// Whose limit the kill was about, named like a party.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    pub kind: DomainKind,
    /// False only when the kernel said so (the full tier's `oom_control`, the kernel log).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inferred: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub basis: Option<Basis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<DomainCgroup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<DomainMemory>,
    /// The cgroup's event counters as the kill arrived (`memory.events`, or v1's
    /// `memory.oom_control` and `memory.failcnt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_events: Option<BTreeMap<String, u64>>,
    /// What filled it at the kill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub composition: Option<super::composition::Composition>,
    #[serde(flatten)]
    pub names: Names,
}

/// How the domain is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The OOM killer's own `oom_control` (full tier).
    Kernel,
    /// The memory controller's counters along the victim's ancestry.
    Counters,
    /// The victim's container had a limit, and its cgroup was gone before the counters could
    /// be read.
    ContainerLimit,
    /// Nothing to go on.
    None,
    /// The kernel log's own words: its OOM report of this kill (`oom_memcg`, or a host-wide
    /// report), or of a kill recovered from it.
    KernelLog,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Kernel => "kernel",
            Basis::Counters => "counters",
            Basis::ContainerLimit => "container_limit",
            Basis::None => "none",
            Basis::KernelLog => "kernel_log",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainCgroup {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub path: String,
}

/// The domain's memory as the kill arrived: a cgroup's usage and limits, or the host's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainMemory {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_max_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memsw_limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_total_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_free_bytes: Option<u64>,
}

/// What `oom_kill_process` knew: the invocation every victim of it shares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// `<ktime_ns of the entry>-<trigger tid>`, unique per boot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<IncidentDomain>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub badness: Option<Badness>,
    /// `enum oom_constraint`, as the running kernel's BTF names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<i32>,
    /// Hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gfp_mask: Option<String>,
    /// The kernel's heading, e.g. `Memory cgroup out of memory`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentDomain {
    pub kind: DomainKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<super::party::Cgroup>,
}

/// What the explain stage says of a kill: in words, who held the memory, which patterns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub verdict: String,
    pub snapshot: Snapshot,
    /// The domain's memory in the window before the kill (`--timeline`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<super::timeline::Timeline>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_loop: Option<Count>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recurring_trigger: Option<Count>,
}

/// Who held the memory at the moment of the kill, biggest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `host`, or the domain's cgroup path.
    pub scope: String,
    pub cgroups: Vec<CgroupUsage>,
    pub processes: Vec<ProcessUsage>,
    /// How many processes' sizes were read (at most 256, from the scope's `cgroup.procs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes_read: Option<u64>,
    /// Processes listed in the scope's cgroups but left unread past that budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes_unread: Option<u64>,
    /// A domain's usage less all its members' (not only those listed), as read: memory charged
    /// to the domain's cgroup itself, such as the tmpfs pages of a removed container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charged_to_scope_bytes: Option<u64>,
    /// When it was taken, on the clock of the record's `ktime_ns`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ktime_ns: Option<u64>,
    pub took_us: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupUsage {
    pub cgroup: CgroupPath,
    pub memory: Usage,
    #[serde(flatten)]
    pub names: Names,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub usage_bytes: u64,
    /// Only on a row that holds the victim and was read after the victim's memory was freed
    /// (by the OOM reaper, or as it exited): what the read found (0: the victim was gone).
    /// `usage_bytes` is then what the victim alone held at the kill, as the kernel reported it:
    /// a lower bound of the row's usage at the kill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_after_kill_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessUsage {
    pub process: UsingProcess,
    #[serde(flatten)]
    pub names: Names,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsingProcess {
    pub pid: u32,
    pub executable: super::party::Executable,
    pub memory: Usage,
}

/// How often a pattern occurred within its window, this kill included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    pub count: u32,
    pub window_seconds: u64,
}

/// `oom_incident`: the end of one `oom_kill_process` invocation (full tier).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OomIncidentRecord {
    pub time: String,
    pub ktime_ns: u64,
    pub capture: KillCapture,
    pub incident: Incident,
    /// In the order they were marked.
    pub victims: Vec<VictimRef>,
    /// False when the end was not seen (its record was lost) and the incident timed out.
    pub ended: bool,
    pub trigger: Party,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VictimRef {
    pub process: Pid,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pid {
    pub pid: u32,
}
