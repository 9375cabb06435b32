//! The kernel log's own account of OOM kills: `/dev/kmsg` records in, typed kills out.
//!
//! A record is `prio,seq,usec,flags[,…];message\n`, optionally followed by ` KEY=value\n`
//! continuation lines. The OOM killer writes a report of many records; the ones that say who
//! was killed, and why, are:
//!
//! | line | kernels |
//! | --- | --- |
//! | `COMM invoked oom-killer: gfp_mask=0x…(…), order=N, oom_score_adj=N` | all |
//! | `Task in /x killed as a result of limit of /y` | memcg OOMs, up to 4.18 |
//! | `oom-kill:constraint=…,nodemask=…,cpuset=…,mems_allowed=…,oom_memcg=…,task_memcg=…,task=…,pid=…,uid=…` | 4.19 and later |
//! | `Tasks in /x are going to be killed due to memory.oom.group set` | 4.19 and later |
//! | `Memory cgroup out of memory: Kill process PID (COMM) score N or sacrifice child` (or `Out of memory: …`) | up to 5.0 |
//! | `[Memory cgroup out of memory: ]Killed process PID (COMM) total-vm:NkB, anon-rss:NkB, file-rss:NkB[, shmem-rss:NkB][, UID:N][ pgtables:NkB oom_score_adj:N]` | all; the prefix from 5.1, `shmem-rss` from 4.5, `UID` from 5.3, `pgtables` and `oom_score_adj` from 5.6 |
//!
//! A kill is a `Killed process` line, with what the lines before it in the same report said
//! about it: the `oom-kill:` line of the same pid, the legacy `Task in … limit of …` line,
//! the legacy `Kill process` line and the invoker. A `Killed process` line alone is still a kill;
//! the same pid killed again in the same report (a `memory.oom.group` walk does that) is not.
//!
//! The kernel escapes every byte outside printable ASCII (and `\` itself) as `\xNN`, so a comm
//! or a cgroup path may arrive escaped; [`KernelText`] holds the unescaped bytes, losslessly.
//!
//! Pure, and it must never panic on any input: the fuzz target, the integration tests and xtask
//! use it too.

use std::fmt;
use std::sync::Arc;

use super::report::{ReportReader, ReportedMemory};

/// One `/dev/kmsg` record, its continuation lines left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// `facility << 3 | level`.
    pub prio: u32,
    /// The kernel's sequence number: consecutive, so a gap means records were overwritten.
    pub seq: u64,
    /// Microseconds since boot when the kernel logged it.
    pub usec: u64,
    /// The first line of the message, escaped as the kernel wrote it.
    pub message: &'a [u8],
}

/// Parses a record `prio,seq,usec,flags[,…];message\n[ KEY=value\n…]`; `None` if the header is
/// not one.
pub fn parse_record(bytes: &[u8]) -> Option<Record<'_>> {
    let semicolon = bytes.iter().position(|&b| b == b';')?;
    let (header, rest) = (&bytes[..semicolon], &bytes[semicolon + 1..]);
    let mut fields = header.split(|&b| b == b',');
    let prio = number(fields.next()?)?;
    let seq = number(fields.next()?)?;
    let usec = number(fields.next()?)?;
    // The flags (`-`, or `c` for a continued line); kernels may add fields after them.
    fields.next()?;
    let end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
    Some(Record {
        prio: u32::try_from(prio).ok()?,
        seq,
        usec,
        message: &rest[..end],
    })
}

/// Bytes the kernel logged: a comm or a cgroup path, unescaped (`\xNN` back to the byte), so
/// a comm that is not UTF-8 survives. Displayed escaped again, as the kernel writes it.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct KernelText(pub Vec<u8>);

impl KernelText {
    /// Undoes the kernel's `\xNN` escapes; anything else is kept as it is.
    pub fn unescape(escaped: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(escaped.len());
        let mut at = 0;
        while at < escaped.len() {
            if escaped[at] == b'\\'
                && escaped.get(at + 1) == Some(&b'x')
                && let (Some(high), Some(low)) = (
                    escaped.get(at + 2).and_then(|&b| hex_digit(b)),
                    escaped.get(at + 3).and_then(|&b| hex_digit(b)),
                )
            {
                bytes.push((high << 4) | low);
                at += 4;
                continue;
            }
            bytes.push(escaped[at]);
            at += 1;
        }
        KernelText(bytes)
    }
}

