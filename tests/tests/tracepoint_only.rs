//! The lowest tier, as on a kernel without BTF: forced with `--max-tier tracepoint-only`, a memcg
//! OOM kill is still reported with what the classic tracepoint and the helpers know: the
//! victim's memory where the tracepoint carries it (6.9 on, and backports), its comm either way.

use std::time::Duration;

use oomtrace::capture::Tier;
use oomtrace_tests::{
    Agent, Hog, KernelLook, Kmsg, MemoryCgroup, hog_binary, pretty, require_root,
};
const LIMIT_BYTES: u64 = 64 << 20;

#[test]
fn tracepoint_only_tier_still_names_victim_memory_and_trigger() {
    require_root();
    let kernel = KernelLook::now();
    let cgroup = MemoryCgroup::create(LIMIT_BYTES);
    let mut kmsg = Kmsg::open_at_end();
    let mut agent = Agent::start_with(&["--max-tier", "tracepoint-only"]);

    let hog_pid = Hog::spawn_in(hog_binary(), &cgroup).wait_oom_killed(Duration::from_secs(60));
    let killed = kmsg.find_killed(hog_pid, Duration::from_secs(10));

    let kills = agent.wait_for_kills(&[hog_pid], Duration::from_secs(30));
    let [kill] = kills.as_slice() else {
        panic!(
            "expected one oom_kill record for pid {hog_pid}, got {}",
            pretty(&kills)
        );
    };
    let context = pretty(kill);

    assert_eq!(
        kill.capture.tier,
        Some(Tier::TracepointOnly),
        "in {context}"
    );
    assert_eq!(kill.victim.process.pid, Some(hog_pid), "in {context}");
    assert_eq!(
        kill.victim.process.comm(),
        Some(killed.comm.as_str()),
        "in {context}"
    );
    if kernel.mark_victim_pid_only() {
        // Before 6.9 (and its backports) the tracepoint carries only the pid, and this tier
        // reads nothing else of the victim: its comm comes from the OOM killer's SIGKILL, and
        // no memory or badness is made up.
        assert_eq!(kill.victim.process.memory, None, "in {context}");
        assert_eq!(kill.victim.badness, None, "in {context}");
    } else {
        killed.assert_anon_rss_matches(kill);
        assert_eq!(
            kill.victim.badness.map(|badness| badness.estimated),
            Some(true),
            "in {context}"
        );
    }
    // Without BTF there is no task walk: no cgroup paths, but the trigger from helpers.
    assert_eq!(kill.victim.memcg, None, "in {context}");
    let Some(trigger) = &kill.trigger else {
        panic!("no trigger in {context}");
    };
    assert_eq!(trigger.process.pid, Some(hog_pid), "in {context}");
    let Some(trigger_cgroup) = trigger.cgroup.as_ref().and_then(|cgroup| cgroup.id) else {
        panic!("no trigger cgroup id in {context}");
    };
    if let Some(cgroup2_id) = cgroup.cgroup2_id() {
        assert_eq!(
            trigger_cgroup, cgroup2_id,
            "trigger cgroup2 id in {context}"
        );
    }

    let stopped = agent.stop();
    assert_eq!(stopped.kills_of(hog_pid).len(), 1);
    assert_eq!(
        stopped.agent_stopped().totals.ringbuf_dropped_total,
        0,
        "{}",
        pretty(stopped.agent_stopped())
    );
}
