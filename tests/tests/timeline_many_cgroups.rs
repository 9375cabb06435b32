//! A node with hundreds of limited cgroups, each with a small process: one of them has its limit
//! lowered after the agent started (`docker update --memory`), and its process then grows into
//! the new limit. The kill's timeline has that cgroup's own samples with the new limit, densely
//! from the start of the growth, a second after the lowering (so the lowering was seen within
//! that second), and the verdict tells the growth.

use std::time::{Duration, Instant};

use oomtrace::record::timeline::{CgroupTimeline, Timeline};
use oomtrace_tests::{Agent, BusyNode, pretty, require_root};

const MIB: u64 = 1 << 20;
/// As on a busy node; the kernel matrix's guests, with 768 MiB, ask for fewer
/// (`OOMTRACE_MANY_CGROUPS`).
const CGROUPS: usize = 300;
const LIMIT_BYTES: u64 = 256 * MIB;
/// The chosen cgroup's limit after the lowering.
const LOWERED_BYTES: u64 = 48 * MIB;
/// What each of the others holds.
const SMALL_MIB: &str = "2";
/// The grower fills the lowered limit in about 1.5 s.
const GROWER_MIB_PER_SECOND: &str = "32";
/// From the lowering to the start of the growth.
const PICK_UP: Duration = Duration::from_secs(1);

/// [`CGROUPS`], or `$OOMTRACE_MANY_CGROUPS`.
fn cgroup_count() -> usize {
    match std::env::var("OOMTRACE_MANY_CGROUPS") {
        Ok(count) => count
            .parse()
            .ok()
            .filter(|&count| count >= 2)
            .unwrap_or_else(|| {
                panic!("OOMTRACE_MANY_CGROUPS={count:?} is not a count of 2 or more")
            }),
        Err(_) => CGROUPS,
    }
}

fn entry<'a>(timeline: &'a Timeline, path: &str) -> &'a CgroupTimeline {
    timeline
        .cgroups
        .iter()
        .find(|entry| entry.cgroup.path == path)
        .unwrap_or_else(|| panic!("no timeline entry for {path} in:\n{}", pretty(timeline)))
}

#[test]
fn a_limit_lowered_among_hundreds_is_seen_within_a_second_and_the_kill_has_its_minute_before() {
    require_root();
    let count = cgroup_count();
    println!("{count} limited cgroups");
    // The others hold a little each; the chosen one's process waits to grow, so its cgroup is
    // among the emptiest.
    let (mut node, mut grower) =
        BusyNode::start(count, LIMIT_BYTES, SMALL_MIB, GROWER_MIB_PER_SECOND);
    let chosen_path = node.chosen_path();

    let mut agent = Agent::start();
    let started = agent.agent_started().clone();
    let Some(coverage) = &started.timeline else {
        panic!("no timeline in {}", pretty(&started));
    };
    println!("agent_started.timeline: {}", pretty(coverage));
    assert!(
        coverage.limits >= count as u64 && coverage.limits_sampled == coverage.limits,
        "every limited cgroup should be sampled: {}",
        pretty(coverage)
    );
    assert_eq!(coverage.not_covered, 0, "{}", pretty(coverage));
    // The chosen cgroup's level is recorded for a while first.
    std::thread::sleep(Duration::from_secs(3));

    node.cgroups[0].set_limit(LOWERED_BYTES);
    let lowered = Instant::now();
    std::thread::sleep(PICK_UP);
    grower.release();
    let released = Instant::now();
    let grower_pid = grower.wait_oom_killed(Duration::from_secs(30));
    println!(
        "killed {:?} after the lowering, {:?} after the growth started",
        lowered.elapsed(),
        released.elapsed()
    );
    let kills = agent.wait_for_kills(&[grower_pid], Duration::from_secs(30));
    let kill = &kills[0];
    let Some(explanation) = &kill.explanation else {
        panic!("no explanation in {}", pretty(kill));
    };
    let Some(timeline) = &explanation.timeline else {
        panic!("no timeline in {}", pretty(kill));
    };
    let verdict = &explanation.verdict;
    println!("verdict: {verdict}");
    println!("timeline: {}", pretty(timeline));

    assert!(
        timeline.not_covered.is_empty(),
        "every cgroup of the domain should be covered: {}",
        pretty(timeline)
    );
    let own = entry(timeline, &chosen_path);
    assert_eq!(
        own.limit_bytes,
        Some(LOWERED_BYTES),
        "the domain's limit should be the lowered one: {}",
        pretty(own)
    );
    let samples: Vec<(i64, u64)> = own
        .samples
        .iter()
        .map(|sample| (sample.offset_ms, sample.usage_bytes))
        .collect();
    assert!(
        samples.iter().all(|&(offset_ms, _)| offset_ms <= 0),
        "every sample is from before the kill: {samples:?}"
    );
    // From before the lowering: the cgroup was sampled all along.
    let growth_ms = i64::try_from(released.elapsed().as_millis()).unwrap_or(i64::MAX);
    assert!(
        samples[0].0 < -(growth_ms + PICK_UP.as_millis() as i64),
        "the recording should reach back before the lowering ({} ms before the kill): \
         {samples:?}",
        growth_ms + PICK_UP.as_millis() as i64
    );
    // The growth is sampled densely from its start: the lowered limit was known, and its
    // cgroup watched closely, before the growth began a second after the lowering. Had it not
    // been seen, the growth would show at most a sample or two a second.
    let baseline = samples[0].1;
    let growing: Vec<(i64, u64)> = samples
        .iter()
        .copied()
        .filter(|&(_, usage)| usage > baseline + MIB)
        .collect();
    assert!(
        growing.len() >= 5,
        "at least 5 samples of the growth to the new limit: {samples:?}"
    );
    assert!(
        growing[0].1 <= LOWERED_BYTES / 4,
        "the first sample of the growth should come within its first quarter: {samples:?}"
    );
    let widest_gap = growing
        .windows(2)
        .map(|pair| pair[1].0 - pair[0].0)
        .max()
        .unwrap_or(0);
    assert!(
        widest_gap <= 400,
        "the growth should be sampled every 100 ms or so, the widest gap is {widest_gap} ms: \
         {samples:?}"
    );
    assert!(
        growing[growing.len() - 1].1 >= LOWERED_BYTES / 2,
        "the samples should show the approach to the new limit: {samples:?}"
    );
    assert!(
        verdict.contains("before the kill") && verdict.contains("grew from"),
        "the verdict should tell the growth before the kill: {verdict}"
    );

    agent.stop();
    node.remove();
}
