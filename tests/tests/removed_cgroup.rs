//! A kill whose memory cgroup is gone before the agent reads it: the agent must report the
//! cgroup as it was at kill time, not look it up afterwards.

use std::time::Duration;

use oomtrace_tests::{Agent, Hog, MemoryCgroup, pretty, require_root};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const LIMIT_BYTES: u64 = 64 << 20;

#[test]
fn kill_in_a_since_removed_cgroup_keeps_its_path_and_id() {
    require_root();
    let mut cgroup = MemoryCgroup::create(LIMIT_BYTES);
    let memcg_path = cgroup.path();
    let memcg_id = cgroup.memcg_id();
    let mut agent = Agent::start();

    // Frozen, the agent cannot read the kill before the cgroup is gone: the record waits in
    // the ring buffer, which makes the race this test is about certain rather than likely.
    agent.suspend();
    let hog_pid = Hog::spawn_in(HOG, &cgroup).wait_oom_killed(Duration::from_secs(30));

    cgroup.remove();
    assert!(
        !cgroup.memcg_dir().exists(),
        "{} should be gone",
        cgroup.memcg_dir().display()
    );
    if let Some(cgroup2_dir) = cgroup.cgroup2_dir() {
        assert!(
            !cgroup2_dir.exists(),
            "{} should be gone",
            cgroup2_dir.display()
        );
    }
    agent.resume();

    let kills = agent.wait_for_kills(&[hog_pid], Duration::from_secs(30));
    let [kill] = kills.as_slice() else {
        panic!(
            "expected one oom_kill record for the hog (pid {hog_pid}), got {}: {}",
            kills.len(),
            pretty(&kills)
        );
    };
    let context = pretty(kill);
    let memcg = kill.victim.memcg.as_ref();
    assert_eq!(
        memcg.and_then(|memcg| memcg.path.as_ref()),
        Some(&memcg_path),
        "the removed memcg's path in {context}"
    );
    assert_eq!(
        memcg.and_then(|memcg| memcg.id),
        Some(memcg_id),
        "the removed memcg's former inode in {context}"
    );
    if let Some(cgroup2_id) = cgroup.cgroup2_id() {
        let cgroup2 = kill.victim.cgroup.as_ref();
        assert_eq!(
            cgroup2.and_then(|cgroup2| cgroup2.path.as_ref()),
            Some(&memcg_path),
            "the removed cgroup2 path in {context}"
        );
        assert_eq!(
            cgroup2.and_then(|cgroup2| cgroup2.id),
            Some(cgroup2_id),
            "the removed cgroup2 cgroup's former inode in {context}"
        );
    }

    let stopped = agent.stop();
    assert_eq!(
        stopped.kills_of(hog_pid).len(),
        1,
        "exactly one oom_kill record for the hog (pid {hog_pid})"
    );
}
