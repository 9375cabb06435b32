//! The kernel's own account of OOM kills, from `/dev/kmsg`: the oracle of every scenario, on
//! the host and in the guests. The lines are read by the agent's own kernel-log parser, which
//! its unit tests and fuzz target pin to real kernels' lines.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::unix::fs::OpenOptionsExt as _;
use std::thread;
use std::time::{Duration, Instant};

use oomtrace::kmsg::parse;
use oomtrace::record::OomKillRecord;

use crate::{POLL_INTERVAL, pretty};

/// The kernel's "Killed process" line for one OOM kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KilledProcess {
    pub pid: u32,
    pub comm: String,
    pub total_vm_kb: u64,
    pub anon_rss_kb: u64,
    pub file_rss_kb: u64,
    pub shmem_rss_kb: u64,
    /// `UID:`, `pgtables:` and `oom_score_adj:`, which kernels print since 5.x / 4.19.
    pub uid: Option<u32>,
    pub pgtables_kb: Option<u64>,
    pub oom_score_adj: Option<i16>,
}

/// How far the agent's memory figures may be from the kernel's: the agent reads them from the
/// victim's task at the OOM killer's entry, its SIGKILL or its mark, and the kernel prints them
/// a moment later, from the same counters; they differ by what was faulted in between, if
/// anything.
const MEMORY_TOLERANCE_PERCENT: u64 = 10;
const MEMORY_TOLERANCE_KIB: u64 = 256;

impl KilledProcess {
    /// Panics unless the agent's `oom_kill` record gives an anon RSS within 10% of what the
    /// kernel logged for this kill.
    pub fn assert_anon_rss_matches(&self, kill: &OomKillRecord) {
        let Some(anon_rss_bytes) = kill
            .victim
            .process
            .memory
            .and_then(|memory| memory.anon_rss_bytes)
        else {
            panic!("the record has no victim anon RSS:\n{}", pretty(kill));
        };
        let anon_rss_kb = anon_rss_bytes / 1024;
        assert!(
            anon_rss_kb.abs_diff(self.anon_rss_kb) * 10 <= self.anon_rss_kb,
            "victim anon RSS {anon_rss_kb} kB should be within 10% of the kernel's {} kB; in {}",
            self.anon_rss_kb,
            pretty(kill)
        );
    }
}

impl KilledProcess {
    /// Panics unless the agent's `oom_kill` record names and measures the victim as this line
    /// does: its comm, total-vm, anon-rss, file-rss, shmem-rss and pgtables (each within 10%,
    /// or 256 KiB), and where the kernel printed them its UID and oom_score_adj; whichever part
    /// of the agent read them on this kernel.
    pub fn assert_victim_as_logged(&self, kill: &OomKillRecord) {
        let pid = self.pid;
        let context = || pretty(kill);
        let process = &kill.victim.process;
        assert_eq!(process.pid, Some(pid), "the victim in {}", context());
        assert_eq!(
            process.comm(),
            Some(self.comm.as_str()),
            "the kernel log names victim {pid} {:?}; in {}",
            self.comm,
            context()
        );
        let Some(memory) = process.memory else {
            panic!("no victim memory in {}", context());
        };
        let figures = [
            (
                "virtual_bytes",
                memory.virtual_bytes,
                "total-vm",
                Some(self.total_vm_kb),
            ),
            (
                "anon_rss_bytes",
                memory.anon_rss_bytes,
                "anon-rss",
                Some(self.anon_rss_kb),
            ),
            (
                "file_rss_bytes",
                memory.file_rss_bytes,
                "file-rss",
                Some(self.file_rss_kb),
            ),
            (
                "shmem_rss_bytes",
                memory.shmem_rss_bytes,
                "shmem-rss",
                Some(self.shmem_rss_kb),
            ),
            (
                "page_tables_bytes",
                memory.page_tables_bytes,
                "pgtables",
                self.pgtables_kb,
            ),
        ];
        for (name, agent_bytes, logged, kernel_kib) in figures {
            let Some(kernel_kib) = kernel_kib else {
                continue;
            };
            let Some(agent_bytes) = agent_bytes else {
                panic!(
                    "victim {pid}: no {name}, the kernel log says {logged} {kernel_kib} KiB; in {}",
                    context()
                );
            };
            let agent_kib = agent_bytes / 1024;
            let tolerance = (kernel_kib * MEMORY_TOLERANCE_PERCENT / 100).max(MEMORY_TOLERANCE_KIB);
            assert!(
                agent_kib.abs_diff(kernel_kib) <= tolerance,
                "victim {pid}: the agent says {name} {agent_kib} KiB, the kernel log {logged} \
                 {kernel_kib} KiB; in {}",
                context()
            );
        }
        if let Some(uid) = self.uid {
            assert_eq!(
                process.real_user.map(|user| user.id),
                Some(uid),
                "victim {pid}: the kernel log says UID {uid}; in {}",
                context()
            );
        }
        if let Some(adj) = self.oom_score_adj {
            assert_eq!(
                process.oom_score_adj,
                Some(adj),
                "victim {pid}: the kernel log says oom_score_adj {adj}; in {}",
                context()
            );
        }
    }
}

