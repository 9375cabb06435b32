//! Fuzzes `oomtrace history`'s filters end to end: the values a user types (`--since`,
//! `--until`, `--container`, `--pod`, `--namespace`, `--victim`, `--trigger`, `--limit`) go
//! through the real query against a real SQLite history. Whatever they hold (quotes, `%`, NUL,
//! escapes), the query must not fail, and it must return exactly the rows a plain reading of
//! the filters selects: the same rows this target computes in Rust, in the same order.
//!
//! Input: the filter values, one per line, in the order above; an empty line means "not given".
//! Some stored rows take their names from the same values, so that equality really matches.

#![no_main]

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

use oomtrace::deps::jiff;
use oomtrace::history::query::{self, Filter, StoredEvent};
use oomtrace::history::row::{EventKind, EventRow, Origin};
use oomtrace::history::store::{Retention, Store};
use oomtrace::units::TimeBound;

/// 2026-11-30T12:00:00Z: "now" for `--since 2h`.
const NOW_NS: i64 = 1_796_040_000_000_000_000;

fn store() -> &'static Mutex<Store> {
    static STORE: OnceLock<Mutex<Store>> = OnceLock::new();
    STORE.get_or_init(|| {
        let path =
            std::env::temp_dir().join(format!("oomtrace-fuzz-history-{}.db", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let retention = Retention::new(Duration::from_secs(100 * 365 * 86_400), 1_000_000);
        Mutex::new(Store::open(&path, retention, None).expect("a history in the temp dir"))
    })
}

fn given(field: Option<&str>) -> Option<String> {
    field.filter(|text| !text.is_empty()).map(str::to_owned)
}

fn row(pid: u32, time_ns: i64, names: [Option<String>; 6], domain: &str) -> EventRow {
    let [
        victim_comm,
        container_name,
        container_id,
        pod,
        namespace,
        trigger_name,
    ] = names;
    EventRow {
        time_ns,
        kind: EventKind::OomKill,
        source: Origin::Live,
        boot_id: "fuzz".to_owned(),
        ktime_ns: u64::from(pid),
        victim_pid: pid,
        victim_comm,
        container_name,
        container_id,
        pod,
        namespace,
        trigger_name,
        domain_kind: Some(domain.to_owned()),
        incident_id: None,
        record: "{}".to_owned(),
    }
}

/// What the filter means, read plainly.
fn selects(filter: &Filter, row: &StoredEvent) -> bool {
    let Filter {
        since_ns,
        until_ns,
        kind,
        container,
        pod,
        namespace,
        victim,
        trigger,
        // The fuzzed rows hold no record to read Compose's names from.
        service: _,
        project: _,
        domain,
        limit: _,
    } = filter;
    let equal = |wanted: &Option<String>, stored: &Option<String>| {
        wanted.as_ref().is_none_or(|w| stored.as_ref() == Some(w))
    };
    since_ns.is_none_or(|since| row.time_ns >= since)
        && until_ns.is_none_or(|until| row.time_ns <= until)
        && kind.is_none_or(|kind| row.kind == kind)
        && container.as_ref().is_none_or(|wanted| {
            row.container_name.as_ref() == Some(wanted)
                || row
                    .container_id
                    .as_ref()
                    .is_some_and(|id| id.starts_with(wanted.as_str()))
        })
        && equal(pod, &row.pod)
        && equal(namespace, &row.namespace)
        && equal(victim, &row.victim_comm)
        && equal(trigger, &row.trigger_name)
        && domain.is_none_or(|domain| row.domain_kind.as_deref() == Some(domain))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\n');
    let mut next = || fields.next();
    let (since, until) = (next(), next());
    let [container, pod, namespace, victim, trigger] =
        [next(), next(), next(), next(), next()].map(given);
    let limit = next().and_then(|limit| limit.trim().parse::<u32>().ok());
    let bound = |field: Option<&str>| {
        given(field)?
            .parse::<TimeBound>()
            .ok()
            .map(|bound| bound.resolve(jiff::Timestamp::from_nanosecond(NOW_NS.into()).unwrap()))
    };
    let filter = Filter {
        since_ns: bound(since),
        until_ns: bound(until),
        kind: Some("oom_kill"),
        container: container.clone(),
        pod: pod.clone(),
        namespace: namespace.clone(),
        victim: victim.clone(),
        trigger: trigger.clone(),
        service: None,
        project: None,
        domain: Some("cgroup"),
        limit,
    };

    let mut store = store().lock().unwrap();
    store
        .connection()
        .execute("DELETE FROM events", [])
        .expect("emptying the history");
    let hour = 3_600_000_000_000;
    let id = "3f2a9c0d1e4b5a6978877665544332211000ffeeddccbbaa9988776655443322";
    let rows = [
        // Every name from the input: matched by all the text filters.
        row(
            1,
            NOW_NS - hour,
            [
                victim,
                container.clone(),
                Some(id.to_owned()),
                pod,
                namespace,
                trigger,
            ],
            "cgroup",
        ),
        // The input as an id: matched by a prefix of it.
        row(
            2,
            NOW_NS - 3 * hour,
            [None, Some("web".to_owned()), container, None, None, None],
            "cgroup",
        ),
        row(
            3,
            NOW_NS - 30 * hour,
            [
                Some("hog".to_owned()),
                Some("db".to_owned()),
                Some(id.to_owned()),
                None,
                None,
                None,
            ],
            "host",
        ),
        row(4, NOW_NS, [const { None }; 6], "cgroup"),
    ];
    for row in &rows {
        store.insert(row).expect("a row of plain values is stored");
    }
    let conn = store.connection();
    let all = query::events(conn, &Filter::default()).expect("listing everything");
    let found = query::events(conn, &filter).expect("a query with any filter values succeeds");
    let mut expected: Vec<i64> = all
        .iter()
        .filter(|row| selects(&filter, row))
        .map(|row| row.id)
        .collect();
    if let Some(limit) = filter.limit {
        expected.truncate(limit as usize);
    }
    let found: Vec<i64> = found.iter().map(|row| row.id).collect();
    assert_eq!(found, expected, "for {filter:?}");
});
