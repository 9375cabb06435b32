//! The runtime's API service restarts while the agent runs (a package upgrade, a crash): the
//! agent must reconnect, and still name a container started afterwards.

use std::time::Duration;

use oomtrace_tests::{ContainerSpec, Podman, or_dash, pretty, require_root};

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
    let victim = kill.victim.names.container.as_ref();
    println!(
        "container {} after a service restart: podman says exit code {exit_code}, \
         State.OOMKilled={}; oomtrace says container {} (source: {})",
        container.name(),
        container.inspect_oom_killed(),
        or_dash(victim.and_then(|victim| victim.name.as_ref())),
        or_dash(kill.victim.names.attribution.as_ref().map(|by| by.source)),
    );
    let context = pretty(&kill);

    assert_eq!(exit_code, 137, "the container's exit code");
    let Some(victim) = victim else {
        panic!("no victim container in {context}");
    };
    assert_eq!(
        victim.name.as_deref(),
        Some(container.name()),
        "in {context}"
    );
    assert_eq!(victim.runtime.as_deref(), Some("podman"), "in {context}");
    assert_eq!(victim.main_process, Some(true), "in {context}");

    agent.stop();
}
