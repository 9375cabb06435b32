//! `--warn-pressure` before a kill: in one parent limit a grower climbs towards it while, in a
//! limit of its own, a steady neighbour sits well below. The agent writes a `memory_pressure`
//! record for the parent (its working set past 90 % of the limit, growing, the grower named
//! as the fastest) before the OOM kill that follows, and none for the neighbour.

use std::time::Duration;

use serde_json::Value;

use oomtrace_tests::{Agent, Hog, MemoryCgroup, field, field_str, require_root};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const LIMIT_BYTES: u64 = 128 << 20;
const STEADY_MIB: &str = "32";
/// The grower passes 90 % of the limit after about 7 s.
const GROWER_MIB_PER_SECOND: u64 = 16;
const MIB: f64 = (1 << 20) as f64;

fn is_warning_for(record: &Value, path: &str) -> bool {
    record["kind"] == "memory_pressure"
        && record
            .pointer("/domain/cgroup/path")
            .and_then(Value::as_str)
            == Some(path)
}

#[test]
fn a_limit_about_to_be_hit_is_warned_of_before_the_kill() {
    require_root();
    let parent = MemoryCgroup::create(LIMIT_BYTES);
    let grower_cgroup = parent.child("grower");
    let neighbour = MemoryCgroup::create(LIMIT_BYTES);
    let mut agent = Agent::start_with(&["--warn-pressure"]);

    let mut steady = Hog::spawn_with(HOG, &neighbour, &["--hold", "--max-mib", STEADY_MIB]);
    steady.wait_holding();
    let grower = Hog::spawn_with(
        HOG,
        &grower_cgroup,
        &["--mib-per-second", &GROWER_MIB_PER_SECOND.to_string()],
    );
    let grower_pid = grower.wait_oom_killed(Duration::from_secs(30));
    let kills = agent.wait_for_kills(&[grower_pid], Duration::from_secs(30));
    let kill = &kills[0];
    let warning = agent
        .wait_for_record_where(
            |record| is_warning_for(record, &parent.path()),
            Duration::from_secs(5),
        )
        .unwrap_or_else(|| {
            panic!(
                "no memory_pressure record for {}; the agent's log:\n{}",
                parent.path(),
                agent.log()
            )
        });
    println!("warning: {warning:#}");

    // Before the kill, by the kernel's clock.
    let warned_ns = field(&warning, "ktime_ns").as_u64().expect("ktime_ns");
    let killed_ns = field(kill, "ktime_ns").as_u64().expect("ktime_ns");
    assert!(
        warned_ns < killed_ns,
        "the warning ({warned_ns} ns) should come before the kill ({killed_ns} ns)"
    );
    println!(
        "warned {:.2} s before the kill",
        (killed_ns - warned_ns) as f64 / 1e9
    );

    assert_eq!(field_str(&warning, "reason"), "usage");
    assert_eq!(field(&warning, "thresholds.usage_percent"), 90);
    assert_eq!(field(&warning, "domain.memory.limit_bytes"), LIMIT_BYTES);
    let percent = field(&warning, "domain.memory.percent_of_limit")
        .as_f64()
        .expect("percent_of_limit");
    assert!(
        (90.0..=100.0).contains(&percent),
        "past the threshold, within the limit: {percent} %"
    );
    let held = field(&warning, "domain.memory.working_set_bytes")
        .as_u64()
        .expect("the controller's memory.stat gives the working set");
    assert!(held as f64 >= 0.9 * LIMIT_BYTES as f64, "{held} bytes");

    // Growing at about the grower's pace, and the grower named as the one growing.
    let rate = |pointer: &str| {
        field(&warning, pointer)
            .as_i64()
            .unwrap_or_else(|| panic!("{pointer} in {warning:#}")) as f64
            / MIB
    };
    let expected = GROWER_MIB_PER_SECOND as f64;
    for pointer in [
        "domain.growth.bytes_per_second",
        "grower.growth.bytes_per_second",
    ] {
        let measured = rate(pointer);
        assert!(
            (expected / 2.0..=expected * 2.0).contains(&measured),
            "{pointer}: {measured:.1} MiB/s, the grower grows {expected} MiB/s"
        );
    }
    assert_eq!(
        field_str(&warning, "grower.cgroup.path"),
        grower_cgroup.path()
    );

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
    let neighbour_warnings: Vec<&Value> = stopped
        .records
        .iter()
        .filter(|record| is_warning_for(record, &neighbour.path()))
        .collect();
    assert!(
        neighbour_warnings.is_empty(),
        "the steady neighbour was warned of: {neighbour_warnings:#?}"
    );
    drop(steady);
}
