//! The runtime's API service restarts while the agent runs (a package upgrade, a crash): the
//! agent must reconnect, and still name a container started afterwards.

use std::time::Duration;

use oomtrace_tests::{ContainerSpec, Podman, field, field_str, require_root, shown};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn container_is_named_after_the_runtime_restarted() {
    require_root();
    let mut podman = Podman::start();
    let mut agent = podman.start_agent();

    podman.restart_service();
    let container = podman.run(ContainerSpec::hog(LIMIT_BYTES));
    let exit_code = container.wait_exit(Duration::from_secs(30));

    let kill = container.kill_record(&mut agent);
    let show = |pointer: &str| shown(&kill, pointer);
    println!(
        "container {} after a service restart: podman says exit code {exit_code}, \
         State.OOMKilled={}; oomtrace says container {} (source: {})",
        container.name(),
        container.inspect_oom_killed(),
        show("/victim/container/name"),
        show("/victim/attribution/source"),
    );
    let context = || serde_json::to_string_pretty(&kill).unwrap_or_default();

    assert_eq!(exit_code, 137, "the container's exit code");
    assert_eq!(
        field_str(&kill, "victim.container.name"),
        container.name(),
        "in {}",
        context()
    );
    assert_eq!(
        field_str(&kill, "victim.container.runtime"),
        "podman",
        "in {}",
        context()
    );
    assert_eq!(
        field(&kill, "victim.container.main_process"),
        true,
        "in {}",
        context()
    );

    agent.stop();
}
