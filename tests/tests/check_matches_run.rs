//! `oomtrace check` on this host, as a table and as JSON, against what `oomtrace run` with the
//! same options then reports: the same tier, the same reason, the same programs, to the letter.
//! Nothing is attached by the check, and the history it looks at is not created.

use std::process::Command;

use oomtrace::check::{Report, Status};
use oomtrace_tests::{Agent, HistoryFile, agent_binary, require_root};

#[test]
fn check_says_what_run_then_attaches() {
    require_root();
    let history = HistoryFile::new();
    let check = |format: &str| {
        let output = Command::new(agent_binary())
            .args(["check", "--format", format])
            .args(history.agent_args())
            .output()
            .expect("running oomtrace check");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "oomtrace check --format {format} should exit 0 on this host, it exited with {}:\n\
             {stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };

    let json = check("json");
    let report: Report = serde_json::from_str(&json)
        .unwrap_or_else(|err| panic!("check's JSON reads as a report ({err}): {json}"));
    let capture = report
        .capture
        .clone()
        .expect("check names the capture it would get");
    assert!(report.can_trace, "{report:#?}");
    assert!(
        !history.path().exists(),
        "check created the history {}",
        history.path().display()
    );
    for id in [
        "privileges",
        "mark_victim",
        "btf",
        "kernel_log",
        "cgroups",
        "timeline",
        "history",
    ] {
        let found = report.checks.iter().find(|check| check.id == id);
        assert!(
            found.is_some_and(|check| check.status != Status::Failed),
            "the `{id}` check, not failed: {found:?} in {report:#?}"
        );
    }
    assert!(
        report.checks.iter().any(|check| check.id == "runtime"),
        "every runtime run would watch is looked at: {report:#?}"
    );

    let table = check("text");
    println!("oomtrace check:\n{table}");
    let first = table.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        format!(
            "oomtrace can trace OOM kills here, in tier {}",
            capture.tier
        ),
        "the table's first line"
    );
    for check in &report.checks {
        assert!(
            table.contains(&check.name),
            "the table names `{}`:\n{table}",
            check.name
        );
    }

    // What run then attaches, with the same options.
    let agent = Agent::start_with(&history.agent_args());
    let stopped = agent.stop();
    let started = stopped.agent_started();
    println!(
        "check: tier {} ({}); run: tier {} ({})",
        capture.tier, capture.reason, started.capture.tier, started.capture.reason
    );
    assert_eq!(
        capture, started.capture,
        "check should say exactly what run then attaches"
    );
}
