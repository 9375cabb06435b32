//! A `--rm` container of the real Docker Engine OOM-killed: Docker removes it, and its cgroups,
//! right after the kill, before the agent can ask about it. The record must still name it, from
//! what the agent learned earlier (`cache`) or from Docker's `destroy` event (`tombstone`), not
//! fall back to the bare cgroup path (`path`).

use std::time::{Duration, Instant};

use oomtrace::attribute::Source;
use oomtrace_tests::{ContainerSpec, Dockerd, IMAGE, Kmsg, or_dash, pretty, require_root};

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
    let context = pretty(&kill);
    let Some(victim_pid) = kill.victim.process.pid else {
        panic!("no victim pid in {context}");
    };
    let kernel = kmsg.find_report(victim_pid, Duration::from_secs(10));
    let victim = kill.victim.names.container.as_ref();
    let source = kill.victim.names.attribution.as_ref().map(|by| by.source);
    println!(
        "container {} (--rm): Docker says exit code {exit_code}, {} `oom` events, removed {} ms \
         after its exit was seen (State.OOMKilled: gone with it); the kernel says pid {} killed \
         in {:?}; oomtrace says victim {} in container {} (main process: {}, source: {})",
        container.name(),
        container.oom_events(),
        removed_after.as_millis(),
        kernel.killed.pid,
        kernel.task_memcg,
        or_dash(kill.victim.process.pid),
        or_dash(victim.and_then(|victim| victim.name.as_ref())),
        or_dash(victim.and_then(|victim| victim.main_process)),
        or_dash(source),
    );

    assert_eq!(exit_code, 137, "the container's exit code");
    assert_eq!(
        kernel.task_memcg.as_deref(),
        Some(format!("/docker/{}", container.id()).as_str())
    );
    kernel.killed.assert_anon_rss_matches(&kill);
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
    assert!(
        matches!(source, Some(Source::Cache | Source::Tombstone)),
        "the container was gone when the agent read the kill: its name must come from the \
         agent's cache or a tombstone, not `{source:?}`, in {context}"
    );
    assert_eq!(
        kill.domain
            .as_ref()
            .and_then(|domain| domain.names.container_name()),
        Some(container.name()),
        "in {context}"
    );

    agent.stop();
}
