//! A container of the real Docker Engine whose main process survives the OOM kill of its child:
//! Docker sees a running container with `OOMKilled=false`, and once the container is stopped,
//! says `OOMKilled=true` with exit 137, although `docker stop`'s SIGKILL, not the OOM killer,
//! ended its main process. The agent names the container, says the victim was not its main
//! process, and records the stop's SIGKILL as a kill from a process.

use std::time::Duration;

use oomtrace::record::Body;
use oomtrace::record::sigkill::SenderKind;
use oomtrace_tests::{ContainerSpec, Dockerd, Kmsg, or_dash, pretty, require_root};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn child_oom_kill_in_a_surviving_docker_container() {
    require_root();
    let docker = Dockerd::start();
    let mut agent = docker.start_agent();
    let mut kmsg = Kmsg::open_at_end();

    // PID 1 is busybox sh: it outlives the hog and reports how it ended. As PID 1 it ignores
    // SIGTERM, so `docker stop` ends it with SIGKILL.
    let script = format!(
        "{}; echo \"hog exited $?\"; sleep 600",
        ContainerSpec::hog_command(LIMIT_BYTES)
    );
    let container = docker.run(ContainerSpec::shell(LIMIT_BYTES, &script));
    let main_pid = container.main_pid();

    let kill = container.kill_record(&mut agent);
    // The shell saw its child die of SIGKILL (128 + 9) and went on.
    container.wait_for_output("hog exited 137", 1, Duration::from_secs(30));
    let context = pretty(&kill);
    let Some(victim_pid) = kill.victim.process.pid else {
        panic!("no victim pid in {context}");
    };
    let kernel = kmsg.find_report(victim_pid, Duration::from_secs(10));
    let running = container.is_running();
    let oom_killed_running = container.inspect_oom_killed();
    let oom_events = container.oom_events();

    let stop = docker
        .command()
        .args(["stop", "--time", "1", container.id()])
        .output()
        .expect("running docker stop");
    assert!(stop.status.success(), "docker stop failed: {stop:?}");
    let exit_code = container.wait_exit(Duration::from_secs(30));
    let oom_killed_stopped = container.inspect_oom_killed();
    let stop_kill = agent
        .wait_for_record(
            |record| match &record.body {
                Body::Sigkill(sigkill) if sigkill.target.process.pid == Some(main_pid) => {
                    Some(sigkill.clone())
                }
                _ => None,
            },
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("no sigkill record for the stopped shell, pid {main_pid}"));

    let victim = kill.victim.names.container.as_ref();
    let sender = &stop_kill.sender;
    println!(
        "container {}: while running Docker says running={running}, State.OOMKilled=\
         {oom_killed_running}, {oom_events} `oom` events; after `docker stop` exit code \
         {exit_code}, State.OOMKilled={oom_killed_stopped}; the kernel says pid {} ({}) killed; \
         oomtrace says victim {} (pid {}, main pid {main_pid}) in container {} (main process: \
         {}, source: {}), and the stop's SIGKILL of pid {main_pid} was sent by {} (pid {}, {})",
        container.name(),
        kernel.killed.pid,
        kernel.killed.comm,
        or_dash(kill.victim.process.comm()),
        or_dash(kill.victim.process.pid),
        or_dash(victim.and_then(|victim| victim.name.as_ref())),
        or_dash(victim.and_then(|victim| victim.main_process)),
        or_dash(kill.victim.names.attribution.as_ref().map(|by| by.source)),
        or_dash(sender.party.process.comm()),
        or_dash(sender.party.process.pid),
        or_dash(Some(sender.kind)),
    );

    // Docker's view while it runs: no OOM kill, one `oom` event.
    assert!(
        running,
        "container {} should still run: its main process was not killed",
        container.name()
    );
    assert!(!oom_killed_running, "Docker says OOMKilled while running");
    assert_eq!(oom_events, 1, "Docker's `oom` events for the child's kill");

    // The kernel's and the agent's: the hog, not PID 1.
    assert_eq!(kernel.killed.pid, victim_pid);
    assert_ne!(
        victim_pid, main_pid,
        "the victim should be the hog, not the container's main process, in {context}"
    );
    kernel.killed.assert_anon_rss_matches(&kill);
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
    assert_eq!(victim.runtime.as_deref(), Some("docker"), "in {context}");
    assert_eq!(
        victim.main_process,
        Some(false),
        "the hog is PID 1's child: its death does not end the container, in {context}"
    );
    assert_eq!(
        kill.domain
            .as_ref()
            .and_then(|domain| domain.names.container_name()),
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
        "the verdict should say why Docker shows no OOM: {verdict}"
    );

    // After the stop, Docker blames the OOM killer for a SIGKILL a process sent.
    assert_eq!(exit_code, 137, "`docker stop` ends the shell with SIGKILL");
    assert!(
        oom_killed_stopped,
        "Docker 20.10 reports OOMKilled=true for a container stopped after a child's OOM kill"
    );
    assert_eq!(
        stop_kill.target.names.container_name(),
        Some(container.name()),
        "{}",
        pretty(&stop_kill)
    );
    assert_eq!(
        sender.kind,
        SenderKind::Process,
        "`docker stop`'s SIGKILL comes from a process, not the OOM killer: {}",
        pretty(&stop_kill)
    );

    let stopped = agent.stop();
    let kills: Vec<_> = stopped
        .kills()
        .filter(|kill| container.is_victim_of(kill))
        .collect();
    assert_eq!(
        kills.len(),
        1,
        "one oom_kill in container {}, the child's; the stop is no OOM kill: {}",
        container.name(),
        pretty(&kills)
    );
}