impl fmt::Display for KernelText {
    /// As the kernel escapes it: printable ASCII as is, every other byte and `\` as `\xNN`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &byte in &self.0 {
            if (b' '..b'\x7f').contains(&byte) && byte != b'\\' {
                write!(f, "{}", byte as char)?;
            } else {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for KernelText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl From<&str> for KernelText {
    fn from(text: &str) -> Self {
        KernelText(text.as_bytes().to_vec())
    }
}

/// Which memory ran out, by the prefix the kernel gives its kill lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OomScope {
    /// `Memory cgroup out of memory`: a memory cgroup's limit.
    Memcg,
    /// `Out of memory`: the host's memory (or a cpuset's or mempolicy's nodes, see the
    /// constraint).
    Host,
}

impl OomScope {
    pub fn as_str(self) -> &'static str {
        match self {
            OomScope::Memcg => "memcg",
            OomScope::Host => "host",
        }
    }

    /// The scope a kill line's prefix names, and the rest of the line.
    fn strip_prefix(line: &[u8]) -> (Option<OomScope>, &[u8]) {
        // `Out of memory (oom_kill_allocating_task): …` on hosts with that sysctl set.
        for (prefix, scope) in [
            (&b"Memory cgroup out of memory"[..], OomScope::Memcg),
            (b"Out of memory", OomScope::Host),
        ] {
            if let Some(rest) = line.strip_prefix(prefix)
                && let Some(colon) = find(rest, b": ")
            {
                return (Some(scope), &rest[colon + 2..]);
            }
        }
        (None, line)
    }
}

/// `COMM invoked oom-killer: gfp_mask=0x…(…), order=N, oom_score_adj=N`: the task whose
/// allocation set the OOM killer off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invoker {
    pub comm: KernelText,
    /// As the kernel prints it, e.g. `0xcc0(GFP_KERNEL)`.
    pub gfp_mask: Option<String>,
    pub order: Option<i32>,
    pub oom_score_adj: Option<i32>,
}

/// The `oom-kill:` summary line (4.19 and later): each field as far as the kernel printed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OomConstraint {
    /// `CONSTRAINT_NONE`, `CONSTRAINT_CPUSET`, `CONSTRAINT_MEMORY_POLICY` or `CONSTRAINT_MEMCG`.
    pub constraint: String,
    /// `(null)` or a node list like `0-1`.
    pub nodemask: Option<String>,
    pub cpuset: Option<KernelText>,
    pub mems_allowed: Option<String>,
    /// The memory cgroup whose limit was hit; only in a memcg OOM.
    pub oom_memcg: Option<KernelText>,
    /// The victim's memory cgroup.
    pub task_memcg: Option<KernelText>,
    pub task: KernelText,
    pub pid: u32,
    pub uid: Option<u32>,
    /// `,global_oom`: no memory cgroup's limit, the host's memory ran out.
    pub global_oom: bool,
}

/// `Task in /x killed as a result of limit of /y` (memcg OOMs, up to 4.18).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegacyLimit {
    pub task_memcg: KernelText,
    pub oom_memcg: KernelText,
}

/// `Killed process PID (COMM) total-vm:…`: the memory figures are those the kernel printed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KilledMemory {
    pub total_vm_kb: Option<u64>,
    pub anon_rss_kb: Option<u64>,
    pub file_rss_kb: Option<u64>,
    pub shmem_rss_kb: Option<u64>,
    pub uid: Option<u32>,
    pub pgtables_kb: Option<u64>,
    pub oom_score_adj: Option<i16>,
}

/// One line of an OOM report that says something about a kill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OomLine {
    /// The report's first line.
    Invoked(Invoker),
    Constraint(OomConstraint),
    LegacyLimit(LegacyLimit),
    /// `Tasks in /x are going to be killed due to memory.oom.group set`.
    GroupKill {
        memcg: KernelText,
    },
    /// `…: Kill process PID (COMM) score N or sacrifice child` (up to 5.0): the OOM killer's
    /// pick, which it may swap for one of its children.
    KillProcess {
        scope: Option<OomScope>,
        pid: u32,
        comm: KernelText,
        score: Option<u64>,
    },
    Killed {
        scope: Option<OomScope>,
        pid: u32,
        comm: KernelText,
        memory: KilledMemory,
    },
}

