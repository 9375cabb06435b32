//! Naming podman's containers without its socket: the agent reads libpod's database under
//! podman's storage root (read-only, under podman's own lock) and follows it with inotify.

use std::time::Duration;

use oomtrace::attribute::Source;
use oomtrace_tests::{ContainerSpec, IMAGE, Podman, or_dash, pretty, require_root};

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
    let victim = kill.victim.names.container.as_ref();
    let source = kill.victim.names.attribution.as_ref().map(|by| by.source);
    let domain = kill.domain.as_ref();
    println!(
        "container {} (--runtime-state-only): podman says exit code {exit_code}; oomtrace says \
         container {} (image {}, source {}, main process {}), domain {}",
        container.name(),
        or_dash(victim.and_then(|victim| victim.name.as_ref())),
        or_dash(
            victim
                .and_then(|victim| victim.image.as_ref())
                .map(|image| &image.name)
        ),
        or_dash(source),
        or_dash(victim.and_then(|victim| victim.main_process)),
        or_dash(domain.and_then(|domain| domain.names.container_name())),
    );
    let context = pretty(&kill);
    assert_eq!(exit_code, 137);
    let Some(victim) = victim else {
        panic!("no victim container in {context}");
    };
    assert_eq!(
        victim.name.as_deref(),
        Some(container.name()),
        "in {context}"
    );
    assert_eq!(
        victim.image.as_ref().map(|image| image.name.as_str()),
        Some(IMAGE),
        "in {context}"
    );
    assert_eq!(victim.runtime.as_deref(), Some("podman"), "in {context}");
    assert_eq!(source, Some(Source::State), "in {context}");
    assert_eq!(victim.main_process, Some(true), "in {context}");
    assert_eq!(
        domain.and_then(|domain| domain.names.container_name()),
        Some(container.name()),
        "in {context}"
    );
    assert_eq!(
        domain
            .and_then(|domain| domain.memory)
            .and_then(|memory| memory.limit_bytes),
        Some(LIMIT_BYTES),
        "in {context}"
    );
    let log = agent.log();
    assert!(
        log.contains(&format!("podman, its state at {STORAGE_ROOT}")),
        "the agent says where names come from:\n{log}"
    );

    agent.stop();
}
