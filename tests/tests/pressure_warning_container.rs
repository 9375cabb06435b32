//! `--warn-pressure` in a podman container: a process growing towards the container's
//! `--memory` limit is warned of before its OOM kill, and the warning names the container as
//! the kill record does.

use std::time::Duration;

use serde_json::Value;

use oomtrace_tests::{ContainerSpec, HOG_IN_IMAGE, Podman, expect_field, field, require_root};

const LIMIT_BYTES: u64 = 96 << 20;

#[test]
fn a_container_near_its_limit_is_warned_of_by_name() {
    require_root();
    let podman = Podman::start();
    let mut agent = podman.start_agent_with(&["--warn-pressure"]);

    // Grows 12 MiB a second: about 7 s to 90 % of the limit.
    let script = format!("exec {HOG_IN_IMAGE} --no-wait --mib-per-second 12 --max-mib 512");
    let container = podman.run(ContainerSpec::shell(LIMIT_BYTES, &script));
    let exit_code = container.wait_exit(Duration::from_secs(40));
    assert_eq!(exit_code, 137, "the container's exit code");
    let kill = container.kill_record(&mut agent);
    let warning = agent
        .wait_for_record_where(
            |record| {
                record["kind"] == "memory_pressure"
                    && record
                        .pointer("/domain/container/id")
                        .and_then(Value::as_str)
                        == Some(container.id())
            },
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| {
            panic!(
                "no memory_pressure record for container {}; the agent's log:\n{}",
                container.name(),
                agent.log()
            )
        });
    println!("warning: {warning:#}");

    expect_field(&warning, "domain.container.name", container.name());
    expect_field(&warning, "domain.container.runtime", "podman");
    expect_field(&warning, "domain.memory.limit_bytes", LIMIT_BYTES);
    expect_field(&warning, "reason", "usage");
    let growth = field(&warning, "domain.growth.bytes_per_second")
        .as_i64()
        .expect("bytes_per_second");
    assert!(growth > 0, "the container was growing: {growth} B/s");
    let (warned_ns, killed_ns) = (
        field(&warning, "ktime_ns").as_u64().expect("ktime_ns"),
        field(&kill, "ktime_ns").as_u64().expect("ktime_ns"),
    );
    assert!(
        warned_ns < killed_ns,
        "warned at {warned_ns} ns, killed at {killed_ns} ns"
    );

    let stopped = agent.stop();
    let line = stopped
        .stderr
        .lines()
        .find(|line| line.contains("memory pressure:"))
        .unwrap_or_else(|| panic!("no warning line in:\n{}", stopped.stderr));
    assert!(
        line.contains(&format!("the limit of container {}", container.name())),
        "the line names the container: {line}"
    );
}
