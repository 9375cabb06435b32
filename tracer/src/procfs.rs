//! `/proc/<pid>`: where a process is (for the tier whose programs cannot read cgroups in the
//! kernel), whether it is a container's PID 1, and how big processes are. Read as soon as the
//! kill arrives; a victim may already be gone.

use std::path::Path;

/// The process's cgroup in the unified hierarchy and in the memory controller's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcCgroups {
    pub unified: Option<String>,
    /// The v1 memory hierarchy's path; on a pure v2 host, the unified one.
    pub memory: Option<String>,
}

pub fn cgroups(pid: u32) -> Option<ProcCgroups> {
    let text = read_lossy(pid, "cgroup")?;
    Some(parse(&text))
}

/// A `/proc/<pid>` file as text; `None` once the process is gone. Lossy, because a cgroup
/// or a comm is any bytes the owner chose, not necessarily UTF-8.
fn read_lossy(pid: u32, file: &str) -> Option<String> {
    let bytes = read_at_most(
        Path::new(&format!("/proc/{pid}/{file}")),
        MAX_PROC_FILE_BYTES,
    )
    .ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The most read of one `/proc/<pid>` file: `status` and `cgroup` are a few KiB; whatever a
/// process can make them hold past that is not read.
const MAX_PROC_FILE_BYTES: u64 = 256 << 10;

/// The first `limit` bytes of the file at `path`: kernel files the agent reads as a kill
/// arrives (`/proc`, cgroupfs) cost a bounded time and memory however much they hold.
pub fn read_at_most(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Every process id, from the names of `/proc`'s directories.
pub fn pids() -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
}

/// Resident memory, from `/proc/<pid>/statm` (pages); `None` once the process is gone.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = read_lossy(pid, "statm")?;
    Some(resident_pages(&statm)?.saturating_mul(page_size()))
}

/// The second number of `statm`: resident pages.
pub fn resident_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

