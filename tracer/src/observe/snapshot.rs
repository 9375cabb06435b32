//! Who held the memory at the moment of a kill: the biggest cgroups (containers, or the first
//! level below the domain) and the biggest processes. This is what shows the build job that
//! spiked next to the database it got killed, although its spike is gone a minute later.

use std::time::{Duration, Instant};

use super::cgroupfs::{CgroupMemory, MemoryHierarchy};
use crate::cgroup_path::{self, PathKind};
use crate::procfs;

/// How many of each kind are kept.
pub(crate) const TOP: usize = 5;
/// How many cgroup directories one snapshot may visit, and how deep below its scope: a host
/// with thousands of cgroups costs no more than this.
const MAX_CGROUPS_VISITED: usize = 2048;
const MAX_DEPTH: usize = 4;
/// How many processes one snapshot reads the size of (`/proc/<pid>/statm`). They are found in
/// the `cgroup.procs` of the biggest cgroups first, so a host with ten thousand processes costs
/// no more than one with a few hundred.
pub(crate) const MAX_PROCESSES_READ: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Scope {
    /// A host-wide OOM, or one whose domain is unknown: the whole host.
    Host,
    /// The cgroup whose limit was hit.
    Cgroup(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub scope: Scope,
    /// The domain itself: the cgroup's usage, limits and event counters, or the host's memory.
    pub domain: DomainMemory,
    /// Biggest first.
    pub cgroups: Vec<CgroupUsage>,
    /// Biggest first.
    pub processes: Vec<ProcessUsage>,
    /// How the processes were found.
    pub process_scan: ProcessScan,
    /// A domain's usage less all its members' (`cgroups` before the top were kept), as read:
    /// memory charged to the domain's cgroup itself, such as the tmpfs pages of a removed
    /// container, which the kernel moves to its parent. `None` host-wide, or with no members.
    pub charged_to_scope_bytes: Option<u64>,
    /// When it was taken: CLOCK_MONOTONIC nanoseconds, the clock of a kill's `ktime_ns`.
    pub taken_ns: u64,
    /// What taking it cost.
    pub took: Duration,
}

/// How many processes a snapshot looked at: all those in the scope's cgroups, unless there
/// were more than [`MAX_PROCESSES_READ`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProcessScan {
    /// Processes whose size was read.
    pub read: usize,
    /// Processes listed in the scope's cgroups and left unread past the budget: those in the
    /// smallest cgroups (host-wide: those in the root cgroup itself, last).
    pub unread: usize,
    /// The resident memory of those read, summed.
    pub resident_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum DomainMemory {
    Cgroup(CgroupMemory),
    Host(HostMemory),
    Unknown,
}

/// `/proc/meminfo`, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct HostMemory {
    pub total_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
    pub swap_total_bytes: Option<u64>,
    pub swap_free_bytes: Option<u64>,
}

impl HostMemory {
    pub(crate) fn read() -> Self {
        Self::parse(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default())
    }

