//! A kill from while the agent was down is in the history all the same: at startup the agent
//! reads the kernel log and stores the kills it did not trace, marked `source: kmsg`, with the
//! pid, comm and memory cgroup the log names; started again, it stores none of them twice.

use std::time::Duration;

use oomtrace::attribute::DomainKind;
use oomtrace::history::query::Listed;
use oomtrace::record::Body;
use oomtrace::record::kill::Basis;
use oomtrace_tests::{
    Agent, HistoryFile, Hog, Kmsg, MemoryCgroup, pretty, require_root, victim_pid,
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
    let of_hog = |records: &[Listed]| -> Vec<Listed> {
        records
            .iter()
            .filter(|listed| victim_pid(listed) == Some(hog_pid))
            .cloned()
            .collect()
    };
    let records = history.records(&[]);
    let [stored] = of_hog(&records)
        .try_into()
        .unwrap_or_else(|found: Vec<Listed>| {
            panic!(
                "expected hog {hog_pid} once in the history, got {}",
                pretty(&found)
            )
        });
    let context = pretty(&stored);
    assert_eq!(stored.history.source, "kmsg", "{context}");
    let Some(Body::OomKill(kill)) = stored.record().map(|record| &record.body) else {
        panic!("the hog's record should be an oom_kill: {context}");
    };
    assert_eq!(kill.victim.process.pid, Some(hog_pid), "{context}");
    assert_eq!(
        kill.victim.process.comm(),
        Some("oomtrace-hog"),
        "{context}"
    );
    assert_eq!(
        kill.victim
            .memcg
            .as_ref()
            .and_then(|memcg| memcg.path.as_ref()),
        Some(&cgroup.path()),
        "{context}"
    );
    let Some(domain) = &kill.domain else {
        panic!("no domain in {context}");
    };
    assert_eq!(domain.kind, DomainKind::Cgroup, "{context}");
    assert_eq!(
        domain.cgroup.as_ref().map(|cgroup| &cgroup.path),
        Some(&cgroup.path()),
        "{context}"
    );
    assert_eq!(domain.basis, Some(Basis::KernelLog), "{context}");
    let Some(anon_rss_bytes) = kill
        .victim
        .process
        .memory
        .and_then(|memory| memory.anon_rss_bytes)
    else {
        panic!("no victim anon RSS in {context}");
    };
    assert!(
        anon_rss_bytes > LIMIT_BYTES / 2,
        "the log's anon-rss: {context}"
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
        "hog {hog_pid} stored twice: {}",
        pretty(&records)
    );
}
