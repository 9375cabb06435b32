//! A kill the agent logged survives the agent being SIGKILLed right after: restarted on the same
//! history, `oomtrace history` (the real command, as a user runs it) lists it exactly once.

use std::process::Command;
use std::time::Duration;

use oomtrace::history::query::Listed;
use oomtrace::record::Body;
use oomtrace_tests::{
    Agent, HistoryFile, Hog, MemoryCgroup, agent_binary, pretty, require_root, victim_pid,
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
        "the agent reported the hog's kill: {}",
        pretty(&kills)
    );
    // The JSON line comes after the log line: the kill was logged. Its row is committed while
    // the outputs go out, not before them: once it is listed, kill the agent at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !history
        .records(&[])
        .iter()
        .any(|listed| victim_pid(listed) == Some(hog_pid))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the kill of {hog_pid} was not in the history 5 s after it was written out"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = agent.kill();
    assert!(
        log.contains(&format!("OOM kill: pid {hog_pid} ")),
        "the agent logged the kill of {hog_pid}:\n{log}"
    );

    // Restarted on the same file: it opens, migrates and trims it, and stores nothing twice.
    let agent = Agent::start_with(&history.agent_args());
    let records = history.records(&[]);
    let of_hog: Vec<&Listed> = records
        .iter()
        .filter(|listed| victim_pid(listed) == Some(hog_pid))
        .collect();
    println!(
        "history after SIGKILL and restart: {} records, {} of hog {hog_pid}",
        records.len(),
        of_hog.len()
    );
    let [stored] = of_hog.as_slice() else {
        panic!(
            "expected the hog's kill exactly once in the history, got {}",
            pretty(&records)
        );
    };
    let context = pretty(stored);
    let Some(Body::OomKill(stored_kill)) = stored.record().map(|record| &record.body) else {
        panic!("the hog's record should be an oom_kill: {context}");
    };
    assert_eq!(
        stored_kill.victim.process.comm(),
        Some("oomtrace-hog"),
        "{context}"
    );
    assert_eq!(stored.history.source, "live", "{context}");
    assert_eq!(
        stored_kill
            .victim
            .memcg
            .as_ref()
            .and_then(|memcg| memcg.path.as_ref()),
        Some(&cgroup.path()),
        "the stored record is the one the agent wrote: {context}"
    );
    assert_eq!(stored_kill.ktime_ns, kills[0].ktime_ns, "{context}");

    // The same kill, through the other views.
    let id = stored.history.id;
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
        stopped.agent_stopped().totals.history_write_errors,
        0,
        "{}",
        pretty(stopped.agent_stopped())
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
    let listed: Vec<Listed> = stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("as nobody, a line that is no record ({err}): {line}"))
        })
        .collect();
    assert_eq!(
        listed
            .iter()
            .filter(|listed| victim_pid(listed) == Some(hog_pid))
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
