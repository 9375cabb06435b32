//! One process outgrows its memory cgroup's limit and is OOM-killed; the agent must report
//! exactly that kill, checked field by field against the kernel's own account: its `Killed
//! process` line, its task dump (the badness), the cgroup directories' inodes.
//!
//! Three ways to hook the kernel, one test each: as the agent chooses on this kernel;
//! `oom_kill_process` hooked by kprobe, as on kernels without BPF trampolines; and no function
//! tracing at all, as on kernels that refuse fentry and have no kprobes. The answers must be
//! the same wherever the tier allows them. Which tier each should run in comes from a look at
//! the kernel ([`KernelLook`]), not from the agent. On this project's CI host only the last
//! two differ from the first in name (it allows no function tracing: the kprobe test skips);
//! the kernel matrix's guests (`cargo xtask vm`) run all three in full. Before each agent
//! starts, `oomtrace check` with the same options must say it can trace and name, to the
//! letter, the capture `run` then reports.

use std::process::Command;
use std::time::Duration;

use oomtrace::capture::Tier;
use oomtrace::record::agent::CaptureInfo;
use oomtrace::record::party::Memory;
use oomtrace::record::{Body, OomKillRecord};
use oomtrace_tests::capabilities::{expected_after_attach, of_every_thread};
use oomtrace_tests::{
    Agent, ExpectedCapture, Hog, Hook, KernelLook, Kmsg, MemoryCgroup, agent_binary,
    assert_snapshot_holds_victim, hog_binary, pretty, require_root, skip,
};

const LIMIT_BYTES: u64 = 64 << 20;
/// The kernel keeps a task's comm in 16 bytes, NUL included.
const TASK_COMM_LEN: usize = 15;
/// Under the guests' emulation a hog takes a second or two to fill its limit.
const KILL_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn memcg_oom_kill_is_reported_as_the_kernel_saw_it() {
    require_root();
    let kernel = KernelLook::now();
    if !kernel.btf {
        skip("no kernel BTF: the agent runs tracepoint-only here, as tracepoint_only.rs tests");
        return;
    }
    let expected = kernel.expected(None, Hook::Auto);
    memcg_oom(&kernel, &[], expected);
}

#[test]
fn memcg_oom_kill_is_reported_the_same_with_kprobes() {
    require_root();
    let kernel = KernelLook::now();
    if !kernel.btf || !kernel.kprobes {
        skip(&format!(
            "this kernel has no {}: no kprobe on oom_kill_process",
            if kernel.btf {
                "kprobes (CONFIG_KPROBES)"
            } else {
                "BTF"
            }
        ));
        return;
    }
    let expected = kernel.expected(None, Hook::Kprobe);
    memcg_oom(&kernel, &["--function-hook", "kprobe"], expected);
}

#[test]
fn memcg_oom_kill_is_reported_the_same_without_function_tracing() {
    require_root();
    let kernel = KernelLook::now();
    if !kernel.btf {
        skip("no kernel BTF: the agent runs tracepoint-only here, as tracepoint_only.rs tests");
        return;
    }
    let expected = kernel.expected(Some(Tier::NoFunctionTracing), Hook::Auto);
    memcg_oom(&kernel, &["--max-tier", "no-function-tracing"], expected);
}

