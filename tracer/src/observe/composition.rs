//! What filled the limit: the OOM domain's memory at the kill, by kind (anonymous, page cache,
//! shared memory, the kernel's own), and how much of it no process holds.
//!
//! The kernel's own report (`/dev/kmsg`, printed just before the kill) says it exactly. Where
//! the report is missing (the kernel prints at most 10 every 5 s) or the log unreadable, the
//! same figures are read from `memory.stat` (`/proc/meminfo` host-wide) as the kill arrives:
//! by then the victim may have freed its memory, or the OOM reaper done it, and what the kernel
//! reported of the victim is added back.

use std::path::Path;

use crate::confined;
use crate::kmsg::report::{MemInfo, ReportedMemory};
use crate::observe::cgroupfs::{CgroupVersion, MemoryHierarchy};
use crate::observe::tmpfs::{self, TmpfsMount};

/// Where the figures come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The kernel's OOM report: the domain's `memory.stat` or `Mem-Info` at the kill.
    KernelLog,
    /// The cgroup's `memory.stat`, read as the kill arrived.
    MemoryStat,
    /// `/proc/meminfo`, read as the kill arrived.
    Meminfo,
}

/// How the kernel log served this kill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KernelLog {
    /// Its report was used: the record's sequence number of the summary line.
    Report { seq: u64 },
    /// The log was read, and the kernel printed no report for this kill: it prints at most 10
    /// every 5 s (`oom_rs`), and the kill lines alone after that.
    NoReport,
    /// The log cannot be read: why.
    Unreadable(String),
}

/// Bytes by kind, each as far as the source tells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Parts {
    /// Anonymous memory mapped by processes (and its swap cache on v1).
    pub anon: Option<u64>,
    /// The page cache without shared memory: files' pages.
    pub file: Option<u64>,
    pub file_active: Option<u64>,
    pub file_inactive: Option<u64>,
    pub file_dirty: Option<u64>,
    pub file_writeback: Option<u64>,
    /// Mapped file pages, shared memory's among them (the kernel counts them together).
    pub file_mapped: Option<u64>,
    /// tmpfs, `/dev/shm`, memfd, SysV and shared anonymous memory.
    pub shmem: Option<u64>,
    /// Pages the kernel may not evict: mlocked, ramfs, `SHM_LOCK`ed.
    pub unevictable: Option<u64>,
    /// The kernel's own memory charged to the domain: slab, stacks, page tables, sockets, ….
    pub kernel: Option<u64>,
    pub slab_reclaimable: Option<u64>,
    pub slab_unreclaimable: Option<u64>,
    pub kernel_stack: Option<u64>,
    pub page_tables: Option<u64>,
    pub sock: Option<u64>,
    pub percpu: Option<u64>,
    pub vmalloc: Option<u64>,
    pub swap: Option<u64>,
}

/// The processes' share, as the task dump (or `/proc`) told it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Processes {
    pub count: u64,
    /// Their resident memory summed: pages two processes share count twice.
    pub resident_bytes: u64,
    /// Of it, shared memory they map (the kernel's task dump from 6.8).
    pub shmem_bytes: Option<u64>,
}

/// What was added back to a late reading: the victim's memory that was freed before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Reaped {
    pub anon_bytes: u64,
    pub page_tables_bytes: u64,
}

/// The domain's memory at one kill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Composition {
    pub source: Source,
    pub kernel_log: KernelLog,
    /// The cgroup the figures are of; `None` host-wide.
    pub cgroup: Option<String>,
    pub usage_bytes: Option<u64>,
    /// The cgroup's limit, or the host's memory.
    pub limit_bytes: Option<u64>,
    pub parts: Parts,
    pub processes: Option<Processes>,
    pub reaped: Option<Reaped>,
    /// The victim's shared memory the kernel reported: mapped by a process, at least.
    pub victim_shmem_bytes: Option<u64>,
    /// The tmpfs mounts that may hold the shared memory no process maps, where that is a
    /// large part.
    pub tmpfs: Vec<TmpfsMount>,
    /// Why the tmpfs mounts that hold the shared memory are not all known, where they are not.
    pub tmpfs_unknown: Option<String>,
}

