//! One stored event: its record, as JSON, and the columns queries filter on, taken from that
//! record. Taking them from the record (not from the agent's other types) means a kill
//! recovered from the kernel log later is stored the same way, from its record alone.

use anyhow::{Context as _, bail};

use crate::record::party::Party;
use crate::record::{Body, OomKillRecord, Record, SigkillRecord};

/// Which events the history keeps: kills, not the agent's own start and stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    OomKill,
    Sigkill,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::OomKill => "oom_kill",
            EventKind::Sigkill => "sigkill",
        }
    }
}

/// How the history learnt of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Traced as it happened.
    Live,
    /// Recovered from the kernel log after the agent was down.
    Kmsg,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Live => "live",
            Origin::Kmsg => "kmsg",
        }
    }
}

/// What makes an event one within a boot: its kind, its victim's pid and its kernel time.
pub type EventKey = (EventKind, u32, u64);

/// A row of the `events` table, before it has an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    /// Nanoseconds since the Unix epoch: the record's `time`.
    pub time_ns: i64,
    pub kind: EventKind,
    pub source: Origin,
    /// `/proc/sys/kernel/random/boot_id`: pids and `ktime_ns` mean something within one boot.
    pub boot_id: String,
    pub ktime_ns: u64,
    /// The victim of an `oom_kill`, the target of a `sigkill`.
    pub victim_pid: u32,
    pub victim_comm: Option<String>,
    pub container_name: Option<String>,
    pub container_id: Option<String>,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    /// The trigger's (a `sigkill`'s sender's) container name, else its comm.
    pub trigger_name: Option<String>,
    /// `host`, `cgroup` or `unknown`: whose limit an `oom_kill` hit.
    pub domain_kind: Option<String>,
    pub incident_id: Option<String>,
    /// The whole record, as JSON.
    pub record: String,
}

impl EventRow {
    /// Whether the history keeps `record`: kills, not the agent's own start and stop, nor an
    /// incident (each of its victims is stored with its `incident`), nor a task marked without
    /// being killed.
    pub fn keeps(record: &Record) -> bool {
        match &record.body {
            Body::OomKill(_) | Body::Sigkill(_) => true,
            Body::AgentStarted(_)
            | Body::OomMarkExiting(_)
            | Body::OomIncident(_)
            // A warning is the live signal; the kill it warned of is what is stored.
            | Body::MemoryPressure(_)
            | Body::AgentStopped(_) => false,
        }
    }

    /// The event a row is of.
    pub fn key(&self) -> EventKey {
        (self.kind, self.victim_pid, self.ktime_ns)
    }

    /// The event `record` is, if the history keeps it: what its row's [`EventRow::key`] will
    /// be, without rendering the row.
    pub fn key_of(record: &Record) -> Option<EventKey> {
        match &record.body {
            Body::OomKill(kill) => {
                Some((EventKind::OomKill, kill.victim.process.pid?, kill.ktime_ns))
            }
            Body::Sigkill(sigkill) => Some((
                EventKind::Sigkill,
                sigkill.target.process.pid?,
                sigkill.ktime_ns,
            )),
            Body::AgentStarted(_)
            | Body::OomMarkExiting(_)
            | Body::OomIncident(_)
            | Body::MemoryPressure(_)
            | Body::AgentStopped(_) => None,
        }
    }

    /// The row for an `oom_kill` or `sigkill` record; an error for any other kind.
    pub fn from_record(record: &Record, source: Origin, boot_id: &str) -> anyhow::Result<Self> {
        let (kind, ktime_ns, victim, trigger, domain_kind, incident_id) = match &record.body {
            Body::OomKill(OomKillRecord {
                ktime_ns,
                victim,
                trigger,
                domain,
                incident,
                ..
            }) => (
                EventKind::OomKill,
                *ktime_ns,
                victim,
                trigger.as_ref(),
                domain
                    .as_ref()
                    .map(|domain| domain.kind.as_str().to_owned()),
                incident.as_ref().and_then(|incident| incident.id.clone()),
            ),
            Body::Sigkill(SigkillRecord {
                ktime_ns,
                target,
                sender,
                ..
            }) => (
                EventKind::Sigkill,
                *ktime_ns,
                target,
                Some(&sender.party),
                None,
                None,
            ),
            _ => bail!("a {:?} record is not kept in the history", record.kind()),
        };
        let time = record.time();
        let time_ns = time
            .parse::<jiff::Timestamp>()
            .with_context(|| format!("the record's time {time:?}"))?
            .as_nanosecond();
        let time_ns = i64::try_from(time_ns).context("a time past the year 2262")?;
        let victim_pid = victim.process.pid.context("the record has no victim pid")?;
        let names = &victim.names;
        let pod = names.pod();
        Ok(EventRow {
            time_ns,
            kind,
            source,
            boot_id: boot_id.to_owned(),
            ktime_ns,
            victim_pid,
            victim_comm: victim.process.comm().map(str::to_owned),
            container_name: names
                .container
                .as_ref()
                .and_then(|container| container.name.clone()),
            container_id: names
                .container
                .as_ref()
                .map(|container| container.id.clone()),
            pod: pod.and_then(|pod| pod.name.clone().or_else(|| pod.uid.clone())),
            namespace: names.namespace().map(str::to_owned),
            trigger_name: trigger.and_then(trigger_name),
            domain_kind,
            incident_id,
            record: serde_json::to_string(record).context("rendering the record")?,
        })
    }
}

