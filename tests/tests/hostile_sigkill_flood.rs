//! An unprivileged user floods SIGKILLs (`kill -9` in a loop) against a small history: the OOM
//! kills from before stay in it, the flood's SIGKILLs beyond each sender's rate are counted,
//! not stored.

use std::process::Command;
use std::time::Duration;

use oomtrace::record::{Body, Record};
use oomtrace_tests::{Agent, HistoryFile, Hog, MemoryCgroup, require_root};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const FLOOD: u32 = 600;

#[test]
fn a_sigkill_flood_evicts_no_oom_kill_from_the_history() {
    require_root();
    let history = HistoryFile::new();
    let mut args = vec!["--history-max-rows", "300"];
    args.extend(history.agent_args());
    let mut agent = Agent::start_with(&args);

    let cgroup = MemoryCgroup::create(48 << 20);
    let pids: Vec<u32> = (0..2)
        .map(|_| Hog::spawn_in(HOG, &cgroup).wait_oom_killed(Duration::from_secs(30)))
        .collect();
    let kills = agent.wait_for_kills(&pids, Duration::from_secs(30));
    assert_eq!(kills.len(), 2, "both OOM kills traced: {kills:#?}");

    let flood = Command::new("runuser")
        .args(["-u", "nobody", "--", "sh", "-c"])
        .arg(format!(
            "i=0; while [ $i -lt {FLOOD} ]; do sleep 100 & kill -9 $!; i=$((i+1)); done; wait"
        ))
        .status()
        .expect("running the flood as nobody");
    assert!(
        flood.success() || flood.code() == Some(137),
        "the flood: {flood}"
    );

    let stopped = agent.stop();
    let stored: Vec<Record> = history
        .run(
            "history",
            &["--kind", "oom_kill", "--format", "jsonl", "--limit", "1000"],
        )
        .lines()
        .map(|line| serde_json::from_str(line).expect("a typed record"))
        .collect();
    for pid in &pids {
        assert!(
            stored.iter().any(|record| matches!(
                &record.body,
                Body::OomKill(kill) if kill.victim.process.pid == Some(*pid)
            )),
            "the OOM kill of {pid} was pushed out of the history by {FLOOD} SIGKILLs"
        );
    }
    let totals = stopped.agent_stopped();
    let totals = totals.totals;
    assert!(
        totals.sigkills >= u64::from(FLOOD),
        "every SIGKILL logged: {totals:?}"
    );
    assert!(
        totals.sigkills_rate_limited > 0,
        "the flood's excess counted: {totals:?}"
    );

    let sigkill_rows = history
        .run(
            "history",
            &["--kind", "sigkill", "--format", "jsonl", "--limit", "1000"],
        )
        .lines()
        .count();
    println!(
        "{FLOOD} SIGKILLs as nobody: {} rate-limited, {sigkill_rows} SIGKILL rows kept, both OOM kills kept",
        totals.sigkills_rate_limited
    );
}