/// A reader of the kernel log (`/dev/kmsg`) from the moment it was opened. It keeps every
/// message it read, for what a test asks about afterwards (the task dump before a kill).
pub struct Kmsg {
    file: File,
    messages: Vec<String>,
}

impl Kmsg {
    /// Opens `/dev/kmsg` positioned after the last record, so only new messages are read.
    pub fn open_at_end() -> Self {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")
            .expect("opening /dev/kmsg to read the kernel's own account of OOM kills");
        file.seek(SeekFrom::End(0))
            .expect("seeking /dev/kmsg to its end");
        Self {
            file,
            messages: Vec::new(),
        }
    }

    /// Reads every message logged so far; returns how many records were lost because the
    /// kernel's ring buffer overwrote them before they were read.
    pub fn read_all(&mut self) -> u64 {
        let mut overwritten = 0;
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match self.file.read(&mut buffer) {
                Ok(len) if len > 0 => self.keep(&buffer[..len]),
                Ok(_) => return overwritten,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return overwritten,
                Err(err) if err.raw_os_error() == Some(libc::EPIPE) => overwritten += 1,
                Err(err) => panic!("reading /dev/kmsg: {err}"),
            }
        }
    }

    /// Every message read so far, in order.
    pub fn messages(&self) -> &[String] {
        &self.messages
    }

    /// The OOM report lines among the messages read so far, parsed.
    pub fn oom_lines(&self) -> impl Iterator<Item = parse::OomLine> + '_ {
        self.messages
            .iter()
            .filter_map(|message| parse::parse_line(message.as_bytes()))
    }

    /// Every `Killed process` line read so far, with its pid.
    pub fn killed_processes(&self) -> Vec<KilledProcess> {
        self.messages
            .iter()
            .filter_map(|message| parse_killed_process(message))
            .collect()
    }

    /// The badness of `pid` as `oom_badness()` computed it, recomputed from the last task dump
    /// (`vm.oom_dump_tasks`, on by default) read so far that lists it: `rss + swapents +
    /// pgtables_bytes / PAGE_SIZE + oom_score_adj * (totalpages / 1000)`. Read the kill's
    /// `Killed process` line first ([`find_killed`](Self::find_killed)): the dump comes
    /// before it. Panics if no dump lists `pid`.
    pub fn task_dump_badness(&self, pid: u32, totalpages: u64) -> i64 {
        task_dump_badness(&self.messages, pid, totalpages).unwrap_or_else(|err| {
            panic!("{err}; the kernel log read:\n{}", self.messages.join("\n"))
        })
    }

    fn keep(&mut self, record: &[u8]) {
        if let Some(record) = parse::parse_record(record) {
            self.messages
                .push(String::from_utf8_lossy(record.message).into_owned());
        }
    }

    /// Reads the log until the OOM killer's "Killed process `pid` (" line; panics after `timeout`.
    pub fn find_killed(&mut self, pid: u32, timeout: Duration) -> KilledProcess {
        self.read_until(
            timeout,
            &format!("\"Killed process {pid} (\" line"),
            |record| {
                parse::parse_record(record)
                    .and_then(|record| killed_process(record.message))
                    .filter(|killed| killed.pid == pid)
            },
        )
    }

    /// Reads the log until the OOM report that killed `pid`, and returns what it says: whose
    /// limit, the victim's memory cgroup, and which task set the OOM killer off (the report's
    /// stack dump names it: `CPU: N … PID: N Comm: …`). Panics after `timeout`.
    pub fn find_report(&mut self, pid: u32, timeout: Duration) -> KernelReport {
        let mut assembler = parse::KillAssembler::new();
        let mut invoker_pid = None;
        self.read_until(
            timeout,
            &format!("OOM report killing pid {pid}"),
            |record| {
                let parsed = parse::parse_record(record)?;
                if let Some(parse::OomLine::Invoked(_)) = parse::parse_line(parsed.message) {
                    invoker_pid = None;
                } else if let Some(pid) = stack_dump_pid(parsed.message) {
                    invoker_pid.get_or_insert(pid);
                }
                let kill = assembler.push_record(record)?;
                let killed = killed_process(parsed.message)?;
                let text = |text: &parse::KernelText| String::from_utf8_lossy(&text.0).into_owned();
                (kill.pid == pid).then(|| KernelReport {
                    killed,
                    oom_memcg: kill.oom_memcg().map(text),
                    task_memcg: kill.task_memcg().map(text),
                    invoker_comm: kill.invoker.as_ref().map(|invoker| text(&invoker.comm)),
                    invoker_pid,
                })
            },
        )
    }

    /// Reads records until `found` makes something of one; panics after `timeout`, saying
    /// what was `sought`.
    fn read_until<T>(
        &mut self,
        timeout: Duration,
        sought: &str,
        mut found: impl FnMut(&[u8]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        // Each read returns one whole record; a buffer shorter than the record fails (EINVAL).
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match self.file.read(&mut buffer) {
                Ok(len) if len > 0 => {
                    self.keep(&buffer[..len]);
                    if let Some(found) = found(&buffer[..len]) {
                        return found;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                // Records we had not read yet were overwritten: read on from the oldest one.
                Err(err) if err.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(err) => panic!("reading /dev/kmsg: {err}"),
            }
            assert!(
                Instant::now() < deadline,
                "the kernel log has no {sought} within {timeout:?}"
            );
            thread::sleep(POLL_INTERVAL);
        }
    }
}

/// What the kernel's OOM report says about one kill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelReport {
    pub killed: KilledProcess,
    /// The memory cgroup whose limit was hit; `None` when the host ran out.
    pub oom_memcg: Option<String>,
    /// The victim's memory cgroup.
    pub task_memcg: Option<String>,
    /// The comm of the task whose allocation set the OOM killer off.
    pub invoker_comm: Option<String>,
    /// Its pid, from the stack dump that follows the report's first line.
    pub invoker_pid: Option<u32>,
}