fn memcg_oom(kernel: &KernelLook, agent_args: &[&str], expected: ExpectedCapture) {
    let cgroup = MemoryCgroup::create(LIMIT_BYTES);
    let mut kmsg = Kmsg::open_at_end();
    let checked = check_capture(agent_args);
    let mut agent = Agent::start_with(agent_args);
    let started = agent.agent_started().clone();
    assert_eq!(
        checked,
        started.capture,
        "`oomtrace check {}` should name the capture `run` then reports",
        agent_args.join(" ")
    );
    println!(
        "linux {}: expected tier {} ({}), the agent says {} ({}): {}",
        kernel.release,
        expected.tier,
        expected.function_hook.unwrap_or("no function hook"),
        started.capture.tier,
        started
            .capture
            .function_hook
            .as_deref()
            .unwrap_or("no function hook"),
        started.capture.reason
    );
    assert_eq!(
        (
            started.capture.tier,
            started.capture.function_hook.as_deref()
        ),
        (expected.tier, expected.function_hook),
        "the tier and hook this kernel allows ({kernel:?}) with {agent_args:?}; the agent \
         said:\n{}",
        pretty(&started)
    );
    if expected.tier == Tier::NoFunctionTracing {
        // With BTF, the OOM killer's SIGKILL names the victim's task where `mark_victim` does not.
        assert_eq!(
            started.capture.sigkill_task_hook.as_deref(),
            Some("tp_btf"),
            "{}",
            pretty(&started)
        );
    }
    assert_drops_capabilities(&agent);

    let hog_pid = Hog::spawn_in(hog_binary(), &cgroup).wait_oom_killed(KILL_TIMEOUT);
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
    assert_snapshot_holds_victim(kill);

    // Who was killed, and how big it was: as the kernel's `Killed process` line says.
    assert_eq!(victim.process.pid, Some(hog_pid), "victim pid in {context}");
    assert_eq!(
        victim.thread.map(|thread| thread.id),
        Some(hog_pid),
        "victim thread: the hog has one thread, in {context}"
    );
    let expected_comm: String = "oomtrace-hog".chars().take(TASK_COMM_LEN).collect();
    assert_eq!(killed.comm, expected_comm, "the kernel's comm for the hog");
    killed.assert_victim_as_logged(kill);

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
    let trigger_memcg = trigger.memcg.as_ref();
    assert_eq!(
        trigger_memcg.and_then(|memcg| memcg.id),
        Some(cgroup.memcg_id()),
        "trigger memcg id in {context}"
    );
    assert_eq!(
        trigger_memcg.and_then(|memcg| memcg.path.clone()),
        Some(cgroup.path()),
        "trigger memcg path in {context}"
    );

    assert_eq!(kill.capture.tier, Some(expected.tier), "in {context}");
    kernel.assert_victim_parts(&started, kill, true);
    let Some(badness) = victim.badness else {
        panic!("no victim badness in {context}");
    };
    match expected.tier {
        // The kernel's own domain, badness and incident.
        Tier::Full => {
            assert_full_tier_answers(kernel, &cgroup, &kmsg, kill, &mut agent);
            assert!(!badness.estimated, "in {context}");
        }
        // No incident, and a badness estimated from the reported memory.
        _ => {
            assert_eq!(
                kill.incident, None,
                "no incident below the full tier: {context}"
            );
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
    stopped.assert_every_kill_counted_and_none_dropped();
}

/// Whose limit (this cgroup's, as `oom_control` says), the domain's figures read as the kill
/// arrived, the kernel's badness as its own task dump gives it, and the incident.
fn assert_full_tier_answers(
    kernel: &KernelLook,
    cgroup: &MemoryCgroup,
    kmsg: &Kmsg,
    kill: &OomKillRecord,
    agent: &mut Agent,
) {
    let context = pretty(kill);
    let Some(incident) = &kill.incident else {
        panic!("no incident in the full tier: {context}");
    };
    let Some(incident_domain) = &incident.domain else {
        panic!("no incident domain in {context}");
    };
    assert_eq!(
        incident_domain.kind,
        oomtrace::attribute::DomainKind::Cgroup,
        "in {context}"
    );
    let incident_cgroup = incident_domain.cgroup.as_ref();
    assert_eq!(
        incident_cgroup.and_then(|cgroup| cgroup.id),
        Some(cgroup.memcg_id()),
        "the OOM domain is the test cgroup, in {context}"
    );
    assert_eq!(
        incident_cgroup.and_then(|cgroup| cgroup.path.clone()),
        Some(cgroup.path()),
        "in {context}"
    );
    assert_eq!(
        incident.constraint.as_deref(),
        Some("memcg"),
        "in {context}"
    );

    // The same domain, named and with its limit.
    let Some(domain) = &kill.domain else {
        panic!("no domain in {context}");
    };
    assert_eq!(
        domain.kind,
        oomtrace::attribute::DomainKind::Cgroup,
        "in {context}"
    );
    assert_eq!(
        domain.basis,
        Some(oomtrace::record::kill::Basis::Kernel),
        "in {context}"
    );
    assert_eq!(
        domain.cgroup.as_ref().map(|cgroup| cgroup.path.as_str()),
        Some(cgroup.path().as_str()),
        "in {context}"
    );
    let memory = domain.memory.unwrap_or_default();
    assert_eq!(memory.limit_bytes, Some(LIMIT_BYTES), "in {context}");
    assert!(
        memory.usage_bytes.is_some(),
        "the domain's usage should be read at the moment of the kill: {context}"
    );
    if kernel.memory_cgroup_v2 {
        let ooms = domain
            .memory_events
            .as_ref()
            .and_then(|events| events.get("oom").copied())
            .unwrap_or(0);
        assert!(ooms >= 1, "memory.events should count the OOM: {context}");
    }

    // The kernel's badness is what its own task dump says it computed from.
    let Some(chosen) = incident.badness else {
        panic!("no incident badness in {context}");
    };
    let Some(totalpages) = chosen.totalpages else {
        panic!("no totalpages in {context}");
    };
    let hog_pid = kill.victim.process.pid.unwrap_or_default();
    let recomputed = kmsg.task_dump_badness(hog_pid, totalpages);
    assert_eq!(
        chosen.points, recomputed,
        "chosen_points against the kernel's task dump, in {context}"
    );
    assert_eq!(
        kill.victim.badness.map(|badness| badness.points),
        Some(chosen.points),
        "in {context}"
    );

    // One invocation of the OOM killer, ended, with this one victim.
    let id = incident.id.clone();
    let incident_record = agent
        .wait_for_record(
            |record| match &record.body {
                Body::OomIncident(incident) if incident.incident.id == id => Some(incident.clone()),
                _ => None,
            },
            Duration::from_secs(10),
        )
        .unwrap_or_else(|| panic!("no oom_incident {id:?} for {context}"));
    assert!(incident_record.ended, "{}", pretty(&incident_record));
    let victims: Vec<u32> = incident_record
        .victims
        .iter()
        .map(|victim| victim.process.pid)
        .collect();
    assert_eq!(victims, [hog_pid], "{}", pretty(&incident_record));
}

/// What `oomtrace check --format json`, run with the agent's options before anything is
/// attached, says the capture will be: it must say it can trace, and name what `run` reports.
fn check_capture(agent_args: &[&str]) -> CaptureInfo {
    let output = Command::new(agent_binary())
        .args(["check", "--format", "json"])
        .args(agent_args)
        .output()
        .expect("running oomtrace check");
    let json = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "oomtrace check {agent_args:?} exited with {}: {json}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: oomtrace::check::Report = serde_json::from_str(&json)
        .unwrap_or_else(|err| panic!("check's JSON reads as a report ({err}): {json}"));
    assert!(report.can_trace, "check says it cannot trace: {report:#?}");
    report
        .capture
        .unwrap_or_else(|| panic!("check names no capture: {json}"))
}

/// Once attached the agent gives up every capability it does not need to read its maps, the
/// bounding set too: as every thread's status says.
fn assert_drops_capabilities(agent: &Agent) {
    let line = agent_log_line(agent, "capabilities after attach:");
    let expected = expected_after_attach();
    for (tid, sets) in of_every_thread(agent.pid()) {
        assert_eq!(
            (sets.effective, sets.permitted, sets.ambient),
            (expected, expected, 0),
            "thread {tid} of the agent: {sets:?}; {line}"
        );
    }
    if expected == 0 {
        assert!(
            line.contains("keeping none;") && line.ends_with("the bounding set too"),
            "the agent should keep no capability after attach: {line}"
        );
    }
}

fn agent_log_line(agent: &Agent, needle: &str) -> String {
    agent.wait_for_log(needle, Duration::from_secs(10));
    agent
        .log()
        .lines()
        .find(|line| line.contains(needle))
        .map(str::to_owned)
        .unwrap_or_default()
}