/// Recognises a message (a record's, or a `dmesg` line's after its timestamp) as part of an
/// OOM report; `None` for everything else.
pub fn parse_line(message: &[u8]) -> Option<OomLine> {
    if let Some(rest) = message.strip_prefix(b"oom-kill:") {
        return parse_constraint(rest).map(OomLine::Constraint);
    }
    if let Some(rest) = message.strip_prefix(b"Task in ") {
        let at = find(rest, b" killed as a result of limit of ")?;
        return Some(OomLine::LegacyLimit(LegacyLimit {
            task_memcg: KernelText::unescape(&rest[..at]),
            oom_memcg: KernelText::unescape(&rest[at + 32..]),
        }));
    }
    if let Some(rest) = message.strip_prefix(b"Tasks in ") {
        let memcg = rest.strip_suffix(b" are going to be killed due to memory.oom.group set")?;
        return Some(OomLine::GroupKill {
            memcg: KernelText::unescape(memcg),
        });
    }
    let (scope, rest) = OomScope::strip_prefix(message);
    if let Some(rest) = rest.strip_prefix(b"Killed process ") {
        let (pid, comm, counters) = pid_and_comm(rest, b") total-vm:")?;
        return Some(OomLine::Killed {
            scope,
            pid,
            comm,
            memory: parse_memory(counters),
        });
    }
    if let Some(rest) = rest.strip_prefix(b"Kill process ") {
        let (pid, comm, after) = pid_and_comm(rest, b") score ")?;
        let score = after
            .strip_prefix(b"score ")
            .and_then(|score| number(score.split(|&b| b == b' ').next()?));
        return Some(OomLine::KillProcess {
            scope,
            pid,
            comm,
            score,
        });
    }
    // Last: a comm (15 bytes at most) cannot hold this, but the other lines' paths could.
    let at = find(message, b" invoked oom-killer: ")?;
    Some(OomLine::Invoked(parse_invoker(
        &message[..at],
        &message[at + 21..],
    )))
}

/// `PID (COMM` then `marker`: the comm may hold `) ` itself, so it ends at the last `marker`
/// (the kernel writes the comm before it). Returns the text after `) `.
fn pid_and_comm<'a>(rest: &'a [u8], marker: &[u8]) -> Option<(u32, KernelText, &'a [u8])> {
    let open = find(rest, b" (")?;
    let pid = u32::try_from(number(&rest[..open])?).ok()?;
    let after_open = &rest[open + 2..];
    let close = rfind(after_open, marker)?;
    Some((
        pid,
        KernelText::unescape(&after_open[..close]),
        &after_open[close + 2..],
    ))
}

fn parse_invoker(comm: &[u8], rest: &[u8]) -> Invoker {
    let mut invoker = Invoker {
        comm: KernelText::unescape(comm),
        gfp_mask: None,
        order: None,
        oom_score_adj: None,
    };
    for part in rest.split(|&b| b == b',') {
        let part = part.trim_ascii();
        let Some(eq) = part.iter().position(|&b| b == b'=') else {
            continue;
        };
        let (key, value) = (&part[..eq], &part[eq + 1..]);
        match key {
            b"gfp_mask" => invoker.gfp_mask = Some(String::from_utf8_lossy(value).into_owned()),
            b"order" => invoker.order = signed(value).and_then(|n| i32::try_from(n).ok()),
            b"oom_score_adj" => {
                invoker.oom_score_adj = signed(value).and_then(|n| i32::try_from(n).ok());
            }
            _ => {}
        }
    }
    invoker
}