/// The pid in a stack dump's header, `CPU: 1 [UID: 0 ]PID: 4242 Comm: …` (UID since 6.13).
fn stack_dump_pid(message: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(message).ok()?;
    let rest = text.strip_prefix("CPU: ")?;
    let after = &rest[rest.find(" PID: ")? + 6..];
    after.split(' ').next()?.parse().ok()
}

/// Parses the OOM killer's `[…: ]Killed process <pid> (<comm>) total-vm:NkB, anon-rss:NkB, …`
/// with the agent's own kernel-log parser; the four memory figures must be there.
pub fn parse_killed_process(message: &str) -> Option<KilledProcess> {
    killed_process(message.as_bytes())
}

fn killed_process(message: &[u8]) -> Option<KilledProcess> {
    let parse::OomLine::Killed {
        scope: _,
        pid,
        comm,
        memory,
    } = parse::parse_line(message)?
    else {
        return None;
    };
    Some(KilledProcess {
        pid,
        comm: String::from_utf8_lossy(&comm.0).into_owned(),
        total_vm_kb: memory.total_vm_kb?,
        anon_rss_kb: memory.anon_rss_kb?,
        file_rss_kb: memory.file_rss_kb?,
        shmem_rss_kb: memory.shmem_rss_kb?,
        uid: memory.uid,
        pgtables_kb: memory.pgtables_kb,
        oom_score_adj: memory.oom_score_adj,
    })
}

