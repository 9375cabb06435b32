//! The kernel's own account of OOM kills, from `/dev/kmsg`.

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
}

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

/// A reader of the kernel log (`/dev/kmsg`) from the moment it was opened.
pub struct Kmsg {
    file: File,
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
        Self { file }
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
    })
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
            }
        );
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
