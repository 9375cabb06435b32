//! The kernel log unreadable (the agent without CAP_SYSLOG, `kernel.dmesg_restrict` set): the
//! kill's record still comes, its composition read from the cgroup's `memory.stat` at the kill
//! and corrected for what the victim had freed, and it says so and why.

use std::time::Duration;

use oomtrace::record::composition::{CompositionSource, KernelLogState};
use oomtrace_tests::capabilities::OnlyCapabilities;
use oomtrace_tests::{
    Agent, Hog, MemoryCgroup, ScratchTmpfs, assert_tmpfs_leads, composition_of, mib, pretty,
    require_root, within_ten_percent,
};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const MIB: u64 = 1 << 20;
const LIMIT_BYTES: u64 = 128 * MIB;
const WRITTEN_MIB: u64 = 100;

#[test]
fn without_the_kernel_log_the_composition_comes_from_memory_stat() {
    require_root();
    let restricted = std::fs::read_to_string("/proc/sys/kernel/dmesg_restrict")
        .is_ok_and(|value| value.trim() == "1");
    if !restricted {
        // Then anyone may read the log, and the agent without CAP_SYSLOG reads it too.
        println!("skipped: kernel.dmesg_restrict is not set, so the log cannot be kept from it");
        return;
    }
    let cgroup = MemoryCgroup::create(LIMIT_BYTES);
    let tmpfs = ScratchTmpfs::mount("256m");
    let only = OnlyCapabilities::new(&["bpf", "perfmon", "sys_resource"]);
    let mut agent = Agent::start_wrapped(&only.wrapper(), &[]);

    tmpfs.fill_from(&cgroup, "fill", WRITTEN_MIB);
    let hog_pid = Hog::spawn_in(HOG, &cgroup).wait_oom_killed(Duration::from_secs(30));
    let kills = agent.wait_for_kills(&[hog_pid], Duration::from_secs(30));
    let [kill] = kills.as_slice() else {
        panic!(
            "expected one kill of the hog (pid {hog_pid}): {}\nits log:\n{}",
            pretty(&kills),
            agent.log()
        );
    };
    let context = pretty(kill);
    let composition = composition_of(kill);
    assert_eq!(
        composition.source,
        CompositionSource::MemoryStat,
        "{context}"
    );
    assert_eq!(
        composition.kernel_log.state,
        KernelLogState::Unreadable,
        "{context}"
    );
    let reason = composition.kernel_log.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("CAP_SYSLOG"),
        "why the log is unreadable: {reason:?} in {context}"
    );

    let written = WRITTEN_MIB * MIB;
    let shmem = composition.shmem_bytes.unwrap_or(0);
    assert!(
        within_ten_percent(shmem, written),
        "shmem {shmem}, in {context}"
    );
    let not_in = composition.not_in_processes;
    assert!(
        within_ten_percent(not_in.shmem_bytes, written),
        "shared memory no process maps {}, in {context}",
        not_in.shmem_bytes
    );
    // Read as the kill arrives, the victim may have freed its memory already (then what the
    // kernel reported of it is added back, `reaped`) or not yet: either way the whole is what
    // the cgroup held at the kill, its limit.
    match composition.reaped {
        Some(reaped) => println!(
            "read after the victim freed {} of anonymous memory: added back",
            mib(reaped.anon_bytes)
        ),
        None => println!("read before the victim freed its memory"),
    }
    let usage = composition.usage_bytes.unwrap_or(0);
    assert!(
        within_ten_percent(usage, LIMIT_BYTES),
        "usage {usage} is not near the limit, in {context}"
    );
    let held = composition
        .in_processes_bytes
        .unwrap_or_else(|| panic!("no in_processes_bytes in {context}"));
    assert!(
        within_ten_percent(held + not_in.bytes, usage),
        "held {held} + not in processes {} is not the usage {usage}, in {context}",
        not_in.bytes
    );

    assert_tmpfs_leads(kill, LIMIT_BYTES, &[]);

    let stopped = agent.stop();
    assert_eq!(stopped.kills_of(hog_pid).len(), 1, "one record of the kill");
    drop(tmpfs);
    drop(cgroup);
}
