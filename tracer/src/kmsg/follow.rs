//! The kernel log as it is written: each OOM report's account of memory, kept until the kill
//! it belongs to arrives.
//!
//! The kernel prints the report (the domain's statistics, the task dump and the `oom-kill:`
//! summary naming the victim) before it marks the victim, so by the time the kill reaches the
//! agent its report is in the log. A thread of its own reads the log as records come, so that
//! a kill finds its report parsed already; the kill's lookup reads whatever is left first,
//! without waiting (`O_NONBLOCK`), and within a bound.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek as _, SeekFrom};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::parse::{KernelText, KillAssembler, Pushed};
use super::read::KMSG;
use super::report::ReportedMemory;

/// Reports kept, newest last: far more than the kernel prints in the time a kill takes to
/// arrive (10 every 5 s by default).
const REPORTS_KEPT: usize = 64;
/// How old a report may be for the kill it names: a kill reaches the lookup within
/// milliseconds of its report, or within seconds behind a burst; older ones name a pid that
/// may since have been reused.
const REPORT_LIFETIME: Duration = Duration::from_secs(60);
/// Records read under the lock at a time by the thread, so a kill's lookup never waits long.
const RECORDS_PER_TURN: usize = 512;
/// Records a kill's lookup reads at most: a host-wide report on a busy host dumps a line per
/// process, which the thread has usually read long before.
const RECORDS_PER_LOOKUP: usize = 20_000;
/// A record and its continuation lines fit in 8 KiB; a shorter buffer fails with EINVAL.
const RECORD_BUFFER: usize = 16 * 1024;

/// A report the log held, and the victim its summary named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub pid: u32,
    /// The summary line's sequence number.
    pub seq: u64,
    /// The memory cgroup whose limit was hit (memcg OOMs).
    pub oom_memcg: Option<KernelText>,
    /// The victim's memory cgroup.
    pub task_memcg: Option<KernelText>,
    /// A `memory.oom.group` kill's cgroup, whose every task the report kills.
    pub group: Option<KernelText>,
    pub report: Arc<ReportedMemory>,
}

/// What the log says of one kill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Report(Seen),
    /// Read up to now, and no report named the victim: the kernel printed none (rate-limited).
    NoReport,
    /// The log could not be read: why.
    Unreadable(String),
}

/// The reports read so far from `source`, one record per `read` as `/dev/kmsg` hands them.
pub(crate) struct Followed<R> {
    source: R,
    assembler: KillAssembler,
    reports: VecDeque<(Instant, Seen)>,
    buffer: Vec<u8>,
    /// Times the kernel overwrote records before they were read.
    pub overwritten: u64,
    /// Set once a read failed for good.
    failed: Option<String>,
}

impl<R: Read> Followed<R> {
    pub(crate) fn new(source: R) -> Self {
        Followed {
            source,
            assembler: KillAssembler::new(),
            reports: VecDeque::new(),
            buffer: vec![0; RECORD_BUFFER],
            overwritten: 0,
            failed: None,
        }
    }

    /// Reads up to `max` records, until there are none (`EAGAIN`); whether records may remain.
    pub(crate) fn drain(&mut self, max: usize, now: Instant) -> bool {
        if self.failed.is_some() {
            return false;
        }
        for _ in 0..max {
            let len = match self.source.read(&mut self.buffer) {
                Ok(0) => return false,
                Ok(len) => len,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return false,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // Overwritten before they were read: a report cut in two pairs nothing.
                Err(err) if err.raw_os_error() == Some(libc::EPIPE) => {
                    self.overwritten += 1;
                    self.assembler = KillAssembler::new();
                    continue;
                }
                Err(err) => {
                    self.failed = Some(format!("reading {KMSG}: {err}"));
                    return false;
                }
            };
            match self.assembler.push_record_full(&self.buffer[..len]) {
                Pushed::Summary {
                    pid,
                    oom_memcg,
                    task_memcg,
                    report,
                } => {
                    let seq = super::parse::parse_record(&self.buffer[..len]).map_or(0, |r| r.seq);
                    if self.reports.len() == REPORTS_KEPT {
                        self.reports.pop_front();
                    }
                    self.reports.push_back((
                        now,
                        Seen {
                            pid,
                            seq,
                            oom_memcg,
                            task_memcg,
                            group: None,
                            report,
                        },
                    ));
                }
                // The report read last is the one whose group this is.
                Pushed::Group { memcg } => {
                    if let Some((_, seen)) = self.reports.back_mut() {
                        seen.group = Some(memcg);
                    }
                }
                Pushed::Nothing | Pushed::Kill(_) => {}
            }
        }
        true
    }

