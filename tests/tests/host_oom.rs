//! The whole machine runs out of memory, with no cgroup limit anywhere: a "db" holds most of
//! it, a "builder" in another cgroup allocates until nothing is left. The kernel kills the db,
//! the bigger one; the builder is the trigger, and the domain is the host. The agent, a process
//! like any other, is never the one killed: it set its own oom_score_adj to -1000.
//!
//! This takes down the machine it runs on as far as memory goes: it runs only where the runner
//! says the machine is disposable (`OOMTRACE_DISPOSABLE_MACHINE=1`: the kernel matrix's
//! guests), and skips elsewhere.

use std::os::unix::process::ExitStatusExt as _;
use std::time::Duration;

use oomtrace::attribute::DomainKind;
use oomtrace::capture::Tier;
use oomtrace_tests::{
    Agent, Hog, Hook, KernelLook, Kmsg, MemoryCgroup, disposable_machine, hog_binary, pretty,
    require_root, skip,
};

/// What the hog does when it reaches its cap without being killed: exit 3.
const REACHED_CAP_STATUS: i32 = 3;
const KILL_TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn a_host_wide_oom_names_the_host_and_the_trigger_in_another_cgroup() {
    require_root();
    if !disposable_machine() {
        skip(
            "a host-wide OOM would take down the machine running the suite; it runs where \
             OOMTRACE_DISPOSABLE_MACHINE=1 (the kernel matrix's guests)",
        );
        return;
    }
    let kernel = KernelLook::now();
    let expected = kernel.expected(None, Hook::Auto);
    let db_cgroup = MemoryCgroup::unlimited();
    let builder_cgroup = MemoryCgroup::unlimited();
    let (db_path, builder_path) = (db_cgroup.path(), builder_cgroup.path());
    let mut kmsg = Kmsg::open_at_end();
    let mut agent = Agent::start();
    let started = agent.agent_started().clone();
    assert_eq!(started.capture.tier, expected.tier, "{}", pretty(&started));
    let agent_adj = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", agent.pid()))
        .expect("reading the agent's oom_score_adj");
    assert_eq!(
        agent_adj.trim(),
        "-1000",
        "the agent should have set its own oom_score_adj"
    );

    // Together they need more than there is; at the moment of the OOM the builder holds less
    // than the db, so the db is the one chosen. Once it is gone, the builder reaches its cap.
    let available_mib = mem_available_kib() / 1024;
    let db_mib = available_mib * 60 / 100;
    let builder_mib = available_mib * 55 / 100;
    println!(
        "MemAvailable {available_mib} MiB: the db holds {db_mib}, the builder wants {builder_mib}"
    );
    let mut db = Hog::spawn_with(
        hog_binary(),
        &db_cgroup,
        &["--hold", "--max-mib", &db_mib.to_string()],
    );
    db.wait_holding();
    let db_pid = db.pid();
    let builder = Hog::spawn_with(
        hog_binary(),
        &builder_cgroup,
        &["--max-mib", &builder_mib.to_string()],
    );
    let builder_pid = builder.pid();
    let builder_status = builder.wait(KILL_TIMEOUT);
    assert_eq!(
        builder_status.code(),
        Some(REACHED_CAP_STATUS),
        "the builder should reach its cap once the db is gone, it ended with {builder_status}"
    );
    let db_status = db.wait(Duration::from_secs(10));
    assert_eq!(
        db_status.signal(),
        Some(libc::SIGKILL),
        "the OOM killer should end the db, it ended with {db_status}"
    );
    let killed = kmsg.find_killed(db_pid, Duration::from_secs(10));

    let kills = agent.wait_for_kills(&[db_pid], Duration::from_secs(30));
    let [kill] = kills.as_slice() else {
        panic!(
            "expected one oom_kill of the db (pid {db_pid}): {}",
            pretty(&kills)
        );
    };
    let context = pretty(kill);
    killed.assert_victim_as_logged(kill);
    assert_eq!(
        kill.victim
            .cgroup
            .as_ref()
            .and_then(|cgroup| cgroup.path.clone()),
        Some(db_path.clone()),
        "in {context}"
    );
    kernel.assert_victim_parts(&started, kill, true);
    let Some(trigger) = &kill.trigger else {
        panic!("no trigger in {context}");
    };
    assert_eq!(trigger.process.pid, Some(builder_pid), "in {context}");
    assert_eq!(
        trigger
            .cgroup
            .as_ref()
            .and_then(|cgroup| cgroup.path.clone()),
        Some(builder_path.clone()),
        "in {context}"
    );

    let Some(domain) = &kill.domain else {
        panic!("no domain in {context}");
    };
    assert_eq!(domain.kind, DomainKind::Host, "in {context}");
    let memory = domain.memory.unwrap_or_default();
    assert!(
        memory.total_bytes.is_some() && memory.available_bytes.is_some(),
        "a host-wide domain should carry the host's memory: {context}"
    );
    if expected.tier == Tier::Full {
        // oom_control says so itself: no memcg, no constraint.
        assert_eq!(domain.inferred, Some(false), "in {context}");
        let incident = kill.incident.as_ref();
        assert_eq!(
            incident
                .and_then(|incident| incident.domain.as_ref())
                .map(|domain| domain.kind),
            Some(DomainKind::Host),
            "in {context}"
        );
        assert_eq!(
            incident.and_then(|incident| incident.constraint.as_deref()),
            Some("none"),
            "in {context}"
        );
        assert_eq!(
            kill.victim.badness.map(|badness| badness.estimated),
            Some(false),
            "in {context}"
        );
    }

    // The verdict says it in words, and the snapshot shows the builder holding memory.
    let Some(explanation) = &kill.explanation else {
        panic!("no explanation in {context}");
    };
    let verdict = &explanation.verdict;
    println!("verdict: {verdict}");
    for expected in [
        format!("in cgroup {db_path} was killed by the OOM killer"),
        "The whole host ran out of memory; no cgroup limit was hit.".to_owned(),
        "came from pid".to_owned(),
        format!("in cgroup {builder_path}, not in cgroup {db_path}"),
        "At that moment the biggest users were".to_owned(),
    ] {
        assert!(
            verdict.contains(&expected),
            "the verdict should say `{expected}`: {verdict}"
        );
    }
    assert!(
        explanation
            .snapshot
            .cgroups
            .iter()
            .any(|usage| usage.cgroup.path == builder_path),
        "the builder should be among the top memory users: {}",
        pretty(&explanation.snapshot)
    );

    let stopped = agent.stop();
    assert_eq!(stopped.kills_of(db_pid).len(), 1);
    stopped.assert_every_kill_counted_and_none_dropped();
}

fn mem_available_kib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("reading /proc/meminfo");
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemAvailable:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no MemAvailable in /proc/meminfo:\n{meminfo}"))
}