/// `constraint=…,nodemask=…[,cpuset=…,mems_allowed=…][,oom_memcg=…][,task_memcg=…],task=…,pid=N,uid=N`
/// (after `oom-kill:`). Paths and the comm may hold commas: `pid` and `uid` are read from the
/// end, every other field runs to the next `,KEY=` of a later key.
fn parse_constraint(line: &[u8]) -> Option<OomConstraint> {
    const KEYS: [&[u8]; 7] = [
        b"constraint",
        b"nodemask",
        b"cpuset",
        b"mems_allowed",
        b"oom_memcg",
        b"task_memcg",
        b"task",
    ];
    let uid_at = rfind(line, b",uid=");
    let (line, uid) = match uid_at {
        Some(at) => (
            &line[..at],
            number(&line[at + 5..]).and_then(|n| u32::try_from(n).ok()),
        ),
        None => (line, None),
    };
    let pid_at = rfind(line, b",pid=")?;
    let pid = u32::try_from(number(&line[pid_at + 5..])?).ok()?;
    // A host-wide OOM says `,global_oom` where a memcg OOM says `,oom_memcg=/x`: a flag, not a
    // field, taken out so it does not run into the field before it.
    let mut fields = line[..pid_at].to_vec();
    let global_oom = match find_flag(&fields, b",global_oom") {
        Some(at) => {
            fields.drain(at..at + 11);
            true
        }
        None => false,
    };
    let fields = fields.as_slice();

    let mut values: [Option<&[u8]>; 7] = [None; 7];
    let mut at = 0;
    let mut key_index = 0;
    // Each field: `KEY=` at `at`, its value up to the earliest `,LATER_KEY=`.
    while at < fields.len() {
        let rest = &fields[at..];
        let Some(index) = (key_index..KEYS.len()).find(|&index| {
            rest.strip_prefix(KEYS[index])
                .is_some_and(|after| after.first() == Some(&b'='))
        }) else {
            // A field this parser does not know (a newer kernel's): on to the next known one.
            match (key_index..KEYS.len())
                .filter_map(|later| find_key(rest, KEYS[later]))
                .min()
            {
                Some(next) => {
                    at += next + 1;
                    continue;
                }
                None => break,
            }
        };
        let value_start = KEYS[index].len() + 1;
        let value = &rest[value_start..];
        let end = (index + 1..KEYS.len())
            .filter_map(|later| find_key(value, KEYS[later]))
            .min()
            .unwrap_or(value.len());
        values[index] = Some(&value[..end]);
        key_index = index + 1;
        // Past the value and its comma.
        at += value_start + end + 1;
    }
    let text = |index: usize| values[index].map(|value| String::from_utf8_lossy(value).into());
    let path = |index: usize| values[index].map(KernelText::unescape);
    Some(OomConstraint {
        constraint: text(0)?,
        nodemask: text(1),
        cpuset: path(2),
        mems_allowed: text(3),
        oom_memcg: path(4),
        task_memcg: path(5),
        task: path(6)?,
        pid,
        uid,
        global_oom,
    })
}

/// Where `flag` stands as a field of its own: followed by `,` or the end.
fn find_flag(fields: &[u8], flag: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = find(&fields[from..], flag) {
        let end = from + at + flag.len();
        if matches!(fields.get(end), None | Some(b',')) {
            return Some(from + at);
        }
        from = end;
    }
    None
}

/// Where `,KEY=` starts in `value`.
fn find_key(value: &[u8], key: &[u8]) -> Option<usize> {
    let mut needle = Vec::with_capacity(key.len() + 2);
    needle.push(b',');
    needle.extend_from_slice(key);
    needle.push(b'=');
    find(value, &needle)
}

/// `total-vm:NkB, anon-rss:NkB, file-rss:NkB, shmem-rss:NkB, UID:N pgtables:NkB oom_score_adj:N`,
/// any of them missing.
fn parse_memory(counters: &[u8]) -> KilledMemory {
    let mut memory = KilledMemory::default();
    for word in counters.split(|&b| b == b' ' || b == b',') {
        let Some(colon) = word.iter().position(|&b| b == b':') else {
            continue;
        };
        let (key, value) = (&word[..colon], &word[colon + 1..]);
        let kb = || number(value.strip_suffix(b"kB")?);
        match key {
            b"total-vm" => memory.total_vm_kb = kb(),
            b"anon-rss" => memory.anon_rss_kb = kb(),
            b"file-rss" => memory.file_rss_kb = kb(),
            b"shmem-rss" => memory.shmem_rss_kb = kb(),
            b"pgtables" => memory.pgtables_kb = kb(),
            b"UID" => memory.uid = number(value).and_then(|n| u32::try_from(n).ok()),
            b"oom_score_adj" => {
                memory.oom_score_adj = signed(value).and_then(|n| i16::try_from(n).ok());
            }
            _ => {}
        }
    }
    memory
}

