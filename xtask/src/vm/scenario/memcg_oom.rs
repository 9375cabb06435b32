//! `memcg-oom`: one process outgrows its cgroup v2 `memory.max` and is OOM-killed; the agent
//! must report exactly that kill, with the kernel's pids, cgroup, memory figures and badness.
//! `memcg-oom-kprobe` is the same with `oom_kill_process` hooked by kprobe;
//! `memcg-oom-no-function-tracing` without `oom_kill_process` hooked at all.

use anyhow::{Context as _, ensure};

use super::kmsg::{expect_victim_as_logged, task_dump_badness};
use super::{Report, Scenario, expect_field, field};

pub const SCENARIO: Scenario = Scenario {
    name: "memcg-oom",
    script: include_str!("../../../vm/scenarios/memcg-oom.sh"),
    check: |report| check(report, "fentry"),
};

pub const KPROBE_SCENARIO: Scenario = Scenario {
    name: "memcg-oom-kprobe",
    script: include_str!("../../../vm/scenarios/memcg-oom-kprobe.sh"),
    check: |report| check(report, "kprobe"),
};

pub const NO_FUNCTION_TRACING_SCENARIO: Scenario = Scenario {
    name: "memcg-oom-no-function-tracing",
    script: include_str!("../../../vm/scenarios/memcg-oom-no-function-tracing.sh"),
    check: check_no_function_tracing,
};

/// The cgroup the script makes, relative to the cgroup2 root.
const CGROUP_PATH: &str = "/oomtrace-vm";
/// SIGKILL, as the shell reports it.
pub const KILLED_STATUS: i32 = 128 + 9;