/// Memory no process holds: what killing a process does not free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NotInProcesses {
    /// tmpfs and other shared memory no process maps.
    pub shmem: u64,
    /// File pages no process maps.
    pub page_cache: u64,
    pub kernel: u64,
}

impl NotInProcesses {
    pub(crate) fn total(&self) -> u64 {
        self.shmem + self.page_cache + self.kernel
    }
}

impl Composition {
    /// The domain's memory less what processes map, by kind. Mapped pages are counted once by
    /// the kernel (`file_mapped`), whoever maps them; of those, the shared memory processes are
    /// known to map (the task dump's, else the victim's) is taken as mapped shared memory.
    pub(crate) fn not_in_processes(&self) -> NotInProcesses {
        let Parts {
            file,
            file_mapped,
            shmem,
            kernel,
            ..
        } = self.parts;
        let (file, shmem, mapped) = (
            file.unwrap_or(0),
            shmem.unwrap_or(0),
            file_mapped.unwrap_or(0),
        );
        let known_shmem_mapped = self
            .processes
            .and_then(|processes| processes.shmem_bytes)
            .or(self.victim_shmem_bytes)
            .unwrap_or(0);
        // At least what the files' pages cannot account for, at most all of it.
        let mapped_shmem = known_shmem_mapped
            .max(mapped.saturating_sub(file))
            .min(shmem.min(mapped));
        NotInProcesses {
            shmem: shmem - mapped_shmem,
            page_cache: file.saturating_sub(mapped - mapped_shmem),
            kernel: kernel.unwrap_or(0),
        }
    }

    /// Whether shared memory no process maps is enough of the domain to say where it is.
    pub(crate) fn shmem_worth_placing(&self) -> bool {
        let whole = self.limit_bytes.or(self.usage_bytes).unwrap_or(0).max(1);
        let shmem = self.not_in_processes().shmem;
        shmem >= 1 << 20 && shmem.saturating_mul(100) / whole >= TMPFS_SEARCHED_FROM_PERCENT
    }

    /// Looks for the tmpfs mounts holding the shared memory, where it is worth it.
    pub(crate) fn place_shmem(&mut self, memory: Option<&MemoryHierarchy>) {
        if !self.shmem_worth_placing() {
            return;
        }
        let found = tmpfs::find(memory, self.cgroup.as_deref());
        self.tmpfs = found.mounts;
        self.tmpfs_unknown = found.unknown;
    }

    /// What processes hold: anonymous memory and the pages they map.
    pub(crate) fn in_processes(&self) -> Option<u64> {
        Some(
            self.parts
                .anon?
                .saturating_add(self.parts.file_mapped.unwrap_or(0)),
        )
    }

    /// From the kernel's report of a kill, if it told the domain's memory.
    pub(crate) fn from_report(report: &ReportedMemory, seq: u64, page_bytes: u64) -> Option<Self> {
        let processes = report.tasks.map(|tasks| Processes {
            count: tasks.tasks,
            resident_bytes: tasks.rss_pages.saturating_mul(page_bytes),
            shmem_bytes: tasks
                .rss_shmem_pages
                .map(|pages| pages.saturating_mul(page_bytes)),
        });
        let kernel_log = KernelLog::Report { seq };
        if let Some(info) = &report.mem_info {
            let (parts, usage_bytes, limit_bytes) = mem_info_parts(info, page_bytes);
            return Some(Composition {
                source: Source::KernelLog,
                kernel_log,
                cgroup: None,
                usage_bytes,
                limit_bytes,
                parts,
                processes,
                reaped: None,
                victim_shmem_bytes: None,
                tmpfs: Vec::new(),
                tmpfs_unknown: None,
            });
        }
        if report.stats.is_empty() || report.memory.is_none() {
            return None;
        }
        let counter = report.memory?;
        let mut parts = stat_parts(&report.stats, report.kmem.map(|kmem| kmem.usage_kb * 1024));
        // v2's swap line, v1's memory+swap less memory.
        parts.swap = parts
            .swap
            .or(report.swap.map(|swap| swap.usage_kb * 1024))
            .or(report
                .memsw
                .map(|memsw| memsw.usage_kb.saturating_sub(counter.usage_kb) * 1024));
        Some(Composition {
            source: Source::KernelLog,
            kernel_log,
            cgroup: report
                .stats_cgroup
                .as_ref()
                .map(|path| String::from_utf8_lossy(&path.0).into_owned()),
            usage_bytes: Some(counter.usage_kb * 1024),
            limit_bytes: Some(counter.limit_kb * 1024).filter(|&limit| limit < V1_UNLIMITED_FROM),
            parts,
            processes,
            reaped: None,
            victim_shmem_bytes: None,
            tmpfs: Vec::new(),
            tmpfs_unknown: None,
        })
    }

