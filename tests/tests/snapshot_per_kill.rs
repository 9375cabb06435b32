//! Each OOM invocation's snapshot is of its own moment: two kills 0.4 s apart under one parent
//! limit (a restart loop's rhythm) are two invocations, and the second kill's snapshot is
//! taken after it, not reused from the first. In the tiers without `oom_kill_process` the
//! invocation is told apart by the trigger, the capture time and the domain: both are tested.

use std::time::Duration;

use serde_json::Value;

use oomtrace_tests::{Agent, Hog, MemoryCgroup, field_u64, require_root};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const LIMIT_BYTES: u64 = 64 << 20;
const GAP: Duration = Duration::from_millis(400);

fn snapshot_pids(kill: &Value) -> Vec<u64> {
    kill.pointer("/explanation/snapshot/processes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.pointer("/process/pid").and_then(Value::as_u64))
        .collect()
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
    let kill_of = |pid: u32| {
        kills
            .iter()
            .find(|kill| field_u64(kill, "victim.process.pid") == u64::from(pid))
            .unwrap_or_else(|| panic!("no kill of {pid} in {kills:#?}"))
    };
    let (first_kill, second_kill) = (kill_of(first), kill_of(second));
    for kill in [first_kill, second_kill] {
        println!(
            "kill of {} at {} ns: snapshot at {} ns, processes {:?}",
            field_u64(kill, "victim.process.pid"),
            field_u64(kill, "ktime_ns"),
            field_u64(kill, "explanation.snapshot.ktime_ns"),
            snapshot_pids(kill)
        );
    }
    let apart_ns = field_u64(second_kill, "ktime_ns") - field_u64(first_kill, "ktime_ns");
    assert!(
        apart_ns < 1_000_000_000,
        "the kills should come within a second of each other, as in a restart loop: {apart_ns} ns"
    );
    for kill in [first_kill, second_kill] {
        assert!(
            field_u64(kill, "explanation.snapshot.ktime_ns") >= field_u64(kill, "ktime_ns"),
            "each kill's snapshot is taken after that kill, not before it:\n{kill:#}"
        );
    }
    assert!(
        !snapshot_pids(second_kill).contains(&u64::from(first)),
        "the second kill's snapshot should not list the first victim, gone by then:\n{second_kill:#}"
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
    let kill_of = |pid: u32| {
        kills
            .iter()
            .find(|kill| field_u64(kill, "victim.process.pid") == u64::from(pid))
            .unwrap_or_else(|| panic!("no kill of {pid} in {kills:#?}"))
    };
    let (first_kill, second_kill) = (kill_of(first), kill_of(second));
    for kill in [first_kill, second_kill] {
        assert_eq!(
            field_u64(kill, "trigger.process.pid"),
            field_u64(first_kill, "trigger.process.pid"),
            "the builder should trigger both kills:\n{kill:#}"
        );
    }
    let apart_ns = field_u64(second_kill, "ktime_ns") - field_u64(first_kill, "ktime_ns");
    println!("the same trigger killed twice, {apart_ns} ns apart");
    assert!(apart_ns < 1_000_000_000, "{apart_ns} ns apart");
    for kill in [first_kill, second_kill] {
        assert!(
            field_u64(kill, "explanation.snapshot.ktime_ns") >= field_u64(kill, "ktime_ns"),
            "each kill's snapshot is taken after that kill, not before it:\n{kill:#}"
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
