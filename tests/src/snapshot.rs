//! What a kill's snapshot must agree with: the kill's own figures.

use oomtrace::record::OomKillRecord;

use crate::pretty;

/// Asserts that the snapshot does not contradict the kill: every cgroup row that holds the
/// victim (its memory cgroup, or one above it) shows at least what the kernel reported the
/// victim held at the kill, and the victim's process is listed at that size unless the five
/// listed are all at least as big. Returns the victim's size, where the kernel reported it.
pub fn assert_snapshot_holds_victim(kill: &OomKillRecord) -> Option<u64> {
    let context = || pretty(kill);
    let held = kill
        .victim
        .process
        .memory
        .as_ref()
        .and_then(|memory| memory.usage_bytes)?;
    let snapshot = &kill
        .explanation
        .as_ref()
        .unwrap_or_else(|| panic!("no explanation in {}", context()))
        .snapshot;
    let victim_memcg = kill
        .victim
        .memcg
        .as_ref()
        .and_then(|memcg| memcg.path.as_deref());
    if let Some(memcg) = victim_memcg {
        for row in &snapshot.cgroups {
            let path = row.cgroup.path.as_str();
            let holds = memcg == path
                || memcg
                    .strip_prefix(path)
                    .is_some_and(|below| below.starts_with('/'));
            if holds {
                assert!(
                    row.memory.usage_bytes >= held,
                    "snapshot row {path} holds the victim ({held} bytes at the kill) and shows \
                     {}: {}",
                    row.memory.usage_bytes,
                    context()
                );
            }
        }
    }
    let victim_pid = kill.victim.process.pid;
    match snapshot
        .processes
        .iter()
        .find(|row| Some(row.process.pid) == victim_pid)
    {
        Some(row) => assert_eq!(
            row.process.memory.usage_bytes,
            held,
            "the victim's process row is its size at the kill: {}",
            context()
        ),
        None => assert!(
            snapshot.processes.len() == 5
                && snapshot
                    .processes
                    .iter()
                    .all(|row| row.process.memory.usage_bytes >= held),
            "the victim ({held} bytes at the kill) is missing from the snapshot's biggest \
             processes: {}",
            context()
        ),
    }
    println!(
        "snapshot: cgroups {}; processes {}",
        snapshot
            .cgroups
            .iter()
            .map(|row| format!(
                "{} {} (read {:?})",
                row.cgroup.path, row.memory.usage_bytes, row.memory.read_after_kill_bytes
            ))
            .collect::<Vec<_>>()
            .join(", "),
        snapshot
            .processes
            .iter()
            .map(|row| format!(
                "{} {} (read {:?})",
                row.process.pid,
                row.process.memory.usage_bytes,
                row.process.memory.read_after_kill_bytes
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Some(held)
}
