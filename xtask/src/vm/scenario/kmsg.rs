//! What the guest kernel logged about an OOM kill: the victim's `Killed process` line and the
//! task dump (`vm.oom_dump_tasks`, on by default) that the badness is recomputed from. The OOM
//! lines are read by the agent's own kernel-log parser.

use anyhow::{Context as _, bail, ensure};
use oomtrace::kmsg::parse;
pub use oomtrace::kmsg::parse::{KilledMemory, OomLine};
use serde_json::Value;

use super::field;

/// The OOM report lines of a `dmesg` dump, in order.
pub fn oom_lines(kmsg: &str) -> impl Iterator<Item = OomLine> + '_ {
    kmsg.lines()
        .filter_map(|line| parse::parse_line(strip_timestamp(line).as_bytes()))
}

/// Every `Killed process <pid> (...)` line: the pid and the memory the kernel printed.
pub fn killed(kmsg: &str) -> impl Iterator<Item = (u32, KilledMemory)> + '_ {
    killed_lines(kmsg).map(|(pid, _, memory)| (pid, memory))
}

/// Every `Killed process <pid> (<comm>)` line: the pid, comm and memory the kernel printed.
fn killed_lines(kmsg: &str) -> impl Iterator<Item = (u32, String, KilledMemory)> + '_ {
    oom_lines(kmsg).filter_map(|line| match line {
        OomLine::Killed {
            pid, comm, memory, ..
        } => Some((pid, comm.to_string(), memory)),
        _ => None,
    })
}

/// How far the agent's memory figures may be from the kernel's: the agent reads them from the
/// victim's task at the OOM killer's entry, SIGKILL or mark, and the kernel prints them a
/// moment later, from the same counters; they differ by what was faulted in between, if
/// anything.
const MEMORY_TOLERANCE_PERCENT: u64 = 10;
const MEMORY_TOLERANCE_KIB: u64 = 256;

/// Fails unless the agent's `oom_kill` record names the victim as the kernel's own `Killed
/// process <pid> (<comm>) total-vm:… anon-rss:… file-rss:… shmem-rss:… UID:… pgtables:…
/// oom_score_adj:…` line does, whichever part of the agent read it on this kernel.
pub fn expect_victim_as_logged(kill: &Value, kmsg: &str) -> anyhow::Result<()> {
    let pid = field(kill, "victim.process.pid")?
        .as_u64()
        .context("`victim.process.pid` is not a number")?;
    let (_, comm, memory) = killed_lines(kmsg)
        .find(|(killed, _, _)| u64::from(*killed) == pid)
        .with_context(|| format!("no `Killed process {pid} (` line in the kernel log"))?;
    let name = field(kill, "victim.process.executable.name")?;
    ensure!(
        name == comm.as_str(),
        "the agent names victim {pid} {name}, the kernel log {comm:?}"
    );
    let figures = [
        ("virtual_bytes", "total-vm", memory.total_vm_kb),
        ("anon_rss_bytes", "anon-rss", memory.anon_rss_kb),
        ("file_rss_bytes", "file-rss", memory.file_rss_kb),
        ("shmem_rss_bytes", "shmem-rss", memory.shmem_rss_kb),
        ("page_tables_bytes", "pgtables", memory.pgtables_kb),
    ];
    for (name, logged, kernel_kib) in figures {
        let kernel_kib =
            kernel_kib.with_context(|| format!("no {logged} in the kernel's line of {pid}"))?;
        let path = format!("victim.process.memory.{name}");
        let agent_kib = field(kill, &path)?
            .as_u64()
            .with_context(|| format!("`{path}` is not a number"))?
            / 1024;
        let tolerance = (kernel_kib * MEMORY_TOLERANCE_PERCENT / 100).max(MEMORY_TOLERANCE_KIB);
        ensure!(
            agent_kib.abs_diff(kernel_kib) <= tolerance,
            "victim {pid}: the agent says {name} {agent_kib} KiB, the kernel log {logged} \
             {kernel_kib} KiB"
        );
    }
    if let Some(uid) = memory.uid {
        ensure!(
            field(kill, "victim.process.real_user.id")? == uid,
            "victim {pid}: the kernel log says UID {uid}"
        );
    }
    if let Some(adj) = memory.oom_score_adj {
        ensure!(
            field(kill, "victim.process.oom_score_adj")? == adj,
            "victim {pid}: the kernel log says oom_score_adj {adj}"
        );
    }
    Ok(())
}

