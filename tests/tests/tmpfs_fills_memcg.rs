//! A memory cgroup filled by tmpfs files no process maps: 100 MiB written to a tmpfs by a `dd`
//! that has exited, then a small process killed at the 128 MiB limit. The record says what
//! filled the limit (shared memory, within 10 % of what was written), names the tmpfs with its
//! use, and the verdict leads with it and accounts for the numbers it shows.

use std::time::Duration;

use oomtrace::record::composition::{CompositionSource, KernelLogState, TmpfsKind};
use oomtrace_tests::{
    Agent, Hog, MemoryCgroup, ScratchTmpfs, assert_snapshot_holds_victim, assert_tmpfs_leads,
    composition_of, hog_binary, mib, pretty, require_root, within_ten_percent,
};

const MIB: u64 = 1 << 20;
const LIMIT_BYTES: u64 = 128 * MIB;
const WRITTEN_MIB: u64 = 100;

#[test]
fn tmpfs_files_no_process_maps_lead_the_verdict() {
    require_root();
    let cgroup = MemoryCgroup::create(LIMIT_BYTES);
    let tmpfs = ScratchTmpfs::mount("256m");
    let mut agent = Agent::start();

    tmpfs.fill_from(&cgroup, "fill", WRITTEN_MIB);
    // As users meet it, the files were written a while before the kill: long enough for the
    // recorder, which reads a domain's composition at most once a second, to see them.
    std::thread::sleep(Duration::from_secs(2));
    let hog_pid = Hog::spawn_in(hog_binary(), &cgroup).wait_oom_killed(Duration::from_secs(30));
    let kills = agent.wait_for_kills(&[hog_pid], Duration::from_secs(30));
    let [kill] = kills.as_slice() else {
        panic!(
            "expected one kill of the hog (pid {hog_pid}): {}",
            pretty(&kills)
        );
    };
    let context = pretty(kill);
    let composition = composition_of(kill);
    let written = WRITTEN_MIB * MIB;
    // The snapshot, read after the reaper, still shows the victim at its size at the kill.
    assert!(
        assert_snapshot_holds_victim(kill).is_some(),
        "the kernel reported the victim's size: {context}"
    );

    // From the kernel's own report, unless the kernel printed none for this kill (it prints
    // at most 10 every 5 s, and other OOM kills on the host count too): then memory.stat.
    match (composition.source, composition.kernel_log.state) {
        (CompositionSource::KernelLog, KernelLogState::Report) => {}
        (CompositionSource::MemoryStat, KernelLogState::NoReport) => {
            println!("the kernel printed no report for this kill: read from memory.stat");
        }
        other => panic!("composition source and kernel log {other:?} in {context}"),
    }
    assert_eq!(composition.limit_bytes, Some(LIMIT_BYTES), "{context}");
    let shmem = composition
        .shmem_bytes
        .unwrap_or_else(|| panic!("no shmem in {context}"));
    assert!(
        within_ten_percent(shmem, written),
        "shmem {shmem} is not within 10 % of the {written} bytes written, in {context}"
    );
    let not_in = composition.not_in_processes;
    assert!(
        within_ten_percent(not_in.shmem_bytes, written),
        "shared memory no process maps {} not within 10 % of {written}, in {context}",
        not_in.shmem_bytes
    );
    // What processes held and what none holds add up to the limit the kill was at.
    let held = composition
        .in_processes_bytes
        .unwrap_or_else(|| panic!("no in_processes_bytes in {context}"));
    let usage = composition.usage_bytes.unwrap_or(LIMIT_BYTES);
    assert!(
        within_ten_percent(held + not_in.bytes, usage),
        "held {held} + not in processes {} is not the usage {usage}, in {context}",
        not_in.bytes
    );

    // The tmpfs is named, with its use.
    let mount_point = tmpfs.dir().display().to_string();
    let Some(mount) = composition
        .tmpfs
        .iter()
        .find(|mount| mount.mount_point == mount_point)
    else {
        panic!("the tmpfs {mount_point} is not named in {context}");
    };
    assert_eq!(mount.kind, TmpfsKind::Host, "{context}");
    let used = mount
        .used_bytes
        .unwrap_or_else(|| panic!("no use of {mount_point} in {context}"));
    assert!(
        within_ten_percent(used, written),
        "{mount_point} used {used}, in {context}"
    );
    assert_eq!(mount.size_bytes, Some(256 * MIB), "{context}");

    // The verdict leads with it, in the numbers the record carries.
    let verdict = assert_tmpfs_leads(
        kill,
        LIMIT_BYTES,
        &[
            &mount_point,
            &format!("processes held {}", mib(held)),
            "Killing a process does not free such files",
        ],
    );

    // The timeline read the domain's memory by kind as it filled, before the kill: its shared
    // memory went from what the empty cgroup held to what was written, and the lead-up says so.
    let timeline = kill
        .explanation
        .as_ref()
        .and_then(|explanation| explanation.timeline.as_ref())
        .unwrap_or_else(|| panic!("no timeline in {context}"));
    let domain = timeline
        .cgroups
        .iter()
        .find(|entry| entry.cgroup.path == cgroup.path())
        .unwrap_or_else(|| panic!("no timeline of the domain in {context}"));
    let shmem: Vec<u64> = domain.composition.iter().map(|s| s.shmem_bytes).collect();
    println!("the domain's shared memory in the timeline: {shmem:?}");
    assert!(
        shmem.first().is_some_and(|&first| first < 8 * MIB),
        "the timeline's first composition is not of the empty cgroup, in {context}"
    );
    assert!(
        shmem
            .last()
            .is_some_and(|&last| within_ten_percent(last, written)),
        "the timeline's last composition does not hold the {written} bytes written, in {context}"
    );
    assert!(
        domain.composition.iter().all(|s| s.offset_ms < 0),
        "compositions from before the kill only, in {context}"
    );
    let grew = "Within the limit, tmpfs/shared memory grew from";
    assert!(
        verdict.contains(grew),
        "verdict does not say {grew:?}: {verdict}"
    );

    let stopped = agent.stop();
    assert_eq!(stopped.kills_of(hog_pid).len(), 1, "one record of the kill");
    drop(tmpfs);
    drop(cgroup);
}
