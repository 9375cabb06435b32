//! Sinks: where a finished record goes. The human log line is always written; JSON Lines and
//! Prometheus counters on request.
//!
//! A new output (OTLP, journald, …) is one file here implementing [`Sink`] (only the methods of
//! the kinds it cares about: the rest default to doing nothing) and one line in the agent that
//! adds it to the list.

pub(crate) mod journald;
pub(crate) mod json;
pub(crate) mod metrics;
pub(crate) mod text;

use crate::record::{
    AgentStarted, AgentStopped, Body, MemoryPressureRecord, OomIncidentRecord, OomKillRecord,
    Record, SigkillRecord,
};

pub(crate) trait Sink {
    /// Every record, in order. By default each kind goes to its own method below; a sink that
    /// writes any record the same way (JSON Lines) overrides this instead.
    fn write(&mut self, record: &Record) -> std::io::Result<()> {
        match &record.body {
            Body::AgentStarted(started) => self.agent_started(started),
            Body::OomKill(kill) => self.oom_kill(kill),
            Body::OomMarkExiting(marked) => self.oom_mark_exiting(marked),
            Body::OomIncident(incident) => self.oom_incident(incident),
            Body::Sigkill(sigkill) => self.sigkill(sigkill),
            Body::MemoryPressure(pressure) => self.memory_pressure(pressure),
            Body::AgentStopped(stopped) => self.agent_stopped(stopped),
        }
    }

    /// Whether this sink keeps counts or rows, which a SIGKILL flood would swamp: it then gets
    /// each sender's SIGKILLs only up to a rate ([`crate::flood`]), and is told of the rest.
    fn is_aggregate(&self) -> bool {
        false
    }

    /// A SIGKILL this sink did not get: its sender was flooding.
    fn sigkill_rate_limited(&mut self) {}

    /// The programs are attached: from here on no kill is missed.
    fn agent_started(&mut self, _started: &AgentStarted) -> std::io::Result<()> {
        Ok(())
    }

    fn oom_kill(&mut self, _kill: &OomKillRecord) -> std::io::Result<()> {
        Ok(())
    }

    /// A victim marked with no OOM-killer invocation open: nothing was killed.
    fn oom_mark_exiting(&mut self, _marked: &OomKillRecord) -> std::io::Result<()> {
        Ok(())
    }

    /// The end of one `oom_kill_process` invocation, in the full tier.
    fn oom_incident(&mut self, _incident: &OomIncidentRecord) -> std::io::Result<()> {
        Ok(())
    }

    /// A SIGKILL that was not the OOM killer's to its victim.
    fn sigkill(&mut self, _sigkill: &SigkillRecord) -> std::io::Result<()> {
        Ok(())
    }

    /// A limit near, before any kill (`--warn-pressure`).
    fn memory_pressure(&mut self, _pressure: &MemoryPressureRecord) -> std::io::Result<()> {
        Ok(())
    }

    fn agent_stopped(&mut self, _stopped: &AgentStopped) -> std::io::Result<()> {
        Ok(())
    }
}
