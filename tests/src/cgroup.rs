//! Throw-away memory cgroups, on cgroup v2, v1 or hybrid hosts.

use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::{POLL_INTERVAL, send_signal};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const EMPTY_TIMEOUT: Duration = Duration::from_secs(5);

/// A throw-away memory cgroup with a memory limit and no swap. On a cgroup v1 or hybrid host it
/// is a v1 memory cgroup, plus a same-named cgroup2 cgroup if cgroup2 is mounted at
/// `/sys/fs/cgroup/unified`, so that its processes have a known cgroup2 cgroup too.
pub struct MemoryCgroup {
    name: String,
    limit_bytes: u64,
    memcg_dir: PathBuf,
    cgroup2_dir: Option<PathBuf>,
    memcg_id: u64,
    cgroup2_id: Option<u64>,
    /// The directories made and not removed yet.
    live_dirs: Vec<PathBuf>,
    /// A container runtime puts cgroups below it, in every hierarchy (see
    /// [`for_containers`](Self::for_containers)).
    for_containers: bool,
}

impl MemoryCgroup {
    /// Makes `oomtrace-test-<pid>-<n>` with a memory limit of `limit_bytes`.
    pub fn create(limit_bytes: u64) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "oomtrace-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let root = Path::new(CGROUP_ROOT);
        let pure_v2 = memory_controller_is_v2();
        let memcg_dir = if pure_v2 {
            root.join(&name)
        } else {
            root.join("memory").join(&name)
        };
        assert!(
            pure_v2 || root.join("memory/memory.limit_in_bytes").exists(),
            "no memory controller: not in {CGROUP_ROOT}/cgroup.controllers, and no v1 hierarchy at {CGROUP_ROOT}/memory"
        );
        let mut cgroup = Self {
            name,
            limit_bytes,
            memcg_dir: memcg_dir.clone(),
            cgroup2_dir: None,
            memcg_id: 0,
            cgroup2_id: None,
            live_dirs: Vec::new(),
            for_containers: false,
        };

