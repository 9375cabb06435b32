//! `oom-burst`: one `memory.oom.group` cgroup of N members (100 unless the kernel command line
//! says `oomtrace.burst=N`) OOM-killed at once. The check wants every kill captured and nothing
//! dropped; `cargo xtask bench` boots it with N = 100, 500 and 1,000 and reports the figures.

use std::collections::BTreeSet;

use anyhow::{Context as _, ensure};

use super::memcg_oom::u64_field;
use super::{Report, Scenario, field};

pub const SCENARIO: Scenario = Scenario {
    name: "oom-burst",
    script: include_str!("../../../vm/scenarios/oom-burst.sh"),
    check,
};

/// What one burst left behind: the kernel's, the agent's and the kernel log's view of it.
pub struct BurstFigures {
    pub members: usize,
    /// Members that ended by SIGKILL.
    pub killed: usize,
    /// The memory cgroup's own `oom_kill` count (memory.events).
    pub memcg_oom_kills: Option<u64>,
    /// Distinct members with an `oom_kill` record from the agent.
    pub captured: usize,
    /// Distinct members with any victim record (`oom_kill` or `oom_mark_exiting`): what reached
    /// the agent, however the join classified it.
    pub recorded: usize,
    /// Victims listed by the agent's `oom_incident` records (full tier), all incidents together.
    pub incident_victims: usize,
    pub incidents: usize,
    /// `ringbuf_dropped_total` of the agent's `agent_stopped` record.
    pub dropped: u64,
    /// Members with a `Killed process <pid> (` line in the kernel log (dmesg after the burst).
    pub kmsg_killed_lines: usize,
    /// `oom-kill:` summary lines in the kernel log.
    pub kmsg_oom_kill_lines: usize,
    pub tier: Option<String>,
}

pub fn figures(report: &Report) -> anyhow::Result<BurstFigures> {
    let members = pid_set(&report.fact::<String>("member_pids")?)?;
    let killed: usize = report.fact("members_killed")?;
    let memcg_oom_kills = report
        .fact::<String>("memory_events")
        .ok()
        .and_then(|events| {
            events.split(',').find_map(|entry| {
                let (key, value) = entry.split_once(' ')?;
                (key == "oom_kill").then(|| value.trim().parse().ok())?
            })
        });
    let records = report.agent_records()?;
    let captured: BTreeSet<u64> = records
        .of_kind("oom_kill")
        .into_iter()
        .filter_map(|kill| u64_field(kill, "victim.process.pid").ok())
        .filter(|pid| members.contains(pid))
        .collect();
    let recorded = captured.len()
        + records
            .of_kind("oom_mark_exiting")
            .into_iter()
            .filter_map(|kill| u64_field(kill, "victim.process.pid").ok())
            .filter(|pid| members.contains(pid) && !captured.contains(pid))
            .collect::<BTreeSet<u64>>()
            .len();
    let incidents = records.of_kind("oom_incident");
    let incident_victims = incidents
        .iter()
        .filter_map(|incident| field(incident, "victims").ok()?.as_array().map(Vec::len))
        .sum();
    let stopped = records.of_kind("agent_stopped");
    let stopped = stopped
        .first()
        .context("the agent wrote no `agent_stopped` record")?;
    let dropped = u64_field(stopped, "ringbuf_dropped_total")?;
    let kmsg = report.section("kmsg")?;
    let kmsg_killed: BTreeSet<u64> = super::kmsg::killed(kmsg)
        .map(|(pid, _)| u64::from(pid))
        .filter(|pid| members.contains(pid))
        .collect();
    Ok(BurstFigures {
        members: members.len(),
        killed,
        memcg_oom_kills,
        captured: captured.len(),
        recorded,
        incident_victims,
        incidents: incidents.len(),
        dropped,
        kmsg_killed_lines: kmsg_killed.len(),
        kmsg_oom_kill_lines: super::kmsg::oom_lines(kmsg)
            .filter(|line| matches!(line, super::kmsg::OomLine::Constraint(_)))
            .count(),
        tier: report.tier(),
    })
}

fn check(report: &Report) -> anyhow::Result<()> {
    let wanted: usize = report.fact("members_wanted")?;
    let burst = figures(report)?;
    ensure!(
        burst.members == wanted,
        "the script started {} members, not {wanted}",
        burst.members
    );
    ensure!(
        burst.killed == wanted,
        "{} of {wanted} members were SIGKILLed",
        burst.killed
    );
    ensure!(
        burst.captured == wanted && burst.dropped == 0,
        "the agent captured {} of {wanted} kills and dropped {} records",
        burst.captured,
        burst.dropped
    );
    if burst.incidents > 0 {
        ensure!(
            burst.incidents == 1 && burst.incident_victims == wanted,
            "{} incidents with {} victims, expected one with {wanted}",
            burst.incidents,
            burst.incident_victims
        );
    }
    let status: i32 = report.fact("agent_status")?;
    ensure!(status == 0, "the agent exited with status {status}");
    Ok(())
}

fn pid_set(list: &str) -> anyhow::Result<BTreeSet<u64>> {
    list.split(',')
        .map(|pid| pid.parse().with_context(|| format!("pid {pid:?}")))
        .collect()
}
