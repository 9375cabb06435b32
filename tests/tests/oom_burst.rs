//! A burst: one `memory.oom.group` cgroup of 100 members OOM-killed at once, in one invocation
//! of the OOM killer. 99 hold 1 MiB each; the last grows until the limit. Every kill must be
//! captured, named and placed, and nothing dropped.
//!
//! `cargo xtask bench` boots this same test in a guest for its figures, which it prints before
//! it asserts (see `oomtrace_tests::burst`), with knobs from the environment:
//! `OOMTRACE_BURST_MEMBERS` (100 by default), `OOMTRACE_BURST_AGENT_ARGS` (more arguments for
//! the agent, separated by commas) and `OOMTRACE_BURST_PEER` (`bcc` or `bpftrace`, run next to
//! the agent; a peer that cannot start ends the test early, passing: that is a figure).
//!
//! `memory.oom.group` is a cgroup v2 file: on a host whose memory controller is on v1 (hybrid)
//! this skips; the kernel matrix's guests run it.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt as _;
use std::thread;
use std::time::{Duration, Instant};

use oomtrace::kmsg::parse::OomLine;
use oomtrace::record::Body;
use oomtrace_tests::burst::{BurstFigures, Peer, memory_status};
use oomtrace_tests::{Agent, Hog, Kmsg, MemoryCgroup, hog_binary, pretty, require_root, skip};

const DEFAULT_MEMBERS: usize = 100;
const MIB: u64 = 1 << 20;
/// Room above what the holders hold when the grower starts.
const HEADROOM_BYTES: u64 = 8 * MIB;