        if pure_v2 {
            let subtree_control = root.join("cgroup.subtree_control");
            let enabled = fs::read_to_string(&subtree_control).unwrap_or_default();
            if !enabled.split_whitespace().any(|c| c == "memory") {
                write_file(&subtree_control, "+memory");
            }
        }
        cgroup.make_dir(&memcg_dir);
        cgroup.memcg_id = inode(&memcg_dir);
        if pure_v2 {
            write_file(&memcg_dir.join("memory.max"), &limit_bytes.to_string());
            let swap_max = memcg_dir.join("memory.swap.max");
            if swap_max.exists() {
                write_file(&swap_max, "0");
            }
            cgroup.cgroup2_dir = Some(memcg_dir);
        } else {
            write_file(
                &memcg_dir.join("memory.limit_in_bytes"),
                &limit_bytes.to_string(),
            );
            // Memory plus swap: the same limit means no swap. Set after the memory limit,
            // which it may not be below.
            let memsw_limit = memcg_dir.join("memory.memsw.limit_in_bytes");
            if memsw_limit.exists() {
                write_file(&memsw_limit, &limit_bytes.to_string());
            }
            let unified = root.join("unified");
            if unified.join("cgroup.controllers").exists() {
                let cgroup2_dir = unified.join(&cgroup.name);
                cgroup.make_dir(&cgroup2_dir);
                cgroup.cgroup2_dir = Some(cgroup2_dir);
            }
        }
        cgroup.cgroup2_id = cgroup.cgroup2_dir.as_deref().map(inode);
        cgroup
    }

    /// As [`create`](Self::create), with no memory limit of its own (`max`): what it holds
    /// counts against the host's memory only.
    pub fn unlimited() -> Self {
        let mut cgroup = Self::create(LIMIT_MAX);
        cgroup.limit_bytes = u64::MAX;
        cgroup
    }

    /// A cgroup inside this one, without a limit of its own: this one's limit is its limit.
    /// Drop it before its parent.
    pub fn child(&self, name: &str) -> Self {
        let memcg_dir = self.memcg_dir.join(name);
        let mut child = Self {
            name: format!("{}/{name}", self.name),
            limit_bytes: self.limit_bytes,
            memcg_dir: memcg_dir.clone(),
            cgroup2_dir: None,
            memcg_id: 0,
            cgroup2_id: None,
            live_dirs: Vec::new(),
            for_containers: false,
        };
        child.make_dir(&memcg_dir);
        child.memcg_id = inode(&memcg_dir);
        match &self.cgroup2_dir {
            // Pure v2: the memory cgroup is the cgroup2 cgroup; its parent passes `memory` on.
            Some(parent) if *parent == self.memcg_dir => {
                let subtree_control = parent.join("cgroup.subtree_control");
                let enabled = fs::read_to_string(&subtree_control).unwrap_or_default();
                if !enabled.split_whitespace().any(|c| c == "memory") {
                    write_file(&subtree_control, "+memory");
                }
                child.cgroup2_dir = Some(memcg_dir);
            }
            Some(parent) => {
                let cgroup2_dir = parent.join(name);
                child.make_dir(&cgroup2_dir);
                child.cgroup2_dir = Some(cgroup2_dir);
            }
            None => {}
        }
        child.cgroup2_id = child.cgroup2_dir.as_deref().map(inode);
        child
    }

    /// As [`create`](Self::create), for a container runtime to put containers below, e.g. as
    /// Compose's `cgroup_parent`: the runtime makes same-named cgroups in the other
    /// controllers' hierarchies too, and its containers' cgroups below them. Removing it removes
    /// those too, deepest first, whatever the runtime left behind.
    pub fn for_containers(limit_bytes: u64) -> Self {
        let mut cgroup = Self::create(limit_bytes);
        cgroup.for_containers = true;
        cgroup
    }

    fn make_dir(&mut self, dir: &Path) {
        fs::create_dir(dir).unwrap_or_else(|err| panic!("making cgroup {}: {err}", dir.display()));
        self.live_dirs.push(dir.to_owned());
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The path as the kernel shows it, relative to its hierarchy's root: `/<name>`.
    pub fn path(&self) -> String {
        format!("/{}", self.name)
    }

    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    /// The memory cgroup's directory (v1 or v2).
    pub fn memcg_dir(&self) -> &Path {
        &self.memcg_dir
    }

    /// The cgroup2 directory: the memory cgroup itself on pure v2, else the one in `unified`.
    pub fn cgroup2_dir(&self) -> Option<&Path> {
        self.cgroup2_dir.as_deref()
    }

    /// The memory cgroup's id: the inode of its directory (still known after removal).
    pub fn memcg_id(&self) -> u64 {
        self.memcg_id
    }

    /// The cgroup2 cgroup's id (what `bpf_get_current_cgroup_id` returns for its processes).
    pub fn cgroup2_id(&self) -> Option<u64> {
        self.cgroup2_id
    }

    /// Sets a new memory limit (and no swap), as `docker update --memory` does: lowered, the
    /// memory limit first (v1's memory+swap limit may not be below it), raised, that one first.
    pub fn set_limit(&mut self, limit_bytes: u64) {
        let value = limit_bytes.to_string();
        let max = self.memcg_dir.join("memory.max");
        if max.exists() {
            write_file(&max, &value);
        } else {
            let memory = self.memcg_dir.join("memory.limit_in_bytes");
            let memsw = self.memcg_dir.join("memory.memsw.limit_in_bytes");
            let order = if limit_bytes < self.limit_bytes {
                [&memory, &memsw]
            } else {
                [&memsw, &memory]
            };
            for file in order {
                if file.exists() {
                    write_file(file, &value);
                }
            }
        }
        self.limit_bytes = limit_bytes;
    }

    /// `memory.oom.group`: an OOM kill in this cgroup kills all of its processes. cgroup v2
    /// only: panics on a v1 memory cgroup (ask [`memory_controller_is_v2`] first).
    pub fn set_oom_group(&self) {
        assert!(
            self.is_v2(),
            "memory.oom.group needs the v2 memory controller"
        );
        write_file(&self.memcg_dir.join("memory.oom.group"), "1");
    }

    /// What the memory cgroup holds now, in bytes (`memory.current`, or v1's
    /// `memory.usage_in_bytes`).
    pub fn usage_bytes(&self) -> u64 {
        let file = if self.is_v2() {
            "memory.current"
        } else {
            "memory.usage_in_bytes"
        };
        read_number(&self.memcg_dir.join(file))
    }

    /// A key of `memory.stat` (v2: `anon`; v1: `rss`), `None` if it has no such key.
    pub fn stat(&self, key: &str) -> Option<u64> {
        keyed_value(&self.memcg_dir.join("memory.stat"), key)
    }

    /// A counter of `memory.events` (v2 only: `oom`, `oom_kill`, …).
    pub fn event_count(&self, key: &str) -> Option<u64> {
        keyed_value(&self.memcg_dir.join("memory.events"), key)
    }

    /// The processes in the memory cgroup now.
    pub fn procs(&self) -> Vec<u32> {
        let path = self.memcg_dir.join("cgroup.procs");
        fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect()
    }

    /// The `cgroup.procs` files a process joins, so that a child can put itself in before it
    /// runs anything (see [`Hog::spawn_started_in`](crate::Hog::spawn_started_in)).
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.live_dirs
            .iter()
            .map(|dir| dir.join("cgroup.procs"))
            .collect()
    }

    fn is_v2(&self) -> bool {
        self.cgroup2_dir.as_deref() == Some(self.memcg_dir.as_path())
    }

    /// Moves process `pid` into the memory cgroup and the cgroup2 cgroup.
    pub fn add(&self, pid: u32) {
        for dir in &self.live_dirs {
            write_file(&dir.join("cgroup.procs"), &pid.to_string());
        }
    }

    /// SIGKILLs what is left in the cgroups and removes their directories; panics if it cannot.
    /// Calling it again does nothing.
    pub fn remove(&mut self) {
        if let Err(err) = self.try_remove() {
            panic!("removing cgroup {}: {err}", self.name);
        }
    }

    fn try_remove(&mut self) -> Result<(), String> {
        let mut errors = Vec::new();
        if self.for_containers {
            for dir in self.runtime_made_dirs() {
                if let Err(err) = empty_and_remove(&dir) {
                    errors.push(err);
                }
            }
        }
        self.live_dirs.retain(|dir| match empty_and_remove(dir) {
            Ok(()) => false,
            Err(err) => {
                errors.push(err);
                true
            }
        });
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

impl MemoryCgroup {
    /// What a runtime made below or beside this cgroup: the cgroups below its directories, and
    /// the same-named cgroups in every other hierarchy with theirs, deepest first.
    fn runtime_made_dirs(&self) -> Vec<PathBuf> {
        let mut tops: Vec<PathBuf> = Vec::new();
        for entry in fs::read_dir(CGROUP_ROOT).into_iter().flatten().flatten() {
            // Co-mounted controllers (`cpu,cpuacct`) are reached by several names.
            let Ok(hierarchy) = fs::canonicalize(entry.path()) else {
                continue;
            };
            let top = hierarchy.join(&self.name);
            if top.is_dir() && !tops.contains(&top) {
                tops.push(top);
            }
        }
        let mut dirs = Vec::new();
        for top in &tops {
            collect_dirs(top, &mut dirs);
        }
        // Deepest first; the tops this cgroup made itself are removed as its own.
        dirs.retain(|dir| !self.live_dirs.contains(dir));
        dirs.sort_by_key(|dir| std::cmp::Reverse(dir.components().count()));
        dirs
    }
}

/// `dir` and every directory below it.
fn collect_dirs(dir: &Path, into: &mut Vec<PathBuf>) {
    into.push(dir.to_owned());
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            collect_dirs(&entry.path(), into);
        }
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        if let Err(err) = self.try_remove() {
            eprintln!("warning: cleaning up cgroup {}: {err}", self.name);
        }
    }
}

