//! dockerd restarts while the agent runs (a package upgrade, a crash): the agent must notice,
//! reconnect, and still name a container started afterwards.

use std::time::{Duration, Instant};

use oomtrace_tests::{ContainerSpec, Dockerd, or_dash, pretty, require_root};

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
    let victim = kill.victim.names.container.as_ref();
    println!(
        "container {} after dockerd restarted (in {:.1} s): Docker says exit code {exit_code}, \
         State.OOMKilled={}; oomtrace says container {} (source: {})",
        container.name(),
        restarted_in.as_secs_f32(),
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
    assert_eq!(victim.runtime.as_deref(), Some("docker"), "in {context}");
    assert_eq!(victim.main_process, Some(true), "in {context}");
    let log = agent.log();
    assert!(
        log.contains("reconnecting"),
        "the agent should have noticed dockerd go away; its log:\n{log}"
    );

    agent.stop();
}
