//! A named container of the real Docker Engine OOM-killed at its `--memory` limit: Docker says
//! exit 137 and `OOMKilled=true`; the agent names the container, its image and runtime, and its
//! limit as the OOM domain, and agrees with the kernel's own report of the kill.

use std::time::{Duration, Instant};

use oomtrace::attribute::DomainKind;
use oomtrace_tests::{ContainerSpec, Dockerd, IMAGE, Kmsg, or_dash, pretty, require_root};

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
    let context = pretty(&kill);
    let Some(victim_pid) = kill.victim.process.pid else {
        panic!("no victim pid in {context}");
    };
    let kernel = kmsg.find_report(victim_pid, Duration::from_secs(10));
    let victim = kill.victim.names.container.as_ref();
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
        or_dash(kill.victim.process.comm()),
        or_dash(kill.victim.process.pid),
        or_dash(victim.and_then(|victim| victim.name.as_ref())),
        or_dash(victim.and_then(|victim| victim.runtime.as_ref())),
        or_dash(victim.and_then(|victim| victim.main_process)),
        or_dash(kill.victim.names.attribution.as_ref().map(|by| by.source)),
        or_dash(kill.domain.as_ref()),
        recorded_after.as_secs_f32(),
    );

    // Docker's view: the kernel's SIGKILL (128 + 9), and an OOM kill.
    assert_eq!(exit_code, 137, "the container's exit code");
    assert!(oom_killed, "Docker should say OOMKilled=true");

    // The kernel's view, which the record must match.
    // Where the daemon's cgroup driver puts the container: `/docker/<id>` (cgroupfs), or the
    // scope `/system.slice/docker-<id>.scope` (systemd, Docker's default on cgroup v2).
    let memcg = match docker.cgroup_driver().as_str() {
        "systemd" => format!("/system.slice/docker-{}.scope", container.id()),
        _ => format!("/docker/{}", container.id()),
    };
    assert_eq!(kernel.killed.comm, "oomtrace-hog");
    assert_eq!(kernel.task_memcg.as_deref(), Some(memcg.as_str()));
    assert_eq!(kernel.oom_memcg.as_deref(), Some(memcg.as_str()));
    kernel.killed.assert_anon_rss_matches(&kill);
    assert_eq!(
        kill.victim
            .memcg
            .as_ref()
            .and_then(|memcg| memcg.path.as_deref()),
        Some(memcg.as_str()),
        "in {context}"
    );

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
    assert_eq!(victim.runtime.as_deref(), Some("docker"), "in {context}");
    assert_eq!(victim.main_process, Some(true), "in {context}");

    // Whose limit was hit: the container's own, the cgroup the kernel named.
    let Some(domain) = &kill.domain else {
        panic!("no domain in {context}");
    };
    assert_eq!(domain.kind, DomainKind::Cgroup, "in {context}");
    assert_eq!(
        domain.cgroup.as_ref().map(|cgroup| cgroup.path.as_str()),
        Some(memcg.as_str()),
        "in {context}"
    );
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
