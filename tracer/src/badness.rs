//! The OOM killer's badness score: the kernel's own where `oom_kill_process` is hooked, an
//! estimate from the tracepoint's fields otherwise.
//!
//! The kernel (`oom_badness`, mm/oom_kill.c) computes
//! `rss + swapents + pgtables_bytes / PAGE_SIZE + oom_score_adj * (totalpages / 1000)`,
//! in pages, and reports `points * 1000 / totalpages` as `oom_score`.

use crate::decode::OomControl;
use crate::decode::mark_victim::MarkVictimFields;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Badness {
    pub points: i64,
    /// The pages `points` is relative to: the OOM domain's limit, or RAM + swap.
    pub totalpages: u64,
    /// True when computed here rather than read from the kernel: swap entries are not known,
    /// and `totalpages` is the host's, which is wrong for a cgroup OOM with a non-zero adj.
    pub estimated: bool,
}

impl Badness {
    /// `oc->chosen_points`, the kernel's figure for the victim it chose.
    pub fn from_kernel(control: &OomControl) -> Self {
        Badness {
            points: control.chosen_points,
            totalpages: control.totalpages,
            estimated: false,
        }
    }

    /// From the victim's memory as the tracepoint reports it (kB). `None` without the RSS fields
    /// (kernels before 6.9 carry only the pid).
    pub fn estimate(fields: &MarkVictimFields, totalpages: u64, page_kb: u64) -> Option<Self> {
        let rss_kb = fields.anon_rss_kb? + fields.file_rss_kb? + fields.shmem_rss_kb?;
        let page_kb = page_kb.max(1);
        let pages = rss_kb / page_kb + fields.pgtables_kb.unwrap_or(0) / page_kb;
        let adj = i64::from(fields.oom_score_adj.unwrap_or(0));
        // The kernel divides before it multiplies: keep its rounding.
        let adj_pages = adj.saturating_mul(i64::try_from(totalpages / 1000).ok()?);
        Some(Badness {
            points: i64::try_from(pages).ok()?.saturating_add(adj_pages),
            totalpages,
            estimated: true,
        })
    }

    /// `points * 1000 / totalpages`, as `oom_score` in /proc and the kernel's task dump.
    pub fn score(&self) -> i64 {
        match i64::try_from(self.totalpages) {
            Ok(total) if total > 0 => self.points.saturating_mul(1000) / total,
            _ => 0,
        }
    }
}

/// RAM + swap in pages, the denominator of a host-wide OOM, and the page size in kB.
pub(crate) fn host_totalpages() -> (u64, u64) {
    // SAFETY: sysconf has no preconditions.
    let page_bytes = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let page_kb = (page_bytes / 1024).max(1);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    (meminfo_total_kb(&meminfo) / page_kb, page_kb)
}

/// MemTotal + SwapTotal, in kB.
fn meminfo_total_kb(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            matches!(key, "MemTotal" | "SwapTotal")
                .then(|| rest.split_whitespace().next()?.parse::<u64>().ok())?
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(anon: u64, file: u64, pgtables: u64, adj: i16) -> MarkVictimFields {
        MarkVictimFields {
            pid: 1,
            comm: None,
            total_vm_kb: None,
            anon_rss_kb: Some(anon),
            file_rss_kb: Some(file),
            shmem_rss_kb: Some(0),
            uid: None,
            pgtables_kb: Some(pgtables),
            oom_score_adj: Some(adj),
        }
    }

    #[test]
    fn estimate_follows_the_kernels_formula() {
        // The python3 kill in the README: anon-rss 65024 kB, file-rss 6572 kB, pgtables 184 kB.
        let badness = Badness::estimate(&fields(65024, 6572, 184, 0), 6_000_000, 4).unwrap();
        assert_eq!(badness.points, 65024 / 4 + 6572 / 4 + 184 / 4);
        assert!(badness.estimated);
        // adj 500 adds half of totalpages, the division first as in the kernel.
        let adjusted = Badness::estimate(&fields(4, 0, 0, 500), 1999, 4).unwrap();
        assert_eq!(adjusted.points, 1 + 500);
        let negative = Badness::estimate(&fields(4, 0, 0, -1000), 16_384, 4).unwrap();
        assert_eq!(negative.points, 1 - 16_000);
    }

    #[test]
    fn no_estimate_without_rss() {
        let pid_only = MarkVictimFields {
            anon_rss_kb: None,
            ..fields(0, 0, 0, 0)
        };
        assert_eq!(Badness::estimate(&pid_only, 1000, 4), None);
    }

    #[test]
    fn score_is_per_mille_of_totalpages() {
        let control = OomControl {
            chosen_points: 16_500,
            totalpages: 16_384,
            gfp_mask: 0,
            order: 0,
            constraint: 0,
        };
        let badness = Badness::from_kernel(&control);
        assert_eq!((badness.score(), badness.estimated), (1007, false));
        let empty = Badness {
            totalpages: 0,
            ..badness
        };
        assert_eq!(empty.score(), 0);
    }

    #[test]
    fn meminfo_adds_ram_and_swap() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:  1 kB\nSwapTotal:       1024 kB\n";
        assert_eq!(meminfo_total_kb(meminfo), 24_577_024);
        assert_eq!(meminfo_total_kb("garbage"), 0);
    }
}
