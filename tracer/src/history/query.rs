//! What the report commands ask of the history: filtered lists, one event, an incident's other
//! victims, and counts over a window.

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension as _, Row};
use serde::{Deserialize, Serialize};

use crate::record::Record;

/// Which stored events to list. Every field narrows; `None` matches all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Nanoseconds since the epoch, inclusive.
    pub since_ns: Option<i64>,
    /// Nanoseconds since the epoch, inclusive.
    pub until_ns: Option<i64>,
    /// `oom_kill` or `sigkill`.
    pub kind: Option<&'static str>,
    /// A container's name, or a prefix of its id.
    pub container: Option<String>,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    /// The victim's comm.
    pub victim: Option<String>,
    /// The trigger's container name or comm.
    pub trigger: Option<String>,
    /// The Compose service of the victim's (a sigkill's target's) container.
    pub service: Option<String>,
    /// Its Compose project.
    pub project: Option<String>,
    /// `host` or `cgroup`.
    pub domain: Option<&'static str>,
    /// At most this many, newest first.
    pub limit: Option<u32>,
}

/// A stored event, as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: i64,
    pub time_ns: i64,
    pub kind: String,
    pub source: String,
    pub boot_id: String,
    pub ktime_ns: i64,
    pub victim_pid: u32,
    pub victim_comm: Option<String>,
    pub container_name: Option<String>,
    pub container_id: Option<String>,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub trigger_name: Option<String>,
    pub domain_kind: Option<String>,
    pub incident_id: Option<String>,
    pub record: String,
}

const COLUMNS: &str = "id, time_ns, kind, source, boot_id, ktime_ns, victim_pid, victim_comm, \
    container_name, container_id, pod, namespace, trigger_name, domain_kind, incident_id, record";

impl StoredEvent {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(StoredEvent {
            id: row.get(0)?,
            time_ns: row.get(1)?,
            kind: row.get(2)?,
            source: row.get(3)?,
            boot_id: row.get(4)?,
            ktime_ns: row.get(5)?,
            victim_pid: row.get(6)?,
            victim_comm: row.get(7)?,
            container_name: row.get(8)?,
            container_id: row.get(9)?,
            pod: row.get(10)?,
            namespace: row.get(11)?,
            trigger_name: row.get(12)?,
            domain_kind: row.get(13)?,
            incident_id: row.get(14)?,
            record: row.get(15)?,
        })
    }

    /// The stored record with a `history` object added (id, source, boot), so a consumer can
    /// ask for it again with `oomtrace show ID`: what `--format json` prints.
    pub fn listed(&self) -> Listed {
        Listed {
            stored: match serde_json::from_str(&self.record) {
                Ok(record) => Stored::Record(Box::new(record)),
                Err(err) => Stored::Unreadable {
                    unreadable_record: err.to_string(),
                },
            },
            history: HistoryRef {
                id: self.id,
                source: self.source.clone(),
                boot_id: self.boot_id.clone(),
            },
        }
    }
}

/// A stored record as the report commands print it as JSON, and as a consumer of that JSON
/// (the privileged tests among them) reads it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Listed {
    #[serde(flatten)]
    pub stored: Stored,
    pub history: HistoryRef,
}

