//! A kill whose memory cgroup is gone before the agent reads it: the agent must report the
//! cgroup as it was at kill time, not look it up afterwards.

use std::time::Duration;

use oomtrace_tests::{Agent, Hog, MemoryCgroup, field_str, field_u64, require_root};

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
            "expected one oom_kill record for the hog (pid {hog_pid}), got {}: {kills:#?}",
            kills.len()
        );
    };
    assert_eq!(
        field_str(kill, "victim.memcg.path"),
        memcg_path,
        "the removed memcg's path in {kill:#}"
    );
    assert_eq!(
        field_u64(kill, "victim.memcg.id"),
        memcg_id,
        "the removed memcg's former inode in {kill:#}"
    );
    if let Some(cgroup2_id) = cgroup.cgroup2_id() {
        assert_eq!(
            field_str(kill, "victim.cgroup.path"),
            memcg_path,
            "the removed cgroup2 path in {kill:#}"
        );
        assert_eq!(
            field_u64(kill, "victim.cgroup.id"),
            cgroup2_id,
            "the removed cgroup2 cgroup's former inode in {kill:#}"
        );
    }

    let stopped = agent.stop();
    assert_eq!(
        stopped.kills_of(hog_pid).len(),
        1,
        "exactly one oom_kill record for the hog (pid {hog_pid})"
    );
}
