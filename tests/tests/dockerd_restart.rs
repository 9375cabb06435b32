//! dockerd restarts while the agent runs (a package upgrade, a crash): the agent must notice,
//! reconnect, and still name a container started afterwards.

use std::time::{Duration, Instant};

use oomtrace_tests::{ContainerSpec, Dockerd, expect_field, require_root, shown};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn docker_container_is_named_after_dockerd_restarted() {
    require_root();
    let mut docker = Dockerd::start();
    let mut agent = docker.start_agent();

    let restarting = Instant::now();
    docker.restart();
    let restarted_in = restarting.elapsed();
    let container = docker.run(ContainerSpec::hog(LIMIT_BYTES));
    let exit_code = container.wait_exit(Duration::from_secs(30));

    let kill = container.kill_record(&mut agent);
    let show = |pointer: &str| shown(&kill, pointer);
    println!(
        "container {} after dockerd restarted (in {:.1} s): Docker says exit code {exit_code}, \
         State.OOMKilled={}; oomtrace says container {} (source: {})",
        container.name(),
        restarted_in.as_secs_f32(),
        container.inspect_oom_killed(),
        show("/victim/container/name"),
        show("/victim/attribution/source"),
    );

    assert_eq!(exit_code, 137, "the container's exit code");
    expect_field(&kill, "victim.container.name", container.name());
    expect_field(&kill, "victim.container.runtime", "docker");
    expect_field(&kill, "victim.container.main_process", true);
    let log = agent.log();
    assert!(
        log.contains("reconnecting"),
        "the agent should have noticed dockerd go away; its log:\n{log}"
    );

    agent.stop();
}
