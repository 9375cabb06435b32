//! `domain.composition`: what filled the domain at the kill, by kind, and what of it no process
//! holds, which killing a process does not free.

use serde::{Deserialize, Serialize};

use super::party::Names;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Composition {
    pub source: CompositionSource,
    /// How the kernel log served this kill: its report, or why it was not used.
    pub kernel_log: KernelLogUse,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    /// The cgroup's limit; host-wide, the host's memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_bytes: Option<u64>,
    /// Anonymous memory: the processes' heaps and stacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anon_bytes: Option<u64>,
    /// The page cache without shared memory: files' pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<FileMemory>,
    /// tmpfs, `/dev/shm`, memfd, SysV and shared anonymous memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shmem_bytes: Option<u64>,
    /// Pages the kernel may not evict (mlocked, ramfs, `SHM_LOCK`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unevictable_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelMemory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap_bytes: Option<u64>,
    /// Added back to a late reading: what the victim held at its kill and had freed by then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reaped: Option<Reaped>,
    /// The domain's processes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<ProcessesMemory>,
    /// What processes hold: anonymous memory and the pages they map.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_processes_bytes: Option<u64>,
    pub not_in_processes: NotInProcesses,
    /// The tmpfs mounts that may hold the shared memory, biggest first; only where shared
    /// memory no process maps is a large part.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<TmpfsMount>,
    /// Why the mounts holding the shared memory are not all known, where they are not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tmpfs_unknown: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompositionSource {
    /// The kernel's own report of the kill (`/dev/kmsg`): exact, at the kill.
    KernelLog,
    /// The cgroup's `memory.stat`, read as the kill arrived.
    MemoryStat,
    /// `/proc/meminfo`, read as the kill arrived.
    Meminfo,
}

impl CompositionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CompositionSource::KernelLog => "kernel_log",
            CompositionSource::MemoryStat => "memory_stat",
            CompositionSource::Meminfo => "meminfo",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelLogUse {
    pub state: KernelLogState,
    /// The report's summary line, where it was used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelLogState {
    Report,
    /// Read, and the kernel printed no report for this kill (rate-limited).
    NoReport,
    Unreadable,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMemory {
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inactive_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dirty_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writeback_bytes: Option<u64>,
    /// Mapped by processes; shared memory they map counts here too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mapped_bytes: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelMemory {
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slab_reclaimable_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slab_unreclaimable_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_tables_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sock_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percpu_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vmalloc_bytes: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaped {
    pub anon_bytes: u64,
    pub page_tables_bytes: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessesMemory {
    pub count: u64,
    /// Their resident memory summed: pages two of them share count twice.
    pub resident_bytes: u64,
    /// Of it, shared memory they map (the kernel's task dump, from 6.8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shmem_bytes: Option<u64>,
}

/// Memory no process holds: what killing a process does not free.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotInProcesses {
    pub bytes: u64,
    /// tmpfs files and other shared memory no process maps.
    pub shmem_bytes: u64,
    /// File pages no process maps.
    pub page_cache_bytes: u64,
    pub kernel_bytes: u64,
}

/// A tmpfs mount that may hold some of the domain's shared memory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsMount {
    /// Where it is mounted, as its container sees it (`/dev/shm`), else on the host.
    pub mount_point: String,
    pub kind: TmpfsKind,
    /// Where the host sees it, when it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// A Kubernetes volume's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// How much it holds; absent where it cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Whether its files outlive the container: a pod's volume stays until the pod goes.
    pub outlives_container: bool,
    /// Its owner: the container (or pod) it belongs to.
    #[serde(flatten)]
    pub names: Names,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TmpfsKind {
    /// A container's `/dev/shm` (Docker's `--shm-size`, podman's, a pod sandbox's).
    Shm,
    /// A container's own tmpfs mount (`--tmpfs`, Compose's `tmpfs:`).
    ContainerTmpfs,
    /// A Kubernetes `emptyDir` with `medium: Memory`.
    EmptyDir,
    /// A tmpfs in the host's mount namespace.
    Host,
}