    fn parse(meminfo: &str) -> Self {
        let kb = |name: &str| {
            meminfo.lines().find_map(|line| {
                let value = line.strip_prefix(name)?.strip_prefix(':')?;
                let kb: u64 = value.trim().trim_end_matches("kB").trim().parse().ok()?;
                Some(kb.saturating_mul(1024))
            })
        };
        HostMemory {
            total_bytes: kb("MemTotal"),
            available_bytes: kb("MemAvailable"),
            swap_total_bytes: kb("SwapTotal"),
            swap_free_bytes: kb("SwapFree"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CgroupUsage {
    pub path: String,
    pub usage_bytes: u64,
    /// Where the read came after the victim's memory was freed: what it found. `usage_bytes`
    /// is then what the victim held at the kill (see [`hold_victim`]).
    pub read_after_kill_bytes: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ProcessUsage {
    pub pid: u32,
    pub comm: String,
    pub rss_bytes: u64,
    /// Its memory cgroup, to name its container.
    pub cgroup: Option<String>,
    /// The victim, gone from its cgroup by the read: 0, what the read found of it. `rss_bytes`
    /// is then its size at the kill, as the kernel reported it.
    pub read_after_kill_bytes: Option<u64>,
}

/// A process whose size the kernel reported with the kill: the victim. Its `/proc` files are
/// not read: the OOM killer holds its task lock until the `Killed process` line is printed
/// (milliseconds on a serial console), and `statm` waits for that lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ReportedProcess {
    /// The process (thread group) id, as `cgroup.procs` lists it.
    pub pid: u32,
    pub comm: Option<String>,
    pub rss_bytes: u64,
    /// Its memory cgroup: the snapshot's rows that hold it.
    pub memcg: Option<String>,
}

/// The snapshot of `scope`; `reported` is taken as it is instead of read from `/proc`.
#[cfg(test)]
pub(crate) fn take(
    memory: Option<&MemoryHierarchy>,
    scope: Scope,
    reported: Option<ReportedProcess>,
) -> Snapshot {
    let far = Instant::now() + Duration::from_secs(3600);
    take_within(memory, scope, reported, far, |_| true).expect("the processes are read")
}

/// The snapshot of `scope`, its cgroups first: `cgroups_read` is given the snapshot without
/// processes, and says whether to read them (`None` when it says no). No process is read past
/// `deadline`: those left are counted unread.
pub(crate) fn take_within(
    memory: Option<&MemoryHierarchy>,
    scope: Scope,
    reported: Option<ReportedProcess>,
    deadline: Instant,
    cgroups_read: impl FnOnce(&Snapshot) -> bool,
) -> Option<Snapshot> {
    let started = Instant::now();
    let taken_ns = crate::clock::monotonic_ns();
    let walk = memory.map(|memory| walk(memory, &scope));
    let domain = match (&scope, memory) {
        (Scope::Host, _) => DomainMemory::Host(HostMemory::read()),
        (Scope::Cgroup(path), Some(memory)) => DomainMemory::Cgroup(memory.stats(path)),
        (Scope::Cgroup(_), None) => DomainMemory::Unknown,
    };
    let mut cgroups = walk
        .as_ref()
        .map(|walk| walk.entries.clone())
        .unwrap_or_default();
    // Before the victim's rows are raised: both figures as read, right after each other.
    let charged_to_scope_bytes = match &domain {
        DomainMemory::Cgroup(memory) if !cgroups.is_empty() => {
            let members: u64 = cgroups.iter().map(|cgroup| cgroup.usage_bytes).sum();
            memory
                .usage_bytes
                .map(|usage| usage.saturating_sub(members))
        }
        _ => None,
    };
    if let Some(victim) = &reported {
        hold_victim(victim, &mut cgroups);
    }
    cgroups.truncate(TOP);
    let mut snapshot = Snapshot {
        scope,
        domain,
        cgroups,
        processes: Vec::new(),
        process_scan: ProcessScan::default(),
        charged_to_scope_bytes,
        taken_ns,
        took: started.elapsed(),
    };
    if !cgroups_read(&snapshot) {
        return None;
    }
    let reader = ProcessReader {
        reported,
        deadline: Some(deadline),
        ..ProcessReader::default()
    };
    let (processes, process_scan) = match (memory, &walk) {
        (Some(memory), Some(walk)) => processes_in_cgroups(reader, memory, &snapshot.scope, walk),
        _ => processes_anywhere(reader),
    };
    snapshot.processes = processes;
    snapshot.process_scan = process_scan;
    snapshot.took = started.elapsed();
    Some(snapshot)
}

impl Snapshot {
    /// The snapshot of a kill whose reads did not answer in time: nothing read.
    pub(crate) fn unread(scope: Scope) -> Self {
        Snapshot {
            scope,
            domain: DomainMemory::Unknown,
            cgroups: Vec::new(),
            processes: Vec::new(),
            process_scan: ProcessScan::default(),
            charged_to_scope_bytes: None,
            taken_ns: crate::clock::monotonic_ns(),
            took: Duration::ZERO,
        }
    }
}

/// Makes the rows that hold the victim say what they held at the kill, where they were read
/// after its memory was freed: a snapshot is read after the kill, by which time the OOM reaper
/// has usually freed the victim's anonymous memory (or the victim has exited), and a row that
/// read "212 KiB" beside a kill of a 28 MiB process contradicts the record.
///
/// The rule: a row that holds the victim held at least the victim's resident memory at the
/// kill (the kernel's anon, file and shmem RSS of it), since those pages are charged to its
/// memory cgroup and to every cgroup above it. A cgroup row holds it when the victim's memory
/// cgroup is the row's or below it; the process row when it is the victim's. A row read below
/// that is raised to it and keeps what was read (`read_after_kill_bytes`); a row read at or
/// above it is left as read. The raised figure is a lower bound: the row's other memory freed
/// since (little, beside the victim's) is not added back. A victim gone from the `cgroup.procs`
/// read is listed with its size at the kill, and counted among the processes read (see
/// [`ProcessReader::finish`]).
pub(crate) fn hold_victim(victim: &ReportedProcess, cgroups: &mut [CgroupUsage]) {
    let held = victim.rss_bytes;
    if held == 0 {
        return;
    }
    if let Some(memcg) = &victim.memcg {
        let holds = |path: &str| {
            memcg == path
                || memcg
                    .strip_prefix(path)
                    .is_some_and(|below| below.starts_with('/'))
        };
        for row in cgroups.iter_mut() {
            if holds(&row.path) && row.usage_bytes < held {
                row.read_after_kill_bytes = Some(row.usage_bytes);
                row.usage_bytes = held;
            }
        }
        cgroups.sort_by_key(|cgroup| std::cmp::Reverse(cgroup.usage_bytes));
    }
}

/// The cgroups below a scope that count as one entry each, and the groupings walked through.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// Every entry found, biggest first.
    pub entries: Vec<CgroupUsage>,
    /// The groupings (slices, `/docker`, pods) whose entries are listed instead of them.
    pub groupings: Vec<String>,
}

/// Where a walk finds cgroups: the memory hierarchy itself, or the timeline recorder's copy of
/// its tree.
pub(crate) trait CgroupTree {
    /// The child cgroups of `path`, as paths from the hierarchy's root.
    fn children(&self, path: &str) -> Vec<String>;
    fn usage_bytes(&self, path: &str) -> Option<u64>;
}

impl CgroupTree for MemoryHierarchy {
    fn children(&self, path: &str) -> Vec<String> {
        MemoryHierarchy::children(self, path)
    }

    fn usage_bytes(&self, path: &str) -> Option<u64> {
        MemoryHierarchy::usage_bytes(self, path)
    }
}

/// Below a domain: its children and the containers under it. Host-wide: the first level, with
/// the runtimes' grouping cgroups (`/docker`, `/libpod_parent`, `/kubepods`, slices) replaced
/// by the containers inside them.
pub(crate) fn walk(memory: &impl CgroupTree, scope: &Scope) -> Walk {
    let root = match scope {
        Scope::Host => "",
        Scope::Cgroup(path) => path.as_str(),
    };
    let mut found = Vec::new();
    let mut groupings = Vec::new();
    let mut visited = 0;
    collect(memory, root, 1, &mut visited, &mut found, &mut groupings);
    let mut entries: Vec<CgroupUsage> = found
        .into_iter()
        .filter_map(|path| {
            let usage_bytes = memory.usage_bytes(&path)?;
            Some(CgroupUsage {
                path,
                usage_bytes,
                read_after_kill_bytes: None,
            })
        })
        .collect();
    entries.sort_by_key(|cgroup| std::cmp::Reverse(cgroup.usage_bytes));
    Walk { entries, groupings }
}

/// Adds the cgroups below `parent` that are one entry each: containers, units, unrecognised
/// cgroups, and groupings (slices, `/docker`, pods) that hold none of these. Returns whether it
/// added any.
fn collect(
    memory: &impl CgroupTree,
    parent: &str,
    depth: usize,
    visited: &mut usize,
    found: &mut Vec<String>,
    groupings: &mut Vec<String>,
) -> bool {
    let mut any = false;
    for child in memory.children(parent) {
        *visited += 1;
        if *visited > MAX_CGROUPS_VISITED {
            break;
        }
        any = true;
        match cgroup_path::parse(&child).kind {
            // What a container or a service made inside itself is its own business.
            PathKind::Container | PathKind::SystemdUnit | PathKind::Unrecognised => {
                found.push(child)
            }
            PathKind::Host | PathKind::Pod => {
                if depth < MAX_DEPTH
                    && collect(memory, &child, depth + 1, visited, found, groupings)
                {
                    groupings.push(child);
                } else {
                    found.push(child);
                }
            }
        }
    }
    any
}

/// The biggest processes of a scope, read from the `cgroup.procs` of its cgroups: a domain's
/// own processes, then each entry's (with the cgroups inside it) biggest entry first, then
/// the groupings'; host-wide, the root cgroup's own processes last. At most
/// [`MAX_PROCESSES_READ`] are read.
fn processes_in_cgroups(
    mut reader: ProcessReader,
    memory: &MemoryHierarchy,
    scope: &Scope,
    walk: &Walk,
) -> (Vec<ProcessUsage>, ProcessScan) {
    if let Scope::Cgroup(domain) = scope {
        reader.read_cgroup(memory, domain);
    }
    let mut dirs_left = MAX_CGROUPS_VISITED;
    for entry in &walk.entries {
        reader.read_subtree(memory, &entry.path, MAX_DEPTH, &mut dirs_left);
    }
    for grouping in &walk.groupings {
        reader.read_cgroup(memory, grouping);
    }
    if *scope == Scope::Host {
        reader.read_cgroup(memory, "/");
    }
    reader.finish()
}

/// Without a memory hierarchy: the first [`MAX_PROCESSES_READ`] processes of `/proc`.
fn processes_anywhere(mut reader: ProcessReader) -> (Vec<ProcessUsage>, ProcessScan) {
    for pid in procfs::pids() {
        reader.read(pid, None);
    }
    reader.finish()
}

/// Keeps the [`TOP`] biggest of the processes it is given, reading at most
/// [`MAX_PROCESSES_READ`].
#[derive(Default)]
struct ProcessReader {
    /// Biggest first: `(rss, pid, cgroup it was listed in)`.
    top: Vec<(u64, u32, Option<String>)>,
    scan: ProcessScan,
    reported: Option<ReportedProcess>,
    /// Whether the reported process was listed in a `cgroup.procs` read.
    reported_listed: bool,
    /// Past it, processes are counted unread.
    deadline: Option<Instant>,
}

impl ProcessReader {
    fn read_cgroup(&mut self, memory: &MemoryHierarchy, cgroup: &str) {
        for pid in memory.procs(cgroup) {
            self.read(pid, Some(cgroup));
        }
    }

    /// The cgroup and the cgroups inside it, down to `depth` levels.
    fn read_subtree(
        &mut self,
        memory: &MemoryHierarchy,
        cgroup: &str,
        depth: usize,
        dirs_left: &mut usize,
    ) {
        if *dirs_left == 0 {
            return;
        }
        *dirs_left -= 1;
        self.read_cgroup(memory, cgroup);
        if depth > 0 {
            for child in memory.children(cgroup) {
                self.read_subtree(memory, &child, depth - 1, dirs_left);
            }
        }
    }

    fn read(&mut self, pid: u32, cgroup: Option<&str>) {
        if self.scan.read == MAX_PROCESSES_READ
            || self
                .deadline
                .is_some_and(|deadline| Instant::now() >= deadline)
        {
            self.scan.unread += 1;
            return;
        }
        if self.top.iter().any(|&(_, seen, _)| seen == pid) {
            // Listed twice: it moved between two reads of `cgroup.procs`.
            return;
        }
        self.scan.read += 1;
        let rss = match &self.reported {
            Some(reported) if reported.pid == pid => {
                self.reported_listed = true;
                Some(reported.rss_bytes)
            }
            _ => procfs::rss_bytes(pid),
        };
        let Some(rss) = rss.filter(|&rss| rss > 0) else {
            return;
        };
        self.keep(rss, pid, cgroup);
    }

    /// Counts a process of `rss` bytes, and keeps it if it is among the biggest.
    fn keep(&mut self, rss: u64, pid: u32, cgroup: Option<&str>) {
        self.scan.resident_bytes = self.scan.resident_bytes.saturating_add(rss);
        if self.top.len() == TOP && self.top.last().is_some_and(|&(least, _, _)| least >= rss) {
            return;
        }
        let at = self.top.partition_point(|&(bigger, _, _)| bigger >= rss);
        self.top.insert(at, (rss, pid, cgroup.map(str::to_owned)));
        self.top.truncate(TOP);
    }

    fn finish(mut self) -> (Vec<ProcessUsage>, ProcessScan) {
        // The victim, not listed in what was read: gone by the read (it exited, or the reaper
        // let it), or left unread past the budget (its cgroup, emptied by the reaper, is read
        // last). It was there at the kill, with the size the kernel reported. Its pid is not
        // asked about again: it may have been reused already.
        let gone = match &self.reported {
            Some(reported) if !self.reported_listed && reported.rss_bytes > 0 => {
                let (rss, pid) = (reported.rss_bytes, reported.pid);
                let memcg = reported.memcg.clone();
                let before = self.scan.resident_bytes;
                self.keep(rss, pid, memcg.as_deref());
                if self.scan.unread == 0 {
                    self.scan.read += 1;
                } else {
                    // Perhaps counted among the unread: not counted twice.
                    self.scan.resident_bytes = before;
                }
                (self.scan.unread == 0).then_some(pid)
            }
            _ => None,
        };
        let ProcessReader {
            top,
            scan,
            reported,
            reported_listed: _,
            deadline: _,
        } = self;
        let reported_comm = |pid| {
            reported
                .as_ref()
                .filter(|reported| reported.pid == pid)
                .and_then(|reported| reported.comm.clone())
        };
        let processes = top
            .into_iter()
            .map(|(rss_bytes, pid, cgroup)| {
                let gone = gone == Some(pid);
                let comm = match reported_comm(pid) {
                    Some(comm) => Some(comm),
                    None if gone => None,
                    None => procfs::comm(pid),
                };
                ProcessUsage {
                    pid,
                    comm: comm.unwrap_or_else(|| "?".to_owned()),
                    rss_bytes,
                    // Where it was listed; from /proc when it was found there.
                    cgroup: match cgroup {
                        Some(cgroup) => Some(cgroup),
                        None if gone => None,
                        None => procfs::cgroups(pid).and_then(|paths| paths.memory),
                    },
                    read_after_kill_bytes: gone.then_some(0),
                }
            })
            .collect();
        (processes, scan)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;
    use crate::observe::cgroupfs::CgroupVersion;

    const ID: &str = "3f2a9c0d1e4b5a6978877665544332211000ffeeddccbbaa9988776655443322";
    const ID2: &str = "aaaa9c0d1e4b5a6978877665544332211000ffeeddccbbaa9988776655443322";

    fn hierarchy(cgroups: &[(&str, u64)]) -> MemoryHierarchy {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "oomtrace-snapshot-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        for (path, usage) in cgroups {
            let dir: PathBuf = root.join(path.trim_start_matches('/'));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("memory.usage_in_bytes"), format!("{usage}\n")).unwrap();
        }
        MemoryHierarchy {
            root,
            version: CgroupVersion::V1,
        }
    }

    fn top_cgroups(memory: &MemoryHierarchy, scope: &Scope) -> Vec<CgroupUsage> {
        let mut entries = walk(memory, scope).entries;
        entries.truncate(TOP);
        entries
    }

    #[test]
    fn host_wide_lists_containers_and_first_level_cgroups_biggest_first() {
        let memory = hierarchy(&[
            ("/libpod_parent", 900),
            (&format!("/libpod_parent/libpod-{ID}"), 600),
            (&format!("/libpod_parent/libpod-{ID2}"), 300),
            (&format!("/libpod_parent/libpod-{ID2}/inner"), 100),
            ("/system.slice", 50),
            ("/system.slice/sshd.service", 40),
            ("/db", 700),
            ("/builder", 800),
        ]);
        let top = top_cgroups(&memory, &Scope::Host);
        let mut groupings = walk(&memory, &Scope::Host).groupings;
        groupings.sort();
        assert_eq!(groupings, ["/libpod_parent", "/system.slice"]);
        let paths: Vec<&str> = top.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/builder",
                "/db",
                &format!("/libpod_parent/libpod-{ID}"),
                &format!("/libpod_parent/libpod-{ID2}"),
                "/system.slice/sshd.service",
            ]
        );
        assert_eq!(top[0].usage_bytes, 800);
        fs::remove_dir_all(&memory.root).unwrap();
    }