/// A kill the kernel logged, with what its OOM report said about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsgKill {
    /// The sequence number of the `Killed process` record.
    pub seq: u64,
    /// Microseconds since boot of the `Killed process` record.
    pub usec: u64,
    pub pid: u32,
    pub comm: KernelText,
    /// From the kill lines' prefix, else from the constraint or the legacy limit line.
    pub scope: Option<OomScope>,
    pub memory: KilledMemory,
    /// The `oom-kill:` line of this pid (4.19 and later, unless the report was rate-limited).
    pub constraint: Option<OomConstraint>,
    /// The `Task in … limit of …` line of this report (memcg OOMs up to 4.18).
    pub legacy_limit: Option<LegacyLimit>,
    /// The badness from the legacy `Kill process` line, when it named this pid.
    pub score: Option<u64>,
    /// The memory cgroup of a `memory.oom.group` kill, which kills every task in it.
    pub oom_group: Option<KernelText>,
    /// Who set the OOM killer off.
    pub invoker: Option<Invoker>,
    /// What the report said of the domain's memory; `None` when the kernel printed no report
    /// for this kill (its OOM reports are rate-limited: 10 every 5 s by default).
    pub report: Option<Arc<ReportedMemory>>,
}

impl KmsgKill {
    /// The memory cgroup whose limit was hit, however this kernel said it.
    pub fn oom_memcg(&self) -> Option<&KernelText> {
        self.constraint
            .as_ref()
            .and_then(|constraint| constraint.oom_memcg.as_ref())
            .or_else(|| self.legacy_limit.as_ref().map(|limit| &limit.oom_memcg))
    }

    /// The victim's memory cgroup, however this kernel said it.
    pub fn task_memcg(&self) -> Option<&KernelText> {
        self.constraint
            .as_ref()
            .and_then(|constraint| constraint.task_memcg.as_ref())
            .or_else(|| self.legacy_limit.as_ref().map(|limit| &limit.task_memcg))
    }
}

/// Pairs the lines of OOM reports into kills, one record at a time, in the kernel's order.
#[derive(Debug, Default)]
pub struct KillAssembler {
    invoker: Option<Invoker>,
    constraint: Option<OomConstraint>,
    legacy_limit: Option<LegacyLimit>,
    kill_process: Option<(Option<OomScope>, u32, Option<u64>)>,
    group: Option<KernelText>,
    /// The pids this report killed: a `memory.oom.group` walk kills the chosen victim again
    /// and logs it twice (seen on 6.1). Bounded; past the bound a repeat is a kill again.
    killed: Vec<u32>,
    /// The report's memory lines.
    memory: ReportReader,
    /// The same, once the summary line ended them: shared by every kill of the report.
    finished: Option<Arc<ReportedMemory>>,
    /// A report begun (its `invoked oom-killer` line) and not yet given to a kill.
    open: bool,
}

/// What one record told the assembler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Nothing to act on yet.
    Nothing,
    /// The report's `oom-kill:` summary line: what it said of memory is complete, and its
    /// victim is this pid. The `Killed process` line follows a moment later.
    Summary {
        pid: u32,
        oom_memcg: Option<KernelText>,
        /// The victim's memory cgroup.
        task_memcg: Option<KernelText>,
        report: Arc<ReportedMemory>,
    },
    /// `Tasks in /x are going to be killed due to memory.oom.group set`: the report's other
    /// victims, each marked and killed after this line, are the tasks of that cgroup.
    Group {
        memcg: KernelText,
    },
    Kill(Box<KmsgKill>),
}

/// The kills of one report remembered to drop repeats: more than any `memory.oom.group` of a
/// real workload, small enough to search.
const KILLED_PER_REPORT: usize = 4096;

