//! The record: what oomtrace reports, as one typed, versioned model. Each event the pipeline
//! finishes becomes one [`Record`] (after explain, for a kill); every output consumes that
//! value and nothing else: the log line, the JSON Lines, the Prometheus counters, the history
//! rows and `oomtrace history`/`show`/`stats`, and the kills recovered from the kernel log are
//! records too. A record serializes to exactly the JSON of `docs/json-schema.md` and reads back
//! from it, so a stored row is the same value the agent wrote.
//!
//! - [`party`] holds a process with its cgroups and who owns them (container, pod, unit): the
//!   victim, the trigger, a SIGKILL's target and sender, the owner of a domain.
//! - [`kill`] holds `oom_kill` (and `oom_mark_exiting`) with its domain, incident and
//!   explanation, and `oom_incident`.
//! - [`sigkill`] holds `sigkill`, [`pressure`] `memory_pressure` (a limit near, before any
//!   kill), and [`agent`] `agent_started` and `agent_stopped`.
//! - [`build`] makes records from the pipeline's types: the one place that decides what goes in.
//!
//! # Adding a field
//!
//! Add it to its struct as an `Option` with `#[serde(skip_serializing_if = "Option::is_none")]`
//! (a new nested object likewise): a consumer of schema 1 ignores what it does not know, and a
//! record stored before the field existed reads back with `None`. Then decide, in this order:
//! 1. JSON: fill it in [`build`] (exhaustive destructuring there points at the source type),
//!    document it in `docs/json-schema.md`, and update the golden file
//!    (`tracer/fixtures/records/`) that shows it.
//! 2. Log line (`sink::text`): only if a person reading the log needs it at a glance.
//! 3. History: a column only if `oomtrace history` filters on it (`history::row`, plus a
//!    schema migration); otherwise the stored record carries it already.
//! 4. `oomtrace show`/`history`/`stats` (`report`): where it helps a person, from the record.
//! 5. Metrics (`sink::metrics`, `metrics`): a label only if bounded; a new family otherwise.
//!
//! Removing a field or changing its meaning raises [`SCHEMA_VERSION`], with a migration of the
//! stored rows in `history::schema`.
//!
//! # Adding a record kind
//!
//! A struct in its own module here, a variant of [`Body`] (its `kind` is the variant's name in
//! snake case), a builder in [`build`], and a golden file. Then the compiler asks for a decision
//! wherever a `Body` is matched: each sink (a [`crate::sink::Sink`] method with a default that
//! ignores it: override it where it should show), the history (`history::row` keeps only kills),
//! and the report.

pub mod agent;
pub(crate) mod build;
pub mod composition;
pub mod cut;
pub mod kill;
pub mod party;
pub mod pressure;
pub mod sigkill;
#[cfg(test)]
pub(crate) mod tests;
pub mod timeline;

use serde::{Deserialize, Serialize};

pub use self::agent::{AgentStarted, AgentStopped, Totals};
pub use self::build::Context;
pub use self::cut::{Cut, CutReason, ObservedPart};
pub use self::kill::{OomIncidentRecord, OomKillRecord};
pub use self::pressure::MemoryPressureRecord;
pub use self::sigkill::SigkillRecord;

/// Raised when a field is removed or changes meaning; new fields and kinds keep it.
pub const SCHEMA_VERSION: u32 = 1;

/// One event, as every output sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    #[serde(default = "schema_version")]
    pub schema_version: u32,
    /// `kind` and the kind's own fields, `time` first.
    #[serde(flatten)]
    pub body: Body,
    /// Where the record is in the history, once it is stored there: `oomtrace show ID`. The
    /// stored record itself is written before its id exists, without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryRef>,
}

/// A record's place in the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRef {
    /// For `oomtrace show ID`.
    pub id: i64,
    /// `live`: traced as it happened; `kmsg`: recovered from the kernel log at startup.
    pub source: String,
    /// The boot the event happened in: pids and `ktime_ns` mean something within one boot.
    pub boot_id: String,
}

/// The kinds of record; `kind` on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    AgentStarted(AgentStarted),
    OomKill(OomKillRecord),
    /// The same shape as `oom_kill`: a victim marked with no OOM-killer invocation open (an
    /// exiting task given memory reserves); nothing was killed.
    OomMarkExiting(OomKillRecord),
    OomIncident(OomIncidentRecord),
    Sigkill(SigkillRecord),
    /// `--warn-pressure`: a limit near, before any kill.
    MemoryPressure(MemoryPressureRecord),
    AgentStopped(AgentStopped),
}

/// What a record without `schema_version` is read as: every record so far is version 1.
fn schema_version() -> u32 {
    1
}

impl Record {
    pub fn new(body: Body) -> Self {
        Record {
            schema_version: SCHEMA_VERSION,
            body,
            history: None,
        }
    }

    /// RFC 3339, UTC: for a kill, the kernel's time of it.
    pub fn time(&self) -> &str {
        match &self.body {
            Body::AgentStarted(AgentStarted { time, .. })
            | Body::OomKill(OomKillRecord { time, .. })
            | Body::OomMarkExiting(OomKillRecord { time, .. })
            | Body::OomIncident(OomIncidentRecord { time, .. })
            | Body::Sigkill(SigkillRecord { time, .. })
            | Body::MemoryPressure(MemoryPressureRecord { time, .. })
            | Body::AgentStopped(AgentStopped { time, .. }) => time,
        }
    }

    /// The `kind` on the wire.
    pub fn kind(&self) -> &'static str {
        match &self.body {
            Body::AgentStarted(_) => "agent_started",
            Body::OomKill(_) => "oom_kill",
            Body::OomMarkExiting(_) => "oom_mark_exiting",
            Body::OomIncident(_) => "oom_incident",
            Body::Sigkill(_) => "sigkill",
            Body::MemoryPressure(_) => "memory_pressure",
            Body::AgentStopped(_) => "agent_stopped",
        }
    }
}
