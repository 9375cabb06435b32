//! Sinks: where a finished, attributed kill goes. The human log line is always written; JSON Lines
//! and Prometheus counters on request.

pub mod json;
pub mod metrics;
pub mod text;

use crate::attribute::{AttributedKill, AttributedSigkill};
use crate::capture::CapturePlan;
use crate::incident::OomIncident;

/// What every record carries about the agent itself.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub plan: &'a CapturePlan,
    pub ringbuf_dropped_total: u64,
    pub clock: crate::clock::KernelClock,
}

/// Totals for the shutdown record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub records: u64,
    pub oom_kills: u64,
    /// SIGKILLs not sent by the OOM killer to its victim.
    pub sigkills: u64,
    /// SIGKILLs the OOM killer sent to a victim it marked: part of an `oom_kill`, not reported.
    pub oom_sigkills: u64,
    pub decode_errors: u64,
    /// Events that could not be written to the history (see `crate::history`).
    pub history_write_errors: u64,
}

pub trait Sink {
    fn started(&mut self, context: &Context<'_>) -> std::io::Result<()>;
    fn oom_kill(&mut self, kill: &AttributedKill, context: &Context<'_>) -> std::io::Result<()>;
    /// The end of one `oom_kill_process` invocation, in the full tier.
    fn oom_incident(
        &mut self,
        incident: &OomIncident,
        context: &Context<'_>,
    ) -> std::io::Result<()>;
    /// A SIGKILL that was not the OOM killer's to its victim.
    fn sigkill(
        &mut self,
        sigkill: &AttributedSigkill,
        context: &Context<'_>,
    ) -> std::io::Result<()>;
    fn stopped(&mut self, totals: &Totals, context: &Context<'_>) -> std::io::Result<()>;
}
