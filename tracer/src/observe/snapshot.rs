//! Who held the memory at the moment of a kill: the biggest cgroups (containers, or the first
//! level below the domain) and the biggest processes. This is what shows the build job that
//! spiked next to the database it got killed, although its spike is gone a minute later.

use std::time::{Duration, Instant};

use super::cgroupfs::{CgroupMemory, MemoryHierarchy};
use crate::cgroup_path::{self, PathKind};
use crate::procfs;

/// How many of each kind are kept.
pub const TOP: usize = 5;
/// How many cgroup directories one snapshot may visit, and how deep below its scope: a host
/// with thousands of cgroups costs no more than this.
const MAX_CGROUPS_VISITED: usize = 2048;
const MAX_DEPTH: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A host-wide OOM, or one whose domain is unknown: the whole host.
    Host,
    /// The cgroup whose limit was hit.
    Cgroup(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub scope: Scope,
    /// The domain itself: the cgroup's usage, limits and event counters, or the host's memory.
    pub domain: DomainMemory,
    /// Biggest first.
    pub cgroups: Vec<CgroupUsage>,
    /// Biggest first.
    pub processes: Vec<ProcessUsage>,
    /// What taking it cost.
    pub took: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainMemory {
    Cgroup(CgroupMemory),
    Host(HostMemory),
    Unknown,
}

/// `/proc/meminfo`, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostMemory {
    pub total_bytes: Option<u64>,
    pub available_bytes: Option<u64>,
    pub swap_total_bytes: Option<u64>,
    pub swap_free_bytes: Option<u64>,
}

impl HostMemory {
    pub fn read() -> Self {
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
pub struct CgroupUsage {
    pub path: String,
    pub usage_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessUsage {
    pub pid: u32,
    pub comm: String,
    pub rss_bytes: u64,
    /// Its memory cgroup, to name its container.
    pub cgroup: Option<String>,
}

pub fn take(memory: Option<&MemoryHierarchy>, scope: Scope) -> Snapshot {
    let started = Instant::now();
    let cgroups = memory
        .map(|memory| top_cgroups(memory, &scope))
        .unwrap_or_default();
    let processes = top_processes(&scope);
    let domain = match (&scope, memory) {
        (Scope::Host, _) => DomainMemory::Host(HostMemory::read()),
        (Scope::Cgroup(path), Some(memory)) => DomainMemory::Cgroup(memory.stats(path)),
        (Scope::Cgroup(_), None) => DomainMemory::Unknown,
    };
    Snapshot {
        scope,
        domain,
        cgroups,
        processes,
        took: started.elapsed(),
    }
}

/// Below a domain: its children and the containers under it. Host-wide: the first level, with
/// the runtimes' grouping cgroups (`/docker`, `/libpod_parent`, `/kubepods`, slices) replaced
/// by the containers inside them.
fn top_cgroups(memory: &MemoryHierarchy, scope: &Scope) -> Vec<CgroupUsage> {
    let root = match scope {
        Scope::Host => "",
        Scope::Cgroup(path) => path.as_str(),
    };
    let mut found = Vec::new();
    let mut visited = 0;
    collect(memory, root, 1, &mut visited, &mut found);
    let mut usage: Vec<CgroupUsage> = found
        .into_iter()
        .filter_map(|path| {
            let usage_bytes = memory.usage_bytes(&path)?;
            Some(CgroupUsage { path, usage_bytes })
        })
        .collect();
    usage.sort_by_key(|cgroup| std::cmp::Reverse(cgroup.usage_bytes));
    usage.truncate(TOP);
    usage
}

/// Adds the cgroups below `parent` that are one entry each: containers, units, unrecognised
/// cgroups, and groupings (slices, `/docker`, pods) that hold none of these. Returns whether it
/// added any.
fn collect(
    memory: &MemoryHierarchy,
    parent: &str,
    depth: usize,
    visited: &mut usize,
    found: &mut Vec<String>,
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
                if depth >= MAX_DEPTH || !collect(memory, &child, depth + 1, visited, found) {
                    found.push(child);
                }
            }
        }
    }
    any
}

/// The biggest processes by resident memory; under a domain, only those inside it.
fn top_processes(scope: &Scope) -> Vec<ProcessUsage> {
    let mut all: Vec<(u32, u64)> = procfs::pids()
        .filter_map(|pid| Some((pid, procfs::rss_bytes(pid)?)))
        .filter(|&(_, rss)| rss > 0)
        .collect();
    all.sort_by_key(|&(_, rss)| std::cmp::Reverse(rss));
    let mut top = Vec::new();
    for (pid, rss_bytes) in all {
        if top.len() == TOP {
            break;
        }
        let cgroup = procfs::cgroups(pid).and_then(|paths| paths.memory);
        if let Scope::Cgroup(domain) = scope {
            let inside = cgroup
                .as_deref()
                .is_some_and(|path| is_within(path, domain));
            if !inside {
                continue;
            }
        }
        top.push(ProcessUsage {
            pid,
            comm: procfs::comm(pid).unwrap_or_else(|| "?".to_owned()),
            rss_bytes,
            cgroup,
        });
    }
    top
}

/// `/a/b` is within `/a` and `/a/b`, not within `/a/bc`.
fn is_within(path: &str, ancestor: &str) -> bool {
    let ancestor = ancestor.trim_end_matches('/');
    path == ancestor
        || ancestor.is_empty()
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
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
        let root = std::env::temp_dir().join(format!(
            "oomtrace-snapshot-{}-{}",
            std::process::id(),
            cgroups.len()
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

    #[test]
    fn within_means_at_or_below() {
        assert!(is_within("/a/b", "/a"));
        assert!(is_within("/a", "/a"));
        assert!(is_within("/a", "/"));
        assert!(!is_within("/ab", "/a"));
        assert!(!is_within("/b", "/a"));
    }

    #[test]
    fn this_machine_has_processes_to_list() {
        let snapshot = take(None, Scope::Host);
        assert!(!snapshot.processes.is_empty());
        assert!(snapshot.processes.len() <= TOP);
        let sizes: Vec<u64> = snapshot.processes.iter().map(|p| p.rss_bytes).collect();
        assert!(sizes.windows(2).all(|pair| pair[0] >= pair[1]), "{sizes:?}");
    }
}