    /// From the cgroup's files, read now; `None` once the cgroup is gone.
    pub(crate) fn read_cgroup(
        memory: &MemoryHierarchy,
        path: &str,
        kernel_log: KernelLog,
    ) -> Option<Self> {
        let number = |file: &str| {
            cgroup_file(memory, path, file, NUMBER_LIMIT)
                .and_then(|text| text.trim().parse::<u64>().ok())
        };
        let stats = flat_keyed(&cgroup_file(memory, path, "memory.stat", STAT_LIMIT)?);
        let (parts, usage_bytes) = match memory.version {
            CgroupVersion::V1 => {
                let usage = number("memory.usage_in_bytes");
                let mut parts = stat_parts(&stats, number("memory.kmem.usage_in_bytes"));
                // TCP buffers have a counter of their own on v1, outside the memory counter.
                parts.sock = number("memory.kmem.tcp.usage_in_bytes");
                parts.swap = parts.swap.or_else(|| {
                    Some(number("memory.memsw.usage_in_bytes")?.saturating_sub(usage?))
                });
                (parts, usage)
            }
            CgroupVersion::V2 => {
                let mut parts = stat_parts(&stats, None);
                parts.swap = number("memory.swap.current");
                (parts, number("memory.current"))
            }
        };
        Some(Composition {
            source: Source::MemoryStat,
            kernel_log,
            cgroup: Some(path.to_owned()),
            usage_bytes,
            limit_bytes: memory.limit_bytes(path),
            parts,
            processes: None,
            reaped: None,
            victim_shmem_bytes: None,
            tmpfs: Vec::new(),
            tmpfs_unknown: None,
        })
    }

    /// From `/proc/meminfo`, read now.
    pub(crate) fn read_host(kernel_log: KernelLog) -> Self {
        Self::from_meminfo(
            &confined::read(Path::new("/proc"), Path::new("meminfo"), STAT_LIMIT)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default(),
            kernel_log,
        )
    }

    pub(crate) fn from_meminfo(meminfo: &str, kernel_log: KernelLog) -> Self {
        let kb = |name: &str| {
            meminfo.lines().find_map(|line| {
                let value = line.strip_prefix(name)?.strip_prefix(':')?;
                let kb: u64 = value.trim().trim_end_matches("kB").trim().parse().ok()?;
                Some(kb.saturating_mul(1024))
            })
        };
        let sum = |names: &[&str]| names.iter().map(|name| kb(name)).sum::<Option<u64>>();
        let total = kb("MemTotal");
        let parts = Parts {
            anon: kb("AnonPages"),
            file: sum(&["Active(file)", "Inactive(file)"]),
            file_active: kb("Active(file)"),
            file_inactive: kb("Inactive(file)"),
            file_dirty: kb("Dirty"),
            file_writeback: kb("Writeback"),
            file_mapped: kb("Mapped"),
            shmem: kb("Shmem"),
            unevictable: kb("Unevictable"),
            kernel: sum(&["SReclaimable", "SUnreclaim", "KernelStack", "PageTables"]).map(
                |kernel| kernel + kb("SecPageTables").unwrap_or(0) + kb("Percpu").unwrap_or(0),
            ),
            slab_reclaimable: kb("SReclaimable"),
            slab_unreclaimable: kb("SUnreclaim"),
            kernel_stack: kb("KernelStack"),
            page_tables: kb("PageTables"),
            sock: None,
            percpu: kb("Percpu"),
            vmalloc: None,
            swap: kb("SwapTotal")
                .zip(kb("SwapFree"))
                .map(|(total, free)| total.saturating_sub(free)),
        };
        Composition {
            source: Source::Meminfo,
            kernel_log,
            cgroup: None,
            usage_bytes: total
                .zip(kb("MemFree"))
                .map(|(total, free)| total - free.min(total)),
            limit_bytes: total,
            parts,
            processes: None,
            reaped: None,
            victim_shmem_bytes: None,
            tmpfs: Vec::new(),
            tmpfs_unknown: None,
        }
    }

