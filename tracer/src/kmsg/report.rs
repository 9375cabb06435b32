//! What an OOM report says of memory: the domain's counters and statistics, the host's
//! `Mem-Info`, and the task dump, as the kernel printed them at the kill.
//!
//! | lines | report | kernels |
//! | --- | --- | --- |
//! | `memory: usage NkB, limit NkB, failcnt N`, then `swap: …` (v2) or `memory+swap: …` and `kmem: …` (v1) | memcg OOM | all |
//! | `Memory cgroup stats for /path:` then `key value` lines, in bytes (v2's `memory.stat` keys; v1's `cache`, `rss`, …, `total_*` from 6.x) | memcg OOM | 5.0 and later: one record whose lines the kernel cut at about 1 KiB, up to 6.4; a record per line since |
//! | `Memory cgroup stats for /path: cache:NKB rss:NKB …`, a line for every cgroup of the subtree, each its own pages only | memcg OOM | up to 4.20 |
//! | `Mem-Info:`, `active_anon:N inactive_anon:N …` (pages), `Node N active_anon:NkB …`, `N total pagecache pages`, `Free swap  = NkB`, `Total swap = NkB`, `N pages RAM`, `N pages reserved` | host-wide OOM | all |
//! | `Tasks state (memory values in pages):`, a header, a `[  pid  ] …` line per process | every OOM, with `vm.oom_dump_tasks` (the default) | all; `rss_anon rss_file rss_shmem` from 6.8 |
//!
//! The report's lines arrive one at a time ([`ReportReader::push`]); a record holding several
//! lines (`\x0a` in `/dev/kmsg`, a newline in a `dmesg` dump) is split first. Pure, and it must
//! never panic on any input.

use super::parse::{KernelText, number};

/// A record this long may have been cut by the kernel's 1 KiB limit on a record's text: its
/// last line is not trusted.
const CUT_RECORD_BYTES: usize = 900;

/// A counter line: `memory: usage 32768kB, limit 32768kB, failcnt 19`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageCounter {
    pub usage_kb: u64,
    /// The kernel's "unlimited" is a huge number; kept as printed.
    pub limit_kb: u64,
    pub failcnt: Option<u64>,
}

/// The host's memory as `show_mem` printed it (`Mem-Info:`), each field as far as this kernel
/// printed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemInfo {
    /// The first block's `key:N` fields, in pages.
    pub pages: Vec<(String, u64)>,
    /// The per-node fields in kB (`Node N key:NkB`, the zones' lines too), summed over nodes.
    pub node_kb: Vec<(String, u64)>,
    /// `N total pagecache pages`.
    pub pagecache_pages: Option<u64>,
    /// `Free swap  = NkB`.
    pub swap_free_kb: Option<u64>,
    /// `Total swap = NkB`.
    pub swap_total_kb: Option<u64>,
    /// `N pages RAM`.
    pub ram_pages: Option<u64>,
    /// `N pages reserved`.
    pub reserved_pages: Option<u64>,
}

impl MemInfo {
    /// A first-block field, in pages.
    pub fn pages(&self, key: &str) -> Option<u64> {
        lookup(&self.pages, key)
    }

    /// A node field summed over the nodes (and zones), in kB.
    pub fn node_kb(&self, key: &str) -> Option<u64> {
        lookup(&self.node_kb, key)
    }
}

/// The task dump's totals: every process of the domain (the host's, host-wide) the OOM killer
/// looked at, with its resident memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskTotals {
    pub tasks: u64,
    pub rss_pages: u64,
    /// The breakdown, on kernels that print it (6.8 and later).
    pub rss_anon_pages: Option<u64>,
    pub rss_file_pages: Option<u64>,
    pub rss_shmem_pages: Option<u64>,
}

/// What one OOM report said of memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportedMemory {
    /// `memory: usage …, limit …` (memcg OOMs).
    pub memory: Option<PageCounter>,
    /// `swap: …` (v2).
    pub swap: Option<PageCounter>,
    /// `memory+swap: …` (v1).
    pub memsw: Option<PageCounter>,
    /// `kmem: …` (v1): the kernel's own memory charged to the cgroup.
    pub kmem: Option<PageCounter>,
    /// The cgroup whose statistics follow (`Memory cgroup stats for /path:`): the OOM domain.
    pub stats_cgroup: Option<KernelText>,
    /// Its `memory.stat`, in bytes, in the kernel's order. Up to 4.20, the sum of the
    /// subtree's lines.
    pub stats: Vec<(String, u64)>,
    /// Whether the kernel cut the statistics short (its 1 KiB limit on a record).
    pub stats_cut: bool,
    /// `Mem-Info` (host-wide OOMs).
    pub mem_info: Option<MemInfo>,
    /// The task dump, where `vm.oom_dump_tasks` is on.
    pub tasks: Option<TaskTotals>,
}

