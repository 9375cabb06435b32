//! `--warn-pressure` in a podman container: a process growing towards the container's
//! `--memory` limit is warned of before its OOM kill, and the warning names the container as
//! the kill record does.

use std::time::Duration;

use oomtrace::record::Body;
use oomtrace::record::pressure::PressureReason;
use oomtrace_tests::{ContainerSpec, HOG_IN_IMAGE, Podman, pretty, require_root};

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
        .wait_for_record(
            |record| match &record.body {
                Body::MemoryPressure(warning)
                    if warning
                        .domain
                        .names
                        .container
                        .as_ref()
                        .is_some_and(|named| named.id == container.id()) =>
                {
                    Some(warning.clone())
                }
                _ => None,
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
    let context = pretty(&warning);
    println!("warning: {context}");

    let domain = &warning.domain;
    let named = domain.names.container.as_ref();
    assert_eq!(
        named.and_then(|named| named.name.as_deref()),
        Some(container.name()),
        "{context}"
    );
    assert_eq!(
        named.and_then(|named| named.runtime.as_deref()),
        Some("podman"),
        "{context}"
    );
    assert_eq!(domain.memory.limit_bytes, LIMIT_BYTES, "{context}");
    assert_eq!(warning.reason, PressureReason::Usage, "{context}");
    let Some(growth) = domain.growth.map(|growth| growth.bytes_per_second) else {
        panic!("no domain growth in {context}");
    };
    assert!(growth > 0, "the container was growing: {growth} B/s");
    let (warned_ns, killed_ns) = (warning.ktime_ns, kill.ktime_ns);
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