/// The badness of `pid` as `oom_badness()` computes it, from the last task dump that lists it:
/// `rss + swapents + pgtables_bytes / PAGE_SIZE + oom_score_adj * (totalpages / 1000)`.
pub fn task_dump_badness(kmsg: &str, pid: u64, totalpages: u64) -> anyhow::Result<i64> {
    const PAGE_SIZE: i64 = 4096;
    let mut columns: Option<Vec<String>> = None;
    let mut found = None;
    for line in kmsg.lines().map(strip_timestamp) {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == '[' || c == ']')
            .filter(|word| !word.is_empty())
            .collect();
        // The header: "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents
        // oom_score_adj name" (6.1); later kernels add rss_anon, rss_file and rss_shmem.
        if words.first() == Some(&"pid") && words.contains(&"oom_score_adj") {
            columns = Some(words.iter().map(|word| (*word).to_owned()).collect());
            continue;
        }
        let Some(columns) = &columns else { continue };
        if words.len() == columns.len() && words[0] == pid.to_string() {
            let value = |name: &str| -> anyhow::Result<i64> {
                let index = columns
                    .iter()
                    .position(|column| column == name)
                    .with_context(|| format!("no `{name}` column in the task dump"))?;
                words[index]
                    .parse()
                    .with_context(|| format!("`{name}` of {line:?}"))
            };
            let adj = value("oom_score_adj")?;
            let per_mille = i64::try_from(totalpages / 1000)?;
            found = Some(
                value("rss")?
                    + value("swapents")?
                    + value("pgtables_bytes")? / PAGE_SIZE
                    + adj * per_mille,
            );
        }
    }
    match found {
        Some(badness) => Ok(badness),
        None => bail!("pid {pid} is in no task dump of the kernel log"),
    }
}

/// dmesg prefixes each line with `[ seconds.micros]`.
fn strip_timestamp(line: &str) -> &str {
    match line
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
    {
        Some((stamp, rest)) if stamp.trim().parse::<f64>().is_ok() => rest,
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memcg OOM as the Debian 6.1 guest logs it.
    const KMSG: &str = "\
[    9.100000] oomtrace-hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
[    9.110000] Tasks state (memory values in pages):
[    9.110001] [  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name
[    9.110002] [    146]     0   146     1234      100    49152        0         -1000 oomtrace
[    9.110003] [    147]     0   147    17006    16281   184320        0           500 oomtrace-hog
[    9.120000] Memory cgroup out of memory: Killed process 147 (oomtrace-hog) total-vm:68024kB, anon-rss:64760kB, file-rss:364kB, shmem-rss:0kB, UID:0 pgtables:180kB oom_score_adj:500
";

    #[test]
    fn the_victim_is_checked_against_its_line() {
        let kill = serde_json::json!({"victim": {"process": {
            "pid": 147,
            "executable": {"name": "oomtrace-hog"},
            "real_user": {"id": 0},
            "oom_score_adj": 500,
            "memory": {
                "virtual_bytes": 68_024u64 << 10,
                "anon_rss_bytes": 64_700u64 << 10,
                "file_rss_bytes": 364u64 << 10,
                "shmem_rss_bytes": 0,
                "page_tables_bytes": 180u64 << 10,
            }
        }}});
        expect_victim_as_logged(&kill, KMSG).unwrap();
        let mut renamed = kill.clone();
        renamed["victim"]["process"]["executable"]["name"] = "sh".into();
        let err = expect_victim_as_logged(&renamed, KMSG).unwrap_err();
        assert!(err.to_string().contains("oomtrace-hog"), "{err}");
        let mut smaller = kill.clone();
        smaller["victim"]["process"]["memory"]["anon_rss_bytes"] = (32_000u64 << 10).into();
        let err = expect_victim_as_logged(&smaller, KMSG).unwrap_err();
        assert!(err.to_string().contains("anon-rss 64760 KiB"), "{err}");
        let mut unlogged = kill.clone();
        unlogged["victim"]["process"]["pid"] = 148.into();
        assert!(expect_victim_as_logged(&unlogged, KMSG).is_err());
    }

    #[test]
    fn badness_is_recomputed_from_the_task_dump() {
        // 16281 + 0 + 184320 / 4096 + 500 * (16384 / 1000)
        assert_eq!(
            task_dump_badness(KMSG, 147, 16_384).unwrap(),
            16281 + 45 + 500 * 16
        );
        assert_eq!(
            task_dump_badness(KMSG, 146, 16_384).unwrap(),
            100 + 12 - 16_000
        );
        assert!(task_dump_badness(KMSG, 148, 16_384).is_err());
    }
}
