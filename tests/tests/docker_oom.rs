//! A named container of the real Docker Engine OOM-killed at its `--memory` limit: Docker says
//! exit 137 and `OOMKilled=true`; the agent names the container, its image and runtime, and its
//! limit as the OOM domain, and agrees with the kernel's own report of the kill.

use std::time::{Duration, Instant};

use oomtrace_tests::{
    ContainerSpec, Dockerd, IMAGE, Kmsg, expect_field, field_str, field_u64, require_root, shown,
};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn docker_container_oom_kill_names_the_container() {
    require_root();
    let docker = Dockerd::start();
    let mut agent = docker.start_agent();
    let mut kmsg = Kmsg::open_at_end();

    let started = Instant::now();
    let container = docker.run(ContainerSpec::hog(LIMIT_BYTES));
    let exit_code = container.wait_exit(Duration::from_secs(30));
    let kill = container.kill_record(&mut agent);
    let recorded_after = started.elapsed();
    let oom_killed = container.inspect_oom_killed();
    let victim_pid = u32::try_from(field_u64(&kill, "victim.process.pid")).expect("a pid");
    let kernel = kmsg.find_report(victim_pid, Duration::from_secs(10));
    let show = |pointer: &str| shown(&kill, pointer);
    println!(
        "container {}: Docker says exit code {exit_code}, State.OOMKilled={oom_killed}, {} `oom` \
         events; the kernel says pid {} ({}) killed, task_memcg {:?}, oom_memcg {:?}; oomtrace \
         says victim {} (pid {}) in container {} (runtime {}, main process: {}, source: {}), \
         domain {}; {:.2} s from `docker run` to the record",
        container.name(),
        container.oom_events(),
        kernel.killed.pid,
        kernel.killed.comm,
        kernel.task_memcg,
        kernel.oom_memcg,
        show("/victim/process/executable/name"),
        show("/victim/process/pid"),
        show("/victim/container/name"),
        show("/victim/container/runtime"),
        show("/victim/container/main_process"),
        show("/victim/attribution/source"),
        show("/domain"),
        recorded_after.as_secs_f32(),
    );

    // Docker's view: the kernel's SIGKILL (128 + 9), and an OOM kill.
    assert_eq!(exit_code, 137, "the container's exit code");
    assert!(oom_killed, "Docker should say OOMKilled=true");

    // The kernel's view, which the record must match.
    let memcg = format!("/docker/{}", container.id());
    assert_eq!(kernel.killed.comm, "oomtrace-hog");
    assert_eq!(kernel.task_memcg.as_deref(), Some(memcg.as_str()));
    assert_eq!(kernel.oom_memcg.as_deref(), Some(memcg.as_str()));
    kernel.killed.assert_anon_rss_matches(&kill);
    expect_field(&kill, "victim.memcg.path", memcg.as_str());

    // Who was killed, in which container.
    expect_field(&kill, "victim.container.name", container.name());
    expect_field(&kill, "victim.container.id", container.id());
    expect_field(&kill, "victim.container.image.name", IMAGE);
    expect_field(&kill, "victim.container.runtime", "docker");
    expect_field(&kill, "victim.container.main_process", true);

    // Whose limit was hit: the container's own, the cgroup the kernel named.
    expect_field(&kill, "domain.kind", "cgroup");
    expect_field(&kill, "domain.cgroup.path", memcg.as_str());
    expect_field(&kill, "domain.container.name", container.name());
    expect_field(&kill, "domain.memory.limit_bytes", LIMIT_BYTES);
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
