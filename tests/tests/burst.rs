//! Twenty OOM kills back to back, in twenty cgroups: none lost, none doubled, none mixed up.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use oomtrace_tests::{Agent, Hog, MemoryCgroup, pretty, require_root};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const HOGS: usize = 20;
const LIMIT_BYTES: u64 = 32 << 20;

#[test]
fn burst_of_kills_is_reported_once_each() {
    require_root();
    let cgroups: Vec<MemoryCgroup> = (0..HOGS)
        .map(|_| MemoryCgroup::create(LIMIT_BYTES))
        .collect();
    let mut agent = Agent::start();

    // All spawned and placed first, then released together, so the kills come close together.
    let mut hogs: Vec<Hog> = cgroups
        .iter()
        .map(|cgroup| Hog::spawn_held_in(HOG, cgroup))
        .collect();
    for hog in &mut hogs {
        hog.release();
    }
    let memcg_id_by_pid: BTreeMap<u32, u64> = hogs
        .iter()
        .zip(&cgroups)
        .map(|(hog, cgroup)| (hog.pid(), cgroup.memcg_id()))
        .collect();
    let hog_pids: Vec<u32> = hogs.iter().map(Hog::pid).collect();
    for hog in hogs {
        hog.wait_oom_killed(Duration::from_secs(30));
    }

    let kills = agent.wait_for_kills(&hog_pids, Duration::from_secs(60));
    assert_eq!(
        kills.len(),
        HOGS,
        "oom_kill records for the {HOGS} hogs within 60 s: {}",
        pretty(&kills)
    );
    let stopped = agent.stop();

    let our_kills: Vec<_> = stopped
        .kills()
        .filter(|kill| {
            kill.victim
                .process
                .pid
                .is_some_and(|pid| memcg_id_by_pid.contains_key(&pid))
        })
        .collect();
    assert_eq!(
        our_kills.len(),
        HOGS,
        "exactly one oom_kill record per hog: {}",
        pretty(&our_kills)
    );
    let victim_pids: BTreeSet<u32> = our_kills
        .iter()
        .filter_map(|kill| kill.victim.process.pid)
        .collect();
    let expected_pids: BTreeSet<u32> = memcg_id_by_pid.keys().copied().collect();
    assert_eq!(
        victim_pids, expected_pids,
        "the victims should be the hogs, each once"
    );
    for kill in &our_kills {
        let Some(pid) = kill.victim.process.pid else {
            unreachable!("filtered by pid above")
        };
        assert_eq!(
            kill.victim.memcg.as_ref().and_then(|memcg| memcg.id),
            Some(memcg_id_by_pid[&pid]),
            "hog {pid}'s own memcg in {}",
            pretty(kill)
        );
        assert_eq!(
            kill.capture.ringbuf_dropped_total,
            Some(0),
            "records dropped, per {}",
            pretty(kill)
        );
    }

    // The agent sees every kill on the host: its count must match what it printed, which is
    // exactly HOGS when nothing else ran out of memory meanwhile.
    let agent_stopped = stopped.agent_stopped();
    let totals = agent_stopped.totals;
    let all_kills = stopped.kills().count() as u64;
    assert!(all_kills >= HOGS as u64);
    assert_eq!(
        totals.oom_kills,
        all_kills,
        "oom_kills should count the printed oom_kill records: {}",
        pretty(agent_stopped)
    );
    assert_eq!(
        totals.decode_errors,
        0,
        "decode errors, per {}",
        pretty(agent_stopped)
    );
    assert_eq!(
        totals.ringbuf_dropped_total,
        0,
        "records dropped, per {}",
        pretty(agent_stopped)
    );
}
