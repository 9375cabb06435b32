//! A history that cannot be written (here: a read-only mount, which even root cannot write) does
//! not stop the agent: the kill is still reported, the error is logged, and counted.

use std::time::Duration;

use oomtrace_tests::{Agent, Hog, MemoryCgroup, ReadOnlyDir, pretty, require_root};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const LIMIT_BYTES: u64 = 64 << 20;

#[test]
fn a_read_only_history_is_counted_and_the_kill_still_reported() {
    require_root();
    let read_only = ReadOnlyDir::mount();
    let path = read_only.path().join("oomtrace.db");
    let path_arg = path.to_str().expect("a UTF-8 path");
    let cgroup = MemoryCgroup::create(LIMIT_BYTES);
    let mut agent = Agent::start_with(&["--history", path_arg]);

    let hog_pid = Hog::spawn_in(HOG, &cgroup).wait_oom_killed(Duration::from_secs(30));
    let kills = agent.wait_for_kills(&[hog_pid], Duration::from_secs(30));
    assert_eq!(
        kills.len(),
        1,
        "the kill is reported although it cannot be stored: {}",
        pretty(&kills)
    );
    let stopped = agent.stop();
    let errors = stopped.agent_stopped().totals.history_write_errors;
    println!(
        "history at {}: {errors} failed writes; log:\n{}",
        path.display(),
        stopped.stderr
    );
    assert!(
        errors >= 1,
        "history_write_errors is {errors}: {}",
        pretty(stopped.agent_stopped())
    );
    assert!(
        stopped
            .stderr
            .contains(&format!("history: cannot open {}", path.display())),
        "the agent logs why it cannot store kills:\n{}",
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains("Read-only file system"),
        "the log gives the system's reason:\n{}",
        stopped.stderr
    );
    assert!(!path.exists());
}
