//! Naming without a runtime socket: the agent reads Docker's state directory (read-only) and
//! follows it with inotify. With the socket unreachable, the kills of a named container and of
//! a `--rm` container are named as they are through Docker's API, and say that the name came
//! from the state on disk.

use std::time::Duration;

use oomtrace_tests::{ContainerSpec, Dockerd, IMAGE, expect_field, field_str, require_root, shown};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn docker_containers_are_named_from_the_state_when_the_socket_is_unreachable() {
    require_root();
    let docker = Dockerd::start();
    let data_root = docker.data_root();
    let data_root = data_root.to_str().expect("UTF-8");
    // A socket path nothing listens at: the API is unreachable for the whole run.
    let absent = docker.scratch_dir("no-socket").join("docker.sock");
    let mut agent = oomtrace_tests::Agent::start_with(&[
        "--runtime-socket",
        absent.to_str().expect("UTF-8"),
        "--runtime-state",
        data_root,
    ]);
    agent.wait_for_log("following its events", Duration::from_secs(30));

    let named = docker.run(ContainerSpec::hog(LIMIT_BYTES));
    let removed = docker.run(ContainerSpec::hog(LIMIT_BYTES).removed_on_exit());
    let named_exit = named.wait_exit(Duration::from_secs(30));
    let removed_exit = removed.wait_exit(Duration::from_secs(30));
    let named_kill = named.kill_record(&mut agent);
    let removed_kill = removed.kill_record(&mut agent);
    for (container, exit, kill) in [
        (&named, named_exit, &named_kill),
        (&removed, removed_exit, &removed_kill),
    ] {
        println!(
            "container {} (socket unreachable): Docker says exit code {exit}; oomtrace says \
             container {} (image {}, source {}, main process {}), domain {} limit {}",
            container.name(),
            shown(kill, "/victim/container/name"),
            shown(kill, "/victim/container/image/name"),
            shown(kill, "/victim/attribution/source"),
            shown(kill, "/victim/container/main_process"),
            shown(kill, "/domain/container/name"),
            shown(kill, "/domain/memory/limit_bytes"),
        );
        assert_eq!(exit, 137);
        expect_field(kill, "victim.container.name", container.name());
        expect_field(kill, "victim.container.image.name", IMAGE);
        expect_field(kill, "victim.container.runtime", "docker");
        expect_field(kill, "domain.container.name", container.name());
        expect_field(kill, "domain.memory.limit_bytes", LIMIT_BYTES);
    }
    expect_field(&named_kill, "victim.attribution.source", "state");
    expect_field(&named_kill, "victim.container.main_process", true);
    let source = field_str(&removed_kill, "victim.attribution.source");
    assert!(
        ["state", "tombstone"].contains(&source),
        "the --rm container's name comes from the state or its tombstone, not {source}"
    );
    let log = agent.log();
    assert!(
        log.contains(&format!("docker, its state at {data_root}")),
        "the agent says where names come from:\n{log}"
    );

    agent.stop();
}