impl Listed {
    /// The stored record, unless it could not be read.
    pub fn record(&self) -> Option<&Record> {
        match &self.stored {
            Stored::Record(record) => Some(record),
            Stored::Unreadable { .. } => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stored {
    Record(Box<Record>),
    /// Said rather than dropped: the row is there, its record cannot be read.
    Unreadable {
        unreadable_record: String,
    },
}

/// Where a listed record is in the history: the same as a live record carries once stored.
pub use crate::record::HistoryRef;

/// The events `filter` matches, newest first.
pub fn events(conn: &Connection, filter: &Filter) -> rusqlite::Result<Vec<StoredEvent>> {
    let Filter {
        since_ns,
        until_ns,
        kind,
        container,
        pod,
        namespace,
        victim,
        trigger,
        service,
        project,
        domain,
        limit,
    } = filter;
    // Each condition names its own numbered parameter: `{}` stands for it.
    let mut conditions: Vec<String> = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    let mut add = |condition: &str, value: SqlValue| {
        values.push(value);
        conditions.push(condition.replace("{}", &format!("?{}", values.len())));
    };
    if let Some(since) = since_ns {
        add("time_ns >= {}", SqlValue::Integer(*since));
    }
    if let Some(until) = until_ns {
        add("time_ns <= {}", SqlValue::Integer(*until));
    }
    let text = |text: &str| SqlValue::Text(text.to_owned());
    if let Some(kind) = kind {
        add("kind = {}", text(kind));
    }
    if let Some(container) = container {
        // A name exactly, or the start of an id; no wildcards, whatever the argument holds.
        // The prefix is compared as bytes: SQLite's text length() stops at a NUL.
        add(
            "(container_name = {} OR substr(CAST(container_id AS BLOB), 1, \
             length(CAST({} AS BLOB))) = CAST({} AS BLOB))",
            text(container),
        );
    }
    if let Some(pod) = pod {
        add("pod = {}", text(pod));
    }
    if let Some(namespace) = namespace {
        add("namespace = {}", text(namespace));
    }
    if let Some(victim) = victim {
        add("victim_comm = {}", text(victim));
    }
    if let Some(trigger) = trigger {
        add("trigger_name = {}", text(trigger));
    }
    // Compose's names are in the stored record only: rare filters, read from its JSON.
    for (name, wanted) in [("service", service), ("project", project)] {
        if let Some(wanted) = wanted {
            add(
                &format!(
                    "coalesce(json_extract(record, '$.victim.container.compose.{name}'), \
                     json_extract(record, '$.target.container.compose.{name}')) = {{}}"
                ),
                text(wanted),
            );
        }
    }
    if let Some(domain) = domain {
        add("domain_kind = {}", text(domain));
    }
    let mut sql = format!("SELECT {COLUMNS} FROM events");
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(" ORDER BY time_ns DESC, id DESC");
    if let Some(limit) = limit {
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    let mut statement = conn.prepare(&sql)?;
    let rows = statement.query_map(rusqlite::params_from_iter(values), StoredEvent::from_row)?;
    rows.collect()
}

/// One event by its id.
pub fn event(conn: &Connection, id: i64) -> rusqlite::Result<Option<StoredEvent>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM events WHERE id = ?1"),
        [id],
        StoredEvent::from_row,
    )
    .optional()
}

/// Every stored victim of one invocation of the OOM killer, in the order they were killed.
pub fn incident_victims(
    conn: &Connection,
    boot_id: &str,
    incident_id: &str,
) -> rusqlite::Result<Vec<StoredEvent>> {
    let mut statement = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM events WHERE boot_id = ?1 AND incident_id = ?2
         ORDER BY ktime_ns, id"
    ))?;
    let rows = statement.query_map([boot_id, incident_id], StoredEvent::from_row)?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::row::{EventRow, Origin};
    use crate::history::store::{Retention, Store};
    use crate::history::tests::{TempDir, temp_dir};
    use crate::record::tests::from_value;

    const NOW_NS: i64 = 1_795_860_131_000_000_000;
    const MINUTE_NS: i64 = 60_000_000_000;
    const EVENTS: u32 = 360;

    /// The synthetic event `n`: `n` minutes old, its fields cycling at different periods so
    /// that every filter splits the set differently.
    fn record(n: u32) -> serde_json::Value {
        let time = jiff::Timestamp::from_nanosecond(i128::from(NOW_NS - i64::from(n) * MINUTE_NS))
            .unwrap()
            .to_string();
        let containers = ["web", "db", "cache"];
        let in_container = n % 4 != 3;
        let mut victim = serde_json::json!({
            "process": {"pid": 1000 + n, "executable": {"name": (["java", "postgres", "redis"][(n % 3) as usize])}}
        });
        if in_container {
            let name = containers[(n % 4) as usize % 3];
            victim["container"] = serde_json::json!({
                "id": format!("{:02x}{}", n % 4, "ab".repeat(31)), "name": name
            });
            if n % 6 < 3 {
                victim["container"]["compose"] = serde_json::json!({"project": (["shop", "blog"][(n % 2) as usize]), "service": name});
            }
            victim["k8s"] = serde_json::json!({
                "pod": {"name": format!("{name}-{}", n % 2)},
                "namespace": {"name": (["shop", "infra"][(n % 2) as usize])}
            });
        }
        let trigger = serde_json::json!({
            "process": {"pid": 1, "executable": {"name": (["make", "cc"][usize::from(n.is_multiple_of(5))])}}
        });
        if n % 10 == 9 {
            serde_json::json!({"kind": "sigkill", "time": time, "ktime_ns": n,
                               "target": victim, "sender": trigger})
        } else {
            serde_json::json!({"kind": "oom_kill", "time": time, "ktime_ns": n,
                               "victim": victim, "trigger": trigger,
                               "domain": {"kind": (["host", "cgroup"][usize::from(!n.is_multiple_of(6))])}})
        }
    }