/// See [`Kmsg::task_dump_badness`].
fn task_dump_badness(messages: &[String], pid: u32, totalpages: u64) -> Result<i64, String> {
    const PAGE_SIZE: i64 = 4096;
    let mut columns: Option<Vec<&str>> = None;
    let mut found = None;
    for message in messages {
        let words: Vec<&str> = message
            .split(|c: char| c.is_whitespace() || c == '[' || c == ']')
            .filter(|word| !word.is_empty())
            .collect();
        // The header: "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents
        // oom_score_adj name" (6.1); later kernels add rss_anon, rss_file and rss_shmem.
        if words.first() == Some(&"pid") && words.contains(&"oom_score_adj") {
            columns = Some(words);
            continue;
        }
        let Some(columns) = &columns else { continue };
        if words.len() == columns.len() && words[0] == pid.to_string() {
            let value = |name: &str| -> Result<i64, String> {
                let index = columns
                    .iter()
                    .position(|column| *column == name)
                    .ok_or_else(|| format!("no `{name}` column in the task dump"))?;
                words[index]
                    .parse()
                    .map_err(|err| format!("`{name}` of {message:?}: {err}"))
            };
            let per_mille = i64::try_from(totalpages / 1000).map_err(|err| err.to_string())?;
            found = Some(
                value("rss")?
                    + value("swapents")?
                    + value("pgtables_bytes")? / PAGE_SIZE
                    + value("oom_score_adj")? * per_mille,
            );
        }
    }
    found.ok_or_else(|| format!("pid {pid} is in no task dump of the kernel log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_memcg_kill_line_of_a_recent_kernel() {
        let line = "Memory cgroup out of memory: Killed process 16699 (python3) total-vm:75160kB, \
                    anon-rss:65024kB, file-rss:6572kB, shmem-rss:0kB, UID:0 pgtables:184kB oom_score_adj:0";
        let killed = parse_killed_process(line).expect("a Killed process line");
        assert_eq!(
            killed,
            KilledProcess {
                pid: 16699,
                comm: "python3".to_owned(),
                total_vm_kb: 75160,
                anon_rss_kb: 65024,
                file_rss_kb: 6572,
                shmem_rss_kb: 0,
                uid: Some(0),
                pgtables_kb: Some(184),
                oom_score_adj: Some(0),
            }
        );
    }

    /// A memcg OOM as the Debian 6.1 guest logs it.
    const REPORT: [&str; 5] = [
        "oomtrace-hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
        "[    146]     0   146     1234      100    49152        0         -1000 oomtrace",
        "[    147]     0   147    17006    16281   184320        0           500 oomtrace-hog",
        "Memory cgroup out of memory: Killed process 147 (oomtrace-hog) total-vm:68024kB, anon-rss:64760kB, file-rss:364kB, shmem-rss:0kB, UID:0 pgtables:180kB oom_score_adj:500",
    ];

    #[test]
    fn badness_is_recomputed_from_the_task_dump() {
        let messages = REPORT.map(str::to_owned);
        // 16281 + 0 + 184320 / 4096 + 500 * (16384 / 1000)
        assert_eq!(
            task_dump_badness(&messages, 147, 16_384),
            Ok(16281 + 45 + 500 * 16)
        );
        assert_eq!(
            task_dump_badness(&messages, 146, 16_384),
            Ok(100 + 12 - 16_000)
        );
        assert!(task_dump_badness(&messages, 148, 16_384).is_err());
    }

    #[test]
    fn the_victim_is_checked_against_its_line() {
        let killed = parse_killed_process(REPORT[4]).expect("a Killed process line");
        let kill: OomKillRecord = serde_json::from_value(serde_json::json!({
            "time": "2026-12-07T10:00:00Z",
            "ktime_ns": 1,
            "victim": {"process": {
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
            }}
        }))
        .expect("an oom_kill record");
        killed.assert_victim_as_logged(&kill);
        let fails = |change: fn(&mut OomKillRecord)| {
            let mut changed = kill.clone();
            change(&mut changed);
            std::panic::catch_unwind(|| killed.assert_victim_as_logged(&changed))
                .expect_err("a victim unlike the kernel's line")
        };
        fails(|kill| kill.victim.process.executable = None);
        fails(|kill| {
            if let Some(memory) = &mut kill.victim.process.memory {
                memory.anon_rss_bytes = Some(32_000 << 10);
            }
        });
        fails(|kill| kill.victim.process.oom_score_adj = Some(0));
        fails(|kill| kill.victim.process.pid = Some(148));
    }

    #[test]
    fn parses_the_older_form() {
        let line = "Killed process 1234 (java) total-vm:2000kB, anon-rss:1000kB, file-rss:0kB, shmem-rss:0kB";
        let killed = parse_killed_process(line).expect("a Killed process line");
        assert_eq!((killed.pid, killed.comm.as_str()), (1234, "java"));
        assert_eq!(
            (
                killed.total_vm_kb,
                killed.anon_rss_kb,
                killed.file_rss_kb,
                killed.shmem_rss_kb
            ),
            (2000, 1000, 0, 0)
        );
    }

    #[test]
    fn keeps_parentheses_and_spaces_in_the_comm() {
        let line = "Out of memory: Killed process 7 (a) b (c) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB";
        let killed = parse_killed_process(line).expect("a Killed process line");
        assert_eq!(killed.comm, "a) b (c");
        assert_eq!(killed.shmem_rss_kb, 4);
    }

    #[test]
    fn reads_the_invokers_pid_from_the_stack_dump_header() {
        for (line, pid) in [
            (
                "CPU: 1 UID: 0 PID: 26462 Comm: oomtrace-hog Not tainted 6.18.44 #1",
                Some(26462),
            ),
            (
                "CPU: 0 PID: 152 Comm: oomtrace-hog Not tainted 6.1.0-50-cloud-amd64 #1",
                Some(152),
            ),
            ("CPU: 0 PID: x Comm: a", None),
            ("Call Trace:", None),
        ] {
            assert_eq!(stack_dump_pid(line.as_bytes()), pid, "{line}");
        }
    }

    #[test]
    fn ignores_other_oom_messages() {
        assert_eq!(
            parse_killed_process(
                "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),task=python3,pid=16699,uid=0"
            ),
            None
        );
        assert_eq!(
            parse_killed_process("oom_reaper: reaped process 16699 (python3), now anon-rss:0kB"),
            None
        );
    }

    #[test]
    fn takes_the_message_out_of_a_kmsg_record() {
        let record = b"3,1890,1124479151,-;Memory cgroup out of memory: Killed process 5 (x) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB\n SUBSYSTEM=mem\n";
        let record = parse::parse_record(record).expect("a record");
        assert_eq!(record.seq, 1890);
        assert_eq!(
            killed_process(record.message).map(|k| k.shmem_rss_kb),
            Some(4)
        );
    }
}