impl KillAssembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// A raw `/dev/kmsg` record; a kill when it is a `Killed process` line.
    pub fn push_record(&mut self, record: &[u8]) -> Option<KmsgKill> {
        match self.push_record_full(record) {
            Pushed::Kill(kill) => Some(*kill),
            Pushed::Nothing | Pushed::Summary { .. } | Pushed::Group { .. } => None,
        }
    }

    /// A raw `/dev/kmsg` record, and what it completed.
    pub fn push_record_full(&mut self, record: &[u8]) -> Pushed {
        match parse_record(record) {
            Some(record) => self.push_line_full(record.seq, record.usec, record.message),
            None => Pushed::Nothing,
        }
    }

    /// One message with its record's sequence number and time.
    pub fn push_line(&mut self, seq: u64, usec: u64, message: &[u8]) -> Option<KmsgKill> {
        match self.push_line_full(seq, usec, message) {
            Pushed::Kill(kill) => Some(*kill),
            Pushed::Nothing | Pushed::Summary { .. } | Pushed::Group { .. } => None,
        }
    }

    /// One message with its record's sequence number and time, and what it completed.
    pub fn push_line_full(&mut self, seq: u64, usec: u64, message: &[u8]) -> Pushed {
        let Some(line) = parse_line(message) else {
            if self.open && self.finished.is_none() {
                self.memory.push(message);
            }
            return Pushed::Nothing;
        };
        self.memory.end_section();
        match line {
            OomLine::Invoked(invoker) => {
                // A new report: what an earlier one left unpaired belongs to no kill of it.
                *self = KillAssembler {
                    invoker: Some(invoker),
                    open: true,
                    ..KillAssembler::default()
                };
                Pushed::Nothing
            }
            OomLine::Constraint(constraint) => {
                let pid = constraint.pid;
                let oom_memcg = constraint.oom_memcg.clone();
                let task_memcg = constraint.task_memcg.clone();
                self.constraint = Some(constraint);
                match self.report() {
                    Some(report) if self.open => Pushed::Summary {
                        pid,
                        oom_memcg,
                        task_memcg,
                        report,
                    },
                    _ => Pushed::Nothing,
                }
            }
            OomLine::LegacyLimit(limit) => {
                self.legacy_limit = Some(limit);
                Pushed::Nothing
            }
            OomLine::GroupKill { memcg } => {
                self.group = Some(memcg.clone());
                if self.open {
                    Pushed::Group { memcg }
                } else {
                    Pushed::Nothing
                }
            }
            OomLine::KillProcess {
                scope,
                pid,
                comm: _,
                score,
            } => {
                self.kill_process = Some((scope, pid, score));
                Pushed::Nothing
            }
            OomLine::Killed {
                scope,
                pid,
                comm,
                memory,
            } => {
                if self.killed.contains(&pid) {
                    return Pushed::Nothing;
                }
                if self.killed.len() < KILLED_PER_REPORT {
                    self.killed.push(pid);
                }
                Pushed::Kill(Box::new(self.killed(seq, usec, scope, pid, comm, memory)))
            }
        }
    }

    /// What the open report said of memory, from here on shared by its kills.
    fn report(&mut self) -> Option<Arc<ReportedMemory>> {
        if self.finished.is_none() && self.open {
            let memory = std::mem::take(&mut self.memory).into_memory();
            self.finished = Some(Arc::new(memory));
        }
        self.finished.clone()
    }

    fn killed(
        &mut self,
        seq: u64,
        usec: u64,
        scope: Option<OomScope>,
        pid: u32,
        comm: KernelText,
        memory: KilledMemory,
    ) -> KmsgKill {
        // A report belongs to its first kill and, in a `memory.oom.group` kill, to the others
        // after it. A kill after that had no report of its own: the kernel's reports are
        // rate-limited, the kill lines are not.
        let reported = self.open && (self.killed.len() == 1 || self.group.is_some());
        let report = if reported { self.report() } else { None };
        // The summary line names one victim; `memory.oom.group` kills more after it.
        let constraint = self.constraint.take_if(|constraint| constraint.pid == pid);
        // Legacy kernels kill one process per report: its lines belong to this kill.
        let legacy_limit = self.legacy_limit.take();
        let kill_process = self.kill_process.take();
        let score = kill_process
            .filter(|(_, chosen, _)| *chosen == pid)
            .and_then(|(_, _, score)| score);
        let scope = scope
            .or_else(|| kill_process.and_then(|(scope, _, _)| scope))
            .or_else(|| {
                constraint.as_ref().map(|constraint| {
                    if constraint.constraint == "CONSTRAINT_MEMCG" {
                        OomScope::Memcg
                    } else {
                        OomScope::Host
                    }
                })
            })
            .or(legacy_limit.as_ref().map(|_| OomScope::Memcg));
        KmsgKill {
            seq,
            usec,
            pid,
            comm,
            scope,
            memory,
            constraint,
            legacy_limit,
            score,
            oom_group: self.group.clone(),
            invoker: if reported { self.invoker.clone() } else { None },
            report,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(haystack.len());
    }
    haystack
        .windows(needle.len())
        .rposition(|window| window == needle)
}

/// Decimal digits only, no sign, no overflow.
pub(super) fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

fn signed(text: &[u8]) -> Option<i64> {
    match text.strip_prefix(b"-") {
        Some(digits) => i64::try_from(number(digits)?).ok().map(|n| -n),
        None => i64::try_from(number(text)?).ok(),
    }
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}
