//! `memory.oom.group`: when one of a cgroup's five processes outgrows the limit, the kernel
//! kills all five in one invocation of the OOM killer. One incident, five victims, each named
//! and measured as the kernel logged it, not only the one it chose; one snapshot for all.
//!
//! `memory.oom.group` is a cgroup v2 file: on a host whose memory controller is on v1 (hybrid)
//! this skips; the kernel matrix's guests run it.

use std::collections::BTreeSet;
use std::time::Duration;

use oomtrace::capture::Tier;
use oomtrace::record::Body;
use oomtrace_tests::{
    Agent, Hog, Hook, KernelLook, Kmsg, MemoryCgroup, hog_binary, pretty, require_root, skip,
};

const LIMIT_BYTES: u64 = 64 << 20;
const STEADY_MEMBERS: usize = 4;
const STEADY_MIB: &str = "4";
const KILL_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn a_group_kill_is_one_incident_with_every_member_named() {
    require_root();
    let kernel = KernelLook::now();
    if !kernel.memory_cgroup_v2 {
        skip("memory.oom.group needs the v2 memory controller; this host's is on cgroup v1");
        return;
    }
    let expected = kernel.expected(None, Hook::Auto);
    let cgroup = MemoryCgroup::create(LIMIT_BYTES);
    cgroup.set_oom_group();
    let mut kmsg = Kmsg::open_at_end();
    let mut agent = Agent::start();
    let started = agent.agent_started().clone();
    assert_eq!(started.capture.tier, expected.tier, "{}", pretty(&started));

    // Four steady members holding 4 MiB each, and one that grows until the limit.
    let mut members: Vec<Hog> = (0..STEADY_MEMBERS)
        .map(|_| {
            let mut hog =
                Hog::spawn_with(hog_binary(), &cgroup, &["--hold", "--max-mib", STEADY_MIB]);
            hog.wait_holding();
            hog
        })
        .collect();
    let grower = Hog::spawn_with(hog_binary(), &cgroup, &["--max-mib", "256"]);
    let grower_pid = grower.pid();
    members.push(grower);
    let member_pids: BTreeSet<u32> = members.iter().map(Hog::pid).collect();
    for member in members {
        member.wait_oom_killed(KILL_TIMEOUT);
    }
    let logged: Vec<_> = member_pids
        .iter()
        .map(|&pid| kmsg.find_killed(pid, Duration::from_secs(10)))
        .collect();

    let pids: Vec<u32> = member_pids.iter().copied().collect();
    let kills = agent.wait_for_kills(&pids, Duration::from_secs(30));
    assert_eq!(
        kills.len(),
        member_pids.len(),
        "one oom_kill per member: {}",
        pretty(&kills)
    );
    let killed: BTreeSet<u32> = kills
        .iter()
        .filter_map(|kill| kill.victim.process.pid)
        .collect();
    assert_eq!(
        killed, member_pids,
        "the victims are the members, each once"
    );

    for kill in &kills {
        let context = pretty(kill);
        let pid = kill.victim.process.pid.unwrap_or_default();
        assert_eq!(
            kill.victim.memcg.as_ref().and_then(|memcg| memcg.id),
            Some(cgroup.memcg_id()),
            "in {context}"
        );
        assert_eq!(
            kill.trigger
                .as_ref()
                .and_then(|trigger| trigger.process.pid),
            Some(grower_pid),
            "the member that outgrew the limit invoked the OOM killer: {context}"
        );
        // Every member named and measured, not only the one `oc->chosen` names.
        let line = logged.iter().find(|line| line.pid == pid);
        line.unwrap_or_else(|| panic!("no `Killed process {pid}` line"))
            .assert_victim_as_logged(kill);
        let chosen = kill
            .victim
            .badness
            .is_some_and(|badness| !badness.estimated);
        kernel.assert_victim_parts(&started, kill, chosen);
    }

    if expected.tier == Tier::Full {
        // One invocation, one moment: the members share the snapshot.
        let snapshots: BTreeSet<Option<u64>> = kills
            .iter()
            .map(|kill| kill.explanation.as_ref().and_then(|e| e.snapshot.ktime_ns))
            .collect();
        assert!(
            snapshots.len() == 1 && !snapshots.contains(&None),
            "the group's kills should share one snapshot, they have {snapshots:?}"
        );
        // The kernel's own badness for the one it chose; the others' estimated.
        let chosen = kills
            .iter()
            .filter(|kill| {
                kill.victim
                    .badness
                    .is_some_and(|badness| !badness.estimated)
            })
            .count();
        assert_eq!(
            chosen,
            1,
            "victims with the kernel's own badness: {}",
            pretty(&kills)
        );
        let ids: BTreeSet<Option<&String>> = kills
            .iter()
            .map(|kill| {
                kill.incident
                    .as_ref()
                    .and_then(|incident| incident.id.as_ref())
            })
            .collect();
        let [Some(id)] = ids.into_iter().collect::<Vec<_>>()[..] else {
            panic!(
                "the group's kills should share one incident: {}",
                pretty(&kills)
            );
        };
        let id = id.clone();
        let incident = agent
            .wait_for_record(
                |record| match &record.body {
                    Body::OomIncident(incident) if incident.incident.id.as_ref() == Some(&id) => {
                        Some(incident.clone())
                    }
                    _ => None,
                },
                Duration::from_secs(10),
            )
            .unwrap_or_else(|| panic!("no oom_incident {id}"));
        let context = pretty(&incident);
        assert!(incident.ended, "{context}");
        assert_eq!(
            incident
                .incident
                .domain
                .as_ref()
                .and_then(|domain| domain.cgroup.as_ref())
                .and_then(|cgroup| cgroup.id),
            Some(cgroup.memcg_id()),
            "{context}"
        );
        assert_eq!(incident.trigger.process.pid, Some(grower_pid), "{context}");
        let victims: BTreeSet<u32> = incident.victims.iter().map(|v| v.process.pid).collect();
        assert_eq!(victims, member_pids, "the incident's victims: {context}");
    }

    let stopped = agent.stop();
    let incidents = stopped
        .records
        .iter()
        .filter(|record| {
            matches!(&record.body, Body::OomIncident(incident)
            if incident.victims.iter().any(|victim| member_pids.contains(&victim.process.pid)))
        })
        .count();
    assert_eq!(
        incidents,
        usize::from(expected.tier == Tier::Full),
        "oom_incident records for the group"
    );
    stopped.assert_every_kill_counted_and_none_dropped();
}