    #[test]
    fn under_a_domain_only_its_children_count() {
        let memory = hierarchy(&[
            ("/kubepods/pod1", 1000),
            ("/kubepods/pod1/c1", 600),
            ("/kubepods/pod1/c2", 400),
            ("/kubepods/pod2", 5000),
        ]);
        let top = top_cgroups(&memory, &Scope::Cgroup("/kubepods/pod1".to_owned()));
        let paths: Vec<&str> = top.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["/kubepods/pod1/c1", "/kubepods/pod1/c2"]);
        fs::remove_dir_all(&memory.root).unwrap();
    }

    #[test]
    fn meminfo_is_read_in_bytes() {
        let host = HostMemory::parse(
            "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n\
             SwapTotal:             0 kB\nSwapFree:              0 kB\n",
        );
        assert_eq!(host.total_bytes, Some(24_576_000 * 1024));
        assert_eq!(host.available_bytes, Some(20_000_000 * 1024));
        assert_eq!(host.swap_total_bytes, Some(0));
        assert_eq!(HostMemory::parse("garbage"), HostMemory::default());
        assert!(HostMemory::read().total_bytes.is_some());
    }

    fn write_procs(memory: &MemoryHierarchy, cgroup: &str, pids: &[u32]) {
        let text: String = pids.iter().map(|pid| format!("{pid}\n")).collect();
        let dir = memory.root.join(cgroup.trim_start_matches('/'));
        fs::write(dir.join("cgroup.procs"), text).unwrap();
    }

    /// A pid no process has (above the kernel's `PID_MAX_LIMIT`).
    const NO_SUCH_PID: u32 = 5_000_000;

    #[test]
    fn processes_are_found_in_the_scopes_cgroups_only() {
        let memory = hierarchy(&[
            ("/parent", 3000),
            ("/parent/big", 2000),
            ("/parent/big/inner", 1000),
            ("/parent/small", 1000),
            ("/elsewhere", 9000),
        ]);
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .expect("sleep");
        // Until it has exec'd, the child is a copy of this test's thread, by its name too.
        let comm = format!("/proc/{}/comm", child.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep" {
            assert!(std::time::Instant::now() < deadline, "sleep never started");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let own = std::process::id();
        write_procs(&memory, "/parent/big/inner", &[own]);
        write_procs(&memory, "/parent/small", &[child.id(), NO_SUCH_PID]);
        write_procs(&memory, "/elsewhere", &[1]);
        let snapshot = take(Some(&memory), Scope::Cgroup("/parent".to_owned()), None);
        let _ = child.kill();
        let _ = child.wait();
        let pids: Vec<u32> = snapshot.processes.iter().map(|p| p.pid).collect();
        // This test process is bigger than `sleep`; pid 1 is outside the scope.
        assert_eq!(pids, [own, child.id()], "{snapshot:?}");
        assert_eq!(
            snapshot.processes[0].cgroup.as_deref(),
            Some("/parent/big/inner")
        );
        assert_eq!(snapshot.processes[1].comm, "sleep");
        let scan = snapshot.process_scan;
        assert_eq!((scan.read, scan.unread), (3, 0));
        // What each was found to hold, summed: the two that exist.
        let held: u64 = snapshot.processes.iter().map(|p| p.rss_bytes).sum();
        assert_eq!(scan.resident_bytes, held);
        fs::remove_dir_all(&memory.root).unwrap();
    }

    #[test]
    fn a_reported_process_is_taken_as_reported() {
        let memory = hierarchy(&[("/domain", 1000)]);
        let own = std::process::id();
        // A pid no process has: its size and name can only come from the report.
        write_procs(&memory, "/domain", &[own, NO_SUCH_PID]);
        let reported = ReportedProcess {
            pid: NO_SUCH_PID,
            comm: Some("victim".to_owned()),
            rss_bytes: u64::MAX / 2,
            memcg: Some("/domain".to_owned()),
        };
        let snapshot = take(
            Some(&memory),
            Scope::Cgroup("/domain".to_owned()),
            Some(reported),
        );
        let listed: Vec<(u32, &str)> = snapshot
            .processes
            .iter()
            .map(|p| (p.pid, p.comm.as_str()))
            .collect();
        assert_eq!(listed[0], (NO_SUCH_PID, "victim"), "{snapshot:?}");
        assert_eq!(snapshot.processes[0].rss_bytes, u64::MAX / 2);
        assert_eq!(listed[1].0, own);
        let scan = snapshot.process_scan;
        assert_eq!((scan.read, scan.unread), (2, 0));
        assert_eq!(
            scan.resident_bytes,
            u64::MAX / 2 + snapshot.processes[1].rss_bytes
        );
        fs::remove_dir_all(&memory.root).unwrap();
    }

    const MIB: u64 = 1 << 20;

    /// The victim of a kill in container web, 28 MiB at the kill as the kernel reported it.
    fn victim_of_web(pid: u32) -> ReportedProcess {
        ReportedProcess {
            pid,
            comm: Some("hog".to_owned()),
            rss_bytes: 28 * MIB,
            memcg: Some("/pod/web/inner".to_owned()),
        }
    }

    /// A CRI run: the container's cgroup read after the reaper freed the victim (212 KiB), the
    /// victim gone from `cgroup.procs`, a neighbour bigger than that, and a sibling whose name
    /// starts like the victim's cgroup.
    #[test]
    fn rows_read_after_the_reaper_carry_what_the_victim_held_at_the_kill() {
        let memory = hierarchy(&[
            ("/pod", 40 * MIB),
            ("/pod/web", 212 << 10),
            ("/pod/web/inner", 100 << 10),
            ("/pod/webcache", 5 * MIB),
            ("/pod/sidecar", 30 * MIB),
        ]);
        let own = std::process::id();
        write_procs(&memory, "/pod/sidecar", &[own]);
        write_procs(&memory, "/pod/web", &[]);
        let snapshot = take(
            Some(&memory),
            Scope::Cgroup("/pod".to_owned()),
            Some(victim_of_web(NO_SUCH_PID)),
        );
        let rows: Vec<(&str, u64, Option<u64>)> = snapshot
            .cgroups
            .iter()
            .map(|c| (c.path.as_str(), c.usage_bytes, c.read_after_kill_bytes))
            .collect();
        assert_eq!(
            rows,
            [
                ("/pod/sidecar", 30 * MIB, None),
                ("/pod/web", 28 * MIB, Some(212 << 10)),
                ("/pod/webcache", 5 * MIB, None),
            ],
            "{snapshot:?}"
        );
        // The victim is listed with its size at the kill, its pid not asked about again.
        let victim = snapshot
            .processes
            .iter()
            .find(|p| p.pid == NO_SUCH_PID)
            .expect("the victim is listed");
        assert_eq!(victim.rss_bytes, 28 * MIB, "{snapshot:?}");
        assert_eq!(victim.read_after_kill_bytes, Some(0));
        assert_eq!(victim.comm, "hog");
        assert_eq!(victim.cgroup.as_deref(), Some("/pod/web/inner"));
        let scan = snapshot.process_scan;
        assert_eq!(scan.read, 2, "{snapshot:?}");
        // As read: 40 MiB less 30 MiB, 5 MiB and 212 KiB, the victim's row before it was raised.
        assert_eq!(
            snapshot.charged_to_scope_bytes,
            Some(40 * MIB - 30 * MIB - 5 * MIB - (212 << 10))
        );
        let own_rss = snapshot
            .processes
            .iter()
            .find(|p| p.pid == own)
            .map(|p| p.rss_bytes);
        assert_eq!(scan.resident_bytes, 28 * MIB + own_rss.unwrap_or(0));
        fs::remove_dir_all(&memory.root).unwrap();
    }

    #[test]
    fn rows_read_at_or_above_what_the_victim_held_are_left_as_read() {
        let mut cgroups = vec![
            CgroupUsage {
                path: "/pod/web".to_owned(),
                usage_bytes: 100 * MIB,
                read_after_kill_bytes: None,
            },
            CgroupUsage {
                path: "/pod/other".to_owned(),
                usage_bytes: MIB,
                read_after_kill_bytes: None,
            },
        ];
        let before = cgroups.clone();
        hold_victim(&victim_of_web(1), &mut cgroups);
        assert_eq!(cgroups, before);
        // A victim whose cgroup is not known holds no row; nor does one the kernel gave no size.
        cgroups[0].usage_bytes = MIB / 2;
        let before = cgroups.clone();
        let unplaced = ReportedProcess {
            memcg: None,
            ..victim_of_web(1)
        };
        hold_victim(&unplaced, &mut cgroups);
        let sizeless = ReportedProcess {
            rss_bytes: 0,
            ..victim_of_web(1)
        };
        hold_victim(&sizeless, &mut cgroups);
        assert_eq!(cgroups, before);
    }

    /// A victim still listed was read as the kernel reported it, and is not listed twice.
    #[test]
    fn a_victim_still_listed_is_not_added_again() {
        let memory = hierarchy(&[("/domain", 30 * MIB), ("/domain/c", 30 * MIB)]);
        let own = std::process::id();
        write_procs(&memory, "/domain/c", &[own]);
        let victim = ReportedProcess {
            memcg: Some("/domain/c".to_owned()),
            ..victim_of_web(own)
        };
        let snapshot = take(
            Some(&memory),
            Scope::Cgroup("/domain".to_owned()),
            Some(victim),
        );
        assert_eq!(snapshot.processes.len(), 1, "{snapshot:?}");
        assert_eq!(snapshot.processes[0].rss_bytes, 28 * MIB);
        assert_eq!(snapshot.processes[0].read_after_kill_bytes, None);
        assert_eq!(snapshot.process_scan.read, 1);
        assert_eq!(snapshot.cgroups[0].read_after_kill_bytes, None);
        // All of the domain is its member's.
        assert_eq!(snapshot.charged_to_scope_bytes, Some(0));
        fs::remove_dir_all(&memory.root).unwrap();
    }

    #[test]
    fn at_most_the_budget_of_processes_is_read() {
        let memory = hierarchy(&[("/crowded", 1000)]);
        let own = std::process::id();
        let mut pids = vec![own];
        pids.extend((0..MAX_PROCESSES_READ as u32 + 43).map(|i| NO_SUCH_PID + i));
        write_procs(&memory, "/crowded", &pids);
        let snapshot = take(Some(&memory), Scope::Host, None);
        let scan = snapshot.process_scan;
        assert_eq!((scan.read, scan.unread), (MAX_PROCESSES_READ, 44));
        assert_eq!(snapshot.processes.len(), 1);
        assert_eq!(snapshot.processes[0].pid, own);
        fs::remove_dir_all(&memory.root).unwrap();
    }

    /// Past the budget, a victim not listed may be among the unread: it is listed at its size at
    /// the kill, not said to be gone, and not counted twice.
    #[test]
    fn a_victim_past_the_budget_is_listed_and_not_said_gone() {
        let memory = hierarchy(&[("/crowded", 1000)]);
        let pids: Vec<u32> = (0..MAX_PROCESSES_READ as u32 + 3)
            .map(|i| NO_SUCH_PID + i)
            .collect();
        write_procs(&memory, "/crowded", &pids);
        let victim = ReportedProcess {
            pid: 4_999_999,
            memcg: Some("/crowded".to_owned()),
            ..victim_of_web(0)
        };
        let snapshot = take(Some(&memory), Scope::Host, Some(victim));
        let scan = snapshot.process_scan;
        assert_eq!(
            (scan.read, scan.unread, scan.resident_bytes),
            (MAX_PROCESSES_READ, 3, 0)
        );
        assert_eq!(snapshot.processes.len(), 1, "{snapshot:?}");
        assert_eq!(snapshot.processes[0].pid, 4_999_999);
        assert_eq!(snapshot.processes[0].rss_bytes, 28 * MIB);
        assert_eq!(snapshot.processes[0].read_after_kill_bytes, None);
        // Host-wide, nothing is charged to a domain's cgroup.
        assert_eq!(snapshot.charged_to_scope_bytes, None);
        fs::remove_dir_all(&memory.root).unwrap();
    }

    #[test]
    fn this_machine_has_processes_to_list() {
        let snapshot = take(None, Scope::Host, None);
        assert!(!snapshot.processes.is_empty());
        assert!(snapshot.processes.len() <= TOP);
        let sizes: Vec<u64> = snapshot.processes.iter().map(|p| p.rss_bytes).collect();
        assert!(sizes.windows(2).all(|pair| pair[0] >= pair[1]), "{sizes:?}");
    }
}
