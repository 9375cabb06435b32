//! A kill from while the agent was down is in the history all the same: at startup the agent
//! reads the kernel log and stores the kills it did not trace, marked `source: kmsg`, with the
//! pid, comm and memory cgroup the log names; started again, it stores none of them twice.

use std::time::Duration;

use serde_json::Value;

use oomtrace_tests::{
    Agent, HistoryFile, Hog, Kmsg, MemoryCgroup, field_str, field_u64, require_root,
};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const LIMIT_BYTES: u64 = 32 << 20;

#[test]
fn a_kill_while_the_agent_was_down_is_backfilled_from_the_kernel_log() {
    require_root();
    let history = HistoryFile::new();
    let cgroup = MemoryCgroup::create(LIMIT_BYTES);
    // The kernel rate-limits its OOM report (the `oom-kill:` line with the cgroups), at most
    // 10 per 5 s, and the tests before this one OOM-kill many processes: give it a quiet
    // window first, so the report of this kill is complete. Its `Killed process` line, which
    // is never rate-limited, is all a limited report keeps.
    std::thread::sleep(Duration::from_secs(6));
    // The agent is not running: the kill is only in the kernel log.
    let mut kmsg = Kmsg::open_at_end();
    let hog_pid = Hog::spawn_in(HOG, &cgroup).wait_oom_killed(Duration::from_secs(30));
    kmsg.find_killed(hog_pid, Duration::from_secs(10));

    let stopped = Agent::start_with(&history.agent_args()).stop();
    let backfill_line = stopped
        .stderr
        .lines()
        .find(|line| line.contains("from the kernel log stored"))
        .unwrap_or_else(|| panic!("no backfill line in:\n{}", stopped.stderr));
    println!("first start: {backfill_line}");
    let of_hog = |records: &[Value]| -> Vec<Value> {
        records
            .iter()
            .filter(|record| {
                record
                    .pointer("/victim/process/pid")
                    .and_then(Value::as_u64)
                    == Some(u64::from(hog_pid))
            })
            .cloned()
            .collect()
    };
    let records = history.records(&[]);
    let [stored] = of_hog(&records)
        .try_into()
        .unwrap_or_else(|found: Vec<Value>| {
            panic!("expected hog {hog_pid} once in the history, got {found:#?}")
        });
    assert_eq!(field_str(&stored, "history.source"), "kmsg");
    assert_eq!(field_str(&stored, "kind"), "oom_kill");
    assert_eq!(field_u64(&stored, "victim.process.pid"), u64::from(hog_pid));
    assert_eq!(
        field_str(&stored, "victim.process.executable.name"),
        "oomtrace-hog"
    );
    assert_eq!(field_str(&stored, "victim.memcg.path"), cgroup.path());
    assert_eq!(field_str(&stored, "domain.kind"), "cgroup");
    assert_eq!(field_str(&stored, "domain.cgroup.path"), cgroup.path());
    assert_eq!(field_str(&stored, "domain.basis"), "kernel_log");
    assert!(
        field_u64(&stored, "victim.process.memory.anon_rss_bytes") > LIMIT_BYTES / 2,
        "the log's anon-rss: {stored:#}"
    );

    // Started again on the same history: the kernel log still holds the kill; it is known.
    let stopped = Agent::start_with(&history.agent_args()).stop();
    let again = stopped
        .stderr
        .lines()
        .find(|line| line.contains("from the kernel log stored"))
        .unwrap_or_else(|| panic!("no backfill line in:\n{}", stopped.stderr));
    println!("second start: {again}");
    let records = history.records(&[]);
    assert_eq!(
        of_hog(&records).len(),
        1,
        "hog {hog_pid} stored twice: {records:#?}"
    );
}
