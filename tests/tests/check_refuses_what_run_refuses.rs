//! An option `run` would stop at (a metrics address already taken) makes `oomtrace check` fail
//! too, saying why; `run` with the same options then does stop.

use std::net::TcpListener;
use std::process::Command;

use oomtrace::check::{Report, Status};
use oomtrace_tests::{agent_binary, require_root};

#[test]
fn a_taken_metrics_address_fails_check_as_it_fails_run() {
    require_root();
    let taken = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    let addr = taken.local_addr().expect("its address").to_string();
    let args = ["--no-history", "--metrics-addr", addr.as_str()];

    let output = Command::new(agent_binary())
        .args(["check", "--format", "json"])
        .args(args)
        .output()
        .expect("running oomtrace check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "check should fail: {stdout}");
    let report: Report = serde_json::from_str(&stdout)
        .unwrap_or_else(|err| panic!("check's JSON reads as a report ({err}): {stdout}"));
    assert!(!report.can_trace, "{report:#?}");
    assert!(
        report.capture.is_some(),
        "the programs themselves load: {report:#?}"
    );
    let metrics = report
        .checks
        .iter()
        .find(|check| check.id == "metrics")
        .expect("a metrics check");
    assert_eq!(metrics.status, Status::Failed, "{metrics:?}");
    println!(
        "check: {} {}: {}",
        metrics.status.as_str(),
        metrics.name,
        metrics.found
    );

    let run = Command::new(agent_binary())
        .args(["run"])
        .args(args)
        .output()
        .expect("running oomtrace run");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !run.status.success() && stderr.contains(&addr),
        "run with the address taken should stop and name it ({}): {stderr}",
        run.status
    );
    drop(taken);
}
