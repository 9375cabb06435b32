//! A `--rm` container OOM-killed: podman removes it, and its cgroups, right after the kill,
//! before the agent can ask the runtime about it. The record must still name it, from what
//! the agent learned earlier (`cache`) or from the runtime's removal events (`tombstone`), not
//! fall back to the bare cgroup path (`path`).

use std::time::{Duration, Instant};

use oomtrace::attribute::Source;
use oomtrace_tests::{ContainerSpec, IMAGE, Podman, or_dash, pretty, require_root};

const LIMIT_BYTES: u64 = 48 << 20;
/// The agent learns of containers from the runtime asynchronously; a real container lives far
/// longer than this before it matters.
const SETTLE: Duration = Duration::from_millis(500);

#[test]
fn removed_container_is_still_named() {
    require_root();
    let podman = Podman::start();
    let mut agent = podman.start_agent();

    let container = podman.run(ContainerSpec::held_hog(LIMIT_BYTES).removed_on_exit());
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
    let victim = kill.victim.names.container.as_ref();
    let source = kill.victim.names.attribution.as_ref().map(|by| by.source);
    println!(
        "container {} (--rm): podman says exit code {exit_code}, removed {} ms after its exit \
         was seen (State.OOMKilled: gone with it; its conmon saw the OOM: {}); oomtrace says \
         victim {} in container {} \
         (main process: {}, source: {})",
        container.name(),
        removed_after.as_millis(),
        container.conmon_saw_oom(),
        or_dash(kill.victim.process.pid),
        or_dash(victim.and_then(|victim| victim.name.as_ref())),
        or_dash(victim.and_then(|victim| victim.main_process)),
        or_dash(source),
    );
    let context = pretty(&kill);

    assert_eq!(exit_code, 137, "the container's exit code");
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
