//! A container of the real Docker Engine whose main process survives the OOM kill of its child:
//! Docker sees a running container with `OOMKilled=false`, and once the container is stopped,
//! says `OOMKilled=true` with exit 137, although `docker stop`'s SIGKILL, not the OOM killer,
//! ended its main process. The agent names the container, says the victim was not its main
//! process, and records the stop's SIGKILL as a kill from a process.

use std::time::Duration;

use oomtrace_tests::{
    ContainerSpec, Dockerd, Kmsg, expect_field, field, field_str, field_u64, require_root, shown,
};

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
    let victim_pid = u32::try_from(field_u64(&kill, "victim.process.pid")).expect("a pid");
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
        .wait_for_record_where(
            |record| {
                record["kind"] == "sigkill"
                    && record
                        .pointer("/target/process/pid")
                        .and_then(|p| p.as_u64())
                        == Some(u64::from(main_pid))
            },
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("no sigkill record for the stopped shell, pid {main_pid}"));

    let show = |pointer: &str| shown(&kill, pointer);
    println!(
        "container {}: while running Docker says running={running}, State.OOMKilled=\
         {oom_killed_running}, {oom_events} `oom` events; after `docker stop` exit code \
         {exit_code}, State.OOMKilled={oom_killed_stopped}; the kernel says pid {} ({}) killed; \
         oomtrace says victim {} (pid {}, main pid {main_pid}) in container {} (main process: \
         {}, source: {}), and the stop's SIGKILL of pid {main_pid} was sent by {} (pid {}, {})",
        container.name(),
        kernel.killed.pid,
        kernel.killed.comm,
        show("/victim/process/executable/name"),
        show("/victim/process/pid"),
        show("/victim/container/name"),
        show("/victim/container/main_process"),
        show("/victim/attribution/source"),
        shown(&stop_kill, "/sender/process/executable/name"),
        shown(&stop_kill, "/sender/process/pid"),
        shown(&stop_kill, "/sender/kind"),
    );
    let context = || serde_json::to_string_pretty(&kill).unwrap_or_default();

    // Docker's view while it runs: no OOM kill, one `oom` event.
    assert!(
        running,
        "container {} should still run: its main process was not killed",
        container.name()
    );
    assert!(!oom_killed_running, "Docker says OOMKilled while running");
    assert_eq!(oom_events, 1, "Docker's `oom` events for the child's kill");

    // The kernel's and the agent's: the hog, not PID 1.
    assert_eq!(u64::from(kernel.killed.pid), u64::from(victim_pid));
    assert_ne!(
        victim_pid,
        main_pid,
        "the victim should be the hog, not the container's main process, in {}",
        context()
    );
    kernel.killed.assert_anon_rss_matches(&kill);
    expect_field(&kill, "victim.process.executable.name", "oomtrace-hog");
    expect_field(&kill, "victim.container.name", container.name());
    expect_field(&kill, "victim.container.runtime", "docker");
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
        "the verdict should say why Docker shows no OOM: {verdict}"
    );

    // After the stop, Docker blames the OOM killer for a SIGKILL a process sent.
    assert_eq!(exit_code, 137, "`docker stop` ends the shell with SIGKILL");
    assert!(
        oom_killed_stopped,
        "Docker 20.10 reports OOMKilled=true for a container stopped after a child's OOM kill"
    );
    expect_field(&stop_kill, "target.container.name", container.name());
    assert_eq!(
        field(&stop_kill, "sender.kind"),
        "process",
        "`docker stop`'s SIGKILL comes from a process, not the OOM killer: {stop_kill:#}"
    );

    let stopped = agent.stop();
    let kills: Vec<_> = stopped
        .kills()
        .filter(|record| container.is_victim_of(record))
        .collect();
    assert_eq!(
        kills.len(),
        1,
        "one oom_kill in container {}, the child's; the stop is no OOM kill: {kills:#?}",
        container.name()
    );
}