    /// The report naming one of `pids` (the victim's pid and its process's), or the
    /// `memory.oom.group` kill of a cgroup holding `memcg` (the victim's), after reading what
    /// the log holds by now.
    pub(crate) fn lookup(&mut self, pids: &[u32], memcg: Option<&str>, now: Instant) -> Lookup {
        self.drain(RECORDS_PER_LOOKUP, now);
        let recent = || {
            self.reports.iter().rev().take_while(|(read_at, _)| {
                now.saturating_duration_since(*read_at) <= REPORT_LIFETIME
            })
        };
        let in_group = |seen: &Seen| {
            let (Some(group), Some(memcg)) = (&seen.group, memcg) else {
                return false;
            };
            let group = String::from_utf8_lossy(&group.0);
            let group = group.trim_end_matches('/');
            memcg == group
                || memcg
                    .strip_prefix(group)
                    .is_some_and(|rest| rest.starts_with('/'))
        };
        let found = recent()
            .find(|(_, seen)| pids.contains(&seen.pid))
            // A group's other victims are marked right after its line, before any later
            // report: only the newest report can be theirs.
            .or_else(|| recent().next().filter(|(_, seen)| in_group(seen)));
        match (found, &self.failed) {
            (Some((_, seen)), _) => Lookup::Report(seen.clone()),
            (None, Some(why)) => Lookup::Unreadable(why.clone()),
            (None, None) => Lookup::NoReport,
        }
    }
}

/// The kernel log, followed on a thread of its own.
#[derive(Clone)]
pub struct KernelLog {
    followed: Arc<Mutex<Followed<File>>>,
}

impl KernelLog {
    /// Opens `/dev/kmsg` at its end, non-blocking. With `kernel.dmesg_restrict` set this needs
    /// `CAP_SYSLOG`, so it is opened before the capabilities are dropped; reading does not.
    pub fn open() -> io::Result<Self> {
        let mut file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(KMSG)?;
        file.seek(SeekFrom::End(0))?;
        Ok(KernelLog {
            followed: Arc::new(Mutex::new(Followed::new(file))),
        })
    }

    /// Reads records as they come, until the log fails.
    pub fn follow(&self) -> io::Result<()> {
        let followed = Arc::clone(&self.followed);
        std::thread::Builder::new()
            .name("kernel-log".to_owned())
            .spawn(move || {
                let fd = lock(&followed).source.as_raw_fd();
                loop {
                    let more = lock(&followed).drain(RECORDS_PER_TURN, Instant::now());
                    if more {
                        continue;
                    }
                    if let Some(why) = &lock(&followed).failed {
                        log::warn!(
                            "kernel log: {why}; OOM kills' memory comes from memory.stat from now on"
                        );
                        return;
                    }
                    let mut poll = libc::pollfd {
                        fd,
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd; the file outlives the thread (it holds the Arc).
                    let ready = unsafe { libc::poll(&mut poll, 1, -1) };
                    if ready < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted
                    {
                        log::warn!(
                            "kernel log: waiting for records: {}; it is read at each kill instead",
                            io::Error::last_os_error()
                        );
                        return;
                    }
                }
            })?;
        Ok(())
    }

    pub fn lookup(&self, pids: &[u32], memcg: Option<&str>) -> Lookup {
        lock(&self.followed).lookup(pids, memcg, Instant::now())
    }
}

fn lock<R>(followed: &Mutex<Followed<R>>) -> MutexGuard<'_, Followed<R>> {
    // Nothing a panicking reader left half-done matters: the next read starts afresh.
    followed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kmsg::tests::{LINUX_6_18, records};

    /// `/dev/kmsg`'s way: a record per read, then EAGAIN until more come.
    struct Scripted {
        records: VecDeque<io::Result<Vec<u8>>>,
    }

