//! The agent with only the capabilities its deployment grants (README "Deploy", deploy/): root
//! with CAP_BPF, CAP_PERFMON, CAP_SYS_RESOURCE and CAP_SYSLOG in its bounding set and nothing else, as
//! `--cap-drop=ALL --cap-add=…` and `CapabilityBoundingSet=` leave it. It catches a real OOM
//! kill so, names a capability taken away, and gives up what it holds once attached.

use std::time::Duration;

use oomtrace::attribute::DomainKind;
use oomtrace_tests::capabilities::{
    self, CapSets, DOCUMENTED, OnlyCapabilities, expected_after_attach, of_every_thread,
};
use oomtrace_tests::{Agent, Hog, MemoryCgroup, or_dash, pretty, require_root};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const LIMIT_BYTES: u64 = 64 << 20;
const DROP_LOG: &str = "capabilities after attach:";

#[test]
fn documented_capabilities_catch_a_memcg_oom_kill() {
    require_root();
    let cgroup = MemoryCgroup::create(LIMIT_BYTES);
    let only = OnlyCapabilities::new(&DOCUMENTED);
    let mut agent = Agent::start_wrapped(&only.wrapper(), &[]);

    let hog_pid = Hog::spawn_in(HOG, &cgroup).wait_oom_killed(Duration::from_secs(30));
    let kills = agent.wait_for_kills(&[hog_pid], Duration::from_secs(30));
    let [kill] = kills.as_slice() else {
        panic!(
            "expected one oom_kill record for the hog (pid {hog_pid}) from the agent with only \
             {:?}, got {}: {}\nits log:\n{}",
            only.granted,
            kills.len(),
            pretty(&kills),
            agent.log()
        );
    };
    let memcg_path = kill
        .victim
        .memcg
        .as_ref()
        .and_then(|memcg| memcg.path.clone());
    println!(
        "agent with only {:?}: tier {}, victim {} in memcg {}",
        only.granted,
        or_dash(kill.capture.tier),
        hog_pid,
        or_dash(memcg_path.as_ref()),
    );
    assert!(
        kill.capture.tier.is_some(),
        "the capture tier, in {}",
        pretty(kill)
    );
    assert_eq!(
        memcg_path,
        Some(cgroup.path()),
        "the victim's memory cgroup, in {}",
        pretty(kill)
    );
    assert_eq!(
        kill.domain.as_ref().map(|domain| domain.kind),
        Some(DomainKind::Cgroup),
        "whose limit was hit, read from cgroupfs without privileges, in {}",
        pretty(kill)
    );
    let stopped = agent.stop();
    assert_eq!(stopped.kills_of(hog_pid).len(), 1, "one record for the hog");
}

#[test]
fn without_cap_bpf_it_names_cap_bpf() {
    refused_without("bpf", "CAP_BPF");
}

#[test]
fn without_cap_perfmon_it_names_cap_perfmon() {
    refused_without("perfmon", "CAP_PERFMON");
}

/// The documented set less `missing`: the agent must exit 1 at once, naming it (and only it).
fn refused_without(missing: &str, name: &str) {
    require_root();
    let wanted: Vec<&'static str> = DOCUMENTED
        .into_iter()
        .filter(|cap| *cap != missing)
        .collect();
    let only = OnlyCapabilities::new(&wanted);
    let (status, stderr) = only.run_agent_to_exit(Duration::from_secs(30));
    println!("with only {:?}: {status}; {}", only.granted, stderr.trim());
    assert_eq!(status.code(), Some(1), "exit status; stderr:\n{stderr}");
    let expected = format!("oomtrace: error: missing capability {name}:");
    assert!(
        stderr.contains(&expected),
        "stderr should contain `{expected}`:\n{stderr}"
    );
    for other in ["CAP_BPF", "CAP_PERFMON"]
        .into_iter()
        .filter(|n| *n != name)
    {
        assert!(
            !stderr.contains(&format!("missing capability {other}")),
            "{other} was granted, yet named missing:\n{stderr}"
        );
    }
}

#[test]
fn documented_capabilities_are_dropped_after_attach() {
    require_root();
    let only = OnlyCapabilities::new(&DOCUMENTED);
    let agent = Agent::start_wrapped(&only.wrapper(), &[]);
    agent.wait_for_log(DROP_LOG, Duration::from_secs(10));
    let expected = expected_after_attach();
    let threads = of_every_thread(agent.pid());
    println!(
        "agent pid {} with only {:?}: {} threads; {:?}; log: {}",
        agent.pid(),
        only.granted,
        threads.len(),
        threads[0].1,
        drop_line(&agent)
    );
    for (tid, sets) in &threads {
        expect_dropped(&agent, *tid, sets, expected);
        // Without CAP_SETPCAP the bounding set stays as granted; no_new_privs (checked above)
        // keeps an exec from regaining any of it.
        assert_eq!(
            sets.bounding,
            only.mask(),
            "thread {tid}: the bounding set as granted"
        );
    }
    assert!(
        drop_line(&agent).contains("no_new_privs set"),
        "the log says why the bounding set stays: {}",
        drop_line(&agent)
    );
    agent.stop();
}

#[test]
fn a_root_agent_drops_its_bounding_set_too() {
    require_root();
    let agent = Agent::start();
    agent.wait_for_log(DROP_LOG, Duration::from_secs(10));
    let expected = expected_after_attach();
    let threads = of_every_thread(agent.pid());
    println!(
        "root agent pid {}: {:?}; log: {}",
        agent.pid(),
        threads[0].1,
        drop_line(&agent)
    );
    for (tid, sets) in &threads {
        expect_dropped(&agent, *tid, sets, expected);
        assert_eq!(
            sets.bounding, expected,
            "thread {tid}: with CAP_SETPCAP the bounding set is cut to what is kept"
        );
    }
    agent.stop();
}

/// Effective and permitted are exactly what this kernel needs kept, the rest empty, and the
/// log says so.
fn expect_dropped(agent: &Agent, tid: u32, sets: &CapSets, expected: u64) {
    assert_eq!(
        (sets.effective, sets.permitted),
        (expected, expected),
        "thread {tid} of the agent: CapEff/CapPrm after attach should be {expected:#x}; {sets:?}; \
         its log:\n{}",
        agent.log()
    );
    assert_eq!(
        (sets.inheritable, sets.ambient),
        (0, 0),
        "thread {tid}: nothing inheritable or ambient; {sets:?}"
    );
    assert!(sets.no_new_privs, "thread {tid}: no_new_privs; {sets:?}");
    let line = drop_line(agent);
    let says = if expected == 0 {
        "keeping none;"
    } else {
        assert_eq!(expected, capabilities::mask(&["bpf"]));
        "keeping CAP_BPF ("
    };
    assert!(line.contains(says), "the log should say `{says}`: {line}");
}

fn drop_line(agent: &Agent) -> String {
    agent
        .log()
        .lines()
        .find(|line| line.contains(DROP_LOG))
        .unwrap_or_default()
        .to_owned()
}