    /// A reading taken after the kill: adds back what the victim held and had freed by then.
    /// In a cgroup the kernel found usage at the limit, so what is missing up to the limit is
    /// what was freed since, at most the victim's anonymous memory and page tables; host-wide
    /// the victim's, once it is gone. Its mapped pages count as mapped again.
    pub(crate) fn add_back(&mut self, victim: &VictimMemory, victim_gone: bool) {
        let held = victim.anon_bytes.saturating_add(victim.page_tables_bytes);
        let freed = match (self.cgroup.is_some(), self.limit_bytes, self.usage_bytes) {
            (true, Some(limit), Some(usage)) => held.min(limit.saturating_sub(usage)),
            (true, _, _) => 0,
            (false, _, _) if victim_gone => held,
            (false, _, _) => 0,
        };
        if freed > 0 || victim_gone {
            // Its mapped pages stayed in the page cache, unmapped; those charged elsewhere (a
            // library another cgroup read first) were never counted here.
            let shmem = victim.shmem_bytes.min(self.parts.shmem.unwrap_or(0));
            let file = self.parts.file.unwrap_or(0);
            if let Some(file_mapped) = &mut self.parts.file_mapped {
                *file_mapped = (*file_mapped + victim.file_bytes + shmem)
                    .min((*file_mapped).max(file) + shmem);
            }
        }
        if freed == 0 {
            return;
        }
        let anon_bytes = freed.min(victim.anon_bytes);
        let page_tables_bytes = freed - anon_bytes;
        let add = |slot: &mut Option<u64>, bytes: u64| {
            if let Some(value) = slot {
                *value = value.saturating_add(bytes);
            }
        };
        add(&mut self.parts.anon, anon_bytes);
        add(&mut self.parts.page_tables, page_tables_bytes);
        add(&mut self.parts.kernel, page_tables_bytes);
        add(&mut self.usage_bytes, freed);
        self.reaped = Some(Reaped {
            anon_bytes,
            page_tables_bytes,
        });
    }
}

/// What the kernel reported of the victim at its kill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct VictimMemory {
    pub anon_bytes: u64,
    pub file_bytes: u64,
    pub shmem_bytes: u64,
    pub page_tables_bytes: u64,
}

/// Shared memory no process maps is looked for in tmpfs mounts from this share of the domain.
const TMPFS_SEARCHED_FROM_PERCENT: u64 = 10;

/// v1 writes "unlimited" as the page counter's maximum, rounded down to a page.
const V1_UNLIMITED_FROM: u64 = 1 << 62;

/// The parts of a `memory.stat`, in either version's keys (5.x kernels print v2's for v1 in
/// their OOM reports too). `kmem`: v1's kernel memory, which its `memory.stat` leaves out.
pub(crate) fn stat_parts(stats: &[(String, u64)], kmem: Option<u64>) -> Parts {
    let get = |key: &str| {
        stats
            .iter()
            .find_map(|(name, value)| (name == key).then_some(*value))
    };
    let v1 = get("total_rss").is_some() || get("rss").is_some() || get("cache").is_some();
    if v1 {
        // The hierarchy's totals where the kernel gives them; the cgroup's own otherwise.
        let total = |key: &str| get(&format!("total_{key}")).or_else(|| get(key));
        let shmem = total("shmem");
        return Parts {
            anon: total("rss"),
            file: total("cache").map(|cache| cache.saturating_sub(shmem.unwrap_or(0))),
            file_active: total("active_file"),
            file_inactive: total("inactive_file"),
            file_dirty: total("dirty"),
            file_writeback: total("writeback"),
            file_mapped: total("mapped_file"),
            shmem,
            unevictable: total("unevictable"),
            kernel: kmem,
            swap: total("swap"),
            ..Parts::default()
        };
    }
    let shmem = get("shmem");
    let slab = get("slab").or_else(|| {
        get("slab_reclaimable")
            .zip(get("slab_unreclaimable"))
            .map(|(r, u)| r + u)
    });
    // `kernel` from 5.18; before, the sum of what it counts.
    let kernel = get("kernel").or_else(|| {
        let parts = [
            get("kernel_stack"),
            get("pagetables"),
            get("sec_pagetables"),
            get("percpu"),
            get("vmalloc"),
            slab,
        ];
        parts
            .iter()
            .any(Option::is_some)
            .then(|| parts.iter().flatten().sum())
    });
    // Sockets are charged on v2, next to what `kernel` counts.
    let kernel = match (kernel, get("sock")) {
        (Some(kernel), sock) => Some(kernel + sock.unwrap_or(0)),
        (None, sock) => sock,
    };
    Parts {
        anon: get("anon"),
        file: get("file").map(|file| file.saturating_sub(shmem.unwrap_or(0))),
        file_active: get("active_file"),
        file_inactive: get("inactive_file"),
        file_dirty: get("file_dirty"),
        file_writeback: get("file_writeback"),
        file_mapped: get("file_mapped"),
        shmem,
        unevictable: get("unevictable"),
        kernel,
        slab_reclaimable: get("slab_reclaimable"),
        slab_unreclaimable: get("slab_unreclaimable"),
        kernel_stack: get("kernel_stack"),
        page_tables: get("pagetables"),
        sock: get("sock"),
        percpu: get("percpu"),
        vmalloc: get("vmalloc"),
        swap: None,
    }
}

