//! `memcg-oom`: one process outgrows its cgroup v2 `memory.max` and is OOM-killed; the agent
//! must report exactly that kill, with the kernel's pids, cgroup and memory figures.

use anyhow::{Context as _, ensure};

use super::{Report, Scenario, expect_field, field};

pub const SCENARIO: Scenario = Scenario {
    name: "memcg-oom",
    script: include_str!("../../../vm/scenarios/memcg-oom.sh"),
    check,
};

/// The cgroup the script makes, relative to the cgroup2 root.
const CGROUP_PATH: &str = "/oomtrace-vm";
/// The agent reads the RSS from the task; the kernel log prints it a moment later, from the
/// same counters: they differ by what the process faulted in between, if anything.
const RSS_TOLERANCE_PERCENT: u64 = 10;
/// SIGKILL, as the shell reports it.
const KILLED_STATUS: i32 = 128 + 9;

fn check(report: &Report) -> anyhow::Result<()> {
    let hog_pid: u64 = report.fact("hog_pid")?;
    let memcg_id: u64 = report.fact("memcg_id")?;
    let hog_status: i32 = report.fact("hog_status")?;
    ensure!(
        hog_status == KILLED_STATUS,
        "the hog exited with status {hog_status}, not {KILLED_STATUS} (SIGKILL): \
         the OOM killer did not end it"
    );

    let records = report.agent_records()?;
    let kills = records.of_kind("oom_kill");
    ensure!(
        kills.len() == 1,
        "expected exactly one `oom_kill` record, got {}",
        kills.len()
    );
    let kill = kills[0];
    expect_field(kill, "victim.process.pid", hog_pid)?;
    expect_field(kill, "trigger.process.pid", hog_pid)?;
    expect_field(kill, "victim.memcg.id", memcg_id)?;
    expect_field(kill, "victim.memcg.path", CGROUP_PATH)?;
    expect_field(kill, "capture.ringbuf_dropped_total", 0)?;

    let anon_rss_bytes = field(kill, "victim.process.memory.anon_rss_bytes")?
        .as_u64()
        .context("`victim.process.memory.anon_rss_bytes` is not an unsigned integer")?;
    let agent_kib = anon_rss_bytes / 1024;
    let kernel_kib = killed_anon_rss_kib(report.section("kmsg")?, hog_pid)?;
    ensure!(
        agent_kib.abs_diff(kernel_kib) * 100 <= kernel_kib * RSS_TOLERANCE_PERCENT,
        "the agent says anon RSS {agent_kib} KiB, the kernel log {kernel_kib} KiB: \
         more than {RSS_TOLERANCE_PERCENT}% apart"
    );

    let agent_status: i32 = report.fact("agent_status")?;
    ensure!(
        agent_status == 0,
        "the agent exited with status {agent_status} after SIGTERM"
    );
    let stopped = records.of_kind("agent_stopped");
    ensure!(
        stopped.len() == 1,
        "expected one `agent_stopped` record after SIGTERM, got {}",
        stopped.len()
    );
    expect_field(stopped[0], "oom_kills", 1)
}

/// The `anon-rss:NNNkB` of the kernel's `Killed process <pid> (...)` line.
fn killed_anon_rss_kib(kmsg: &str, pid: u64) -> anyhow::Result<u64> {
    let needle = format!("Killed process {pid} (");
    let line = kmsg
        .lines()
        .find(|line| line.contains(&needle))
        .with_context(|| format!("no `{needle}` line in the kernel log"))?;
    let anon_rss = line
        .split_once("anon-rss:")
        .and_then(|(_, rest)| rest.split_once("kB"))
        .map(|(kib, _)| kib)
        .with_context(|| format!("no `anon-rss:NNNkB` in {line:?}"))?;
    anon_rss
        .parse()
        .with_context(|| format!("anon-rss {anon_rss:?} in {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anon_rss_comes_from_the_victims_line() {
        let kmsg = "[ 9.1] oomtrace-hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL)\n\
            [ 9.2] Memory cgroup out of memory: Killed process 81 (oomtrace-hog) \
            total-vm:68024kB, anon-rss:64760kB, file-rss:1020kB, shmem-rss:0kB, UID:0 \
            pgtables:172kB oom_score_adj:0\n";
        assert_eq!(killed_anon_rss_kib(kmsg, 81).unwrap(), 64760);
        assert!(killed_anon_rss_kib(kmsg, 8).is_err());
    }
}
