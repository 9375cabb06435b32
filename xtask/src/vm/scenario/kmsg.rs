//! What the guest kernel logged about an OOM kill: the victim's `Killed process` line and the
//! task dump (`vm.oom_dump_tasks`, on by default) that the badness is recomputed from. The OOM
//! lines are read by the agent's own kernel-log parser.

use anyhow::{Context as _, bail};
use oomtrace::kmsg::parse;
pub use oomtrace::kmsg::parse::{KilledMemory, OomLine};

/// The OOM report lines of a `dmesg` dump, in order.
pub fn oom_lines(kmsg: &str) -> impl Iterator<Item = OomLine> + '_ {
    kmsg.lines()
        .filter_map(|line| parse::parse_line(strip_timestamp(line).as_bytes()))
}

/// Every `Killed process <pid> (...)` line: the pid and the memory the kernel printed.
pub fn killed(kmsg: &str) -> impl Iterator<Item = (u32, KilledMemory)> + '_ {
    oom_lines(kmsg).filter_map(|line| match line {
        OomLine::Killed { pid, memory, .. } => Some((pid, memory)),
        _ => None,
    })
}

/// The `anon-rss:NNNkB` of the kernel's `Killed process <pid> (...)` line.
pub fn killed_anon_rss_kib(kmsg: &str, pid: u64) -> anyhow::Result<u64> {
    let (_, memory) = killed(kmsg)
        .find(|(killed, _)| u64::from(*killed) == pid)
        .with_context(|| format!("no `Killed process {pid} (` line in the kernel log"))?;
    memory
        .anon_rss_kb
        .with_context(|| format!("no `anon-rss:NNNkB` in the `Killed process {pid}` line"))
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
    fn anon_rss_comes_from_the_victims_line() {
        assert_eq!(killed_anon_rss_kib(KMSG, 147).unwrap(), 64760);
        assert!(killed_anon_rss_kib(KMSG, 8).is_err());
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
