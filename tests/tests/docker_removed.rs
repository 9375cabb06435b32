//! A `--rm` container of the real Docker Engine OOM-killed: Docker removes it, and its cgroups,
//! right after the kill, before the agent can ask about it. The record must still name it, from
//! what the agent learned earlier (`cache`) or from Docker's `destroy` event (`tombstone`), not
//! fall back to the bare cgroup path (`path`).

use std::time::{Duration, Instant};

use oomtrace_tests::{
    ContainerSpec, Dockerd, IMAGE, Kmsg, expect_field, field_str, field_u64, require_root, shown,
};

const LIMIT_BYTES: u64 = 48 << 20;
/// The agent learns of containers from the runtime asynchronously; a real container lives far
/// longer than this before it matters.
const SETTLE: Duration = Duration::from_millis(500);

#[test]
fn removed_docker_container_is_still_named() {
    require_root();
    let docker = Dockerd::start();
    let mut agent = docker.start_agent();
    let mut kmsg = Kmsg::open_at_end();

    let container = docker.run(ContainerSpec::held_hog(LIMIT_BYTES).removed_on_exit());
    let cgroup_dirs = container.cgroup_dirs();
    assert!(
        !cgroup_dirs.is_empty(),
        "container {} has no memory cgroup",
        container.name()
    );
    std::thread::sleep(SETTLE);

    // Frozen, the agent cannot read the kill before the container is gone: the record waits in
    // the ring buffer, which makes the race this test is about certain rather than likely.
    agent.suspend();
    container.release();
    let exit_code = container.wait_exit(Duration::from_secs(30));
    let exited = Instant::now();
    container.wait_removed(Duration::from_secs(30));
    let removed_after = exited.elapsed();
    for dir in &cgroup_dirs {
        assert!(
            !dir.exists(),
            "the removed container's cgroup {} should be gone",
            dir.display()
        );
    }
    agent.resume();

    let kill = container.kill_record(&mut agent);
    let victim_pid = u32::try_from(field_u64(&kill, "victim.process.pid")).expect("a pid");
    let kernel = kmsg.find_report(victim_pid, Duration::from_secs(10));
    let show = |pointer: &str| shown(&kill, pointer);
    println!(
        "container {} (--rm): Docker says exit code {exit_code}, {} `oom` events, removed {} ms \
         after its exit was seen (State.OOMKilled: gone with it); the kernel says pid {} killed \
         in {:?}; oomtrace says victim {} in container {} (main process: {}, source: {})",
        container.name(),
        container.oom_events(),
        removed_after.as_millis(),
        kernel.killed.pid,
        kernel.task_memcg,
        show("/victim/process/pid"),
        show("/victim/container/name"),
        show("/victim/container/main_process"),
        show("/victim/attribution/source"),
    );
    let context = || serde_json::to_string_pretty(&kill).unwrap_or_default();

    assert_eq!(exit_code, 137, "the container's exit code");
    assert_eq!(
        kernel.task_memcg.as_deref(),
        Some(format!("/docker/{}", container.id()).as_str())
    );
    kernel.killed.assert_anon_rss_matches(&kill);
    expect_field(&kill, "victim.container.name", container.name());
    expect_field(&kill, "victim.container.image.name", IMAGE);
    expect_field(&kill, "victim.container.runtime", "docker");
    let source = field_str(&kill, "victim.attribution.source");
    assert!(
        ["cache", "tombstone"].contains(&source),
        "the container was gone when the agent read the kill: its name must come from the \
         agent's cache or a tombstone, not `{source}`, in {}",
        context()
    );
    expect_field(&kill, "domain.container.name", container.name());

    agent.stop();
}
