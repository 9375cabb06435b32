//! One stored event: the JSON record as the JSON sink writes it, and the columns queries filter
//! on, taken from that record. Taking them from the record (not from the agent's types) means a
//! kill recovered from the kernel log later is stored the same way, from its record alone.

use anyhow::{Context as _, bail};
use serde_json::Value;

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
pub enum Source {
    /// Traced as it happened.
    Live,
    /// Recovered from the kernel log after the agent was down.
    Kmsg,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Live => "live",
            Source::Kmsg => "kmsg",
        }
    }
}

/// A row of the `events` table, before it has an id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    /// Nanoseconds since the Unix epoch: the record's `time`.
    pub time_ns: i64,
    pub kind: EventKind,
    pub source: Source,
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
    /// The row for an `oom_kill` or `sigkill` record; an error for any other kind.
    pub fn from_record(record: &Value, source: Source, boot_id: &str) -> anyhow::Result<Self> {
        let kind = match record["kind"].as_str() {
            Some("oom_kill") => EventKind::OomKill,
            Some("sigkill") => EventKind::Sigkill,
            other => bail!("a {other:?} record is not kept in the history"),
        };
        let time = record["time"]
            .as_str()
            .context("the record has no `time`")?;
        let time_ns = time
            .parse::<jiff::Timestamp>()
            .with_context(|| format!("the record's time {time:?}"))?
            .as_nanosecond();
        let time_ns = i64::try_from(time_ns).context("a time past the year 2262")?;
        let ktime_ns = record["ktime_ns"]
            .as_u64()
            .context("the record has no `ktime_ns`")?;
        let (victim, trigger) = match kind {
            EventKind::OomKill => (&record["victim"], &record["trigger"]),
            EventKind::Sigkill => (&record["target"], &record["sender"]),
        };
        let victim_pid = victim
            .pointer("/process/pid")
            .and_then(Value::as_u64)
            .and_then(|pid| u32::try_from(pid).ok())
            .context("the record has no victim pid")?;
        let text = |party: &Value, pointer: &str| {
            party
                .pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Ok(EventRow {
            time_ns,
            kind,
            source,
            boot_id: boot_id.to_owned(),
            ktime_ns,
            victim_pid,
            victim_comm: text(victim, "/process/executable/name"),
            container_name: text(victim, "/container/name"),
            container_id: text(victim, "/container/id"),
            pod: text(victim, "/k8s/pod/name").or_else(|| text(victim, "/k8s/pod/uid")),
            namespace: text(victim, "/k8s/namespace/name"),
            trigger_name: text(trigger, "/container/name")
                .or_else(|| text(trigger, "/process/executable/name")),
            domain_kind: text(record, "/domain/kind"),
            incident_id: text(record, "/incident/id"),
            record: record.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_kill_in_a_container_fills_every_column() {
        let record = json!({
            "schema_version": 1, "kind": "oom_kill", "time": "2026-11-30T10:02:11.5Z",
            "ktime_ns": 123_456,
            "victim": {"process": {"pid": 42, "executable": {"name": "java"}},
                       "container": {"id": "abc123", "name": "web"},
                       "k8s": {"pod": {"name": "web-0"}, "namespace": {"name": "shop"}}},
            "trigger": {"process": {"pid": 7, "executable": {"name": "make"}},
                        "container": {"id": "def", "name": "builder"}},
            "domain": {"kind": "host"},
            "incident": {"id": "123000-7"}
        });
        let row = EventRow::from_record(&record, Source::Live, "boot-1").unwrap();
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
            "kind": "sigkill", "time": "2026-11-30T10:02:11Z", "ktime_ns": 5,
            "target": {"process": {"pid": 9, "executable": {"name": "sleep"}}},
            "sender": {"kind": "process", "process": {"pid": 3, "executable": {"name": "sh"}}}
        });
        let row = EventRow::from_record(&record, Source::Kmsg, "b").unwrap();
        assert_eq!(row.kind, EventKind::Sigkill);
        assert_eq!(row.victim_pid, 9);
        assert_eq!(row.trigger_name.as_deref(), Some("sh"));
        assert_eq!(row.domain_kind, None);
        assert_eq!(row.source, Source::Kmsg);
    }

    #[test]
    fn other_kinds_and_broken_records_are_refused() {
        for record in [
            json!({"kind": "agent_started", "time": "2026-11-30T10:02:11Z"}),
            json!({"kind": "oom_kill", "time": "yesterday", "ktime_ns": 1,
                   "victim": {"process": {"pid": 1}}}),
            json!({"kind": "oom_kill", "time": "2026-11-30T10:02:11Z", "ktime_ns": 1,
                   "victim": {}}),
        ] {
            assert!(
                EventRow::from_record(&record, Source::Live, "b").is_err(),
                "{record}"
            );
        }
    }
}
