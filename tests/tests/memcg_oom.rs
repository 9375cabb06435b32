//! One OOM kill in a memory cgroup, checked field by field against the kernel's own account.

use std::time::Duration;

use oomtrace::capture::Tier;
use oomtrace::record::party::Memory;
use oomtrace_tests::{Agent, Hog, Kmsg, MemoryCgroup, pretty, require_root};

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
            "expected one oom_kill record for the hog (pid {hog_pid}), got {}: {}",
            kills.len(),
            pretty(&kills)
        );
    };
    let context = pretty(kill);
    let victim = &kill.victim;

    // Who was killed.
    assert_eq!(victim.process.pid, Some(hog_pid), "victim pid in {context}");
    assert_eq!(
        victim.thread.map(|thread| thread.id),
        Some(hog_pid),
        "victim thread: the hog has one thread, in {context}"
    );
    let expected_comm: String = "oomtrace-hog".chars().take(TASK_COMM_LEN).collect();
    assert_eq!(killed.comm, expected_comm, "the kernel's comm for the hog");
    assert_eq!(
        victim.process.comm(),
        Some(killed.comm.as_str()),
        "victim comm in {context}"
    );

    // How big it was: the kernel's anon-rss for this kill, within 10%.
    killed.assert_anon_rss_matches(kill);

    // Where it lived.
    let memcg = victim.memcg.as_ref();
    assert_eq!(
        memcg.and_then(|memcg| memcg.path.clone()),
        Some(cgroup.path()),
        "victim memcg path in {context}"
    );
    assert_eq!(
        memcg.and_then(|memcg| memcg.id),
        Some(cgroup.memcg_id()),
        "victim memcg id (inode of {}) in {context}",
        cgroup.memcg_dir().display(),
    );
    if let Some(cgroup2_id) = cgroup.cgroup2_id() {
        let cgroup2 = victim.cgroup.as_ref();
        assert_eq!(
            cgroup2.and_then(|cgroup2| cgroup2.id),
            Some(cgroup2_id),
            "victim cgroup2 id in {context}"
        );
        assert_eq!(
            cgroup2.and_then(|cgroup2| cgroup2.path.clone()),
            Some(cgroup.path()),
            "victim cgroup2 path in {context}"
        );
    }

    // The hog's own allocation invoked the OOM killer: it is the trigger too.
    let Some(trigger) = &kill.trigger else {
        panic!("no trigger in {context}");
    };
    assert_eq!(
        trigger.process.pid,
        Some(hog_pid),
        "trigger pid in {context}"
    );
    assert_eq!(
        trigger.memcg.as_ref().and_then(|memcg| memcg.id),
        Some(cgroup.memcg_id()),
        "trigger memcg id in {context}"
    );

    // What this kernel's tier knows of the invocation. In the full tier: the kernel's own domain
    // and badness. Below it: no incident, and a badness estimated from the reported memory.
    let Some(tier) = kill.capture.tier else {
        panic!("no capture tier in {context}");
    };
    let Some(badness) = victim.badness else {
        panic!("no victim badness in {context}");
    };
    match tier {
        Tier::Full => {
            let domain = kill
                .incident
                .as_ref()
                .and_then(|incident| incident.domain.as_ref());
            assert_eq!(
                domain
                    .and_then(|domain| domain.cgroup.as_ref())
                    .and_then(|cgroup| cgroup.id),
                Some(cgroup.memcg_id()),
                "the OOM domain is the test cgroup, in {context}"
            );
            assert!(!badness.estimated, "in {context}");
        }
        tier => {
            assert_eq!(kill.incident, None, "no incident in tier {tier}: {context}");
            assert!(badness.estimated, "in {context}");
            let Some(Memory {
                anon_rss_bytes: Some(anon_rss_bytes),
                file_rss_bytes: Some(file_rss_bytes),
                shmem_rss_bytes: Some(shmem_rss_bytes),
                page_tables_bytes: Some(page_tables_bytes),
                ..
            }) = victim.process.memory
            else {
                panic!("the victim's memory is not all there in {context}");
            };
            let kb = |bytes: u64| bytes / 1024;
            // oom_badness() with oom_score_adj 0 and no swap, in 4 KiB pages.
            let expected = (kb(anon_rss_bytes) + kb(file_rss_bytes) + kb(shmem_rss_bytes)) / 4
                + kb(page_tables_bytes) / 4;
            assert_eq!(
                u64::try_from(badness.points).ok(),
                Some(expected),
                "estimated badness in {context}"
            );
        }
    }

    assert_eq!(
        kill.capture.ringbuf_dropped_total,
        Some(0),
        "records dropped before this kill, in {context}"
    );

    let stopped = agent.stop();
    let hog_kills = stopped.kills_of(hog_pid);
    assert_eq!(
        hog_kills.len(),
        1,
        "exactly one oom_kill record for the hog (pid {hog_pid}), got {}",
        pretty(&hog_kills)
    );
    let agent_stopped = stopped.agent_stopped();
    assert_eq!(
        agent_stopped.totals.ringbuf_dropped_total,
        0,
        "records dropped, per {}",
        pretty(agent_stopped)
    );
}
