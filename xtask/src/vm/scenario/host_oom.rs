//! `host-oom`: no cgroup limit anywhere. A "db" holds most of the memory, a "builder" in
//! another cgroup allocates until the guest runs out: the db is killed, the builder is the
//! trigger, and the domain is the host. The agent, which holds little but is a process like any
//! other, is never the one killed: it set its own oom_score_adj to -1000.

use anyhow::ensure;

use super::kmsg::expect_victim_as_logged;
use super::memcg_oom::{KILLED_STATUS, expect_stopped_cleanly, expect_victim_parts};
use super::{Report, Scenario, expect_field, field};

pub const SCENARIO: Scenario = Scenario {
    name: "host-oom",
    script: include_str!("../../../vm/scenarios/host-oom.sh"),
    check,
};

/// What the builder does once the db is gone: reach its cap, say so and exit 3.
const BUILDER_DONE_STATUS: i32 = 3;

fn check(report: &Report) -> anyhow::Result<()> {
    let db: u64 = report.fact("db_pid")?;
    let builder: u64 = report.fact("builder_pid")?;
    let db_status: i32 = report.fact("db_status")?;
    let builder_status: i32 = report.fact("builder_status")?;
    ensure!(
        db_status == KILLED_STATUS && builder_status == BUILDER_DONE_STATUS,
        "expected the db killed ({KILLED_STATUS}) and the builder done ({BUILDER_DONE_STATUS}), \
         got db {db_status} and builder {builder_status}"
    );

    let agent_adj: i32 = report.fact("agent_oom_score_adj")?;
    ensure!(
        agent_adj == -1000,
        "the agent should have set its own oom_score_adj to -1000, it is {agent_adj}"
    );

    let records = report.agent_records()?;
    let kills = records.of_kind("oom_kill");
    ensure!(
        kills.len() == 1,
        "expected one `oom_kill`, got {}",
        kills.len()
    );
    let kill = kills[0];
    expect_field(kill, "victim.process.pid", db)?;
    expect_field(kill, "victim.cgroup.path", "/db")?;
    expect_victim_as_logged(kill, report.section("kmsg")?)?;
    let started = records.started()?;
    expect_victim_parts(started, kill, true)?;
    expect_field(kill, "trigger.process.pid", builder)?;
    expect_field(kill, "trigger.cgroup.path", "/builder")?;
    expect_field(kill, "incident.domain.kind", "host")?;
    expect_field(kill, "domain.kind", "host")?;
    expect_field(kill, "domain.inferred", false)?;
    ensure!(
        field(kill, "domain.memory.total_bytes")?.is_u64()
            && field(kill, "domain.memory.available_bytes")?.is_u64(),
        "a host-wide domain should carry the host's memory"
    );
    // The verdict says it in words, and the snapshot shows the builder holding memory.
    let verdict = field(kill, "explanation.verdict")?
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for expected in [
        "in cgroup /db was killed by the OOM killer",
        "The whole host ran out of memory; no cgroup limit was hit.",
        "came from pid",
        "in cgroup /builder, not in cgroup /db",
        "At that moment the biggest users were",
    ] {
        ensure!(
            verdict.contains(expected),
            "the verdict should say `{expected}`: {verdict}"
        );
    }
    let top_cgroups = field(kill, "explanation.snapshot.cgroups")?;
    ensure!(
        top_cgroups
            .as_array()
            .is_some_and(|cgroups| cgroups.iter().any(|c| c["cgroup"]["path"] == "/builder")),
        "the builder should be among the top memory users: {top_cgroups}"
    );
    expect_field(kill, "incident.constraint", "none")?;
    expect_field(kill, "victim.badness.estimated", false)?;
    expect_stopped_cleanly(report, 1)
}
