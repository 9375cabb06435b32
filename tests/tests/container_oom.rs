//! A named podman container OOM-killed: the agent names the container, its image and runtime,
//! and its memory limit as the OOM domain, next to what podman itself says about it.

use std::time::{Duration, Instant};

use oomtrace::attribute::DomainKind;
use oomtrace_tests::{ContainerSpec, IMAGE, Podman, or_dash, pretty, require_root};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn container_oom_kill_names_the_container() {
    require_root();
    let podman = Podman::start();
    let mut agent = podman.start_agent();

    let started = Instant::now();
    let container = podman.run(ContainerSpec::hog(LIMIT_BYTES));
    let exit_code = container.wait_exit(Duration::from_secs(30));
    let oom_killed = container.inspect_oom_killed();
    let kill = container.kill_record(&mut agent);
    let victim = kill.victim.names.container.as_ref();
    println!(
        "container {}: podman says exit code {exit_code}, State.OOMKilled={oom_killed} \
         (its conmon saw the OOM: {}); \
         oomtrace says victim {} (pid {}) in container {} (main process: {}, source: {}), \
         domain {}; {:.2} s from `podman run` to the record",
        container.name(),
        container.conmon_saw_oom(),
        or_dash(kill.victim.process.comm()),
        or_dash(kill.victim.process.pid),
        or_dash(victim.and_then(|victim| victim.name.as_ref())),
        or_dash(victim.and_then(|victim| victim.main_process)),
        or_dash(kill.victim.names.attribution.as_ref().map(|by| by.source)),
        or_dash(kill.domain.as_ref()),
        started.elapsed().as_secs_f32(),
    );
    let context = pretty(&kill);

    // The kernel's SIGKILL, as podman saw it: 128 + 9.
    assert_eq!(exit_code, 137, "the container's exit code");

    // Who was killed, in which container.
    let Some(victim) = victim else {
        panic!("no victim container in {context}");
    };
    assert_eq!(
        victim.name.as_deref(),
        Some(container.name()),
        "in {context}"
    );
    assert_eq!(victim.id, container.id(), "in {context}");
    assert_eq!(
        victim.image.as_ref().map(|image| image.name.as_str()),
        Some(IMAGE),
        "in {context}"
    );
    assert_eq!(victim.runtime.as_deref(), Some("podman"), "in {context}");
    // The hog is the container's PID 1: its death ends the container.
    assert_eq!(victim.main_process, Some(true), "in {context}");

    // Whose limit was hit: the container's own.
    let Some(domain) = &kill.domain else {
        panic!("no domain in {context}");
    };
    assert_eq!(domain.kind, DomainKind::Cgroup, "in {context}");
    assert_eq!(
        domain.names.container_name(),
        Some(container.name()),
        "in {context}"
    );
    assert_eq!(
        domain.memory.and_then(|memory| memory.limit_bytes),
        Some(LIMIT_BYTES),
        "in {context}"
    );
    // The verdict says the same in words.
    let Some(explanation) = &kill.explanation else {
        panic!("no explanation in {context}");
    };
    let verdict = &explanation.verdict;
    for expected in [
        &format!(
            "Container {} was killed by the OOM killer",
            container.name()
        ),
        "It was the container's main process",
        "It hit its own memory limit of 48 MiB",
    ] {
        assert!(
            verdict.contains(expected),
            "the verdict lacks `{expected}`: {verdict}"
        );
    }

    let stopped = agent.stop();
    let kills: Vec<_> = stopped
        .kills()
        .filter(|kill| container.is_victim_of(kill))
        .collect();
    assert_eq!(
        kills.len(),
        1,
        "one oom_kill record for container {}: {}",
        container.name(),
        pretty(&kills)
    );
}