    fn history() -> (TempDir, Connection) {
        let dir = temp_dir();
        let path = dir.join("query.db");
        let mut store = Store::open(
            &path,
            Retention::new(
                std::time::Duration::from_secs(100 * 365 * 86_400),
                1_000_000,
            ),
            None,
        )
        .unwrap();
        for n in 0..EVENTS {
            let row = EventRow::from_record(&from_value(record(n)), Origin::Live, "boot").unwrap();
            store.insert(&row).unwrap();
        }
        drop(store);
        let conn = crate::history::schema::open_read_only(&path).unwrap();
        (dir, conn)
    }

    /// Which synthetic events (by number and record) a filter should return.
    type Matches = dyn Fn(u32, &serde_json::Value) -> bool;

    /// The synthetic events' numbers that `filter` returns, in order.
    fn numbers(conn: &Connection, filter: &Filter) -> Vec<u32> {
        events(conn, filter)
            .unwrap()
            .into_iter()
            .map(|event| event.victim_pid - 1000)
            .collect()
    }

    /// The numbers of the synthetic events for which `matches` holds, newest first.
    fn expected(matches: impl Fn(u32, &serde_json::Value) -> bool) -> Vec<u32> {
        (0..EVENTS).filter(|&n| matches(n, &record(n))).collect()
    }

    fn at(record: &serde_json::Value, pointer: &str) -> Option<String> {
        ["/victim", "/target"]
            .iter()
            .find_map(|party| record.pointer(&format!("{party}{pointer}")))
            .and_then(|value| value.as_str().map(str::to_owned))
    }

    #[test]
    fn no_filter_lists_everything_newest_first() {
        let (_dir, conn) = history();
        assert_eq!(numbers(&conn, &Filter::default()), expected(|_, _| true));
    }

    #[test]
    fn each_filter_returns_exactly_its_rows() {
        let (_dir, conn) = history();
        let cases: Vec<(Filter, Box<Matches>)> = vec![
            (
                Filter {
                    since_ns: Some(NOW_NS - 120 * MINUTE_NS),
                    ..Filter::default()
                },
                Box::new(|n, _| n <= 120),
            ),
            (
                Filter {
                    since_ns: Some(NOW_NS - 200 * MINUTE_NS),
                    until_ns: Some(NOW_NS - 100 * MINUTE_NS),
                    ..Filter::default()
                },
                Box::new(|n, _| (100..=200).contains(&n)),
            ),
            (
                Filter {
                    kind: Some("sigkill"),
                    ..Filter::default()
                },
                Box::new(|_, r| r["kind"] == "sigkill"),
            ),
            (
                Filter {
                    container: Some("db".into()),
                    ..Filter::default()
                },
                Box::new(|_, r| at(r, "/container/name").as_deref() == Some("db")),
            ),
            (
                Filter {
                    service: Some("db".into()),
                    ..Filter::default()
                },
                Box::new(|_, r| at(r, "/container/compose/service").as_deref() == Some("db")),
            ),
            (
                Filter {
                    service: Some("web".into()),
                    project: Some("shop".into()),
                    ..Filter::default()
                },
                Box::new(|_, r| {
                    at(r, "/container/compose/service").as_deref() == Some("web")
                        && at(r, "/container/compose/project").as_deref() == Some("shop")
                }),
            ),
            (
                // An id prefix: the synthetic ids start with `n % 4` in hex.
                Filter {
                    container: Some("02abab".into()),
                    ..Filter::default()
                },
                Box::new(|n, _| n % 4 == 2),
            ),
            (
                Filter {
                    container: Some("%".into()),
                    ..Filter::default()
                },
                Box::new(|_, _| false),
            ),
            (
                Filter {
                    pod: Some("web-1".into()),
                    ..Filter::default()
                },
                Box::new(|_, r| at(r, "/k8s/pod/name").as_deref() == Some("web-1")),
            ),
            (
                Filter {
                    namespace: Some("infra".into()),
                    ..Filter::default()
                },
                Box::new(|_, r| at(r, "/k8s/namespace/name").as_deref() == Some("infra")),
            ),
            (
                Filter {
                    victim: Some("redis".into()),
                    ..Filter::default()
                },
                Box::new(|_, r| at(r, "/process/executable/name").as_deref() == Some("redis")),
            ),
            (
                Filter {
                    trigger: Some("cc".into()),
                    ..Filter::default()
                },
                Box::new(|n, _| n % 5 == 0),
            ),
            (
                Filter {
                    domain: Some("host"),
                    ..Filter::default()
                },
                Box::new(|_, r| r.pointer("/domain/kind") == Some(&"host".into())),
            ),
            (
                // Every filter at once (but Compose's, whose rows would not meet these).
                Filter {
                    since_ns: Some(NOW_NS - 300 * MINUTE_NS),
                    until_ns: Some(NOW_NS - 10 * MINUTE_NS),
                    kind: Some("oom_kill"),
                    container: Some("web".into()),
                    pod: Some("web-0".into()),
                    namespace: Some("shop".into()),
                    victim: Some("java".into()),
                    trigger: Some("make".into()),
                    service: None,
                    project: None,
                    domain: Some("cgroup"),
                    limit: None,
                },
                Box::new(|n, r| {
                    (10..=300).contains(&n)
                        && r["kind"] == "oom_kill"
                        && at(r, "/container/name").as_deref() == Some("web")
                        && at(r, "/k8s/pod/name").as_deref() == Some("web-0")
                        && at(r, "/process/executable/name").as_deref() == Some("java")
                        && n % 5 != 0
                        && n % 6 != 0
                }),
            ),
        ];
        for (filter, matches) in cases {
            let want = expected(matches);
            assert_eq!(numbers(&conn, &filter), want, "{filter:?}");
        }
    }