/// The process's name; a name that is not UTF-8 comes back with U+FFFD in place of the bad
/// bytes rather than not at all.
pub fn comm(pid: u32) -> Option<String> {
    let comm = read_lossy(pid, "comm")?;
    Some(comm.trim_end_matches('\n').to_owned())
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// The thread group (process) `pid` belongs to: `Tgid` in `/proc/<pid>/status`.
pub fn tgid(pid: u32) -> Option<u32> {
    status_tgid(&read_lossy(pid, "status")?)
}

/// `Tgid` from the text of `/proc/<pid>/status`.
pub fn status_tgid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid` is PID 1 of its own pid namespace, i.e. a container's main process: the last
/// number of `NSpid` in `/proc/<pid>/status`. `None` when the process is gone (or is in the
/// host's namespace only, where the question does not arise).
pub fn is_namespace_init(pid: u32) -> Option<bool> {
    let status = read_lossy(pid, "status")?;
    namespace_pid(&status).map(|inner| inner == 1)
}

/// The pid in the innermost namespace, when the process is in a nested one.
pub fn namespace_pid(status: &str) -> Option<u32> {
    let pids: Vec<u32> = status
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match pids.as_slice() {
        [_host, .., inner] => Some(*inner),
        _ => None,
    }
}

/// `hierarchy-id:controllers:path` per line; `0::/path` is the unified hierarchy.
pub fn parse(text: &str) -> ProcCgroups {
    let mut cgroups = ProcCgroups::default();
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !path.starts_with('/') {
            continue;
        }
        if id == "0" && controllers.is_empty() {
            cgroups.unified = Some(path.to_owned());
        } else if controllers
            .split(',')
            .any(|controller| controller == "memory")
        {
            cgroups.memory = Some(path.to_owned());
        }
    }
    if cgroups.memory.is_none() {
        cgroups.memory.clone_from(&cgroups.unified);
    }
    cgroups
}

/// This process's own executable as mapped without write access and as the file holds it (its
/// code and constants, not the relocated data the loader wrote before making it read-only),
/// as `(start, length)`.
pub fn executable_clean_mappings() -> Vec<(usize, usize)> {
    let (Ok(smaps), Ok(exe)) = (
        std::fs::read_to_string("/proc/self/smaps"),
        std::fs::read_link("/proc/self/exe"),
    ) else {
        return Vec::new();
    };
    clean_mappings_of(&smaps, &exe.to_string_lossy())
}

/// The mappings of `path` in a `/proc/<pid>/smaps` text that are neither writable nor shared,
/// and hold no page of their own (`Anonymous: 0 kB`): every page is the file's.
fn clean_mappings_of(smaps: &str, path: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    // The current mapping, while its fields are read: `(start, length)` if it is a candidate.
    let mut candidate: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(anonymous) = line.strip_prefix("Anonymous:") {
            if let Some(mapping) = candidate.take()
                && anonymous.trim() == "0 kB"
            {
                found.push(mapping);
            }
            continue;
        }
        // A mapping's first line: `start-end perms offset device inode path`; the path may
        // hold spaces. Field lines start with a capitalised name and a colon.
        let Some((range, rest)) = line.split_once(' ') else {
            continue;
        };
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        let perms = rest.split(' ').next().unwrap_or("");
        let file = line
            .find('/')
            .and_then(|at| line.get(at..))
            .map(str::trim_end);
        let read_only = perms.as_bytes().get(1) == Some(&b'-') && perms.ends_with('p');
        candidate = (file == Some(path) && read_only && end > start).then(|| (start, end - start));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_executables_clean_mappings_are_its_code_and_constants() {
        let smaps = "\
561fc74c5000-561fc7700000 r--p 00000000 fd:01 123 /usr/bin/oom trace
Rss:                1108 kB
Anonymous:             0 kB
561fc7700000-561fc7a6b000 r-xp 0023b000 fd:01 123 /usr/bin/oom trace
Anonymous:             0 kB
561fc7a6b000-561fc7a81000 r--p 005a6000 fd:01 123 /usr/bin/oom trace
Anonymous:            88 kB
561fc7a81000-561fc7a87000 rw-p 005bc000 fd:01 123 /usr/bin/oom trace
Anonymous:            24 kB
561ff1a68000-561ff1b46000 rw-p 00000000 00:00 0 [heap]
Anonymous:           392 kB
7f2ddaaf0000-7f2ddac46000 r-xp 00028000 fd:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f2dda479000-7f2dda481000 rw-s 00000000 fd:01 789 /usr/bin/oom trace
Anonymous:             0 kB
";
        assert_eq!(
            clean_mappings_of(smaps, "/usr/bin/oom trace"),
            [(0x561f_c74c_5000, 0x23_b000), (0x561f_c770_0000, 0x36_b000)]
        );
        assert_eq!(clean_mappings_of(smaps, "/usr/bin/other"), []);
    }

    #[test]
    fn a_hybrid_host_has_both() {
        let text = "12:memory:/libpod_parent/libpod-abc\n\
                    11:cpu,cpuacct:/libpod_parent/libpod-abc\n\
                    1:name=systemd:/libpod_parent/libpod-abc\n\
                    0::/libpod_parent/libpod-abc\n";
        assert_eq!(
            parse(text),
            ProcCgroups {
                unified: Some("/libpod_parent/libpod-abc".to_owned()),
                memory: Some("/libpod_parent/libpod-abc".to_owned()),
            }
        );
    }

    #[test]
    fn a_unified_host_uses_one_path_for_both() {
        let parsed = parse("0::/system.slice/nginx.service\n");
        assert_eq!(
            parsed.memory.as_deref(),
            Some("/system.slice/nginx.service")
        );
        assert_eq!(
            parsed.unified.as_deref(),
            Some("/system.slice/nginx.service")
        );
    }

    #[test]
    fn garbage_yields_nothing() {
        assert_eq!(
            parse("nonsense\n1:memory\n::relative\n"),
            ProcCgroups::default()
        );
    }

    #[test]
    fn the_innermost_namespace_pid_is_the_last() {
        assert_eq!(namespace_pid("Name:\tsh\nNSpid:\t4242\t1\n"), Some(1));
        assert_eq!(namespace_pid("NSpid:\t4243\t7\n"), Some(7));
        assert_eq!(namespace_pid("NSpid:\t4243\t9\t1\n"), Some(1));
        // The host's namespace only: not a container's process as far as pids go.
        assert_eq!(namespace_pid("NSpid:\t4244\n"), None);
        assert_eq!(namespace_pid("NSpid:\tgarbage\n"), None);
        assert_eq!(namespace_pid("Name:\tsh\n"), None);
    }

    #[test]
    fn status_and_statm_numbers() {
        let status = "Name:\tsh\nUmask:\t0022\nTgid:\t4242\nNgid:\t0\nPid:\t4250\n";
        assert_eq!(status_tgid(status), Some(4242));
        assert_eq!(status_tgid("Tgid:\t-1\n"), None);
        assert_eq!(status_tgid("Name:\tTgid: 7\n"), None);
        assert_eq!(resident_pages("2048 512 100 10 0 300 0\n"), Some(512));
        assert_eq!(resident_pages("2048\n"), None);
        assert_eq!(resident_pages(""), None);
    }

    #[test]
    fn a_comm_that_is_not_utf8_is_still_read() {
        // prctl(PR_SET_NAME) takes any bytes; this thread names itself with an invalid one.
        let handle = std::thread::spawn(|| {
            let name = b"bad\xffname\0";
            // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
            let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
            assert_eq!(rc, 0, "PR_SET_NAME");
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let tid = u32::try_from(tid).expect("a tid is positive");
            std::fs::read_to_string(format!("/proc/{tid}/comm"))
                .map_err(|_| ())
                .expect_err("the raw comm is not UTF-8");
            read_lossy(tid, "comm").expect("our own thread's comm")
        });
        let comm = handle.join().expect("the naming thread");
        assert_eq!(comm.trim_end(), "bad\u{fffd}name");
    }

    #[test]
    fn a_file_is_read_up_to_its_bound() {
        let dir = crate::history::tests::temp_dir();
        let path = dir.join("big");
        std::fs::write(&path, vec![b'x'; 10_000]).unwrap();
        assert_eq!(read_at_most(&path, 4096).unwrap().len(), 4096);
        assert_eq!(read_at_most(&path, 1 << 20).unwrap().len(), 10_000);
        assert!(read_at_most(&dir.join("absent"), 16).is_err());
    }

    #[test]
    fn this_process_is_somewhere() {
        let own = cgroups(std::process::id()).expect("our own /proc entry");
        assert!(own.unified.is_some() || own.memory.is_some());
    }
}
