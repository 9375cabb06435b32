//! Naming podman's containers without its socket: the agent reads libpod's database under
//! podman's storage root (read-only, under podman's own lock) and follows it with inotify.

use std::time::Duration;

use oomtrace_tests::{ContainerSpec, IMAGE, Podman, expect_field, require_root, shown};

const LIMIT_BYTES: u64 = 48 << 20;
/// podman's storage root, where `podman run` as root keeps its containers.
const STORAGE_ROOT: &str = "/var/lib/containers/storage";

#[test]
fn podman_containers_are_named_from_the_state_alone() {
    require_root();
    let podman = Podman::start();
    let mut agent = oomtrace_tests::Agent::start_with(&[
        "--runtime-state-only",
        "--runtime-state",
        STORAGE_ROOT,
    ]);
    agent.wait_for_log("following its events", Duration::from_secs(30));

    let container = podman.run(ContainerSpec::hog(LIMIT_BYTES));
    let exit_code = container.wait_exit(Duration::from_secs(30));
    let kill = container.kill_record(&mut agent);
    println!(
        "container {} (--runtime-state-only): podman says exit code {exit_code}; oomtrace says \
         container {} (image {}, source {}, main process {}), domain {}",
        container.name(),
        shown(&kill, "/victim/container/name"),
        shown(&kill, "/victim/container/image/name"),
        shown(&kill, "/victim/attribution/source"),
        shown(&kill, "/victim/container/main_process"),
        shown(&kill, "/domain/container/name"),
    );
    assert_eq!(exit_code, 137);
    expect_field(&kill, "victim.container.name", container.name());
    expect_field(&kill, "victim.container.image.name", IMAGE);
    expect_field(&kill, "victim.container.runtime", "podman");
    expect_field(&kill, "victim.attribution.source", "state");
    expect_field(&kill, "victim.container.main_process", true);
    expect_field(&kill, "domain.container.name", container.name());
    expect_field(&kill, "domain.memory.limit_bytes", LIMIT_BYTES);
    let log = agent.log();
    assert!(
        log.contains(&format!("podman, its state at {STORAGE_ROOT}")),
        "the agent says where names come from:\n{log}"
    );

    agent.stop();
}
