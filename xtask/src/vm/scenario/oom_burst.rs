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
    /// The agent's memory lines of /proc/<pid>/status once attached.
    pub agent_status: Option<String>,
    /// The same once the burst is over, before the agent stops.
    pub agent_status_after: Option<String>,
    /// The kprobe peer that ran next to the agent (`oomtrace.peer=`), if one did.
    pub peer: Option<PeerFigures>,
}

/// bcc's `oomkill` or bpftrace's `oomkill.bt` next to the agent in the same boot.
pub struct PeerFigures {
    pub name: String,
    /// Spawn to the line the peer prints once attached, in seconds of guest uptime; or why the
    /// peer did not get there, with the end of its stderr.
    pub attach_secs: Result<f64, String>,
    /// Its memory lines of /proc/<pid>/status once attached.
    pub status: Option<String>,
    /// `OOM kill of PID` lines it printed.
    pub kill_lines: usize,
    /// Distinct burst members among the pids those lines name.
    pub members_reported: usize,
}

/// The victim pids in bcc's or bpftrace's `oomkill` lines (`... OOM kill of PID 123 ("x") ...`).
pub fn peer_victims(output: &str) -> Vec<u64> {
    output
        .lines()
        .filter_map(|line| {
            let rest = line.split_once("OOM kill of PID ")?.1;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

fn peer_figures(report: &Report, members: &BTreeSet<u64>) -> Option<PeerFigures> {
    let name: String = report.fact("peer_name").ok()?;
    let log_tail = || {
        let log = report.section("peer-log").unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|line| !line.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(3)..].join(" / ")
    };
    let start: String = report
        .fact("peer_start")
        .unwrap_or_else(|_| "no outcome".to_owned());
    let attach_secs = if start == "ok" {
        match (
            report.fact::<f64>("peer_spawn_at"),
            report.fact::<f64>("peer_ready_at"),
        ) {
            (Ok(spawn), Ok(ready)) => Ok(ready - spawn),
            _ => Err("no spawn or ready time".to_owned()),
        }
    } else {
        Err(format!("{start}: {}", log_tail()))
    };
    let victims = peer_victims(report.section("peer-out").unwrap_or_default());
    Some(PeerFigures {
        name,
        attach_secs,
        status: report.section("peer-status").ok().map(str::to_owned),
        kill_lines: victims.len(),
        members_reported: victims
            .iter()
            .filter(|pid| members.contains(pid))
            .collect::<BTreeSet<_>>()
            .len(),
    })
}

pub fn figures(report: &Report) -> anyhow::Result<BurstFigures> {
    // A peer that could not start ends the boot before the burst: its figures are the result.
    if let Some(peer) = peer_figures(report, &BTreeSet::new())
        && peer.attach_secs.is_err()
    {
        return Ok(BurstFigures::peer_failed(peer, report));
    }
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
        agent_status: report.section("agent-status").ok().map(str::to_owned),
        agent_status_after: report.section("agent-status-after").ok().map(str::to_owned),
        peer: peer_figures(report, &members),
    })
}

impl BurstFigures {
    fn peer_failed(peer: PeerFigures, report: &Report) -> Self {
        Self {
            members: 0,
            killed: 0,
            memcg_oom_kills: None,
            captured: 0,
            recorded: 0,
            incident_victims: 0,
            incidents: 0,
            dropped: 0,
            kmsg_killed_lines: 0,
            kmsg_oom_kill_lines: 0,
            tier: report.tier(),
            agent_status: report.section("agent-status").ok().map(str::to_owned),
            agent_status_after: None,
            peer: Some(peer),
        }
    }
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
    // Every victim named and placed, whichever part of the agent read it on this kernel.
    for kill in report.agent_records()?.of_kind("oom_kill") {
        let pid = u64_field(kill, "victim.process.pid")?;
        ensure!(
            field(kill, "victim.process.executable.name")? == "oomtrace-hog"
                && field(kill, "victim.memcg.path")?.is_string()
                && field(kill, "victim.process.memory.anon_rss_bytes")?.is_u64(),
            "victim {pid} without its name, memcg or RSS: {kill}"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_victims_come_from_bcc_and_bpftrace_lines() {
        let output = "Tracing OOM kills... Ctrl-C to stop.
10:01:02 Triggered by PID 812 (\"oomtrace-hog\"), OOM kill of PID 345 (\"oomtrace-hog\"), 2097152 pages, loadavg: 0.10 0.05 0.01 1/90 812
10:01:02 Triggered by PID 812 (\"oomtrace-hog\"), OOM kill of PID 346 (\"oomtrace-hog\"), 2097152 pages, loadavg: 3.11 0.87 0.30 2/1093 1201
";
        assert_eq!(peer_victims(output), [345, 346]);
    }
}
