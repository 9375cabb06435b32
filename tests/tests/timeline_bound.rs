//! The memory timeline's bound reached: with `--timeline-max-cgroups 8` and 20 limited cgroups,
//! a kill in one the recorder does not sample has no samples, and its record says which cgroup
//! was not covered and why (the bound, and its value), and the verdict says so in words: never a
//! silent empty timeline. The startup record and log say what the bound left out.

use std::time::Duration;

use oomtrace::record::timeline::NotCoveredReason;
use oomtrace_tests::{Agent, BusyNode, pretty, require_root};

const MIB: u64 = 1 << 20;
const CGROUPS: usize = 20;
const BOUND: u64 = 8;
const LIMIT_BYTES: u64 = 32 * MIB;
/// What each of the others holds: they are fuller than the chosen one, whose process waits.
const SMALL_MIB: &str = "2";
/// The chosen cgroup fills its limit in about a second, well before the recorder ranks its
/// cgroups again (every 30 s).
const GROWER_MIB_PER_SECOND: &str = "32";

#[test]
fn a_kill_past_the_timeline_bound_says_its_cgroup_was_not_covered_and_why() {
    require_root();
    // The chosen cgroup is the emptiest limit of all, so the last the recorder would take.
    let (node, mut grower) =
        BusyNode::start(CGROUPS, LIMIT_BYTES, SMALL_MIB, GROWER_MIB_PER_SECOND);
    let chosen_path = node.chosen_path();

    let bound = BOUND.to_string();
    let mut agent = Agent::start_with(&["--timeline-max-cgroups", &bound]);
    let started = agent.agent_started().clone();
    let Some(coverage) = &started.timeline else {
        panic!("no timeline in {}", pretty(&started));
    };
    println!("agent_started.timeline: {}", pretty(coverage));
    assert_eq!(coverage.max_cgroups, BOUND, "{}", pretty(coverage));
    assert!(
        coverage.cgroups_sampled <= BOUND,
        "no more cgroups sampled than the bound: {}",
        pretty(coverage)
    );
    assert!(
        coverage.limits >= CGROUPS as u64 && coverage.limits_sampled < CGROUPS as u64,
        "the bound should leave some of the {CGROUPS} limits out: {}",
        pretty(coverage)
    );
    assert!(
        coverage.not_covered >= CGROUPS as u64 - BOUND,
        "what the bound leaves out should be counted: {}",
        pretty(coverage)
    );
    let warning = agent
        .log()
        .lines()
        .find(|line| line.contains(&format!("past its bound of {BOUND}")))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            panic!(
                "the agent did not log what its bound of {BOUND} left out:\n{}",
                agent.log()
            )
        });
    println!("{warning}");

    std::thread::sleep(Duration::from_secs(1));
    grower.release();
    let grower_pid = grower.wait_oom_killed(Duration::from_secs(30));
    let kills = agent.wait_for_kills(&[grower_pid], Duration::from_secs(30));
    let kill = &kills[0];
    let Some(explanation) = &kill.explanation else {
        panic!("no explanation in {}", pretty(kill));
    };
    let Some(timeline) = &explanation.timeline else {
        panic!(
            "no timeline in {}: a kill past the bound should have one that says why it is empty",
            pretty(kill)
        );
    };
    let verdict = &explanation.verdict;
    println!("verdict: {verdict}");
    println!("timeline: {}", pretty(timeline));

    assert!(
        timeline
            .cgroups
            .iter()
            .all(|entry| entry.cgroup.path != chosen_path),
        "{chosen_path} was past the bound, yet has samples: {}",
        pretty(timeline)
    );
    let missing = timeline
        .not_covered
        .iter()
        .find(|missing| missing.cgroup.path == chosen_path)
        .unwrap_or_else(|| {
            panic!(
                "the timeline should name {chosen_path} as not covered: {}",
                pretty(timeline)
            )
        });
    assert_eq!(
        missing.reason,
        NotCoveredReason::CgroupBound,
        "{}",
        pretty(timeline)
    );
    assert!(
        missing.detail.contains(&format!("at most {BOUND} cgroups"))
            && missing.detail.contains("--timeline-max-cgroups"),
        "the reason should name the bound and its option: {}",
        missing.detail
    );
    assert!(
        verdict.contains("The memory timeline has no samples of cgroup")
            && verdict.contains("--timeline-max-cgroups"),
        "the verdict should say why there is no lead-up: {verdict}"
    );

    agent.stop();
    node.remove();
}
