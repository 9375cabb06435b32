//! A memory cgroup filled mostly by the kernel's own memory: 96 MiB of pipe buffers held by a
//! process whose resident set is a few hundred KiB, then a small process killed at the 128 MiB
//! limit. The record's composition has kernel memory as its large part (no process holds it),
//! the verdict leads with it, and the timeline's lead-up says it grew.

use std::time::Duration;

use oomtrace_tests::{
    Agent, Hog, MemoryCgroup, composition_of, mib, pretty, require_root, verdict_of,
    within_ten_percent,
};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const MIB: u64 = 1 << 20;
const LIMIT_BYTES: u64 = 128 * MIB;
const PIPES_MIB: u64 = 96;

/// The cgroup's kernel memory as the kernel counts it: v1 `memory.kmem.usage_in_bytes`, v2
/// `memory.stat` `kernel`; `None` where it does not.
fn kernel_bytes(cgroup: &MemoryCgroup) -> Option<u64> {
    let dir = cgroup.memcg_dir();
    if let Ok(text) = std::fs::read_to_string(dir.join("memory.kmem.usage_in_bytes")) {
        return text.trim().parse().ok();
    }
    let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("kernel "))
        .and_then(|value| value.trim().parse().ok())
}

#[test]
fn kernel_memory_no_process_holds_leads_the_verdict() {
    require_root();
    let cgroup = MemoryCgroup::create(LIMIT_BYTES);
    let Some(before) = kernel_bytes(&cgroup) else {
        println!(
            "SKIP: this kernel does not count a memory cgroup's kernel memory (no \
             memory.kmem.usage_in_bytes, no `kernel` in memory.stat)"
        );
        return;
    };
    let mut agent = Agent::start();

    let mut pipes = Hog::spawn_held_with(
        HOG,
        &cgroup,
        &["--hold", "--in-pipes", "--max-mib", &PIPES_MIB.to_string()],
    );
    pipes.release();
    pipes.wait_holding();
    let charged = kernel_bytes(&cgroup).unwrap_or(0).saturating_sub(before);
    println!(
        "kernel memory charged for {PIPES_MIB} MiB of pipe buffers: {}",
        mib(charged)
    );
    if charged < PIPES_MIB * MIB / 2 {
        println!(
            "SKIP: this kernel does not charge pipe buffers to the writer's memory cgroup: {} of \
             {PIPES_MIB} MiB counted as its kernel memory",
            mib(charged)
        );
        return;
    }
    // Let the recorder read the filled cgroup's composition before the kill.
    std::thread::sleep(Duration::from_secs(2));

    // The OOM killer's pick, not the pipes' holder: what that holds is what the test is about.
    let mut hog = Hog::spawn_held_in(HOG, &cgroup);
    hog.set_oom_score_adj(1000);
    hog.release();
    let hog_pid = hog.wait_oom_killed(Duration::from_secs(30));
    let kills = agent.wait_for_kills(&[hog_pid], Duration::from_secs(30));
    let [kill] = kills.as_slice() else {
        panic!(
            "expected one kill of the hog (pid {hog_pid}): {}",
            pretty(&kills)
        );
    };
    let context = pretty(kill);
    let composition = composition_of(kill);
    println!("composition: {}", pretty(composition));
    let kernel = composition
        .kernel
        .map(|kernel| kernel.bytes)
        .unwrap_or_else(|| panic!("no kernel memory in {context}"));
    assert!(
        (PIPES_MIB * MIB..=LIMIT_BYTES).contains(&kernel),
        "kernel memory {kernel} is not the {PIPES_MIB} MiB of pipe buffers and more, in {context}"
    );
    let not_in = composition.not_in_processes;
    assert_eq!(not_in.kernel_bytes, kernel, "{context}");
    assert!(
        not_in.kernel_bytes > not_in.shmem_bytes && not_in.kernel_bytes > not_in.page_cache_bytes,
        "kernel memory is not the large part of what no process holds, in {context}"
    );
    let held = composition
        .in_processes_bytes
        .unwrap_or_else(|| panic!("no in_processes_bytes in {context}"));
    let usage = composition.usage_bytes.unwrap_or(LIMIT_BYTES);
    assert!(
        within_ten_percent(held + not_in.bytes, usage),
        "held {held} + not in processes {} is not the usage {usage}, in {context}",
        not_in.bytes
    );

    let verdict = verdict_of(kill);
    println!("verdict: {verdict}");
    let lead = format!(
        "The limit of {} was filled by {} of the kernel's own memory",
        mib(LIMIT_BYTES),
        mib(kernel)
    );
    assert!(
        verdict.starts_with(&lead),
        "verdict does not start with {lead:?}: {verdict}"
    );
    for said in [
        format!("processes held {}", mib(held)),
        "Killing a process frees only what it holds of it".to_owned(),
        "Within the limit, kernel memory grew from".to_owned(),
    ] {
        assert!(
            verdict.contains(&said),
            "verdict does not say {said:?}: {verdict}"
        );
    }

    drop(pipes);
    let stopped = agent.stop();
    assert_eq!(stopped.kills_of(hog_pid).len(), 1, "one record of the kill");
    drop(cgroup);
}
