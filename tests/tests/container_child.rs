//! A container whose main process survives the OOM kill of its child: podman sees a running
//! container and no OOM, while the agent names the container and says the victim was not its
//! main process.

use std::time::Duration;

use oomtrace_tests::{
    ContainerSpec, Podman, expect_field, field, field_str, field_u64, require_root, shown,
};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn child_oom_kill_in_a_surviving_container() {
    require_root();
    let podman = Podman::start();
    let mut agent = podman.start_agent();

    // PID 1 is busybox sh: it outlives the hog and reports how it ended.
    let script = format!(
        "{}; echo \"hog exited $?\"; sleep 600",
        ContainerSpec::hog_command(LIMIT_BYTES)
    );
    let container = podman.run(ContainerSpec::shell(LIMIT_BYTES, &script));
    let main_pid = container.main_pid();

    let kill = container.kill_record(&mut agent);
    // The shell saw its child die of SIGKILL (128 + 9) and went on.
    container.wait_for_output("hog exited 137", Duration::from_secs(30));
    let running = container.is_running();
    let oom_killed = container.inspect_oom_killed();
    let show = |pointer: &str| shown(&kill, pointer);
    println!(
        "container {}: podman says running={running}, State.OOMKilled={oom_killed} (its conmon \
         saw the OOM: {}); oomtrace \
         says victim {} (pid {}, main pid {main_pid}) in container {} (main process: {}, \
         source: {})",
        container.name(),
        container.conmon_saw_oom(),
        show("/victim/process/executable/name"),
        show("/victim/process/pid"),
        show("/victim/container/name"),
        show("/victim/container/main_process"),
        show("/victim/attribution/source"),
    );
    let context = || serde_json::to_string_pretty(&kill).unwrap_or_default();

    assert!(
        running,
        "container {} should still run: its main process was not killed",
        container.name()
    );
    assert_ne!(
        field_u64(&kill, "victim.process.pid"),
        u64::from(main_pid),
        "the victim should be the hog, not the container's main process, in {}",
        context()
    );
    expect_field(&kill, "victim.process.executable.name", "oomtrace-hog");

    expect_field(&kill, "victim.container.name", container.name());
    assert_eq!(
        field(&kill, "victim.container.main_process"),
        false,
        "the hog is PID 1's child: its death does not end the container, in {}",
        context()
    );
    expect_field(&kill, "domain.container.name", container.name());
    let verdict = field_str(&kill, "explanation.verdict");
    assert!(
        verdict.contains(
            "It was not the container's main process: the container keeps running, and its \
             runtime will not report OOMKilled."
        ),
        "the verdict should say why podman shows no OOM: {verdict}"
    );

    agent.stop();
}
