//! The agent's own records: `agent_started` once its programs are attached (from then on no
//! kill is missed) and `agent_stopped` with what it saw.

use serde::{Deserialize, Serialize};

use crate::capture::Tier;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStarted {
    pub time: String,
    pub capture: CaptureInfo,
    pub agent: AgentInfo,
    /// The memory timeline's recorder as it started; absent when it is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<TimelineInfo>,
}

/// What the memory timeline covers on this host, and what makes it look closer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineInfo {
    pub window_s: u64,
    /// Cgroups with a memory limit found.
    pub limits: u64,
    /// Of them, sampled.
    pub limits_sampled: u64,
    /// Cgroups sampled in all: the limited ones, their biggest members, the host's entries.
    pub cgroups_sampled: u64,
    /// `--timeline-max-cgroups`.
    pub max_cgroups: u64,
    /// Cgroups it would sample and does not (past the bound, unreadable, out of descriptors).
    pub not_covered: u64,
    /// What makes a domain sampled ten times a second: `host_pressure_trigger`,
    /// `cgroup_pressure_triggers`, `usage_thresholds` (cgroup v1), `memory_events` (cgroup
    /// v2), `growth`.
    pub wake_ups: Vec<String>,
    /// How new cgroups and changed limits are found: `inotify`, or `walk` (every 30 s).
    pub follows: String,
}

/// What was attached, and why that much.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureInfo {
    pub tier: Tier,
    pub reason: String,
    /// What `mark_victim`'s BTF prototype passes first: `task` (6.9+, and backports), or `int`
    /// (the victim's pid, before); `None` without kernel BTF.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark_victim_argument: Option<String>,
    /// `tp_btf` or `raw_tp`: the program that reads the victim's `task_struct` at
    /// `mark_victim`; `None` where it passes only a pid.
    pub task_hook: Option<String>,
    /// `fentry` or `kprobe` in the full tier.
    pub function_hook: Option<String>,
    /// The fields of `oom:mark_victim` this kernel provides.
    pub tracepoint_fields: Vec<String>,
    /// Whether every SIGKILL is traced (`signal:signal_generate` attached).
    pub sigkill: bool,
    /// `tp_btf` or `raw_tp`: the program that reads a SIGKILL target's memory and cgroups in
    /// the kernel.
    pub sigkill_task_hook: Option<String>,
}

impl CaptureInfo {
    /// Where the victim's task (name, memory, cgroups) is read, in words for the log.
    pub fn victim_source(&self) -> String {
        let mut sources = Vec::new();
        if self.task_hook.is_some() {
            sources.push("mark_victim");
        }
        if self.function_hook.is_some() {
            sources.push("oom_kill_process's oc->chosen");
        }
        if self.sigkill_task_hook.is_some() {
            sources.push("the OOM killer's SIGKILL");
        }
        let read = match sources.as_slice() {
            [] => "not read (no kernel BTF)".to_owned(),
            [only] => format!("read at {only}"),
            [first @ .., last] => format!("read at {} and {last}", first.join(", ")),
        };
        match self.mark_victim_argument.as_deref() {
            Some("int") => format!("mark_victim passes only the pid: the victim's task is {read}"),
            _ => format!("the victim's task is {read}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub version: String,
    pub pid: u32,
}

impl AgentInfo {
    /// This agent.
    pub fn this() -> Self {
        AgentInfo {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStopped {
    pub time: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// What the agent saw, from its start to its stop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Ring-buffer records read.
    pub records: u64,
    /// `oom_kill` records written (`oom_mark_exiting` not included).
    pub oom_kills: u64,
    /// SIGKILLs other than the OOM killer's to its victim.
    pub sigkills: u64,
    /// SIGKILLs the OOM killer sent to a victim it marked: part of an `oom_kill`.
    pub oom_sigkills: u64,
    pub decode_errors: u64,
    pub ringbuf_dropped_total: u64,
    /// Records the history could not store; 0 with `--no-history`.
    pub history_write_errors: u64,
    /// SIGKILLs logged but, their sender flooding, neither stored nor counted in the metrics.
    #[serde(default)]
    pub sigkills_rate_limited: u64,
    /// Reads of `/proc` and cgroupfs given up after their budget (records written without
    /// them, their `cut` says); each left a thread waiting, at most a few at once.
    #[serde(default)]
    pub observe_reads_given_up: u64,
}
