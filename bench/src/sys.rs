//! What the bench reads from the kernel about processes and the machine: clocks, /proc, signals.

use std::{
    fs,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads, so the two subtract.
pub fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    // Both fields are non-negative for CLOCK_MONOTONIC.
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Resident memory of a live process, from /proc/<pid>/status, in KiB. VmRSS is the sum of
/// the three Rss* parts: anonymous memory, file-backed mappings (a BPF ring buffer's pages
/// count here), and shared memory.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub anon_kib: u64,
    pub file_kib: u64,
    pub shmem_kib: u64,
    /// Proportional set size, from /proc/<pid>/smaps_rollup where it could be read: a page
    /// mapped n times counts 1/n per mapping, so a ring buffer's data pages, which the agent
    /// maps twice, count once, and shared libraries count in part.
    pub pss_kib: Option<u64>,
}

pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let mut memory = parse_memory(&status).with_context(|| format!("reading {path}"))?;
    memory.pss_kib = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|rollup| parse_kib_field(&rollup, "Pss").ok());
    Ok(memory)
}

/// `name:   <n> kB` in a /proc text of such lines.
fn parse_kib_field(text: &str, name: &str) -> anyhow::Result<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {name} line"))
}

/// The memory lines of a /proc/<pid>/status text (any other lines are ignored).
pub fn parse_memory(status: &str) -> anyhow::Result<Memory> {
    let field = |name: &str| parse_kib_field(status, name);
    Ok(Memory {
        rss_kib: field("VmRSS")?,
        hwm_kib: field("VmHWM")?,
        anon_kib: field("RssAnon")?,
        file_kib: field("RssFile")?,
        shmem_kib: field("RssShmem")?,
        pss_kib: None,
    })
}

/// User plus system CPU time of a live process (all its threads), in milliseconds.
pub fn cpu_ms(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    stat_cpu_ms(&stat).with_context(|| format!("unexpected {path}: {stat:?}"))
}

/// User plus system CPU time from the text of a `stat` file (a process's or a thread's).
pub fn stat_cpu_ms(stat: &str) -> Option<f64> {
    // comm (field 2) may hold spaces and parentheses: count fields after its last ')'.
    let (_, after_comm) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // utime and stime are fields 14 and 15; after comm, field 3 is at index 0.
    let ticks = |index: usize| fields.get(index)?.parse::<u64>().ok();
    let total_ticks = ticks(11)? + ticks(12)?;
    Some(total_ticks as f64 * 1000.0 / clock_ticks_per_second() as f64)
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

pub fn send_signal(pid: u32, signal: i32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions; a gone pid only yields ESRCH.
    unsafe { libc::kill(pid, signal) };
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns Ctrl-C and SIGTERM into an error at the next check, so that the bench unwinds and its
/// Drop guards remove the cgroup and stop the processes it started; the default action would
/// end the bench on the spot and leave them behind.
pub fn catch_interrupts() {
    let handler = note_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

pub fn check_interrupted() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps, waking every 100 ms to notice an interrupt.
pub fn sleep(duration: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + duration;
    loop {
        check_interrupted()?;
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// The machine, for the results header.
pub struct Machine {
    pub cpus: usize,
    pub mem_total: String,
    pub kernel: String,
}

pub fn machine() -> anyhow::Result<Machine> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let meminfo = fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let mem_total = parse_kib_field(&meminfo, "MemTotal").ok().map_or_else(
        || "unknown".to_owned(),
        |kib| format!("{:.1} GiB", kib as f64 / (1 << 20) as f64),
    );
    Ok(Machine {
        cpus,
        mem_total,
        kernel: kernel_release()?,
    })
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg shows them: latency figures only
/// mean something next to how busy the machine was.
pub fn load_average() -> anyhow::Result<String> {
    let loadavg = fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
    Ok(loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" "))
}

/// `uname -r`.
pub fn kernel_release() -> anyhow::Result<String> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("reading /proc/sys/kernel/osrelease")?;
    Ok(release.trim().to_owned())
}

/// Today's date (UTC) as YYYY-MM-DD, without a date crate: days since the epoch to the civil
/// calendar (Howard Hinnant's `civil_from_days`).
pub fn today_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let days = (secs / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The agent's memory once its VmRSS read the same three seconds in a row (at most 30 s).
pub fn memory_standing_still(agent_pid: u32) -> anyhow::Result<Memory> {
    let mut last = memory(agent_pid)?;
    let mut same = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while same < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        let now = memory(agent_pid)?;
        same = if now.rss_kib == last.rss_kib {
            same + 1
        } else {
            0
        };
        last = now;
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\toomtrace
VmPeak:\t  123456 kB
VmHWM:\t   40652 kB
VmRSS:\t   14848 kB
RssAnon:\t    1792 kB
RssFile:\t   13056 kB
RssShmem:\t       0 kB
Threads:\t3
";

    #[test]
    fn memory_lines_of_proc_status() {
        let memory = parse_memory(STATUS).unwrap();
        assert_eq!(
            memory,
            Memory {
                rss_kib: 14848,
                hwm_kib: 40652,
                anon_kib: 1792,
                file_kib: 13056,
                shmem_kib: 0,
                pss_kib: None,
            }
        );
        assert_eq!(
            memory.rss_kib,
            memory.anon_kib + memory.file_kib + memory.shmem_kib
        );
    }

    #[test]
    fn pss_of_smaps_rollup() {
        let rollup = "55d0c0000000-7ffd00000000 ---p 00000000 00:00 0    [rollup]\n\
                      Rss:               18764 kB\nPss:               12301 kB\n\
                      Pss_Anon:           1700 kB\n";
        assert_eq!(parse_kib_field(rollup, "Pss").unwrap(), 12301);
        assert_eq!(parse_kib_field(rollup, "Pss_Anon").unwrap(), 1700);
    }

    #[test]
    fn a_missing_line_is_named() {
        let err = parse_memory("VmRSS:\t1 kB\n").unwrap_err();
        assert_eq!(err.to_string(), "no VmHWM line");
    }
}