fn check(report: &Report, function_hook: &str) -> anyhow::Result<()> {
    let hog_pid: u64 = report.fact("hog_pid")?;
    let memcg_id: u64 = report.fact("memcg_id")?;
    let hog_status: i32 = report.fact("hog_status")?;
    ensure!(
        hog_status == KILLED_STATUS,
        "the hog exited with status {hog_status}, not {KILLED_STATUS} (SIGKILL): \
         the OOM killer did not end it"
    );

    // Root in the guest: once attached the agent gives up every capability, the bounding set
    // too; from 5.19 on, reading its maps needs none (before, CAP_BPF would be kept).
    let kernel: String = report.fact("kernel")?;
    if kernel_at_least(&kernel, (5, 19)) {
        let log = report.section("agent-log")?;
        let dropped = log
            .lines()
            .find(|line| line.contains("capabilities after attach:"))
            .context("the agent logged no `capabilities after attach:` line")?;
        ensure!(
            dropped.contains("keeping none;") && dropped.ends_with("the bounding set too"),
            "the agent should keep no capability after attach on {kernel}: {dropped}"
        );
    }

    let records = report.agent_records()?;
    let started = records.started()?;
    expect_field(started, "capture.tier", "full")?;
    expect_field(started, "capture.function_hook", function_hook)?;
    expect_check_as_run(report, started)?;

    let kill = records.only("oom_kill")?;
    expect_field(kill, "victim.process.pid", hog_pid)?;
    expect_field(kill, "trigger.process.pid", hog_pid)?;
    expect_field(kill, "victim.memcg.id", memcg_id)?;
    expect_field(kill, "victim.memcg.path", CGROUP_PATH)?;
    expect_field(kill, "capture.ringbuf_dropped_total", 0)?;

    // Whose limit: this cgroup's, as oom_control says.
    expect_field(kill, "incident.domain.kind", "cgroup")?;
    expect_field(kill, "incident.domain.cgroup.id", memcg_id)?;
    expect_field(kill, "incident.domain.cgroup.path", CGROUP_PATH)?;
    expect_field(kill, "incident.constraint", "memcg")?;
    // The same domain, named and with its limit (`memory.max` of the 64M cgroup).
    expect_field(kill, "domain.kind", "cgroup")?;
    expect_field(kill, "domain.basis", "kernel")?;
    expect_field(kill, "domain.cgroup.path", CGROUP_PATH)?;
    expect_field(kill, "domain.memory.limit_bytes", 64u64 << 20)?;
    // Read as the kill arrived: the cgroup's usage, and its counters saw the OOM.
    ensure!(
        field(kill, "domain.memory.usage_bytes")?.is_u64(),
        "the domain's usage should be read at the moment of the kill"
    );
    let ooms = field(kill, "domain.memory_events.oom")?
        .as_u64()
        .unwrap_or(0);
    ensure!(ooms >= 1, "memory.events should count the OOM, says {ooms}");

    // The kernel's badness is what its own task dump says it computed from.
    let totalpages = u64_field(kill, "incident.badness.totalpages")?;
    let points = field(kill, "incident.badness.points")?
        .as_i64()
        .context("`incident.badness.points` is not an integer")?;
    let recomputed = task_dump_badness(report.section("kmsg")?, hog_pid, totalpages)?;
    ensure!(
        points == recomputed,
        "chosen_points is {points}, the task dump gives {recomputed}"
    );
    expect_field(kill, "victim.badness.points", points)?;
    expect_field(kill, "victim.badness.estimated", false)?;

    // Name, memory, uid and oom_score_adj as the kernel logged them, and the cgroups: from the
    // tracepoint and the task at `mark_victim` where the kernel passes them, from
    // `oom_kill_process`'s `oc->chosen` and the OOM killer's SIGKILL where it passes a pid.
    expect_victim_as_logged(kill, report.section("kmsg")?)?;
    expect_field(kill, "victim.cgroup.path", CGROUP_PATH)?;
    expect_victim_parts(started, kill, true)?;

    let incidents = records.of_kind("oom_incident");
    ensure!(
        incidents.len() == 1,
        "expected one `oom_incident`, got {}",
        incidents.len()
    );
    expect_field(incidents[0], "ended", true)?;
    expect_field(
        incidents[0],
        "incident.id",
        field(kill, "incident.id")?.clone(),
    )?;
    expect_field(
        incidents[0],
        "victims",
        serde_json::json!([{"process": {"pid": hog_pid}}]),
    )?;

    expect_stopped_cleanly(report, 1)
}

/// The parts a full-tier kill must be joined from on this kernel: the task at `mark_victim`
/// where its BTF prototype passes one, else the OOM killer's SIGKILL and, for the victim it
/// chose (`chosen`: not the other members of a group kill), `oc->chosen`; the tracepoint's own
/// fields either way. A kernel whose tracepoint has its memory fields passes the task too (both
/// came with 6.9, and are backported together).
pub fn expect_victim_parts(
    started: &serde_json::Value,
    kill: &serde_json::Value,
    chosen: bool,
) -> anyhow::Result<()> {
    let argument = field(started, "capture.mark_victim_argument")?;
    let fields = field(started, "capture.tracepoint_fields")?;
    let pid_only = fields == &serde_json::json!(["pid"]);
    let parts = field(kill, "capture.parts")?;
    let has = |part: &str| {
        parts
            .as_array()
            .is_some_and(|parts| parts.iter().any(|p| p == part))
    };
    if argument == "task" {
        ensure!(
            !pid_only,
            "mark_victim passes the task but its record only the pid"
        );
        ensure!(
            has("tracepoint") && has("task"),
            "parts {parts} on a kernel passing the task"
        );
    } else {
        ensure!(
            argument == "int" && pid_only,
            "mark_victim's BTF argument is {argument}, its record has fields {fields}"
        );
        ensure!(
            has("tracepoint") && has("sigkill") && has("chosen") == chosen && !has("task"),
            "parts {parts} on a kernel passing only the pid"
        );
    }
    Ok(())
}

