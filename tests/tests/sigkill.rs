//! `kill -9` of a container's main process from a shell on the host: the container exits 137
//! and podman says `OOMKilled=false`. The agent says who did it: a `sigkill` record naming the
//! container, the shell's pid and comm, and that a process (not the kernel) sent it; and no
//! `oom_kill`.

use std::process::Command;
use std::time::Duration;

use oomtrace::record::Body;
use oomtrace::record::party::Thread;
use oomtrace::record::sigkill::SenderKind;
use oomtrace_tests::{ContainerSpec, Podman, pretty, require_root};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn kill_9_from_the_host_names_the_sender() {
    require_root();
    let podman = Podman::start();
    let mut agent = podman.start_agent();

    let container = podman.run(ContainerSpec::shell(LIMIT_BYTES, "sleep 600"));
    let target = container.main_pid();

    // The sender: a shell whose pid we know, running `kill` as a builtin.
    let mut shell = Command::new("sh")
        .args(["-c", &format!("kill -9 {target}")])
        .spawn()
        .expect("spawning sh");
    let sender = shell.id();
    let status = shell.wait().expect("waiting for sh");
    assert!(status.success(), "`kill -9 {target}` failed: {status}");

    let exit_code = container.wait_exit(Duration::from_secs(30));
    let oom_killed = container.inspect_oom_killed();
    let record = agent
        .wait_for_record(
            |record| match &record.body {
                Body::Sigkill(sigkill) if sigkill.target.thread == Some(Thread { id: target }) => {
                    Some(sigkill.clone())
                }
                _ => None,
            },
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("no sigkill record for pid {target}"));
    let stopped = agent.stop();
    println!(
        "container {}: podman says exit code {exit_code}, State.OOMKilled={oom_killed}; \
         oomtrace says:\n{}",
        container.name(),
        serde_json::to_string(&record).unwrap_or_default()
    );
    let context = pretty(&record);

    assert_eq!(exit_code, 137, "the container's exit code");
    assert_eq!(record.target.process.pid, Some(target), "in {context}");
    let Some(target_container) = &record.target.names.container else {
        panic!("no target container in {context}");
    };
    assert_eq!(
        target_container.name.as_deref(),
        Some(container.name()),
        "in {context}"
    );
    assert_eq!(target_container.id, container.id(), "in {context}");
    // Read in the kernel at the moment of the kill, before conmon reaps the process.
    let Some(target_memcg) = record
        .target
        .memcg
        .as_ref()
        .and_then(|memcg| memcg.path.as_deref())
    else {
        panic!("no target memcg path in {context}");
    };
    assert!(
        target_memcg.contains(container.id()),
        "the target's memcg is the container's, in {context}"
    );
    let sender_process = &record.sender.party.process;
    assert_eq!(sender_process.pid, Some(sender), "in {context}");
    assert_eq!(sender_process.comm(), Some("sh"), "in {context}");
    assert_eq!(record.sender.kind, SenderKind::Process, "in {context}");
    assert_eq!(record.signal.code, Some(0), "SI_USER, in {context}");
    assert_eq!(
        stopped.kills_of(target).len(),
        0,
        "a kill -9 is no OOM kill"
    );
    assert_eq!(
        stopped.sigkills_of(target).len(),
        1,
        "one SIGKILL, one record"
    );
    assert!(
        stopped.agent_stopped().totals.sigkills >= 1,
        "{}",
        pretty(stopped.agent_stopped())
    );
}
