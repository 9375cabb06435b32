//! Naming without a runtime socket: the agent reads Docker's state directory (read-only) and
//! follows it with inotify. With the socket unreachable, the kills of a named container and of
//! a `--rm` container are named as they are through Docker's API, and say that the name came
//! from the state on disk.

use std::time::Duration;

use oomtrace::attribute::Source;
use oomtrace_tests::{ContainerSpec, Dockerd, IMAGE, or_dash, pretty, require_root};

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
        let victim = kill.victim.names.container.as_ref();
        let domain = kill.domain.as_ref();
        let domain_limit = domain
            .and_then(|domain| domain.memory)
            .and_then(|memory| memory.limit_bytes);
        println!(
            "container {} (socket unreachable): Docker says exit code {exit}; oomtrace says \
             container {} (image {}, source {}, main process {}), domain {} limit {}",
            container.name(),
            or_dash(victim.and_then(|victim| victim.name.as_ref())),
            or_dash(
                victim
                    .and_then(|victim| victim.image.as_ref())
                    .map(|image| &image.name)
            ),
            or_dash(kill.victim.names.attribution.as_ref().map(|by| by.source)),
            or_dash(victim.and_then(|victim| victim.main_process)),
            or_dash(domain.and_then(|domain| domain.names.container_name())),
            or_dash(domain_limit),
        );
        let context = pretty(kill);
        assert_eq!(exit, 137);
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
        assert_eq!(victim.runtime.as_deref(), Some("docker"), "in {context}");
        assert_eq!(
            domain.and_then(|domain| domain.names.container_name()),
            Some(container.name()),
            "in {context}"
        );
        assert_eq!(domain_limit, Some(LIMIT_BYTES), "in {context}");
    }
    let source = |kill: &oomtrace::record::OomKillRecord| {
        kill.victim.names.attribution.as_ref().map(|by| by.source)
    };
    assert_eq!(
        source(&named_kill),
        Some(Source::State),
        "{}",
        pretty(&named_kill)
    );
    assert_eq!(
        named_kill
            .victim
            .names
            .container
            .as_ref()
            .and_then(|container| container.main_process),
        Some(true),
        "{}",
        pretty(&named_kill)
    );
    let removed_source = source(&removed_kill);
    assert!(
        matches!(removed_source, Some(Source::State | Source::Tombstone)),
        "the --rm container's name comes from the state or its tombstone, not {removed_source:?}"
    );
    let log = agent.log();
    assert!(
        log.contains(&format!("docker, its state at {data_root}")),
        "the agent says where names come from:\n{log}"
    );

    agent.stop();
}
