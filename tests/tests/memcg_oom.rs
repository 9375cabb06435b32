//! One OOM kill in a memory cgroup, checked field by field against the kernel's own account.

use std::time::Duration;

use oomtrace_tests::{Agent, Hog, Kmsg, MemoryCgroup, field, field_str, field_u64, require_root};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const LIMIT_BYTES: u64 = 64 << 20;
/// The kernel keeps a task's comm in 16 bytes, NUL included.
const TASK_COMM_LEN: usize = 15;

#[test]
fn memcg_oom_kill_is_reported_as_the_kernel_saw_it() {
    require_root();
    let cgroup = MemoryCgroup::create(LIMIT_BYTES);
    let mut kmsg = Kmsg::open_at_end();
    let mut agent = Agent::start();

    let hog_pid = Hog::spawn_in(HOG, &cgroup).wait_oom_killed(Duration::from_secs(30));
    let killed = kmsg.find_killed(hog_pid, Duration::from_secs(10));

    let kills = agent.wait_for_kills(&[hog_pid], Duration::from_secs(30));
    let [kill] = kills.as_slice() else {
        panic!(
            "expected one oom_kill record for the hog (pid {hog_pid}), got {}: {kills:#?}",
            kills.len()
        );
    };
    let context = || serde_json::to_string_pretty(kill).unwrap_or_default();

    // Who was killed.
    assert_eq!(
        field_u64(kill, "victim.process.pid"),
        u64::from(hog_pid),
        "victim pid in {}",
        context()
    );
    assert_eq!(
        field_u64(kill, "victim.thread.id"),
        u64::from(hog_pid),
        "victim thread: the hog has one thread, in {}",
        context()
    );
    let expected_comm: String = "oomtrace-hog".chars().take(TASK_COMM_LEN).collect();
    assert_eq!(killed.comm, expected_comm, "the kernel's comm for the hog");
    assert_eq!(
        field_str(kill, "victim.process.executable.name"),
        killed.comm,
        "victim comm in {}",
        context()
    );

    // How big it was: the kernel's anon-rss for this kill, within 10%.
    killed.assert_anon_rss_matches(kill);

    // Where it lived.
    assert_eq!(
        field_str(kill, "victim.memcg.path"),
        cgroup.path(),
        "victim memcg path in {}",
        context()
    );
    assert_eq!(
        field_u64(kill, "victim.memcg.id"),
        cgroup.memcg_id(),
        "victim memcg id (inode of {}) in {}",
        cgroup.memcg_dir().display(),
        context()
    );
    if let Some(cgroup2_id) = cgroup.cgroup2_id() {
        assert_eq!(
            field_u64(kill, "victim.cgroup.id"),
            cgroup2_id,
            "victim cgroup2 id in {}",
            context()
        );
        assert_eq!(
            field_str(kill, "victim.cgroup.path"),
            cgroup.path(),
            "victim cgroup2 path in {}",
            context()
        );
    }

    // The hog's own allocation invoked the OOM killer: it is the trigger too.
    assert_eq!(
        field_u64(kill, "trigger.process.pid"),
        u64::from(hog_pid),
        "trigger pid in {}",
        context()
    );
    assert_eq!(
        field_u64(kill, "trigger.memcg.id"),
        cgroup.memcg_id(),
        "trigger memcg id in {}",
        context()
    );

    // What this kernel's tier knows of the invocation. In the full tier: the kernel's own domain
    // and badness. Below it: no incident, and a badness estimated from the reported memory.
    match field_str(kill, "capture.tier") {
        "full" => {
            assert_eq!(
                field_u64(kill, "incident.domain.cgroup.id"),
                cgroup.memcg_id(),
                "the OOM domain is the test cgroup, in {}",
                context()
            );
            assert_eq!(
                field(kill, "victim.badness.estimated"),
                false,
                "in {}",
                context()
            );
        }
        tier => {
            assert_eq!(
                kill.get("incident"),
                None,
                "no incident in tier {tier}: {}",
                context()
            );
            assert_eq!(
                field(kill, "victim.badness.estimated"),
                true,
                "in {}",
                context()
            );
            let kb = |name: &str| field_u64(kill, &format!("victim.process.memory.{name}")) / 1024;
            // oom_badness() with oom_score_adj 0 and no swap, in 4 KiB pages.
            let expected = (kb("anon_rss_bytes") + kb("file_rss_bytes") + kb("shmem_rss_bytes"))
                / 4
                + kb("page_tables_bytes") / 4;
            assert_eq!(
                field_u64(kill, "victim.badness.points"),
                expected,
                "estimated badness in {}",
                context()
            );
        }
    }

    assert_eq!(
        field_u64(kill, "capture.ringbuf_dropped_total"),
        0,
        "records dropped before this kill, in {}",
        context()
    );

    let stopped = agent.stop();
    let hog_kills = stopped.kills_of(hog_pid);
    assert_eq!(
        hog_kills.len(),
        1,
        "exactly one oom_kill record for the hog (pid {hog_pid}), got {hog_kills:#?}"
    );
    let agent_stopped = stopped.agent_stopped();
    assert_eq!(
        field_u64(agent_stopped, "ringbuf_dropped_total"),
        0,
        "records dropped, per {agent_stopped:#}"
    );
}
