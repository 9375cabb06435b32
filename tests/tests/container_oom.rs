//! A named podman container OOM-killed: the agent names the container, its image and runtime,
//! and its memory limit as the OOM domain, next to what podman itself says about it.

use std::time::{Duration, Instant};

use oomtrace_tests::{ContainerSpec, IMAGE, Podman, expect_field, field_str, require_root, shown};

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
    let show = |pointer: &str| shown(&kill, pointer);
    println!(
        "container {}: podman says exit code {exit_code}, State.OOMKilled={oom_killed} \
         (its conmon saw the OOM: {}); \
         oomtrace says victim {} (pid {}) in container {} (main process: {}, source: {}), \
         domain {}; {:.2} s from `podman run` to the record",
        container.name(),
        container.conmon_saw_oom(),
        show("/victim/process/executable/name"),
        show("/victim/process/pid"),
        show("/victim/container/name"),
        show("/victim/container/main_process"),
        show("/victim/attribution/source"),
        show("/domain"),
        started.elapsed().as_secs_f32(),
    );

    // The kernel's SIGKILL, as podman saw it: 128 + 9.
    assert_eq!(exit_code, 137, "the container's exit code");

    // Who was killed, in which container.
    expect_field(&kill, "victim.container.name", container.name());
    expect_field(&kill, "victim.container.id", container.id());
    expect_field(&kill, "victim.container.image.name", IMAGE);
    expect_field(&kill, "victim.container.runtime", "podman");
    // The hog is the container's PID 1: its death ends the container.
    expect_field(&kill, "victim.container.main_process", true);

    // Whose limit was hit: the container's own.
    expect_field(&kill, "domain.kind", "cgroup");
    expect_field(&kill, "domain.container.name", container.name());
    expect_field(&kill, "domain.memory.limit_bytes", LIMIT_BYTES);
    // The verdict says the same in words.
    let verdict = field_str(&kill, "explanation.verdict");
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
        .filter(|record| container.is_victim_of(record))
        .collect();
    assert_eq!(
        kills.len(),
        1,
        "one oom_kill record for container {}: {kills:#?}",
        container.name()
    );
}
