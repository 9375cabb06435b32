//! `memory_pressure` (`--warn-pressure`): a cgroup with a memory limit came near it, before
//! any kill. Who owns it, how full it is, how fast it grows, and which cgroup below it grows
//! fastest.

use serde::{Deserialize, Serialize};

use super::kill::CgroupPath;
use super::party::Names;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryPressureRecord {
    pub time: String,
    /// CLOCK_MONOTONIC nanoseconds of the sample that crossed the threshold.
    pub ktime_ns: u64,
    pub reason: PressureReason,
    pub thresholds: PressureThresholds,
    /// The cgroup whose limit is near.
    pub domain: PressureDomain,
    /// The cgroup below the domain that grew fastest, when one grew.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grower: Option<PressureGrower>,
}

/// Which threshold was crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PressureReason {
    /// The working set (else the usage) reached `usage_percent` of the limit.
    Usage,
    /// Some task in the cgroup stalled on memory `stall_percent` of the last second.
    Stall,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PressureThresholds {
    pub usage_percent: u8,
    pub stall_percent: u8,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PressureDomain {
    pub cgroup: CgroupPath,
    pub memory: PressureMemory,
    /// Over the last 10 s, or since the recorder first saw it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth: Option<GrowthRate>,
    /// Over the last second, where the cgroup has a `memory.pressure` (cgroup v2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stall: Option<StallRecord>,
    #[serde(flatten)]
    pub names: Names,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PressureMemory {
    pub limit_bytes: u64,
    pub usage_bytes: u64,
    /// Usage less inactive file pages: what the kernel cannot simply reclaim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    /// The working set (else the usage) as a share of the limit, to a tenth.
    pub percent_of_limit: f64,
}

/// Growth in bytes per second; negative when it shrank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrowthRate {
    pub bytes_per_second: i64,
    /// The span it was measured over.
    pub over_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct StallRecord {
    /// Of the span, during which some task stalled on memory.
    pub some_percent: f64,
    /// During which all non-idle tasks stalled at once.
    pub full_percent: f64,
    pub over_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PressureGrower {
    pub cgroup: CgroupPath,
    pub usage_bytes: u64,
    pub growth: GrowthRate,
    #[serde(flatten)]
    pub names: Names,
}