    #[test]
    fn the_limit_keeps_the_newest() {
        let (_dir, conn) = history();
        let filter = Filter {
            container: Some("web".into()),
            limit: Some(7),
            ..Filter::default()
        };
        let all = expected(|_, r| at(r, "/container/name").as_deref() == Some("web"));
        assert_eq!(numbers(&conn, &filter), all[..7]);
    }

    #[test]
    fn one_event_and_its_incident() {
        let dir = temp_dir();
        let path = dir.join("incident.db");
        let mut store = Store::open(
            &path,
            Retention::new(std::time::Duration::from_secs(100 * 365 * 86_400), 100),
            None,
        )
        .unwrap();
        let mut ids = Vec::new();
        for pid in [30, 10, 20] {
            let mut record = record(pid);
            record["incident"] = serde_json::json!({"id": "99-1"});
            record["ktime_ns"] = u64::from(pid).into();
            let row = EventRow::from_record(&from_value(record), Origin::Live, "boot").unwrap();
            ids.push(store.insert(&row).unwrap());
        }
        let conn = crate::history::schema::open_read_only(&path).unwrap();
        let victims: Vec<u32> = incident_victims(&conn, "boot", "99-1")
            .unwrap()
            .iter()
            .map(|event| event.victim_pid)
            .collect();
        assert_eq!(victims, [1010, 1020, 1030]);
        assert!(
            incident_victims(&conn, "other-boot", "99-1")
                .unwrap()
                .is_empty()
        );
        let crate::history::store::Inserted::New(id) = ids[0] else {
            panic!("stored")
        };
        let event = event(&conn, id).unwrap().unwrap();
        assert_eq!(event.victim_pid, 1030);
        let json = serde_json::to_value(event.listed()).unwrap();
        assert_eq!(json["history"]["id"], id);
        assert_eq!(json["history"]["source"], "live");
        assert_eq!(json["victim"]["process"]["pid"], 1030);
        // What `--format json` prints reads back as the same value, record and all.
        let listed: Listed = serde_json::from_value(json).unwrap();
        assert_eq!(listed, event.listed());
        assert!(listed.record().is_some(), "{listed:?}");
        assert_eq!(super::event(&conn, 424_242).unwrap(), None);
    }

    #[test]
    fn an_unreadable_record_is_listed_as_such_and_reads_back() {
        let event = StoredEvent {
            id: 7,
            time_ns: NOW_NS,
            kind: "oom_kill".to_owned(),
            source: "live".to_owned(),
            boot_id: "boot".to_owned(),
            ktime_ns: 1,
            victim_pid: 1,
            victim_comm: None,
            container_name: None,
            container_id: None,
            pod: None,
            namespace: None,
            trigger_name: None,
            domain_kind: None,
            incident_id: None,
            record: "{\"kind\": \"oom_kill\"".to_owned(),
        };
        let json = serde_json::to_value(event.listed()).unwrap();
        assert!(json["unreadable_record"].is_string(), "{json}");
        let listed: Listed = serde_json::from_value(json).unwrap();
        assert_eq!(listed, event.listed());
        assert_eq!(listed.record(), None);
        assert_eq!(listed.history.id, 7);
    }
}
