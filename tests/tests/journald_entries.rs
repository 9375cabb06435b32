//! An OOM kill in a named podman container, in the host's journal: a real systemd-journald
//! takes the agent's entry, `journalctl MESSAGE_ID=… OOMTRACE_CONTAINER=<name>` finds it with
//! the victim, the limit, the trigger and the history's id, and `journalctl -x` explains it
//! with deploy/oomtrace.catalog.

use std::path::Path;
use std::time::Duration;

use oomtrace::record::{Body, Record};
use oomtrace_tests::{ContainerSpec, Journald, Podman, require_root};

const LIMIT_BYTES: u64 = 48 << 20;
/// `oom_kill`'s MESSAGE_ID: fixed for good, people's queries and the catalog know it.
const OOM_KILL_ID: &str = "377b4ba9a5e44d82badfb510c999ebd9";

#[test]
fn an_oom_kill_in_a_named_container_is_an_entry_selected_by_container() {
    require_root();
    let journal = Journald::start();
    let podman = Podman::start();
    let mut agent = podman.start_agent_with(&["--log-target", "journald"]);
    agent.wait_for_log(
        "go to the journal as entries of their own",
        Duration::from_secs(10),
    );

    let container = podman.run(ContainerSpec::hog(LIMIT_BYTES));
    assert_eq!(
        container.wait_exit(Duration::from_secs(30)),
        137,
        "the container's exit code"
    );
    // The whole record: where it is stored in the history is beside its body.
    let (kill, history) = agent
        .wait_for_record(
            |record: &Record| match &record.body {
                Body::OomKill(kill) if container.is_victim_of(kill) => {
                    Some((kill.clone(), record.history.clone()))
                }
                _ => None,
            },
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("no oom_kill for {}:\n{}", container.name(), agent.log()));
    let history = history.expect("the kill was stored in the history");
    let victim_pid = kill.victim.process.pid.expect("the victim's pid");
    let verdict = kill
        .explanation
        .as_ref()
        .map(|explanation| explanation.verdict.clone())
        .expect("a verdict");

    let matches = [
        format!("MESSAGE_ID={OOM_KILL_ID}"),
        format!("OOMTRACE_CONTAINER={}", container.name()),
    ];
    let entries = journal.wait_for_entries(&matches, 1, Duration::from_secs(10));
    let [entry] = entries.as_slice() else {
        panic!(
            "one journal entry for the kill in {}, found {}: {entries:#?}\nthe agent's log:\n{}",
            container.name(),
            entries.len(),
            agent.log()
        );
    };
    println!(
        "journalctl {}: {}",
        matches.join(" "),
        serde_json::to_string_pretty(entry).unwrap_or_default()
    );
    let expect = |field: &str, value: &str| {
        assert_eq!(
            entry.get(field).map(String::as_str),
            Some(value),
            "{field} of the entry {entry:#?}"
        );
    };
    expect("SYSLOG_IDENTIFIER", "oomtrace");
    expect("PRIORITY", "3");
    expect("OOMTRACE_KIND", "oom_kill");
    expect("OOMTRACE_PID", &victim_pid.to_string());
    expect("OOMTRACE_COMM", "oomtrace-hog");
    expect("OOMTRACE_CONTAINER_ID", container.id());
    expect("OOMTRACE_MAIN_PROCESS", "true");
    expect("OOMTRACE_LIMIT_KIND", "cgroup");
    expect("OOMTRACE_LIMIT_BYTES", &LIMIT_BYTES.to_string());
    expect("OOMTRACE_TRIGGER_SELF", "true");
    expect("OOMTRACE_TRIGGER_PID", &victim_pid.to_string());
    expect("OOMTRACE_HISTORY_ID", &history.id.to_string());
    expect("OOMTRACE_VERDICT", &verdict);
    // Sent natively by the agent itself, not a line of its stderr.
    expect("_TRANSPORT", "journal");
    expect("_PID", &agent.pid().to_string());
    let message = &entry["MESSAGE"];
    assert!(
        message.starts_with(&format!("OOM kill: pid {victim_pid} (oomtrace-hog)"))
            && message.contains(&format!("in container {}", container.name())),
        "MESSAGE is the log line: {message}"
    );
    assert!(
        !agent.log().contains("OOM kill: pid"),
        "the kill is an entry, not also a line on stderr: {}",
        agent.log()
    );

    let catalog = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/oomtrace.catalog");
    let explained = journal.explained(&matches, &catalog);
    println!("journalctl -x {}:\n{explained}", matches.join(" "));
    for expected in [
        "Subject: A process was killed by the kernel's OOM killer",
        "Defined-By: oomtrace",
        verdict.as_str(),
        "What to do:",
    ] {
        assert!(
            explained.contains(expected),
            "journalctl -x should show `{expected}`:\n{explained}"
        );
    }

    agent.stop();
}
