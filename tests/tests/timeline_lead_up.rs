//! The minute before a kill: in one parent limit, a steady neighbour holds its memory while a
//! grower climbs for seconds until the limit kills it. The kill's timeline shows the grower
//! rising across many samples and the neighbour flat, and the verdict says so in words. On
//! cgroup v2 (the kernel matrix's guests) the recorder wakes on `memory.events` and reads the
//! limit's own `memory.pressure`; on a v1 host, on usage thresholds.

use std::time::Duration;

use oomtrace::record::timeline::{CgroupTimeline, Timeline};
use oomtrace_tests::{
    Agent, Hog, MemoryCgroup, hog_binary, memory_controller_is_v2, pretty, require_root,
};
const LIMIT_BYTES: u64 = 192 << 20;
const STEADY_MIB: u64 = 48;
/// The grower reaches the limit in about 4.5 s.
const GROWER_MIB_PER_SECOND: &str = "32";
const MIB: u64 = 1 << 20;
/// How far a cgroup whose process holds its memory still moves: khugepaged collapsing 512 of
/// its pages into a huge page charges the 2 MiB page before it frees the small ones (seen in the
/// guests: +2 MiB for a sample), and the kernel charges and uncharges in per-CPU batches of 64
/// pages (two CPUs here).
const FLAT_SPREAD_BYTES: u64 = 2 * MIB + 2 * 64 * 4096;

/// `(offset_ms, usage_bytes)` of a timeline cgroup.
fn samples(entry: &CgroupTimeline) -> Vec<(i64, u64)> {
    entry
        .samples
        .iter()
        .map(|sample| (sample.offset_ms, sample.usage_bytes))
        .collect()
}

fn entry<'a>(timeline: &'a Timeline, path: &str) -> &'a CgroupTimeline {
    timeline
        .cgroups
        .iter()
        .find(|entry| entry.cgroup.path == path)
        .unwrap_or_else(|| panic!("no timeline entry for {path} in:\n{}", pretty(timeline)))
}

#[test]
fn a_growing_cgroups_timeline_rises_while_its_steady_neighbour_stays_flat() {
    require_root();
    let parent = MemoryCgroup::create(LIMIT_BYTES);
    let steady_cgroup = parent.child("steady");
    let grower_cgroup = parent.child("grower");
    // The neighbour holds its memory before the agent starts, so that it is flat all through
    // the recording: under the guests' emulation filling it takes seconds, which the minute
    // before the kill would show as growth.
    let mut steady = Hog::spawn_with(
        hog_binary(),
        &steady_cgroup,
        &["--hold", "--max-mib", &STEADY_MIB.to_string()],
    );
    steady.wait_holding();
    let mut agent = Agent::start();

    // The steady neighbour's level is recorded for a while before the growth starts.
    std::thread::sleep(Duration::from_secs(3));
    let grower = Hog::spawn_with(
        hog_binary(),
        &grower_cgroup,
        &["--mib-per-second", GROWER_MIB_PER_SECOND],
    );
    let grower_pid = grower.wait_oom_killed(Duration::from_secs(60));
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

    assert_eq!(timeline.window_s, 60);
    let recorder = agent
        .log()
        .lines()
        // The startup line; with RUST_LOG=debug the recorder says more before it.
        .find(|line| line.contains("memory timeline: the "))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            panic!(
                "the agent logged no `memory timeline: the …` line:\n{}",
                agent.log()
            )
        });
    println!("{recorder}");
    if memory_controller_is_v2() {
        assert!(
            recorder.contains("memory.events notifications"),
            "on cgroup v2 the recorder should wake on memory.events: {recorder}"
        );
        assert_eq!(
            timeline.pressure_source.as_deref(),
            Some(parent.path().as_str()),
            "the limit's own memory.pressure should be read: {}",
            pretty(timeline)
        );
    }
    let grown = samples(entry(timeline, &grower_cgroup.path()));
    assert!(
        grown.iter().all(|&(offset_ms, _)| offset_ms <= 0),
        "every sample is from before the kill: {grown:?}"
    );
    let rises = grown
        .windows(2)
        .filter(|pair| pair[1].1 > pair[0].1)
        .count();
    assert!(
        rises >= 5,
        "the grower should rise across at least 5 samples, it rose across {rises}: {grown:?}"
    );
    let (first, last) = (grown[0].1, grown[grown.len() - 1].1);
    assert!(
        last >= first + 64 * MIB,
        "the grower should have grown by 64 MiB or more: {grown:?}"
    );

    // While the grower grew, its neighbour stayed where it was: from before the growth
    // started to the last sample before the kill.
    let growth_started = grown
        .iter()
        .rev()
        .find(|&&(_, usage)| usage <= first + 4 * MIB)
        .map_or(grown[0].0, |&(offset_ms, _)| offset_ms);
    let steady_samples = samples(entry(timeline, &steady_cgroup.path()));
    let held_from = steady_samples
        .iter()
        .position(|&(_, usage)| usage >= (STEADY_MIB - 1) * MIB)
        .unwrap_or_else(|| panic!("the neighbour never held its memory: {steady_samples:?}"));
    let held = &steady_samples[held_from..];
    let (low, high) = (
        held.iter().map(|&(_, usage)| usage).min().unwrap_or(0),
        held.iter().map(|&(_, usage)| usage).max().unwrap_or(0),
    );
    assert!(
        held[0].0 <= growth_started && held[held.len() - 1].0 >= grown[grown.len() - 1].0 - 1500,
        "the neighbour's recording should span the growth ({growth_started} ms on): {held:?}"
    );
    assert!(
        high - low <= FLAT_SPREAD_BYTES && low >= (STEADY_MIB - 1) * MIB,
        "the steady neighbour should stay at its {STEADY_MIB} MiB, it went from {low} to \
         {high} bytes: {held:?}"
    );

    assert!(
        verdict.contains("grew from") && verdict.contains("was flat at"),
        "the verdict should tell the growth and the flat neighbour: {verdict}"
    );

    drop(steady);
    agent.stop();
}