/// Capped below `full`: no incident and no kernel badness, but the same victim, named and
/// measured as the kernel logged it, from `mark_victim`'s task or the OOM killer's SIGKILL.
fn check_no_function_tracing(report: &Report) -> anyhow::Result<()> {
    let hog_pid: u64 = report.fact("hog_pid")?;
    let memcg_id: u64 = report.fact("memcg_id")?;
    let records = report.agent_records()?;
    let started = records.started()?;
    expect_field(started, "capture.tier", "no-function-tracing")?;
    expect_field(started, "capture.sigkill_task_hook", "tp_btf")?;
    expect_check_as_run(report, started)?;
    let kill = records.only("oom_kill")?;
    expect_field(kill, "victim.process.pid", hog_pid)?;
    expect_field(kill, "victim.memcg.id", memcg_id)?;
    expect_field(kill, "victim.memcg.path", CGROUP_PATH)?;
    expect_field(kill, "victim.cgroup.path", CGROUP_PATH)?;
    expect_field(kill, "trigger.memcg.path", CGROUP_PATH)?;
    expect_field(kill, "victim.badness.estimated", true)?;
    ensure!(
        field(kill, "incident").is_err(),
        "no incident without oom_kill_process"
    );
    expect_victim_as_logged(kill, report.section("kmsg")?)?;
    expect_victim_parts(started, kill, false)?;
    expect_stopped_cleanly(report, 1)
}

pub fn u64_field(record: &serde_json::Value, path: &str) -> anyhow::Result<u64> {
    field(record, path)?
        .as_u64()
        .with_context(|| format!("`{path}` is not an unsigned integer"))
}

/// The agent exited 0 after SIGTERM, wrote `agent_stopped` with `oom_kills` kills, lost nothing.
pub fn expect_stopped_cleanly(report: &Report, oom_kills: u64) -> anyhow::Result<()> {
    let agent_status: i32 = report.fact("agent_status")?;
    ensure!(
        agent_status == 0,
        "the agent exited with status {agent_status} after SIGTERM"
    );
    let records = report.agent_records()?;
    let stopped = records.of_kind("agent_stopped");
    ensure!(
        stopped.len() == 1,
        "expected one `agent_stopped` record after SIGTERM, got {}",
        stopped.len()
    );
    expect_field(stopped[0], "oom_kills", oom_kills)?;
    expect_field(stopped[0], "ringbuf_dropped_total", 0)
}

/// Whether `uname -r` (e.g. `6.1.0-57-cloud-amd64`) is at least `(major, minor)`.
fn kernel_at_least(release: &str, wanted: (u32, u32)) -> bool {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) >= wanted
}

/// `oomtrace check`, run with the agent's options before it started, answered that it can
/// trace here and named the capture `run` then reported in `agent_started`, to the letter.
fn expect_check_as_run(report: &Report, started: &serde_json::Value) -> anyhow::Result<()> {
    let status: i32 = report.fact("check_status")?;
    let json = report.section("check-json")?;
    ensure!(
        status == 0,
        "oomtrace check exited with {status}: {json}\n{}",
        report.section("check-log").unwrap_or_default()
    );
    let check: oomtrace::check::Report =
        serde_json::from_str(json).with_context(|| format!("check's JSON: {json}"))?;
    ensure!(check.can_trace, "check says it cannot trace: {json}");
    let reported: oomtrace::record::agent::CaptureInfo =
        serde_json::from_value(field(started, "capture")?.clone())
            .context("agent_started's capture")?;
    ensure!(
        check.capture.as_ref() == Some(&reported),
        "check's capture {:?} is not what run reported, {reported:?}",
        check.capture
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::kernel_at_least;

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(kernel_at_least("6.1.0-57-cloud-amd64", (5, 19)));
        assert!(kernel_at_least("5.19.0", (5, 19)));
        assert!(!kernel_at_least("5.15.0-91-generic", (5, 19)));
        assert!(!kernel_at_least("garbage", (5, 19)));
    }
}
