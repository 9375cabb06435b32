//! A container whose main process survives the OOM kill of its child: podman sees a running
//! container and no OOM, while the agent names the container and says the victim was not its
//! main process.

use std::time::Duration;

use oomtrace_tests::{ContainerSpec, Podman, or_dash, pretty, require_root};

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
    let victim = kill.victim.names.container.as_ref();
    println!(
        "container {}: podman says running={running}, State.OOMKilled={oom_killed} (its conmon \
         saw the OOM: {}); oomtrace \
         says victim {} (pid {}, main pid {main_pid}) in container {} (main process: {}, \
         source: {})",
        container.name(),
        container.conmon_saw_oom(),
        or_dash(kill.victim.process.comm()),
        or_dash(kill.victim.process.pid),
        or_dash(victim.and_then(|victim| victim.name.as_ref())),
        or_dash(victim.and_then(|victim| victim.main_process)),
        or_dash(kill.victim.names.attribution.as_ref().map(|by| by.source)),
    );
    let context = pretty(&kill);

    assert!(
        running,
        "container {} should still run: its main process was not killed",
        container.name()
    );
    let Some(victim_pid) = kill.victim.process.pid else {
        panic!("no victim pid in {context}");
    };
    assert_ne!(
        victim_pid, main_pid,
        "the victim should be the hog, not the container's main process, in {context}"
    );
    assert_eq!(
        kill.victim.process.comm(),
        Some("oomtrace-hog"),
        "in {context}"
    );

    let Some(victim) = victim else {
        panic!("no victim container in {context}");
    };
    assert_eq!(
        victim.name.as_deref(),
        Some(container.name()),
        "in {context}"
    );
    assert_eq!(
        victim.main_process,
        Some(false),
        "the hog is PID 1's child: its death does not end the container, in {context}"
    );
    let domain = kill.domain.as_ref();
    assert_eq!(
        domain.and_then(|domain| domain.names.container_name()),
        Some(container.name()),
        "in {context}"
    );
    let Some(explanation) = &kill.explanation else {
        panic!("no explanation in {context}");
    };
    let verdict = &explanation.verdict;
    assert!(
        verdict.contains(
            "It was not the container's main process: the container keeps running, and its \
             runtime will not report OOMKilled."
        ),
        "the verdict should say why podman shows no OOM: {verdict}"
    );

    agent.stop();
}
