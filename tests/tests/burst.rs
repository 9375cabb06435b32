//! Twenty OOM kills back to back, in twenty cgroups: none lost, none doubled, none mixed up.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use oomtrace_tests::{Agent, Hog, MemoryCgroup, field_u64, require_root};

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
    let memcg_id_by_pid: BTreeMap<u64, u64> = hogs
        .iter()
        .zip(&cgroups)
        .map(|(hog, cgroup)| (u64::from(hog.pid()), cgroup.memcg_id()))
        .collect();
    let hog_pids: Vec<u32> = hogs.iter().map(Hog::pid).collect();
    for hog in hogs {
        hog.wait_oom_killed(Duration::from_secs(30));
    }

    let kills = agent.wait_for_kills(&hog_pids, Duration::from_secs(60));
    assert_eq!(
        kills.len(),
        HOGS,
        "oom_kill records for the {HOGS} hogs within 60 s: {kills:#?}"
    );
    let stopped = agent.stop();

    let our_kills: Vec<_> = stopped
        .kills()
        .filter(|kill| memcg_id_by_pid.contains_key(&field_u64(kill, "victim.process.pid")))
        .collect();
    assert_eq!(
        our_kills.len(),
        HOGS,
        "exactly one oom_kill record per hog: {our_kills:#?}"
    );
    let victim_pids: BTreeSet<u64> = our_kills
        .iter()
        .map(|kill| field_u64(kill, "victim.process.pid"))
        .collect();
    let expected_pids: BTreeSet<u64> = memcg_id_by_pid.keys().copied().collect();
    assert_eq!(
        victim_pids, expected_pids,
        "the victims should be the hogs, each once"
    );
    for kill in &our_kills {
        let pid = field_u64(kill, "victim.process.pid");
        assert_eq!(
            field_u64(kill, "victim.memcg.id"),
            memcg_id_by_pid[&pid],
            "hog {pid}'s own memcg in {kill:#}"
        );
        assert_eq!(
            field_u64(kill, "capture.ringbuf_dropped_total"),
            0,
            "records dropped, per {kill:#}"
        );
    }

    // The agent sees every kill on the host: its count must match what it printed, which is
    // exactly HOGS when nothing else ran out of memory meanwhile.
    let agent_stopped = stopped.agent_stopped();
    let all_kills = stopped.kills().count() as u64;
    assert!(all_kills >= HOGS as u64);
    assert_eq!(
        field_u64(agent_stopped, "oom_kills"),
        all_kills,
        "oom_kills should count the printed oom_kill records: {agent_stopped:#}"
    );
    assert_eq!(
        field_u64(agent_stopped, "decode_errors"),
        0,
        "decode errors, per {agent_stopped:#}"
    );
    assert_eq!(
        field_u64(agent_stopped, "ringbuf_dropped_total"),
        0,
        "records dropped, per {agent_stopped:#}"
    );
}
