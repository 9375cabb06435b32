//! A kill the agent logged survives the agent being SIGKILLed right after: restarted on the same
//! history, `oomtrace history` (the real command, as a user runs it) lists it exactly once.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use oomtrace_tests::{
    Agent, HistoryFile, Hog, MemoryCgroup, agent_binary, field_str, field_u64, require_root,
};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const LIMIT_BYTES: u64 = 64 << 20;

#[test]
fn a_logged_kill_is_in_the_history_once_after_the_agent_is_killed() {
    require_root();
    let history = HistoryFile::new();
    let cgroup = MemoryCgroup::create(LIMIT_BYTES);
    let mut agent = Agent::start_with(&history.agent_args());

    let hog_pid = Hog::spawn_in(HOG, &cgroup).wait_oom_killed(Duration::from_secs(30));
    let kills = agent.wait_for_kills(&[hog_pid], Duration::from_secs(30));
    assert_eq!(
        kills.len(),
        1,
        "the agent reported the hog's kill: {kills:#?}"
    );
    // The JSON line comes after the log line: the kill was logged. Kill the agent at once.
    let log = agent.kill();
    assert!(
        log.contains(&format!("OOM kill: pid {hog_pid} ")),
        "the agent logged the kill of {hog_pid}:\n{log}"
    );

    // Restarted on the same file: it opens, migrates and trims it, and stores nothing twice.
    let agent = Agent::start_with(&history.agent_args());
    let records = history.records(&[]);
    let of_hog: Vec<&Value> = records
        .iter()
        .filter(|record| {
            record
                .pointer("/victim/process/pid")
                .and_then(Value::as_u64)
                == Some(u64::from(hog_pid))
        })
        .collect();
    println!(
        "history after SIGKILL and restart: {} records, {} of hog {hog_pid}",
        records.len(),
        of_hog.len()
    );
    let [stored] = of_hog.as_slice() else {
        panic!("expected the hog's kill exactly once in the history, got {records:#?}");
    };
    assert_eq!(field_str(stored, "kind"), "oom_kill");
    assert_eq!(
        field_str(stored, "victim.process.executable.name"),
        "oomtrace-hog"
    );
    assert_eq!(field_str(stored, "history.source"), "live");
    assert_eq!(
        field_str(stored, "victim.memcg.path"),
        cgroup.path(),
        "the stored record is the one the agent wrote"
    );
    assert_eq!(stored["ktime_ns"], kills[0]["ktime_ns"]);

    // The same kill, through the other views.
    let id = field_u64(stored, "history.id");
    let shown = history.run("show", &[&id.to_string()]);
    println!("oomtrace show {id}:\n{shown}");
    assert!(
        shown.contains(&format!("pid {hog_pid} (oomtrace-hog)")),
        "`show` names the victim:\n{shown}"
    );
    let table = history.run("history", &["--victim", "oomtrace-hog"]);
    println!("oomtrace history --victim oomtrace-hog:\n{table}");
    // The comm may be cut to fit the column (the history also holds every kill the kernel
    // logged since boot, so the ids, and the columns, are as wide as they need to be).
    let rows = table
        .lines()
        .filter(|line| line.contains(&format!(" {hog_pid} oomtrace")))
        .count();
    assert_eq!(rows, 1, "one table row for the hog:\n{table}");
    assert!(table.lines().all(|line| line.chars().count() <= 100));
    let stats = history.run("stats", &[]);
    println!("oomtrace stats:\n{stats}");
    assert!(
        stats
            .lines()
            .any(|line| line.starts_with(&cgroup.path()) && line.ends_with(" 1")),
        "`stats` counts one kill at the limit of {}:\n{stats}",
        cgroup.path()
    );
    as_a_plain_user(&history, hog_pid);

    let stopped = agent.stop();
    assert_eq!(
        field_u64(stopped.agent_stopped(), "history_write_errors"),
        0,
        "{:#}",
        stopped.agent_stopped()
    );
}

/// A user who may only read the file lists the same kill: the query opens it read-only and
/// creates nothing (not even the WAL index, which it could not). The agent makes the files
/// root's alone (0600); an operator opens them to others here.
fn as_a_plain_user(history: &HistoryFile, hog_pid: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = history.path().to_str().expect("a UTF-8 path");
    for suffix in ["", "-wal", "-shm"] {
        let file = format!("{path}{suffix}");
        let mode = std::fs::metadata(&file)
            .unwrap_or_else(|err| panic!("{file}: {err}"))
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{file} is mode {mode:o}: readable to others"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
            .unwrap_or_else(|err| panic!("{file}: {err}"));
    }
    let readable = Command::new("runuser")
        .args(["-u", "nobody", "--", "test", "-r", path])
        .status()
        .is_ok_and(|status| status.success());
    if !readable {
        println!("not run as user nobody: {path} is not readable by nobody here");
        return;
    }
    let output = Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(agent_binary())
        .args(["history", "--format", "jsonl", "--history", path])
        .output()
        .expect("running runuser");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "`oomtrace history` as nobody failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let pid_field = format!("\"pid\":{hog_pid},");
    assert_eq!(
        stdout
            .lines()
            .filter(|line| line.contains(&pid_field))
            .count(),
        1,
        "as nobody:\n{stdout}"
    );
    println!("as user nobody: the kill of {hog_pid} is listed");
}

#[test]
fn the_history_commands_say_when_there_is_no_history() {
    let history = HistoryFile::new();
    let output = history.run_raw("history", &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a missing history is an error");
    assert!(
        stderr.contains(&format!(
            "no history at {}: is the agent running with --history?",
            history.path().display()
        )),
        "{stderr}"
    );
    assert!(!history.path().exists(), "the query created the file");
}