/// The trigger's (a `sigkill`'s sender's) container name, else its comm.
fn trigger_name(party: &Party) -> Option<String> {
    party
        .names
        .container
        .as_ref()
        .and_then(|container| container.name.clone())
        .or_else(|| party.process.comm().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::record::tests::from_value;

    #[test]
    fn a_kill_in_a_container_fills_every_column() {
        let record = json!({
            "schema_version": 1, "kind": "oom_kill", "time": "2026-11-30T10:02:11.5Z",
            "ktime_ns": 123_456, "capture": {"parts": ["tracepoint"]},
            "victim": {"process": {"pid": 42, "executable": {"name": "java"}},
                       "container": {"id": "abc123", "name": "web"},
                       "k8s": {"pod": {"name": "web-0"}, "namespace": {"name": "shop"}}},
            "trigger": {"process": {"pid": 7, "executable": {"name": "make"}},
                        "container": {"id": "def", "name": "builder"}},
            "domain": {"kind": "host"},
            "incident": {"id": "123000-7"}
        });
        let row =
            EventRow::from_record(&from_value(record.clone()), Origin::Live, "boot-1").unwrap();
        assert_eq!(row.time_ns, 1_796_032_931_500_000_000);
        assert_eq!(row.kind, EventKind::OomKill);
        assert_eq!(row.ktime_ns, 123_456);
        assert_eq!(row.victim_pid, 42);
        assert_eq!(row.victim_comm.as_deref(), Some("java"));
        assert_eq!(row.container_name.as_deref(), Some("web"));
        assert_eq!(row.container_id.as_deref(), Some("abc123"));
        assert_eq!(row.pod.as_deref(), Some("web-0"));
        assert_eq!(row.namespace.as_deref(), Some("shop"));
        assert_eq!(row.trigger_name.as_deref(), Some("builder"));
        assert_eq!(row.domain_kind.as_deref(), Some("host"));
        assert_eq!(row.incident_id.as_deref(), Some("123000-7"));
        assert_eq!(serde_json::from_str::<Value>(&row.record).unwrap(), record);
    }

    #[test]
    fn a_sigkill_is_keyed_by_its_target_and_named_by_its_sender() {
        let record = json!({
            "schema_version": 1, "kind": "sigkill", "time": "2026-11-30T10:02:11Z", "ktime_ns": 5,
            "capture": {"parts": ["signal"]},
            "target": {"process": {"pid": 9, "executable": {"name": "sleep"}}},
            "sender": {"kind": "process", "process": {"pid": 3, "executable": {"name": "sh"}}},
            "signal": {}
        });
        let row = EventRow::from_record(&from_value(record), Origin::Kmsg, "b").unwrap();
        assert_eq!(row.kind, EventKind::Sigkill);
        assert_eq!(row.victim_pid, 9);
        assert_eq!(row.trigger_name.as_deref(), Some("sh"));
        assert_eq!(row.domain_kind, None);
        assert_eq!(row.source, Origin::Kmsg);
    }

    #[test]
    fn other_kinds_and_broken_records_are_refused() {
        let kill = |time: &str, victim: Value| {
            json!({"schema_version": 1, "kind": "oom_kill", "time": time, "ktime_ns": 1,
                   "capture": {"parts": ["tracepoint"]}, "victim": victim,
                   "domain": {"kind": "unknown"}})
        };
        for record in [
            json!({"schema_version": 1, "kind": "agent_started", "time": "2026-11-30T10:02:11Z",
                   "capture": {"tier": "full", "reason": "", "task_hook": null,
                               "function_hook": null, "tracepoint_fields": [],
                               "sigkill": false, "sigkill_task_hook": null},
                   "agent": {"version": "0.1.0", "pid": 1}}),
            kill("yesterday", json!({"process": {"pid": 1}})),
            kill("2026-11-30T10:02:11Z", json!({})),
        ] {
            let record = from_value(record);
            assert!(
                EventRow::from_record(&record, Origin::Live, "b").is_err(),
                "{record:?}"
            );
        }
    }
}
