//! The runtime's API service restarts while the agent runs (a package upgrade, a crash): the
//! agent must reconnect, and still name a container started afterwards.

use std::time::Duration;

use oomtrace_tests::{ContainerSpec, Podman, expect_field, require_root, shown};

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

    assert_eq!(exit_code, 137, "the container's exit code");
    expect_field(&kill, "victim.container.name", container.name());
    expect_field(&kill, "victim.container.runtime", "podman");
    expect_field(&kill, "victim.container.main_process", true);

    agent.stop();
}