fn empty_and_remove(dir: &Path) -> Result<(), String> {
    let deadline = Instant::now() + EMPTY_TIMEOUT;
    let procs = dir.join("cgroup.procs");
    loop {
        let listed = fs::read_to_string(&procs)
            .map_err(|err| format!("reading {}: {err}", procs.display()))?;
        let pids: Vec<u32> = listed
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{} still lists {pids:?} after {EMPTY_TIMEOUT:?}",
                procs.display()
            ));
        }
        for pid in pids {
            let _ = send_signal(pid, libc::SIGKILL);
        }
        thread::sleep(POLL_INTERVAL);
    }
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            // The last exit can take a moment to uncharge and unpopulate the cgroup.
            Err(err) if err.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                thread::sleep(POLL_INTERVAL)
            }
            Err(err) => return Err(format!("rmdir {}: {err}", dir.display())),
        }
    }
}

/// Whether the memory controller is on cgroup v2 (`/sys/fs/cgroup` is cgroup2 with `memory`),
/// as on the kernel matrix's guests and current distributions; not on a v1 or hybrid host.
pub fn memory_controller_is_v2() -> bool {
    fs::read_to_string(Path::new(CGROUP_ROOT).join("cgroup.controllers"))
        .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "memory"))
}

/// `memory.max` and v1's `memory.limit_in_bytes` both read "no limit" for this.
const LIMIT_MAX: u64 = i64::MAX as u64;

fn read_number(path: &Path) -> u64 {
    let text =
        fs::read_to_string(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    text.trim()
        .parse()
        .unwrap_or_else(|err| panic!("{} holds {text:?}: {err}", path.display()))
}

/// The value of `key` in a `key value` file (`memory.stat`, `memory.events`).
fn keyed_value(path: &Path, key: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok())?
    })
}

fn write_file(path: &Path, value: &str) {
    fs::write(path, value)
        .unwrap_or_else(|err| panic!("writing {value:?} to {}: {err}", path.display()));
}

fn inode(path: &Path) -> u64 {
    fs::metadata(path)
        .unwrap_or_else(|err| panic!("stat {}: {err}", path.display()))
        .ino()
}
