//! `oom-group`: with `memory.oom.group`, one OOM kills every process of the cgroup in one
//! invocation of `oom_kill_process`: one incident, five victims.

use std::collections::BTreeSet;

use anyhow::{Context as _, ensure};

use super::kmsg::expect_victim_as_logged;
use super::memcg_oom::{KILLED_STATUS, expect_stopped_cleanly, expect_victim_parts, u64_field};
use super::{Report, Scenario, expect_field, field};

pub const SCENARIO: Scenario = Scenario {
    name: "oom-group",
    script: include_str!("../../../vm/scenarios/oom-group.sh"),
    check,
};

fn check(report: &Report) -> anyhow::Result<()> {
    let members: BTreeSet<u64> = pid_list(&report.fact::<String>("member_pids")?)?;
    ensure!(
        members.len() == 5,
        "the script started {} members",
        members.len()
    );
    let statuses: String = report.fact("member_statuses")?;
    ensure!(
        statuses
            .split(',')
            .all(|status| status == KILLED_STATUS.to_string()),
        "every member should be SIGKILLed, their statuses were {statuses}"
    );
    let memcg_id: u64 = report.fact("memcg_id")?;
    let grower: u64 = report.fact("grower_pid")?;

    let records = report.agent_records()?;
    let incidents = records.of_kind("oom_incident");
    ensure!(
        incidents.len() == 1,
        "expected one `oom_incident` for the group, got {}",
        incidents.len()
    );
    let incident = incidents[0];
    expect_field(incident, "ended", true)?;
    expect_field(incident, "incident.domain.cgroup.id", memcg_id)?;
    // The member that outgrew the limit invoked the OOM killer.
    expect_field(incident, "trigger.process.pid", grower)?;
    let victims: BTreeSet<u64> = field(incident, "victims")?
        .as_array()
        .context("`victims` is not an array")?
        .iter()
        .map(|victim| u64_field(victim, "process.pid"))
        .collect::<anyhow::Result<_>>()?;
    ensure!(
        victims == members,
        "the incident's victims are {victims:?}, the group's members {members:?}"
    );

    let id = field(incident, "incident.id")?;
    let kills = records.of_kind("oom_kill");
    ensure!(
        kills.len() == 5,
        "expected 5 `oom_kill` records, got {}",
        kills.len()
    );
    let started = records.started()?;
    let kmsg = report.section("kmsg")?;
    let mut killed = BTreeSet::new();
    for kill in &kills {
        expect_field(kill, "incident.id", id.clone())?;
        expect_field(kill, "victim.memcg.id", memcg_id)?;
        expect_field(kill, "trigger.process.pid", grower)?;
        // Every member named and measured, not only the one `oc->chosen` names.
        expect_victim_as_logged(kill, kmsg)?;
        let chosen = field(kill, "victim.badness.estimated")? == false;
        expect_victim_parts(started, kill, chosen)?;
        killed.insert(u64_field(kill, "victim.process.pid")?);
    }
    let chosen = kills
        .iter()
        .filter(|kill| field(kill, "victim.badness.estimated").is_ok_and(|e| e == false))
        .count();
    ensure!(
        chosen == 1,
        "{chosen} victims have the kernel's own badness, expected one"
    );
    ensure!(
        killed == members,
        "kills of {killed:?}, members {members:?}"
    );
    // One invocation, one moment: the members share the snapshot.
    let snapshots: BTreeSet<u64> = kills
        .iter()
        .map(|kill| u64_field(kill, "explanation.snapshot.ktime_ns"))
        .collect::<anyhow::Result<_>>()?;
    ensure!(
        snapshots.len() == 1,
        "the group's kills should share one snapshot, they have {snapshots:?}"
    );
    expect_stopped_cleanly(report, 5)
}

fn pid_list(list: &str) -> anyhow::Result<BTreeSet<u64>> {
    list.split(',')
        .map(|pid| pid.parse().with_context(|| format!("pid {pid:?}")))
        .collect()
}
