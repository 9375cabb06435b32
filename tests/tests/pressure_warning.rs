//! `--warn-pressure` before a kill: in one parent limit a grower climbs towards it while, in a
//! limit of its own, a steady neighbour sits well below. The agent writes a `memory_pressure`
//! record for the parent (its working set past 90 % of the limit, growing, the grower named
//! as the fastest) before the OOM kill that follows, and none for the neighbour. On cgroup v2
//! the warning also says how long the parent's tasks stalled, from its `memory.pressure`.

use std::time::Duration;

use oomtrace::record::pressure::PressureReason;
use oomtrace::record::{Body, MemoryPressureRecord, Record};
use oomtrace_tests::{
    Agent, Hog, MemoryCgroup, hog_binary, memory_controller_is_v2, pretty, require_root,
};

const LIMIT_BYTES: u64 = 128 << 20;
const STEADY_MIB: &str = "32";
/// The grower passes 90 % of the limit after about 7 s.
const GROWER_MIB_PER_SECOND: u64 = 16;
const MIB: f64 = (1 << 20) as f64;

/// `record`, if it is a `memory_pressure` record for the cgroup at `path`.
fn warning_for<'a>(record: &'a Record, path: &str) -> Option<&'a MemoryPressureRecord> {
    match &record.body {
        Body::MemoryPressure(warning) if warning.domain.cgroup.path == path => Some(warning),
        _ => None,
    }
}

#[test]
fn a_limit_about_to_be_hit_is_warned_of_before_the_kill() {
    require_root();
    let parent = MemoryCgroup::create(LIMIT_BYTES);
    let grower_cgroup = parent.child("grower");
    let neighbour = MemoryCgroup::create(LIMIT_BYTES);
    let mut agent = Agent::start_with(&["--warn-pressure"]);

    let mut steady = Hog::spawn_with(
        hog_binary(),
        &neighbour,
        &["--hold", "--max-mib", STEADY_MIB],
    );
    steady.wait_holding();
    let grower = Hog::spawn_with(
        hog_binary(),
        &grower_cgroup,
        &["--mib-per-second", &GROWER_MIB_PER_SECOND.to_string()],
    );
    let grower_pid = grower.wait_oom_killed(Duration::from_secs(30));
    let kills = agent.wait_for_kills(&[grower_pid], Duration::from_secs(30));
    let kill = &kills[0];
    let warning = agent
        .wait_for_record(
            |record| warning_for(record, &parent.path()).cloned(),
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| {
            panic!(
                "no memory_pressure record for {}; the agent's log:\n{}",
                parent.path(),
                agent.log()
            )
        });
    let context = pretty(&warning);
    println!("warning: {context}");

    // Before the kill, by the kernel's clock.
    let warned_ns = warning.ktime_ns;
    let killed_ns = kill.ktime_ns;
    assert!(
        warned_ns < killed_ns,
        "the warning ({warned_ns} ns) should come before the kill ({killed_ns} ns)"
    );
    println!(
        "warned {:.2} s before the kill",
        (killed_ns - warned_ns) as f64 / 1e9
    );

    assert_eq!(warning.reason, PressureReason::Usage, "{context}");
    assert_eq!(warning.thresholds.usage_percent, 90, "{context}");
    let memory = warning.domain.memory;
    assert_eq!(memory.limit_bytes, LIMIT_BYTES, "{context}");
    let percent = memory.percent_of_limit;
    assert!(
        (90.0..=100.0).contains(&percent),
        "past the threshold, within the limit: {percent} %"
    );
    let held = memory
        .working_set_bytes
        .expect("the controller's memory.stat gives the working set");
    assert!(held as f64 >= 0.9 * LIMIT_BYTES as f64, "{held} bytes");

    // Growing at about the grower's pace, and the grower named as the one growing.
    let Some(grower) = &warning.grower else {
        panic!("no grower in {context}");
    };
    let Some(domain_growth) = warning.domain.growth else {
        panic!("no domain growth in {context}");
    };
    let expected = GROWER_MIB_PER_SECOND as f64;
    for (what, growth) in [("the domain", domain_growth), ("the grower", grower.growth)] {
        let measured = growth.bytes_per_second as f64 / MIB;
        assert!(
            (expected / 2.0..=expected * 2.0).contains(&measured),
            "{what}: {measured:.1} MiB/s, the grower grows {expected} MiB/s"
        );
    }
    assert_eq!(grower.cgroup.path, grower_cgroup.path(), "{context}");
    // Cgroup v2: the parent's memory.pressure over the last second, as its stall threshold
    // reads it.
    if memory_controller_is_v2() {
        let Some(stall) = warning.domain.stall else {
            panic!("no stall from the parent's memory.pressure in {context}");
        };
        for percent in [stall.some_percent, stall.full_percent] {
            assert!((0.0..=100.0).contains(&percent), "{context}");
        }
        assert!(stall.full_percent <= stall.some_percent, "{context}");
    }

    // Said in the log too, once.
    let stopped = agent.stop();
    let lines: Vec<&str> = stopped
        .stderr
        .lines()
        .filter(|line| line.contains("memory pressure:") && line.contains(&parent.path()))
        .collect();
    assert_eq!(lines.len(), 1, "one warning line: {lines:#?}");
    assert!(
        lines[0].contains("fastest grower") && lines[0].contains("no kill yet"),
        "{}",
        lines[0]
    );
    // The neighbour, at a quarter of its limit, is never warned of.
    let neighbour_warnings: Vec<&MemoryPressureRecord> = stopped
        .records
        .iter()
        .filter_map(|record| warning_for(record, &neighbour.path()))
        .collect();
    assert!(
        neighbour_warnings.is_empty(),
        "the steady neighbour was warned of: {}",
        pretty(&neighbour_warnings)
    );
    drop(steady);
}
