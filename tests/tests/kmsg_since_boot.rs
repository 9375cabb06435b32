//! A kill from before the agent started is only in the kernel log: the agent reads `/dev/kmsg`
//! from its oldest record at startup and names the last OOM kill there.

use std::time::Duration;

use oomtrace_tests::{Agent, Hog, Kmsg, MemoryCgroup, require_root};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const LIMIT_BYTES: u64 = 32 << 20;

#[test]
fn the_agent_finds_a_kill_from_before_it_started_in_the_kernel_log() {
    require_root();
    let cgroup = MemoryCgroup::create(LIMIT_BYTES);
    // The kernel rate-limits its OOM report (the `oom-kill:` line naming the cgroups) to 10
    // per 5 s, and the tests before this one OOM-kill many processes: wait for a quiet window
    // so the report of this kill is complete.
    std::thread::sleep(Duration::from_secs(6));
    let mut kmsg = Kmsg::open_at_end();
    let hog_pid = Hog::spawn_in(HOG, &cgroup).wait_oom_killed(Duration::from_secs(30));
    // The kernel has logged it before the agent starts.
    kmsg.find_killed(hog_pid, Duration::from_secs(10));

    let agent = Agent::start();
    let stopped = agent.stop();
    let line = stopped
        .stderr
        .lines()
        .find(|line| line.contains("kernel log: "))
        .unwrap_or_else(|| panic!("no `kernel log:` line in:\n{}", stopped.stderr));
    println!("{line}");
    let count: u64 = line
        .split_once("kernel log: ")
        .and_then(|(_, rest)| rest.split_once(" OOM kills"))
        .and_then(|(count, _)| count.parse().ok())
        .unwrap_or_else(|| panic!("no count of OOM kills in {line:?}"));
    assert!(count >= 1, "{line}");
    // Any other OOM kill on the host in the second since would be named instead.
    let last = format!("the last: pid {hog_pid} (oomtrace-hog) ");
    assert!(line.contains(&last), "expected `{last}` in {line:?}");
    let memcg = format!("at the limit of {}", cgroup.path());
    assert!(line.contains(&memcg), "expected `{memcg}` in {line:?}");
}
