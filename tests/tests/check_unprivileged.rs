//! `oomtrace check` run by a user without the capabilities to load programs: it names what is
//! missing, still reports the rest, and exits 1, as `run` would fail.

use std::process::Command;

use oomtrace::check::{Report, Status};
use oomtrace_tests::{agent_binary, require_root};

#[test]
fn check_without_capabilities_names_them_and_exits_1() {
    require_root();
    // nobody, with no capability in any set.
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg("--")
        .arg(agent_binary())
        .args(["check", "--format", "json", "--no-history"])
        .output()
        .expect("running setpriv (util-linux)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("oomtrace check as nobody ({}):\n{stdout}", output.status);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Report = serde_json::from_str(&stdout)
        .unwrap_or_else(|err| panic!("check's JSON reads as a report ({err}): {stdout}"));
    assert!(!report.can_trace, "{report:#?}");
    assert!(
        report.capture.is_none(),
        "nothing could be loaded: {report:#?}"
    );
    let privileges = report
        .checks
        .iter()
        .find(|check| check.id == "privileges")
        .expect("a privileges check");
    assert_eq!(privileges.status, Status::Failed, "{privileges:?}");
    assert!(
        privileges.found.contains("CAP_BPF"),
        "it names CAP_BPF: {privileges:?}"
    );
    // The rest is still looked at.
    for id in ["btf", "cgroups"] {
        assert!(
            report.checks.iter().any(|check| check.id == id),
            "the `{id}` check is there without privileges: {report:#?}"
        );
    }
}
