//! `kill -9` of a container's main process from a shell on the host: the container exits 137
//! and podman says `OOMKilled=false`. The agent says who did it: a `sigkill` record naming the
//! container, the shell's pid and comm, and that a process (not the kernel) sent it; and no
//! `oom_kill`.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use oomtrace_tests::{
    ContainerSpec, Podman, expect_field, field, field_str, field_u64, require_root,
};

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
        .wait_for_record_where(
            |record| {
                record["kind"] == "sigkill"
                    && record.pointer("/target/thread/id").and_then(Value::as_u64)
                        == Some(u64::from(target))
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
    let context = || serde_json::to_string_pretty(&record).unwrap_or_default();

    assert_eq!(exit_code, 137, "the container's exit code");
    assert_eq!(field_u64(&record, "target.process.pid"), u64::from(target));
    expect_field(&record, "target.container.name", container.name());
    expect_field(&record, "target.container.id", container.id());
    // Read in the kernel at the moment of the kill, before conmon reaps the process.
    assert!(
        field_str(&record, "target.memcg.path").contains(container.id()),
        "the target's memcg is the container's, in {}",
        context()
    );
    expect_field(&record, "sender.process.pid", u64::from(sender));
    expect_field(&record, "sender.process.executable.name", "sh");
    assert_eq!(field(&record, "sender.kind"), "process", "in {}", context());
    assert_eq!(
        field(&record, "signal.code"),
        0,
        "SI_USER, in {}",
        context()
    );
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
    assert_eq!(
        stopped.agent_stopped()["sigkills"].as_u64().map(|n| n >= 1),
        Some(true)
    );
}