impl ReportedMemory {
    pub fn stat(&self, key: &str) -> Option<u64> {
        lookup(&self.stats, key)
    }

    /// Whether it holds anything to tell the domain's memory by.
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.stats.is_empty() && self.mem_info.is_none()
    }
}

fn lookup(fields: &[(String, u64)], key: &str) -> Option<u64> {
    fields
        .iter()
        .find_map(|(name, value)| (name == key).then_some(*value))
}

fn add(fields: &mut Vec<(String, u64)>, key: &[u8], value: u64) {
    let key = String::from_utf8_lossy(key);
    match fields.iter_mut().find(|(name, _)| *name == key) {
        Some((_, sum)) => *sum = sum.saturating_add(value),
        None => fields.push((key.into_owned(), value)),
    }
}

/// Where in the report the last line was.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Section {
    #[default]
    Other,
    /// After `Memory cgroup stats for`: `key value` lines.
    Stats,
    /// After `Mem-Info:`.
    MemInfo,
    /// After `Tasks state`: the header comes next.
    TasksHeader,
    /// The task lines, with how many numeric columns each has after `[  pid  ]` and where
    /// `rss`, `rss_anon`, `rss_file` and `rss_shmem` are among them.
    Tasks(TaskColumns),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TaskColumns {
    numbers: usize,
    rss: Option<usize>,
    anon: Option<usize>,
    file: Option<usize>,
    shmem: Option<usize>,
}

/// Reads the memory lines of one OOM report, one message at a time. A message it does not
/// know ends the section it was in.
#[derive(Clone, Debug, Default)]
pub struct ReportReader {
    memory: ReportedMemory,
    section: Section,
}

