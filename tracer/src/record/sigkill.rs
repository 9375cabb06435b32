//! `sigkill`: a SIGKILL that was not the OOM killer's to its victim, and who sent it.

use serde::{Deserialize, Serialize};

use super::kill::KillCapture;
use super::party::Party;
pub use crate::incident::SenderKind;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigkillRecord {
    pub time: String,
    /// When the signal was generated.
    pub ktime_ns: u64,
    #[serde(default)]
    pub capture: KillCapture,
    pub target: Party,
    pub sender: Sender,
    #[serde(default)]
    pub signal: Signal,
    /// What the record went out without: the sender's `/proc` read, when it did not answer in
    /// time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut: Option<super::cut::Cut>,
}

/// The current task when the signal was generated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    /// `kernel` (a positive `si_code`) or `process` (`kill()`, `tgkill()`, `sigqueue()`).
    #[serde(default)]
    pub kind: SenderKind,
    #[serde(flatten)]
    pub party: Party,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    /// The raw `si_code`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Sent to the whole thread group rather than one thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<SignalResult>,
}

/// `enum trace_signal_result`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalResult {
    Delivered,
    Ignored,
    AlreadyPending,
    OverflowFail,
    LoseInfo,
    Other,
}

impl SignalResult {
    pub fn from_kernel(result: i32) -> Self {
        match result {
            0 => SignalResult::Delivered,
            1 => SignalResult::Ignored,
            2 => SignalResult::AlreadyPending,
            3 => SignalResult::OverflowFail,
            4 => SignalResult::LoseInfo,
            _ => SignalResult::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SignalResult::Delivered => "delivered",
            SignalResult::Ignored => "ignored",
            SignalResult::AlreadyPending => "already_pending",
            SignalResult::OverflowFail => "overflow_fail",
            SignalResult::LoseInfo => "lose_info",
            SignalResult::Other => "other",
        }
    }
}
