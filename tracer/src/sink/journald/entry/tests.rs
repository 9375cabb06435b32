use std::collections::BTreeMap;

use super::*;
use crate::record::tests::from_value;
use crate::record::{Body, Record};
use crate::sink::journald::socket::is_field_name;

fn golden(name: &str) -> Record {
    let path = format!(
        "{}/fixtures/records/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    from_value(serde_json::from_str(&text).unwrap())
}

/// The fields by name; every name one journald takes, none twice.
fn by_name(fields: Vec<Field>) -> BTreeMap<&'static str, String> {
    let mut map = BTreeMap::new();
    for (name, value) in fields {
        assert!(is_field_name(name), "{name}");
        assert!(map.insert(name, value).is_none(), "{name} twice");
    }
    map
}

fn history() -> HistoryRef {
    HistoryRef {
        id: 17,
        source: "live".to_owned(),
        boot_id: "b".to_owned(),
    }
}

#[test]
fn a_kill_is_selectable_by_its_victims_container_pod_and_compose_service() {
    let Body::OomKill(kill) = golden("oom_kill").body else {
        panic!("an oom_kill")
    };
    let fields = by_name(oom_kill(&kill, false, Some(&history())));
    let expect = |name: &str, value: &str| {
        assert_eq!(
            fields.get(name).map(String::as_str),
            Some(value),
            "{name}: {fields:#?}"
        )
    };
    expect("MESSAGE", &text::line(&kill, false));
    expect("MESSAGE_ID", OOM_KILL);
    expect("PRIORITY", "3");
    expect("SYSLOG_IDENTIFIER", "oomtrace");
    expect("OOMTRACE_KIND", "oom_kill");
    expect("OOMTRACE_PID", "42");
    expect("OOMTRACE_COMM", "hog");
    expect("OOMTRACE_CGROUP", "/oomtrace-test-1");
    expect("OOMTRACE_CONTAINER", "web");
    expect(
        "OOMTRACE_CONTAINER_ID",
        "3f2a9c0d1e4b5a6978877665544332211000ffeeddccbbaa9988776655443322",
    );
    expect("OOMTRACE_POD", "web-0");
    expect("OOMTRACE_NAMESPACE", "shop");
    expect("OOMTRACE_COMPOSE_PROJECT", "shop");
    expect("OOMTRACE_COMPOSE_SERVICE", "web");
    expect("OOMTRACE_MAIN_PROCESS", "false");
    expect("OOMTRACE_RSS_BYTES", "67072000");
    expect("OOMTRACE_LIMIT_KIND", "cgroup");
    expect("OOMTRACE_LIMIT_BYTES", "50331648");
    expect("OOMTRACE_LIMIT_INFERRED", "true");
    expect("OOMTRACE_TRIGGER_SELF", "true");
    expect("OOMTRACE_TRIGGER_PID", "42");
    expect("OOMTRACE_TIER", "full");
    expect("OOMTRACE_HISTORY_ID", "17");
    assert!(
        fields["OOMTRACE_LIMIT"].contains("container web"),
        "{fields:#?}"
    );
    assert!(fields["OOMTRACE_VERDICT"].starts_with("Container web"));
}

#[test]
fn a_kill_in_a_pod_names_the_container_as_the_kubelet_does() {
    let Body::OomKill(kill) = golden("oom_kill_k8s").body else {
        panic!("an oom_kill")
    };
    let fields = by_name(oom_kill(&kill, false, None));
    assert_eq!(fields["OOMTRACE_CONTAINER"], "worker");
    assert_eq!(fields["OOMTRACE_POD"], "ledger-api-7f9c");
    assert_eq!(fields["OOMTRACE_NAMESPACE"], "pay-prod");
    assert!(!fields.contains_key("OOMTRACE_HISTORY_ID"), "not stored");
}

#[test]
fn a_marked_exiting_task_is_a_notice_of_its_own_kind() {
    let Body::OomMarkExiting(marked) = golden("oom_mark_exiting").body else {
        panic!("an oom_mark_exiting")
    };
    let fields = by_name(oom_kill(&marked, true, None));
    assert_eq!(fields["MESSAGE_ID"], OOM_MARK_EXITING);
    assert_eq!(fields["PRIORITY"], "5");
    assert!(fields["MESSAGE"].starts_with("OOM, nothing killed"));
}

#[test]
fn a_sigkill_names_its_target_and_sender() {
    let Body::Sigkill(sigkill_record) = golden("sigkill").body else {
        panic!("a sigkill")
    };
    let fields = by_name(sigkill(&sigkill_record, Some(&history())));
    assert_eq!(fields["MESSAGE_ID"], SIGKILL);
    assert_eq!(fields["PRIORITY"], "4");
    assert_eq!(fields["OOMTRACE_PID"], "123");
    assert_eq!(fields["OOMTRACE_CONTAINER"], "web");
    assert_eq!(fields["OOMTRACE_SENDER_PID"], "456");
    assert_eq!(fields["OOMTRACE_SENDER_COMM"], "bash");
    assert_eq!(
        fields["OOMTRACE_SENDER_CGROUP"],
        "/user.slice/session-1.scope"
    );
    assert_eq!(fields["OOMTRACE_SENDER_KIND"], "process");
}

#[test]
fn a_pressure_warning_names_the_limits_owner() {
    let Body::MemoryPressure(pressure) = golden("memory_pressure").body else {
        panic!("a memory_pressure")
    };
    let fields = by_name(memory_pressure(&pressure));
    assert_eq!(fields["MESSAGE_ID"], MEMORY_PRESSURE);
    assert_eq!(fields["MESSAGE"], text::pressure_line(&pressure));
    assert!(fields.contains_key("OOMTRACE_USAGE_PERCENT"));
}

/// A unit's kill shows in `journalctl -u` of that unit. A hostile name is escaped in every
/// field the sink sends, MESSAGE and the rest (`journalctl -o verbose` prints them all).
#[test]
fn a_units_kill_is_about_that_unit_and_hostile_names_are_escaped() {
    let Body::OomKill(mut kill) = golden("oom_kill").body else {
        panic!("an oom_kill")
    };
    kill.victim.names.container = None;
    kill.victim.names.k8s = None;
    kill.victim.names.systemd = Some(crate::record::party::Systemd {
        unit: "nginx.service".to_owned(),
    });
    kill.victim.process.executable = Some(crate::record::party::Executable {
        name: "evil\n\u{1b}[2J\u{202e}".to_owned(),
    });
    let record = Record {
        body: Body::OomKill(kill),
        ..golden("oom_kill")
    };
    let fields = by_name(super::super::entry_of(&record).expect("a kill has an entry"));
    assert_eq!(fields["OBJECT_SYSTEMD_UNIT"], "nginx.service");
    assert_eq!(fields["OOMTRACE_UNIT"], "nginx.service");
    assert_eq!(fields["OOMTRACE_COMM"], "evil\\n\\x1b[2J\\u{202e}");
    assert!(
        fields["MESSAGE"].contains("(evil\\n\\x1b[2J\\u{202e})"),
        "{}",
        fields["MESSAGE"]
    );
    assert!(
        fields
            .values()
            .all(|value| !value.chars().any(crate::escape::is_unsafe)),
        "{fields:#?}"
    );
}
