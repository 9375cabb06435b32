//! Each OOM invocation's snapshot is of its own moment: two kills 0.4 s apart under one parent
//! limit (a restart loop's rhythm) are two invocations, and the second kill's snapshot is
//! taken after it, not reused from the first. In the tiers without `oom_kill_process` the
//! invocation is told apart by the trigger, the capture time and the domain: both are tested.

use std::time::Duration;

use oomtrace::record::OomKillRecord;
use oomtrace_tests::{Agent, Hog, MemoryCgroup, pretty, require_root};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const LIMIT_BYTES: u64 = 64 << 20;
const GAP: Duration = Duration::from_millis(400);

fn snapshot_pids(kill: &OomKillRecord) -> Vec<u32> {
    kill.explanation
        .iter()
        .flat_map(|explanation| &explanation.snapshot.processes)
        .map(|entry| entry.process.pid)
        .collect()
}

/// When the kill's snapshot was taken, which it must say.
fn snapshot_ns(kill: &OomKillRecord) -> u64 {
    kill.explanation
        .as_ref()
        .and_then(|explanation| explanation.snapshot.ktime_ns)
        .unwrap_or_else(|| panic!("no snapshot with its time in {}", pretty(kill)))
}

/// The kill of `pid` among `kills`.
fn kill_of(kills: &[OomKillRecord], pid: u32) -> &OomKillRecord {
    kills
        .iter()
        .find(|kill| kill.victim.process.pid == Some(pid))
        .unwrap_or_else(|| panic!("no kill of {pid} in {}", pretty(kills)))
}

fn two_kills_each_carry_their_own_snapshot(agent_args: &[&str]) {
    require_root();
    let parent = MemoryCgroup::create(LIMIT_BYTES);
    let first_cgroup = parent.child("first");
    let second_cgroup = parent.child("second");
    let mut agent = Agent::start_with(agent_args);

    let first = Hog::spawn_in(HOG, &first_cgroup).wait_oom_killed(Duration::from_secs(30));
    std::thread::sleep(GAP);
    let second = Hog::spawn_in(HOG, &second_cgroup).wait_oom_killed(Duration::from_secs(30));
    let kills = agent.wait_for_kills(&[first, second], Duration::from_secs(30));
    let (first_kill, second_kill) = (kill_of(&kills, first), kill_of(&kills, second));
    for (pid, kill) in [(first, first_kill), (second, second_kill)] {
        println!(
            "kill of {pid} at {} ns: snapshot at {} ns, processes {:?}",
            kill.ktime_ns,
            snapshot_ns(kill),
            snapshot_pids(kill)
        );
    }
    let apart_ns = second_kill.ktime_ns - first_kill.ktime_ns;
    assert!(
        apart_ns < 1_000_000_000,
        "the kills should come within a second of each other, as in a restart loop: {apart_ns} ns"
    );
    for kill in [first_kill, second_kill] {
        assert!(
            snapshot_ns(kill) >= kill.ktime_ns,
            "each kill's snapshot is taken after that kill, not before it:\n{}",
            pretty(kill)
        );
    }
    assert!(
        !snapshot_pids(second_kill).contains(&first),
        "the second kill's snapshot should not list the first victim, gone by then:\n{}",
        pretty(second_kill)
    );
    agent.stop();
}

/// One allocating task triggers both kills, 0.4 to 1 s apart: a build job's growth killing
/// one neighbour, then the next. Same trigger thread, same domain, yet two invocations.
#[test]
fn one_trigger_killing_twice_gets_two_snapshots() {
    require_root();
    let parent = MemoryCgroup::create(LIMIT_BYTES);
    let victims = parent.child("victims");
    let builder = parent.child("builder");
    let mut agent = Agent::start();
    let holder = |mib: &str| {
        let mut hog = Hog::spawn_held_with(HOG, &victims, &["--hold", "--max-mib", mib]);
        // Chosen before the builder, whatever their sizes.
        hog.set_oom_score_adj(1000);
        hog.release();
        hog.wait_holding();
        hog
    };

    // 40 MiB held; the builder reaches the limit at about 24 MiB, in 2.4 s.
    let first = holder("40");
    let trigger = Hog::spawn_with(HOG, &builder, &["--mib-per-second", "10"]);
    let first = first.wait_oom_killed(Duration::from_secs(30));
    // 34 MiB more: the builder, at about 24 MiB, needs 6 MiB more (0.6 s) to kill it too.
    let second = holder("34").wait_oom_killed(Duration::from_secs(30));
    let kills = agent.wait_for_kills(&[first, second], Duration::from_secs(30));
    drop(trigger);
    let (first_kill, second_kill) = (kill_of(&kills, first), kill_of(&kills, second));
    let trigger_pid = |kill: &OomKillRecord| {
        kill.trigger
            .as_ref()
            .and_then(|trigger| trigger.process.pid)
            .unwrap_or_else(|| panic!("no trigger pid in {}", pretty(kill)))
    };
    for kill in [first_kill, second_kill] {
        assert_eq!(
            trigger_pid(kill),
            trigger_pid(first_kill),
            "the builder should trigger both kills:\n{}",
            pretty(kill)
        );
    }
    let apart_ns = second_kill.ktime_ns - first_kill.ktime_ns;
    println!("the same trigger killed twice, {apart_ns} ns apart");
    assert!(apart_ns < 1_000_000_000, "{apart_ns} ns apart");
    for kill in [first_kill, second_kill] {
        assert!(
            snapshot_ns(kill) >= kill.ktime_ns,
            "each kill's snapshot is taken after that kill, not before it:\n{}",
            pretty(kill)
        );
    }
    agent.stop();
}

#[test]
fn two_kills_0_4_s_apart_each_carry_their_own_snapshot() {
    two_kills_each_carry_their_own_snapshot(&[]);
}

#[test]
fn two_kills_0_4_s_apart_each_carry_their_own_snapshot_tracepoint_only() {
    two_kills_each_carry_their_own_snapshot(&["--max-tier", "tracepoint-only"]);
}