#[test]
fn a_burst_of_group_kills_is_captured_whole() {
    require_root();
    if !oomtrace_tests::memory_controller_is_v2() {
        skip("memory.oom.group needs the v2 memory controller; this host's is on cgroup v1");
        return;
    }
    let wanted: usize = std::env::var("OOMTRACE_BURST_MEMBERS").map_or(DEFAULT_MEMBERS, |n| {
        n.parse().expect("OOMTRACE_BURST_MEMBERS: a number")
    });
    let agent_args = std::env::var("OOMTRACE_BURST_AGENT_ARGS").unwrap_or_default();
    let agent_args: Vec<&str> = agent_args
        .split(',')
        .filter(|arg| !arg.is_empty())
        .collect();
    let peer_name = std::env::var("OOMTRACE_BURST_PEER").ok();

    let mut cgroup = MemoryCgroup::unlimited();
    cgroup.set_oom_group();
    let mut kmsg = Kmsg::open_at_end();
    let agent = Agent::start_with(&agent_args);
    let mut figures = BurstFigures {
        tier: Some(agent.agent_started().capture.tier.to_string()),
        agent_status: memory_status(agent.pid()),
        ..BurstFigures::default()
    };
    let peer = match peer_name.as_deref().map(Peer::start) {
        None => None,
        Some(Ok(peer)) => Some(peer),
        // The figures say why; there is no burst to measure.
        Some(Err(failed)) => {
            figures.peer = Some(failed);
            figures.print();
            agent.stop();
            return;
        }
    };

    // The holders join the group before they run, so nothing they touch is charged elsewhere.
    let holders = wanted - 1;
    let mut members: Vec<Hog> = (0..holders)
        .map(|_| Hog::spawn_started_in(hog_binary(), &cgroup, &["--max-mib", "1", "--hold"]))
        .collect();
    // Every holder in the group and its MiB charged; then a limit a little above that.
    let deadline =
        Instant::now() + Duration::from_secs(300) + Duration::from_millis(100) * wanted as u32;
    while cgroup.procs().len() < holders || cgroup.stat("anon").unwrap_or(0) < holders as u64 * MIB
    {
        assert!(
            Instant::now() < deadline,
            "the {holders} holders did not all start: {} in the group, anon {:?}",
            cgroup.procs().len(),
            cgroup.stat("anon")
        );
        thread::sleep(Duration::from_millis(50));
    }
    let before = cgroup.usage_bytes();
    cgroup.set_limit(before + HEADROOM_BYTES);
    println!(
        "{holders} holders hold {} MiB; the grower starts",
        before / MIB
    );
    let grower = Hog::spawn_with(hog_binary(), &cgroup, &["--max-mib", "256"]);
    let grower_pid = grower.pid();
    members.push(grower);
    let member_pids: Vec<u32> = members.iter().map(Hog::pid).collect();
    let pids: BTreeSet<u32> = member_pids.iter().copied().collect();

    figures.members = members.len();
    for member in members {
        let status = member.wait(Duration::from_secs(120));
        if status.signal() == Some(libc::SIGKILL) {
            figures.killed += 1;
        }
    }
    figures.memcg_oom_kills = cgroup.event_count("oom_kill");
    figures.peer = peer.map(|peer| peer.stop(&member_pids));
    figures.agent_status_after = memory_status(agent.pid());
    // Under the guests' emulation the agent writes some 40 kills a second: a burst of a
    // thousand may still be draining when the members are gone.
    let stopped = agent.stop_within(
        libc::SIGTERM,
        Duration::from_secs(20) + Duration::from_millis(50) * wanted as u32,
    );

    // The kernel log as it is after the burst: what it still holds of the kills.
    kmsg.read_all();
    figures.kmsg_killed_lines = kmsg
        .killed_processes()
        .iter()
        .map(|killed| killed.pid)
        .filter(|pid| pids.contains(pid))
        .collect::<BTreeSet<u32>>()
        .len();
    figures.kmsg_oom_kill_lines = kmsg
        .oom_lines()
        .filter(|line| matches!(line, OomLine::Constraint(_)))
        .count();

    let victims_of = |of_kind: fn(&Body) -> bool| -> BTreeSet<u32> {
        stopped
            .records
            .iter()
            .filter(|record| of_kind(&record.body))
            .filter_map(|record| match &record.body {
                Body::OomKill(kill) | Body::OomMarkExiting(kill) => kill.victim.process.pid,
                _ => None,
            })
            .filter(|pid| pids.contains(pid))
            .collect()
    };
    let captured = victims_of(|body| matches!(body, Body::OomKill(_)));
    let marked = victims_of(|body| matches!(body, Body::OomMarkExiting(_)));
    figures.captured = captured.len();
    figures.recorded = captured.union(&marked).count();
    let incidents: Vec<_> = stopped
        .records
        .iter()
        .filter_map(|record| match &record.body {
            Body::OomIncident(incident)
                if incident
                    .victims
                    .iter()
                    .any(|victim| pids.contains(&victim.process.pid)) =>
            {
                Some(incident)
            }
            _ => None,
        })
        .collect();
    figures.incidents = incidents.len();
    figures.incident_victims = incidents
        .iter()
        .map(|incident| incident.victims.len())
        .sum();
    figures.dropped = stopped.agent_stopped().totals.ringbuf_dropped_total;
    figures.print();

    assert_eq!(figures.killed, wanted, "members SIGKILLed: {figures:?}");
    assert_eq!(
        (figures.captured, figures.dropped),
        (wanted, 0),
        "kills captured and records dropped: {figures:?}"
    );
    if figures.incidents > 0 {
        assert_eq!(
            (figures.incidents, figures.incident_victims),
            (1, wanted),
            "one incident with every member: {figures:?}"
        );
    }
    // Every victim named and placed, whichever part of the agent read it on this kernel.
    for kill in stopped.kills().filter(|kill| {
        kill.victim
            .process
            .pid
            .is_some_and(|pid| pids.contains(&pid))
    }) {
        assert!(
            kill.victim.process.comm() == Some("oomtrace-hog")
                && kill
                    .victim
                    .memcg
                    .as_ref()
                    .is_some_and(|memcg| memcg.path == Some(cgroup.path()))
                && kill
                    .victim
                    .process
                    .memory
                    .is_some_and(|memory| memory.anon_rss_bytes.is_some()),
            "a victim without its name, memcg or RSS: {}",
            pretty(kill)
        );
        assert_eq!(
            kill.trigger
                .as_ref()
                .and_then(|trigger| trigger.process.pid),
            Some(grower_pid),
            "the grower invoked the OOM killer: {}",
            pretty(kill)
        );
    }
}
