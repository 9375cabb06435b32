//! Each OOM invocation's snapshot is of its own moment: two kills 0.4 s apart under one parent
//! limit (a restart loop's rhythm) are two invocations, and the second kill's snapshot is
//! taken after it, not reused from the first. In the tiers without `oom_kill_process` the
//! invocation is told apart by the trigger, the capture time and the domain: both are tested.

use std::time::Duration;

use oomtrace::capture::Tier;
use oomtrace::record::OomKillRecord;
use oomtrace_tests::{
    Agent, Hog, Hook, KernelLook, MemoryCgroup, assert_snapshot_holds_victim, hog_binary, pretty,
    require_root,
};
const LIMIT_BYTES: u64 = 64 << 20;
/// The restart loop's limit: small, so that a hog fills it in a fraction of the gap also under
/// the kernel matrix's emulation (where a hog fills 64 MiB in about a second).
const RESTART_LIMIT_BYTES: u64 = 16 << 20;
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

fn two_kills_each_carry_their_own_snapshot(agent_args: &[&str], max_tier: Option<Tier>) {
    require_root();
    let expected = KernelLook::now().expected(max_tier, Hook::Auto);
    let parent = MemoryCgroup::create(RESTART_LIMIT_BYTES);
    let first_cgroup = parent.child("first");
    let second_cgroup = parent.child("second");
    let mut agent = Agent::start_with(agent_args);

    // Both started before the first allocates, and released the gap apart, so that the gap
    // between the kills is the pause, not also the second one's start or the time the test
    // takes to see the first one's end (both slow under the guests' emulation). The first,
    // the bigger, is the first victim; the second fills the limit after it.
    let mut first = Hog::spawn_held_in(hog_binary(), &first_cgroup);
    let mut second = Hog::spawn_held_in(hog_binary(), &second_cgroup);
    first.release();
    std::thread::sleep(GAP);
    second.release();
    let first = first.wait_oom_killed(Duration::from_secs(30));
    let second = second.wait_oom_killed(Duration::from_secs(30));
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
        assert_snapshot_holds_victim(kill);
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
    if expected.tier == Tier::Full {
        // `oom_kill_process` was entered twice: the kernel's own two incidents.
        let id = |kill: &OomKillRecord| kill.incident.as_ref().and_then(|i| i.id.clone());
        assert!(
            id(first_kill).is_some() && id(first_kill) != id(second_kill),
            "two invocations, two incidents:\n{}",
            pretty(&[first_kill, second_kill])
        );
    }
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
        let mut hog = Hog::spawn_held_with(hog_binary(), &victims, &["--hold", "--max-mib", mib]);
        // Chosen before the builder, whatever their sizes.
        hog.set_oom_score_adj(1000);
        hog.release();
        hog.wait_holding();
        hog
    };

    // Two neighbours hold 6 and 4 MiB, the bigger chosen first. The builder grows at 16 MiB/s
    // until the limit (about 3.3 s): the 6 MiB one is killed; the builder takes those 6 MiB
    // back in about 0.4 s, and the 4 MiB one is killed too. The gap is the builder's pace,
    // not the machine's speed.
    let first = holder("6");
    let second = holder("4");
    let trigger = Hog::spawn_with(hog_binary(), &builder, &["--mib-per-second", "16"]);
    let first = first.wait_oom_killed(Duration::from_secs(30));
    let second = second.wait_oom_killed(Duration::from_secs(30));
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
        assert_snapshot_holds_victim(kill);
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
    two_kills_each_carry_their_own_snapshot(&[], None);
}

#[test]
fn two_kills_0_4_s_apart_each_carry_their_own_snapshot_tracepoint_only() {
    two_kills_each_carry_their_own_snapshot(
        &["--max-tier", "tracepoint-only"],
        Some(Tier::TracepointOnly),
    );
}