impl ReportReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// What the report said so far.
    pub fn memory(&self) -> &ReportedMemory {
        &self.memory
    }

    pub fn into_memory(self) -> ReportedMemory {
        self.memory
    }

    /// One record's message, which may hold several lines: escaped as `/dev/kmsg` gives them
    /// (`\x0a`), or as they are (a `dmesg` dump).
    pub fn push(&mut self, message: &[u8]) {
        let lines: Vec<&[u8]> = message
            .split(|&b| b == b'\n')
            .flat_map(|line| split_on(line, b"\\x0a"))
            .collect();
        // The kernel counts the unescaped text against its limit.
        let escaped_newlines = split_on(message, b"\\x0a").len() - 1;
        let unescaped_len = message.len().saturating_sub(3 * escaped_newlines);
        let cut = lines.len() > 1 && unescaped_len >= CUT_RECORD_BYTES;
        let count = lines.len();
        for (index, line) in lines.iter().enumerate() {
            if cut && index + 1 == count {
                // Possibly cut mid-number: `slab 7696` may arrive as `slab 76`.
                if self.section == Section::Stats {
                    self.memory.stats_cut = true;
                }
                break;
            }
            self.line(line);
        }
    }

    /// Ends the current section: a line of the report that is not about memory came.
    pub fn end_section(&mut self) {
        self.section = Section::Other;
    }

    fn line(&mut self, line: &[u8]) {
        let trimmed = line.trim_ascii();
        if let Some(rest) = trimmed.strip_prefix(b"Memory cgroup stats for ") {
            self.stats_header(rest);
            return;
        }
        if trimmed == b"Mem-Info:" {
            self.memory.mem_info.get_or_insert_with(MemInfo::default);
            self.section = Section::MemInfo;
            return;
        }
        if trimmed.starts_with(b"Tasks state (memory values in pages)") {
            self.memory.tasks.get_or_insert_with(TaskTotals::default);
            self.section = Section::TasksHeader;
            return;
        }
        if let Some((name, counter)) = page_counter(trimmed) {
            let slot = match name {
                b"memory" => &mut self.memory.memory,
                b"swap" => &mut self.memory.swap,
                b"memory+swap" => &mut self.memory.memsw,
                b"kmem" => &mut self.memory.kmem,
                _ => {
                    self.section = Section::Other;
                    return;
                }
            };
            *slot = Some(counter);
            self.section = Section::Other;
            return;
        }
        match self.section.clone() {
            Section::Stats => {
                if let Some((key, value)) = stat_line(trimmed) {
                    add(&mut self.memory.stats, key, value);
                } else {
                    self.section = Section::Other;
                }
            }
            Section::MemInfo => {
                if !self.mem_info_line(trimmed) {
                    self.section = Section::Other;
                }
            }
            Section::TasksHeader => {
                self.section = match task_columns(trimmed) {
                    Some(columns) => Section::Tasks(columns),
                    None => Section::Other,
                };
            }
            Section::Tasks(columns) => {
                if !self.task_line(trimmed, columns) {
                    self.section = Section::Other;
                }
            }
            Section::Other => {}
        }
    }

    /// `/path:`, and up to 4.20 ` key:NKB …` on the same line.
    fn stats_header(&mut self, rest: &[u8]) {
        // The path may hold `:` itself; the statistics, where they follow, start at `: `.
        let (path, fields) = match find(rest, b": ") {
            Some(at) => (&rest[..at], Some(&rest[at + 2..])),
            None => (rest.strip_suffix(b":").unwrap_or(rest), None),
        };
        let first = self.memory.stats_cgroup.is_none();
        if first {
            self.memory.stats_cgroup = Some(KernelText::unescape(path));
        }
        match fields {
            // Legacy: each cgroup of the subtree has a line of its own pages; their sum is the
            // domain's.
            Some(fields) => {
                for field in fields.split(|&b| b == b' ') {
                    let Some(colon) = field.iter().position(|&b| b == b':') else {
                        continue;
                    };
                    let (key, value) = (&field[..colon], &field[colon + 1..]);
                    let kb = value
                        .strip_suffix(b"KB")
                        .or_else(|| value.strip_suffix(b"kB"));
                    if let Some(kb) = kb.and_then(number) {
                        add(&mut self.memory.stats, key, kb.saturating_mul(1024));
                    }
                }
                self.section = Section::Other;
            }
            None if first => self.section = Section::Stats,
            // A second block of the modern kind would double every figure.
            None => self.section = Section::Other,
        }
    }

    /// One line of `Mem-Info`; false if it is not one.
    fn mem_info_line(&mut self, line: &[u8]) -> bool {
        let Some(info) = &mut self.memory.mem_info else {
            return false;
        };
        if let Some(rest) = line.strip_prefix(b"Node ") {
            // `Node 0 active_anon:1904kB …`, `Node 0 DMA free:1820kB …`, `Node 0 DMA: 1*4kB …`,
            // `Node 0 hugepages_total=0 …`: the fields in kB of the first two kinds.
            let mut words = rest.split(|&b| b == b' ').filter(|w| !w.is_empty());
            words.next();
            let words: Vec<&[u8]> = words.collect();
            let mut at = 0;
            while at < words.len() {
                let word = words[at];
                at += 1;
                let Some(colon) = word.iter().position(|&b| b == b':') else {
                    continue;
                };
                let key = &word[..colon];
                // `shmem_thp: 0kB`: the value may be the next word.
                let mut value = &word[colon + 1..];
                if value.is_empty() && at < words.len() {
                    value = words[at];
                    at += 1;
                }
                if let Some(kb) = value
                    .strip_suffix(b"kB")
                    .or_else(|| value.strip_suffix(b"KB"))
                    .and_then(number)
                    && key.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    add(&mut info.node_kb, key, kb);
                }
            }
            return true;
        }
        if let Some(pages) = line.strip_suffix(b" total pagecache pages") {
            info.pagecache_pages = number(pages);
            return true;
        }
        if let Some(pages) = line.strip_suffix(b" pages RAM") {
            info.ram_pages = number(pages);
            return true;
        }
        if let Some(pages) = line.strip_suffix(b" pages reserved") {
            info.reserved_pages = number(pages);
            return true;
        }
        if let Some(rest) = line.strip_prefix(b"Free swap") {
            info.swap_free_kb = kb_after_equals(rest);
            return true;
        }
        if let Some(rest) = line.strip_prefix(b"Total swap") {
            info.swap_total_kb = kb_after_equals(rest);
            return true;
        }
        // The rest of show_mem's lines (`lowmem_reserve[]: …`, `N pages in swap cache`,
        // `N pages HighMem/MovableOnly`, `N pages hwpoisoned`, …) stay within the section.
        if line.starts_with(b"lowmem_reserve[]:") {
            return true;
        }
        if let Some(space) = line.iter().position(|&b| b == b' ')
            && number(&line[..space]).is_some()
            && line[space + 1..].starts_with(b"pages ")
        {
            return true;
        }
        // `active_anon:476 inactive_anon:110759 isolated_anon:0`: page counts, every word.
        let fields: Option<Vec<(&[u8], u64)>> = line
            .split(|&b| b == b' ')
            .filter(|w| !w.is_empty())
            .map(|word| {
                let colon = word.iter().position(|&b| b == b':')?;
                let (key, value) = (&word[..colon], &word[colon + 1..]);
                let simple =
                    !key.is_empty() && key.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_');
                Some((key, number(value).filter(|_| simple)?))
            })
            .collect();
        match fields {
            Some(fields) if !fields.is_empty() => {
                for (key, pages) in fields {
                    add(&mut info.pages, key, pages);
                }
                true
            }
            _ => false,
        }
    }

    /// One `[  pid  ] …` line of the task dump; false if it is not one.
    fn task_line(&mut self, line: &[u8], columns: TaskColumns) -> bool {
        let Some(rest) = line.strip_prefix(b"[") else {
            return false;
        };
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        if number(rest[..close].trim_ascii()).is_none() {
            return false;
        }
        let mut numbers = Vec::with_capacity(columns.numbers);
        for word in rest[close + 1..]
            .split(|&b| b == b' ')
            .filter(|w| !w.is_empty())
            .take(columns.numbers)
        {
            // `oom_score_adj` may be negative; none of the sizes is.
            let value = match word.strip_prefix(b"-") {
                Some(digits) => number(digits).map(|_| 0),
                None => number(word),
            };
            let Some(value) = value else {
                return false;
            };
            numbers.push(value);
        }
        if numbers.len() < columns.numbers {
            return false;
        }
        let Some(tasks) = &mut self.memory.tasks else {
            return false;
        };
        let column = |index: Option<usize>| index.and_then(|index| numbers.get(index).copied());
        tasks.tasks += 1;
        tasks.rss_pages = tasks
            .rss_pages
            .saturating_add(column(columns.rss).unwrap_or(0));
        for (sum, index) in [
            (&mut tasks.rss_anon_pages, columns.anon),
            (&mut tasks.rss_file_pages, columns.file),
            (&mut tasks.rss_shmem_pages, columns.shmem),
        ] {
            if let Some(value) = column(index) {
                *sum = Some(sum.unwrap_or(0).saturating_add(value));
            }
        }
        true
    }
}

