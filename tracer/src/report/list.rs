//! `oomtrace history` as a table: one line per kill, newest first.

use super::parties::{container_cell, limit_cell, record, trigger_cell};
use super::style::{Paint, Style};
use super::table::{Cell, Column, render};
use crate::history::query::StoredEvent;
use crate::wording::printable;

const COLUMNS: [Column; 7] = [
    Column {
        header: "ID",
        flexible: false,
        right: true,
    },
    Column {
        header: "TIME",
        flexible: false,
        right: false,
    },
    Column {
        header: "KIND",
        flexible: false,
        right: false,
    },
    Column {
        header: "VICTIM",
        flexible: true,
        right: false,
    },
    Column {
        header: "CONTAINER",
        flexible: true,
        right: false,
    },
    Column {
        header: "LIMIT HIT",
        flexible: true,
        right: false,
    },
    Column {
        header: "TRIGGER/SENDER",
        flexible: true,
        right: false,
    },
];

pub(super) fn table(events: &[StoredEvent], style: &Style) -> Vec<String> {
    let rows: Vec<Vec<Cell>> = events
        .iter()
        .map(|event| {
            let record = record(event);
            let (kind, paint) = match event.kind.as_str() {
                "oom_kill" => ("oom", Paint::Red),
                "sigkill" => ("sigkill", Paint::Yellow),
                other => (other, Paint::Dim),
            };
            let victim = match &event.victim_comm {
                Some(comm) => format!("{} {}", event.victim_pid, printable(comm)),
                None => event.victim_pid.to_string(),
            };
            vec![
                event.id.to_string().into(),
                style.when(event.time_ns).into(),
                Cell {
                    text: printable(kind),
                    paint: Some(paint),
                },
                victim.into(),
                container_cell(event, record.as_ref()).into(),
                limit_cell(event, record.as_ref()).into(),
                trigger_cell(event, record.as_ref()).into(),
            ]
        })
        .collect();
    render(&COLUMNS, &rows, style)
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;
    use crate::report::style::tests::style;
    use crate::report::style::{WIDTH, width};

    /// The stored event of `record`, as the history would read it back.
    pub(crate) fn event(id: i64, record: serde_json::Value) -> StoredEvent {
        let row = crate::history::row::EventRow::from_record(
            &crate::record::tests::from_value(record),
            crate::history::row::Origin::Live,
            "boot",
        )
        .unwrap();
        StoredEvent {
            id,
            time_ns: row.time_ns,
            kind: row.kind.as_str().to_owned(),
            source: "live".into(),
            boot_id: row.boot_id,
            ktime_ns: row.ktime_ns as i64,
            victim_pid: row.victim_pid,
            victim_comm: row.victim_comm,
            container_name: row.container_name,
            container_id: row.container_id,
            pod: row.pod,
            namespace: row.namespace,
            trigger_name: row.trigger_name,
            domain_kind: row.domain_kind,
            incident_id: row.incident_id,
            record: row.record,
        }
    }

    fn events() -> Vec<StoredEvent> {
        let long = "a-container-name-that-goes-on-and-on-and-on-for-far-too-long-to-fit";
        vec![
            event(
                123_456,
                json!({"kind": "oom_kill", "time": "2026-11-30T10:02:11Z", "ktime_ns": 1,
                       "victim": {"process": {"pid": 4_194_304, "executable": {"name": "evil\x1b[2Jcomm"}},
                                  "container": {"id": "ab".repeat(32), "name": long}},
                       "trigger": {"process": {"pid": 7, "executable": {"name": "make"}},
                                   "container": {"id": "cd", "name": long}},
                       "domain": {"kind": "cgroup", "container": {"id": "ab", "name": long}}}),
            ),
            event(
                2,
                json!({"kind": "sigkill", "time": "2026-11-30T12:59:00Z", "ktime_ns": 2,
                       "target": {"process": {"pid": 9, "executable": {"name": "sl\x1bp"}}},
                       "sender": {"process": {"pid": 3, "executable": {"name": "sh"}}}}),
            ),
            event(
                1,
                json!({"kind": "oom_kill", "time": "2026-11-30T09:00:00Z", "ktime_ns": 3,
                       "victim": {"process": {"pid": 5, "executable": {"name": "hog"}}},
                       "trigger": {"process": {"pid": 5, "executable": {"name": "hog"}}},
                       "domain": {"kind": "host"}}),
            ),
        ]
    }

    #[test]
    fn the_table_fits_100_columns_and_escapes_names() {
        let lines = table(&events(), &style(false));
        for line in &lines {
            println!("{line}");
            assert!(width(line) <= WIDTH, "{} columns: {line}", width(line));
            assert!(!line.contains('\x1b'), "a raw escape: {line:?}");
        }
        assert!(lines[0].starts_with("    ID TIME"), "{}", lines[0]);
        assert!(
            lines[1].contains("2026-11-30 10:02:11 (3 h ago)"),
            "{}",
            lines[1]
        );
        assert!(lines[1].contains("oom"));
        assert!(lines[1].contains('…'), "long names are cut: {}", lines[1]);
        assert!(
            lines[2].contains("9 sl\\x1bp"),
            "the escape is shown escaped: {}",
            lines[2]
        );
        assert!(lines[2].contains("sigkill"));
        assert!(lines[2].contains("sh"));
        assert!(lines[3].contains("host"));
        assert!(lines[3].contains("itself"));
    }

    /// The golden Kubernetes kill: `worker` of pod `pay-prod/ledger-api-7f9c`, at the pod's
    /// limit.
    pub(crate) fn kill_in_a_pod() -> StoredEvent {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/records/oom_kill_k8s.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        event(7, serde_json::from_str(&text).unwrap())
    }

    /// The golden kill whose container's `/dev/shm` held most of its limit.
    pub(crate) fn kill_filled_by_tmpfs() -> StoredEvent {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/records/oom_kill_tmpfs.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        event(8, serde_json::from_str(&text).unwrap())
    }

    #[test]
    fn a_kill_in_a_pod_shows_its_namespace_pod_and_container_and_the_pods_limit() {
        let lines = table(&[kill_in_a_pod()], &style(false));
        println!("{}", lines.join("\n"));
        assert!(lines[1].contains(" worker (pay-prod/"), "{}", lines[1]);
        assert!(lines[1].contains(" pod pay-prod/"), "{}", lines[1]);
    }

    #[test]
    fn color_only_when_asked() {
        let plain = table(&events(), &style(false));
        let colored = table(&events(), &style(true));
        assert!(plain.iter().all(|line| !line.contains("\x1b[")));
        assert!(colored[1].contains("\x1b[31moom"), "{:?}", colored[1]);
    }
}