/// The host's parts from `Mem-Info`, and its usage and size.
fn mem_info_parts(info: &MemInfo, page_bytes: u64) -> (Parts, Option<u64>, Option<u64>) {
    let pages = |key: &str| {
        info.pages(key)
            .map(|pages| pages.saturating_mul(page_bytes))
    };
    let sum = |keys: &[&str]| keys.iter().map(|key| pages(key)).sum::<Option<u64>>();
    let shmem = pages("shmem");
    let kernel_stack = info.node_kb("kernel_stack").map(|kb| kb * 1024);
    let slab = sum(&["slab_reclaimable", "slab_unreclaimable"]);
    let kernel = [
        slab,
        pages("pagetables"),
        pages("sec_pagetables"),
        pages("kernel_misc_reclaimable"),
        kernel_stack,
    ];
    let parts = Parts {
        // The anonymous LRU lists hold shared memory too.
        anon: sum(&["active_anon", "inactive_anon"])
            .map(|anon| anon.saturating_sub(shmem.unwrap_or(0))),
        file: sum(&["active_file", "inactive_file"]),
        file_active: pages("active_file"),
        file_inactive: pages("inactive_file"),
        file_dirty: pages("dirty"),
        file_writeback: pages("writeback"),
        file_mapped: pages("mapped"),
        shmem,
        unevictable: pages("unevictable"),
        kernel: kernel
            .iter()
            .any(Option::is_some)
            .then(|| kernel.iter().flatten().sum()),
        slab_reclaimable: pages("slab_reclaimable"),
        slab_unreclaimable: pages("slab_unreclaimable"),
        kernel_stack,
        page_tables: pages("pagetables"),
        sock: None,
        percpu: None,
        vmalloc: None,
        swap: info
            .swap_total_kb
            .zip(info.swap_free_kb)
            .map(|(total, free)| total.saturating_sub(free) * 1024),
    };
    let total = info
        .ram_pages
        .map(|ram| ram.saturating_sub(info.reserved_pages.unwrap_or(0)) * page_bytes);
    let usage = total
        .zip(pages("free"))
        .map(|(total, free)| total.saturating_sub(free));
    (parts, usage, total)
}

fn flat_keyed(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests;

/// `memory.stat` holds about 50 lines of a name and a number; `/proc/meminfo` about as many.
const STAT_LIMIT: u64 = 64 * 1024;
/// One number and a newline.
const NUMBER_LIMIT: u64 = 64;

/// A file of the cgroup at `path`, read as any file under the hierarchy's root is: no symlink
/// followed, nothing but a regular file, never blocked, bounded.
fn cgroup_file(memory: &MemoryHierarchy, path: &str, file: &str, limit: u64) -> Option<String> {
    let relative = Path::new(path.trim_start_matches('/')).join(file);
    let bytes = confined::read(&memory.root, &relative, limit).ok()?;
    String::from_utf8(bytes).ok()
}