/// `[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents
/// oom_score_adj name`: the numeric columns after the pid, and where the sizes are.
fn task_columns(header: &[u8]) -> Option<TaskColumns> {
    let rest = header.strip_prefix(b"[")?;
    let close = rest.iter().position(|&b| b == b']')?;
    let names: Vec<&[u8]> = rest[close + 1..]
        .split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .collect();
    // The last column is the name.
    let (last, numeric) = names.split_last()?;
    if *last != b"name" {
        return None;
    }
    let index = |name: &[u8]| numeric.iter().position(|column| *column == name);
    Some(TaskColumns {
        numbers: numeric.len(),
        rss: index(b"rss"),
        anon: index(b"rss_anon"),
        file: index(b"rss_file"),
        shmem: index(b"rss_shmem"),
    })
}

/// `NAME: usage NkB, limit NkB, failcnt N`.
fn page_counter(line: &[u8]) -> Option<(&[u8], PageCounter)> {
    let at = find(line, b": usage ")?;
    let name = &line[..at];
    if name.is_empty() || name.contains(&b' ') {
        return None;
    }
    let mut counter = PageCounter::default();
    let mut usage = None;
    let mut limit = None;
    for part in line[at + 2..].split(|&b| b == b',') {
        let part = part.trim_ascii();
        let Some(space) = part.iter().position(|&b| b == b' ') else {
            continue;
        };
        let (key, value) = (&part[..space], &part[space + 1..]);
        match key {
            b"usage" => usage = value.strip_suffix(b"kB").and_then(number),
            b"limit" => limit = value.strip_suffix(b"kB").and_then(number),
            b"failcnt" => counter.failcnt = number(value),
            _ => {}
        }
    }
    counter.usage_kb = usage?;
    counter.limit_kb = limit?;
    Some((name, counter))
}

/// `key value`, a lowercase name and a number: one line of `memory.stat`.
fn stat_line(line: &[u8]) -> Option<(&[u8], u64)> {
    let space = line.iter().position(|&b| b == b' ')?;
    let (key, value) = (&line[..space], &line[space + 1..]);
    if key.is_empty()
        || !key
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    Some((key, number(value)?))
}

/// `  = NkB` (after `Free swap` or `Total swap`).
fn kb_after_equals(rest: &[u8]) -> Option<u64> {
    let rest = rest.trim_ascii().strip_prefix(b"=")?;
    number(rest.trim_ascii().strip_suffix(b"kB")?)
}

fn split_on<'a>(bytes: &'a [u8], separator: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut rest = bytes;
    while let Some(at) = find(rest, separator) {
        parts.push(&rest[..at]);
        rest = &rest[at + separator.len()..];
    }
    parts.push(rest);
    parts
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests;
