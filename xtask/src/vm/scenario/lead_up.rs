//! `lead-up`: the memory timeline on cgroup v2 (per-cgroup `memory.pressure`, `memory.events`
//! notifications), and one snapshot per invocation in the full tier, where the invocation is
//! the kernel's own incident (the members of a `memory.oom.group` share one: see oom_group.rs).

use anyhow::{Context as _, ensure};
use serde_json::Value;

use super::memcg_oom::{KILLED_STATUS, u64_field};
use super::{Records, Report, Scenario, field};

pub const SCENARIO: Scenario = Scenario {
    name: "lead-up",
    script: include_str!("../../../vm/scenarios/lead-up.sh"),
    check,
};

const PARENT: &str = "/oomtrace-lead";
const MIB: u64 = 1 << 20;

fn check(report: &Report) -> anyhow::Result<()> {
    for fact in ["grower_status", "first_status", "second_status"] {
        let status: i32 = report.fact(fact)?;
        ensure!(status == KILLED_STATUS, "{fact} is {status}, not SIGKILL");
    }
    let log = report.section("agent-log")?;
    let recorder = log
        .lines()
        .find(|line| line.contains("memory timeline:"))
        .context("the agent logged no `memory timeline:` line")?;
    println!("{recorder}");
    ensure!(
        recorder.contains("memory.events notifications"),
        "on cgroup v2 the recorder should wake on memory.events: {recorder}"
    );
    let records = report.agent_records()?;
    check_timeline(&records, report.fact("grower_pid")?)?;
    check_snapshots(
        &records,
        report.fact("first_pid")?,
        report.fact("second_pid")?,
    )
}

fn kill_of(records: &Records, pid: u64) -> anyhow::Result<&Value> {
    records
        .of_kind("oom_kill")
        .into_iter()
        .find(|kill| u64_field(kill, "victim.process.pid").is_ok_and(|victim| victim == pid))
        .with_context(|| format!("no oom_kill of pid {pid}"))
}

/// `(offset_ms, usage_bytes)` of the timeline's entry for `path`.
fn samples(timeline: &Value, path: &str) -> anyhow::Result<Vec<(i64, u64)>> {
    let entry = timeline["cgroups"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| entry.pointer("/cgroup/path").and_then(Value::as_str) == Some(path))
        .with_context(|| format!("no timeline entry for {path} in {timeline}"))?;
    Ok(entry["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["offset_ms"].as_i64()?, s["usage_bytes"].as_u64()?)))
        .collect())
}

fn check_timeline(records: &Records, grower: u64) -> anyhow::Result<()> {
    let kill = kill_of(records, grower)?;
    let timeline = field(kill, "explanation.timeline")?;
    println!(
        "verdict: {}",
        field(kill, "explanation.verdict")?.as_str().unwrap_or("?")
    );
    ensure!(
        timeline["pressure_source"] == PARENT,
        "the domain's own memory.pressure should be read: {}",
        timeline["pressure_source"]
    );
    let grown = samples(timeline, &format!("{PARENT}/grower"))?;
    let rises = grown
        .windows(2)
        .filter(|pair| pair[1].1 > pair[0].1)
        .count();
    ensure!(
        rises >= 5 && grown.iter().all(|&(offset, _)| offset <= 0),
        "the grower should rise across 5 samples or more before the kill: {grown:?}"
    );
    let held: Vec<u64> = samples(timeline, &format!("{PARENT}/steady"))?
        .into_iter()
        .map(|(_, usage)| usage)
        .filter(|&usage| usage >= 23 * MIB)
        .collect();
    let spread = held.iter().max().zip(held.iter().min());
    ensure!(
        held.len() >= 2 && spread.is_some_and(|(high, low)| high - low <= 2 * MIB),
        "the steady member should stay flat at its 24 MiB: {held:?}"
    );
    Ok(())
}

fn check_snapshots(records: &Records, first: u64, second: u64) -> anyhow::Result<()> {
    let (first, second) = (kill_of(records, first)?, kill_of(records, second)?);
    ensure!(
        field(first, "incident.id")? != field(second, "incident.id")?,
        "two invocations, two incidents"
    );
    // Under emulation a hog takes a second to fill its limit: the gap is longer than on the
    // host, where the 0.4 s case is tested; what counts here is the kernel's two incidents.
    let apart = u64_field(second, "ktime_ns")? - u64_field(first, "ktime_ns")?;
    println!("lead-up: two incidents {apart} ns apart");
    for kill in [first, second] {
        ensure!(
            u64_field(kill, "explanation.snapshot.ktime_ns")? >= u64_field(kill, "ktime_ns")?,
            "each kill's snapshot is taken after it: {kill}"
        );
    }
    Ok(())
}
