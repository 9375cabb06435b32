//! `explanation.timeline`: what memory looked like in the window before a kill, for the
//! domain's biggest cgroups. Offsets are milliseconds relative to the kill's `ktime_ns`,
//! negative before it.

use serde::{Deserialize, Serialize};

use super::kill::CgroupPath;
use super::party::Names;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    pub window_s: u64,
    /// Where the stalls were read: `/proc/pressure/memory`, or the domain's cgroup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pressure_source: Option<String>,
    /// The intervals between samples in which tasks stalled on memory.
    pub pressure: Vec<Stall>,
    /// The domain itself (when a cgroup) first, then its biggest members.
    pub cgroups: Vec<CgroupTimeline>,
    /// Cgroups of the domain the recorder has no samples of, and why: the domain itself
    /// always, when it has none. Absent when every one was sampled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_covered: Vec<NotCovered>,
}

/// A cgroup the recorder did not sample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotCovered {
    pub cgroup: CgroupPath,
    pub reason: NotCoveredReason,
    /// The reason in words, with the bound or the error.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotCoveredReason {
    /// Past `--timeline-max-cgroups`.
    CgroupBound,
    /// Past the directories or the depth the recorder walks.
    WalkBound,
    /// The agent had no file descriptor left.
    Descriptors,
    /// Its usage file could not be read.
    Unreadable,
    /// Made, or given its limit, too shortly before the kill to be sampled.
    NotSeenYet,
}

/// One interval between two samples, ending at `offset_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stall {
    pub offset_ms: i64,
    /// Share of the interval in which some task stalled on memory.
    pub some_pct: Percent,
    /// Share in which every non-idle task did.
    pub full_pct: Percent,
}

/// A percentage to a tenth; equal when the same number.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Percent(pub f64);

impl PartialEq for Percent {
    fn eq(&self, other: &Self) -> bool {
        self.0.total_cmp(&other.0).is_eq()
    }
}

impl Eq for Percent {}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupTimeline {
    pub cgroup: CgroupPath,
    #[serde(flatten)]
    pub names: Names,
    /// The domain's own limit, on the domain's entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    pub samples: Vec<UsageSample>,
    /// On the domain's entry, the intervals in which its limit events grew.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<LimitEvents>,
    /// On the domain's entry, its memory by kind, read when its usage moved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub composition: Vec<CompositionSample>,
}

/// A domain's memory by kind at `offset_ms`, from its `memory.stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompositionSample {
    pub offset_ms: i64,
    /// Anonymous memory: the processes' heaps and stacks.
    pub anon_bytes: u64,
    /// The page cache without shared memory.
    pub file_bytes: u64,
    /// tmpfs, `/dev/shm`, memfd, SysV and shared anonymous memory.
    pub shmem_bytes: u64,
    /// The kernel's own memory charged to the domain; absent where the kernel does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_bytes: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSample {
    pub offset_ms: i64,
    pub usage_bytes: u64,
}

/// How much v2 `memory.events` `high` and `max` (v1 `memory.failcnt`, as `max`) grew in the
/// interval ending at `offset_ms`.
impl CompositionSample {
    /// Each kind's bytes, in the order of [`CompositionKind::ALL`].
    pub fn by_kind(&self) -> [Option<u64>; 4] {
        [
            Some(self.anon_bytes),
            Some(self.file_bytes),
            Some(self.shmem_bytes),
            self.kernel_bytes,
        ]
    }
}

/// The kinds a composition sample tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompositionKind {
    Anon,
    File,
    Shmem,
    Kernel,
}

impl CompositionKind {
    pub const ALL: [CompositionKind; 4] = [
        CompositionKind::Anon,
        CompositionKind::File,
        CompositionKind::Shmem,
        CompositionKind::Kernel,
    ];

    /// Its bytes in `sample`, where the sample tells them.
    pub fn of(self, sample: &CompositionSample) -> Option<u64> {
        sample.by_kind()[self as usize]
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitEvents {
    pub offset_ms: i64,
    pub high: u64,
    pub max: u64,
}