    impl Read for Scripted {
        fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
            match self.records.pop_front() {
                Some(Ok(record)) => {
                    buffer[..record.len()].copy_from_slice(&record);
                    Ok(record.len())
                }
                Some(Err(err)) => Err(err),
                None => Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    fn scripted(records: impl IntoIterator<Item = io::Result<Vec<u8>>>) -> Followed<Scripted> {
        Followed::new(Scripted {
            records: records.into_iter().collect(),
        })
    }

    #[test]
    fn a_kill_finds_the_report_that_named_it() {
        let mut followed = scripted(records(LINUX_6_18).into_iter().map(Ok));
        let now = Instant::now();
        let Lookup::Report(seen) = followed.lookup(&[6716], None, now) else {
            panic!("no report for 6716");
        };
        assert_eq!((seen.pid, seen.seq, seen.group.as_ref()), (6716, 502, None));
        assert_eq!(seen.oom_memcg, Some("/kmsgfix".into()));
        assert_eq!(seen.report.stat("rss"), Some(33_390_592));
        // The thread id or the process id, whichever the kernel named.
        assert!(
            matches!(followed.lookup(&[1, 6707], None, now), Lookup::Report(s) if s.pid == 6707)
        );
        assert_eq!(
            followed.lookup(&[4242], Some("/kmsgfix"), now),
            Lookup::NoReport
        );
        // A report that old names a pid that may since be someone else's.
        assert_eq!(
            followed.lookup(
                &[6716],
                None,
                now + REPORT_LIFETIME + Duration::from_secs(1)
            ),
            Lookup::NoReport
        );
    }

    #[test]
    fn the_other_victims_of_a_group_kill_share_its_report() {
        let log = b"\
4,1,10,-;hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
6,2,10,-;memory: usage 1024kB, limit 1024kB, failcnt 1
6,3,10,-;Memory cgroup stats for /grp:
6,4,10,-;anon 1048576
6,5,11,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/grp,task_memcg=/grp/a,task=hog,pid=100,uid=0
3,6,12,-;Memory cgroup out of memory: Killed process 100 (hog) total-vm:9kB, anon-rss:8kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0
6,7,13,-;Tasks in /grp are going to be killed due to memory.oom.group set
";
        let mut followed = scripted(records(log).into_iter().map(Ok));
        let now = Instant::now();
        let Lookup::Report(seen) = followed.lookup(&[101], Some("/grp/b"), now) else {
            panic!("a member of /grp");
        };
        assert_eq!((seen.pid, seen.group), (100, Some("/grp".into())));
        assert_eq!(seen.report.stat("anon"), Some(1_048_576));
        assert_eq!(
            followed.lookup(&[101], Some("/grpx"), now),
            Lookup::NoReport
        );
        assert_eq!(followed.lookup(&[101], None, now), Lookup::NoReport);
    }

    #[test]
    fn a_rate_limited_kill_has_no_report_and_a_failed_log_says_why() {
        // The kernel printed the kill line alone.
        let mut followed = scripted([Ok(
            b"3,9,9,-;Memory cgroup out of memory: Killed process 77 (hog) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB\n".to_vec(),
        )]);
        assert_eq!(
            followed.lookup(&[77], None, Instant::now()),
            Lookup::NoReport
        );

        let mut failing = scripted([Err(io::Error::from_raw_os_error(libc::EIO))]);
        let Lookup::Unreadable(why) = failing.lookup(&[77], None, Instant::now()) else {
            panic!("the log failed");
        };
        assert!(why.contains("reading /dev/kmsg"), "{why}");
    }

    #[test]
    fn an_overwritten_stretch_drops_the_report_it_cut() {
        let all = records(LINUX_6_18);
        // The first report loses its middle to the kernel overwriting it.
        let mut script: Vec<io::Result<Vec<u8>>> = all[..30].iter().cloned().map(Ok).collect();
        script.push(Err(io::Error::from_raw_os_error(libc::EPIPE)));
        script.extend(all[60..].iter().cloned().map(Ok));
        let mut followed = scripted(script);
        let now = Instant::now();
        assert_eq!(followed.lookup(&[6707], None, now), Lookup::NoReport);
        assert!(matches!(
            followed.lookup(&[6716], None, now),
            Lookup::Report(_)
        ));
        assert_eq!(followed.overwritten, 1);
    }

    #[test]
    fn a_lookup_reads_no_more_than_its_bound() {
        let noise = (0..RECORDS_PER_LOOKUP + 10)
            .map(|seq| Ok(format!("6,{seq},1,-;noise {seq}\n").into_bytes()));
        let mut followed = scripted(noise);
        assert_eq!(
            followed.lookup(&[1], None, Instant::now()),
            Lookup::NoReport
        );
        assert_eq!(followed.source.records.len(), 10);
    }
}
