//! Records shared by oomtrace's eBPF programs and its userspace agent.
//!
//! Every type here is `#[repr(C)]` with explicit padding, so the two sides agree byte for byte
//! without relying on the compiler's layout choices. Each ring-buffer record starts with a
//! [`RecordHeader`] whose `kind` tells the agent which record follows.
//!
//! Nothing here knows a kernel struct layout: offsets are resolved from the running kernel's BTF
//! by the agent at load time and handed to the programs in [`KernelOffsets`].
#![no_std]

/// Length of a task's `comm`, including the trailing NUL (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// Bytes of the `oom:mark_victim` tracepoint record copied verbatim. The fixed fields end at
/// offset 66 on 6.18 and the `comm` string follows; the agent decodes them with the offsets it
/// read from the live tracefs `format` file.
pub const TRACEPOINT_RAW_LEN: usize = 128;

/// How many cgroup path components (kernfs names) are captured, leaf first.
pub const CGROUP_PATH_DEPTH: usize = 8;

/// Bytes kept of each component, NUL included: enough for `cri-containerd-<64 hex>.scope`.
pub const CGROUP_NAME_LEN: usize = 96;

/// Marks an offset that the running kernel's BTF does not have.
pub const OFFSET_ABSENT: u32 = u32::MAX;

/// Which record follows the header.
pub mod record_kind {
    /// [`crate::MarkVictimRecord`], from the `oom:mark_victim` tracepoint.
    pub const MARK_VICTIM: u32 = 1;
    /// [`crate::VictimTaskRecord`], from the BTF-enabled `mark_victim` tracepoint.
    pub const VICTIM_TASK: u32 = 2;
    /// [`crate::OomContextRecord`], from the entry of `oom_kill_process`.
    pub const OOM_CONTEXT: u32 = 3;
    /// [`crate::OomContextEndRecord`], from the return of `oom_kill_process`.
    pub const OOM_CONTEXT_END: u32 = 4;
    /// [`crate::SigkillRecord`], from the `signal:signal_generate` tracepoint, SIGKILL only.
    pub const SIGKILL: u32 = 5;
    /// [`crate::SigkillTargetRecord`], from the BTF-enabled `signal_generate` tracepoint.
    pub const SIGKILL_TARGET: u32 = 6;
}

/// Bytes of the `signal:signal_generate` tracepoint record copied verbatim. Its fields end at
/// offset 48 on 6.18 (`comm` is an inline `char[16]`); the agent decodes them with the offsets
/// of the live tracefs `format` file.
pub const SIGNAL_RAW_LEN: usize = 64;

/// The signal number the kernel-side filter lets through.
pub const SIGKILL: i32 = 9;

/// Bytes kept of `oom_kill_process`'s `message` ("Out of memory", "Memory cgroup out of memory").
pub const OOM_MESSAGE_LEN: usize = 64;

/// Leads every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// One of [`record_kind`].
    pub kind: u32,
    /// The CPU the program ran on; with the victim pid it pairs the records of one kill.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC at the moment of capture.
    pub ktime_ns: u64,
}

/// A task as the helpers or `task_struct` give it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskIdentity {
    /// Kernel task id (a thread id in userspace terms).
    pub pid: u32,
    /// Thread group id (the process id in userspace terms).
    pub tgid: u32,
    /// NUL-padded `comm`.
    pub comm: [u8; COMM_LEN],
}

/// Captured by the `oom:mark_victim` tracepoint program: the raw tracepoint record, plus the
/// current task (the one whose allocation invoked the OOM killer) from helpers that need no BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MarkVictimRecord {
    pub header: RecordHeader,
    pub trigger: TaskIdentity,
    /// `bpf_get_current_cgroup_id()`: the trigger's cgroup2 id.
    pub trigger_cgroup_id: u64,
    /// Non-zero when `raw` holds the tracepoint record; zero when reading it failed.
    pub raw_ok: u32,
    pub _pad: u32,
    /// The tracepoint record from offset 0 (common fields included).
    pub raw: [u8; TRACEPOINT_RAW_LEN],
}

/// Captured by the `signal:signal_generate` tracepoint program for a SIGKILL: the raw record
/// (target pid, comm, `code`, result), and the sender, which is the current task.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SigkillRecord {
    pub header: RecordHeader,
    /// The current task: whoever generated the signal (a `kill()`er, or the kernel on a
    /// task's behalf).
    pub sender: TaskIdentity,
    /// `bpf_get_current_cgroup_id()`: the sender's cgroup2 id.
    pub sender_cgroup_id: u64,
    /// Non-zero when `raw` holds the tracepoint record; zero when reading it failed.
    pub raw_ok: u32,
    pub _pad: u32,
    /// The sender's cgroup2 cgroup and memory-controller cgroup, where BTF offsets are known.
    pub sender_cgroup: CgroupCapture,
    pub sender_memcg: CgroupCapture,
    /// The tracepoint record from offset 0 (common fields included).
    pub raw: [u8; SIGNAL_RAW_LEN],
}

/// Captured by the BTF (or raw) `signal_generate` tracepoint program for a SIGKILL, from the
/// target's `task_struct`: its memory and cgroups, read before the killed process can be
/// reaped. For the OOM killer's own SIGKILL this names its victim on kernels whose
/// `mark_victim` passes only a pid.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SigkillTargetRecord {
    pub header: RecordHeader,
    pub target: TaskIdentity,
    /// As [`VictimTaskRecord::victim_ns_pid`].
    pub target_ns_pid: u32,
    pub _pad: u32,
    pub target_memory: TaskMemory,
    pub target_cgroup: CgroupCapture,
    pub target_memcg: CgroupCapture,
}

/// Flags of a [`TaskMemory`]: which of its parts were read.
pub mod memory_flags {
    /// `mm`'s counters: `total_vm`, the RSS counters, `pgtables_bytes`. Not set for a task
    /// without an `mm` (a kernel thread, or a thread group leader that already exited).
    pub const MM: u32 = 1 << 0;
    /// `real_cred->uid`.
    pub const UID: u32 = 1 << 1;
    /// `signal->oom_score_adj`.
    pub const OOM_SCORE_ADJ: u32 = 1 << 2;
}

/// A task's memory as its `mm_struct` counts it, with its uid and `oom_score_adj`: the figures
/// of the kernel's own `Killed process` line, read from the task where the `mark_victim`
/// tracepoint lacks them (before 6.9).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskMemory {
    /// `mm->total_vm`, in pages.
    pub total_vm_pages: u64,
    /// The `MM_ANONPAGES`, `MM_FILEPAGES` and `MM_SHMEMPAGES` counters, in pages, and
    /// `MM_SWAPENTS`. Signed, as the kernel keeps them: a per-CPU counter's sum can lag below 0.
    pub anon_pages: i64,
    pub file_pages: i64,
    pub shmem_pages: i64,
    pub swap_entries: i64,
    /// `mm->pgtables_bytes`.
    pub pgtables_bytes: i64,
    /// `real_cred->uid`, as the kernel's report prints it (the initial user namespace's).
    pub uid: u32,
    pub oom_score_adj: i16,
    pub _pad: u16,
    /// [`memory_flags`].
    pub flags: u32,
    pub _pad2: u32,
}

/// Flags of a [`CgroupCapture`].
pub mod cgroup_flags {
    /// The kernel walk read this cgroup.
    pub const PRESENT: u32 = 1 << 0;
    /// The hierarchy is deeper than [`crate::CGROUP_PATH_DEPTH`]: the top components are missing.
    pub const TRUNCATED: u32 = 1 << 1;
    /// A kernel read failed part way; `depth` components are still valid.
    pub const READ_FAILED: u32 = 1 << 2;
}

/// A cgroup as captured in the kernel: its id and its path, read at the moment of the kill so the
/// path survives the cgroup being removed right after.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupCapture {
    /// The kernfs node id, which is the cgroup directory's inode number.
    pub id: u64,
    /// [`cgroup_flags`].
    pub flags: u32,
    /// How many entries of `names` are valid.
    pub depth: u32,
    /// Path components, leaf first, each NUL-terminated. The hierarchy root is not included.
    pub names: [[u8; CGROUP_NAME_LEN]; CGROUP_PATH_DEPTH],
}

/// Captured by the BTF (or raw) `mark_victim` tracepoint program from the victim's `task_struct`
/// and the current task's.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VictimTaskRecord {
    pub header: RecordHeader,
    pub victim: TaskIdentity,
    pub trigger: TaskIdentity,
    /// The victim's pid in its own (innermost) pid namespace: 1 for a container's main
    /// process. 0 when it could not be read. Read in the kernel because a runtime reaps its
    /// killed main process before `/proc` can be asked.
    pub victim_ns_pid: u32,
    pub _pad: u32,
    pub victim_memory: TaskMemory,
    /// The victim's cgroup2 (default hierarchy) cgroup.
    pub victim_cgroup: CgroupCapture,
    /// The victim's memory-controller cgroup: the v1 memcg on hybrid hosts, on v2 the nearest
    /// ancestor with the memory controller enabled.
    pub victim_memcg: CgroupCapture,
    pub trigger_cgroup: CgroupCapture,
    pub trigger_memcg: CgroupCapture,
}

/// Flags of an [`OomContextRecord`].
pub mod oom_flags {
    /// `oc->memcg` was NULL: the whole host ran out of memory, no cgroup limit was hit.
    pub const HOST_WIDE: u32 = 1 << 0;
    /// Reading `oc->chosen` failed: the victim fields are zero.
    pub const VICTIM_READ_FAILED: u32 = 1 << 1;
    /// Reading the `oom_control` scalars failed.
    pub const CONTROL_READ_FAILED: u32 = 1 << 2;
}

/// Captured at the entry of `oom_kill_process(struct oom_control *oc, const char *message)`:
/// what only the OOM killer's own state knows. The `mark_victim` records that follow on the same
/// thread belong to this invocation, until its [`OomContextEndRecord`].
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomContextRecord {
    pub header: RecordHeader,
    /// The current task: the one whose allocation invoked the OOM killer.
    pub trigger: TaskIdentity,
    /// `oc->chosen`: the victim the OOM killer picked (for `memory.oom.group`, the one whose
    /// badness is `chosen_points`; the others are killed with it).
    pub victim: TaskIdentity,
    /// As [`VictimTaskRecord::victim_ns_pid`].
    pub victim_ns_pid: u32,
    pub _pad: u32,
    pub victim_memory: TaskMemory,
    pub victim_cgroup: CgroupCapture,
    pub victim_memcg: CgroupCapture,
    /// `oc->chosen_points`: the kernel's badness score of the victim.
    pub chosen_points: i64,
    /// `oc->totalpages`: the pages the badness is relative to.
    pub totalpages: u64,
    /// `oc->gfp_mask`.
    pub gfp_mask: u32,
    /// `oc->order`.
    pub order: i32,
    /// `oc->constraint` (`enum oom_constraint`).
    pub constraint: u32,
    /// [`oom_flags`].
    pub flags: u32,
    /// `oc->memcg`'s cgroup: the OOM domain whose limit was hit. Not PRESENT when host-wide.
    pub domain: CgroupCapture,
    /// `message`, NUL-terminated.
    pub message: [u8; OOM_MESSAGE_LEN],
}

/// Captured at the return of `oom_kill_process`: the invocation's victims are all marked.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OomContextEndRecord {
    pub header: RecordHeader,
    pub trigger: TaskIdentity,
}

/// Byte offsets into kernel structs, resolved by the agent from `/sys/kernel/btf/vmlinux` and
/// handed to the programs as a read-only global. [`OFFSET_ABSENT`] marks a member the running
/// kernel does not have.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    pub task_cgroups: u32,
    /// `css_set.dfl_cgrp`.
    pub css_set_dfl_cgrp: u32,
    /// `css_set.subsys[memory_cgrp_id]`: absent when the kernel has no memory controller.
    pub css_set_memory_css: u32,
    /// `cgroup_subsys_state.cgroup`.
    pub css_cgroup: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.id`.
    pub kernfs_node_id: u32,
    /// `kernfs_node.name`.
    pub kernfs_node_name: u32,
    /// `kernfs_node.parent` (`__parent` since 6.15).
    pub kernfs_node_parent: u32,
    /// `oom_control.memcg`, `.gfp_mask`, `.order`, `.totalpages`, `.chosen`, `.chosen_points`,
    /// `.constraint`: absent where the kernel's BTF lacks them, which disables the full tier.
    pub oom_control_memcg: u32,
    pub oom_control_gfp_mask: u32,
    pub oom_control_order: u32,
    pub oom_control_totalpages: u32,
    pub oom_control_chosen: u32,
    pub oom_control_chosen_points: u32,
    pub oom_control_constraint: u32,
    /// `mem_cgroup.css`.
    pub mem_cgroup_css: u32,
    /// `task_struct.thread_pid`, `pid.level`, `pid.numbers`, `upid.nr` and `sizeof(struct
    /// upid)`: the task's pid in its innermost pid namespace. Optional.
    pub task_thread_pid: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_nr: u32,
    pub upid_size: u32,
    /// `task_struct.mm`, `.signal`, `.real_cred`; `signal_struct.oom_score_adj`; the `uid`
    /// value in `cred`. For [`TaskMemory`]; each optional.
    pub task_mm: u32,
    pub task_signal: u32,
    pub task_real_cred: u32,
    pub signal_oom_score_adj: u32,
    pub cred_uid: u32,
    /// The 8-byte values in `mm_struct` of `total_vm`, `pgtables_bytes` and the RSS counters
    /// `rss_stat[MM_*]`: an `atomic_long_t` array before 6.2, `percpu_counter`s (their
    /// approximate `count`, which the kernel's own report reads too) since.
    pub mm_total_vm: u32,
    pub mm_pgtables_bytes: u32,
    pub mm_anon_pages: u32,
    pub mm_file_pages: u32,
    pub mm_shmem_pages: u32,
    pub mm_swap_entries: u32,
}

impl KernelOffsets {
    /// Every member absent: what the programs see until the agent overrides it.
    pub const ABSENT: Self = Self {
        task_pid: OFFSET_ABSENT,
        task_tgid: OFFSET_ABSENT,
        task_comm: OFFSET_ABSENT,
        task_cgroups: OFFSET_ABSENT,
        css_set_dfl_cgrp: OFFSET_ABSENT,
        css_set_memory_css: OFFSET_ABSENT,
        css_cgroup: OFFSET_ABSENT,
        cgroup_kn: OFFSET_ABSENT,
        kernfs_node_id: OFFSET_ABSENT,
        kernfs_node_name: OFFSET_ABSENT,
        kernfs_node_parent: OFFSET_ABSENT,
        oom_control_memcg: OFFSET_ABSENT,
        oom_control_gfp_mask: OFFSET_ABSENT,
        oom_control_order: OFFSET_ABSENT,
        oom_control_totalpages: OFFSET_ABSENT,
        oom_control_chosen: OFFSET_ABSENT,
        oom_control_chosen_points: OFFSET_ABSENT,
        oom_control_constraint: OFFSET_ABSENT,
        mem_cgroup_css: OFFSET_ABSENT,
        task_thread_pid: OFFSET_ABSENT,
        pid_level: OFFSET_ABSENT,
        pid_numbers: OFFSET_ABSENT,
        upid_nr: OFFSET_ABSENT,
        upid_size: OFFSET_ABSENT,
        task_mm: OFFSET_ABSENT,
        task_signal: OFFSET_ABSENT,
        task_real_cred: OFFSET_ABSENT,
        signal_oom_score_adj: OFFSET_ABSENT,
        cred_uid: OFFSET_ABSENT,
        mm_total_vm: OFFSET_ABSENT,
        mm_pgtables_bytes: OFFSET_ABSENT,
        mm_anon_pages: OFFSET_ABSENT,
        mm_file_pages: OFFSET_ABSENT,
        mm_shmem_pages: OFFSET_ABSENT,
        mm_swap_entries: OFFSET_ABSENT,
    };
}

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: plain old data: `#[repr(C)]`, integers and arrays of them only, no implicit
    // padding (the sizes are pinned by `record_sizes_have_no_hidden_padding`), so every bit
    // pattern is a valid value. The agent hands `KernelOffsets` to the kernel as a global,
    // and reads the records out of the ring buffer's bytes.
    unsafe impl aya::Pod for KernelOffsets {}
    // SAFETY: plain old data, as `KernelOffsets` above.
    unsafe impl aya::Pod for RecordHeader {}
    // SAFETY: plain old data, as `KernelOffsets` above.
    unsafe impl aya::Pod for MarkVictimRecord {}
    // SAFETY: plain old data, as `KernelOffsets` above.
    unsafe impl aya::Pod for VictimTaskRecord {}
    // SAFETY: plain old data, as `KernelOffsets` above.
    unsafe impl aya::Pod for OomContextRecord {}
    // SAFETY: plain old data, as `KernelOffsets` above.
    unsafe impl aya::Pod for OomContextEndRecord {}
    // SAFETY: plain old data, as `KernelOffsets` above.
    unsafe impl aya::Pod for SigkillRecord {}
    // SAFETY: plain old data, as `KernelOffsets` above.
    unsafe impl aya::Pod for SigkillTargetRecord {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    // The layouts are a wire format between two compilers: pin them so that a change is a
    // decision, not an accident.
    #[test]
    fn record_sizes_have_no_hidden_padding() {
        assert_eq!(size_of::<RecordHeader>(), 16);
        assert_eq!(size_of::<TaskIdentity>(), 24);
        assert_eq!(
            size_of::<MarkVictimRecord>(),
            16 + 24 + 8 + 8 + TRACEPOINT_RAW_LEN
        );
        assert_eq!(
            size_of::<CgroupCapture>(),
            16 + CGROUP_PATH_DEPTH * CGROUP_NAME_LEN
        );
        assert_eq!(size_of::<TaskMemory>(), 6 * 8 + 16);
        assert_eq!(
            size_of::<VictimTaskRecord>(),
            16 + 2 * 24 + 8 + size_of::<TaskMemory>() + 4 * size_of::<CgroupCapture>()
        );
        assert_eq!(
            size_of::<OomContextRecord>(),
            16 + 24
                + 24
                + 8
                + size_of::<TaskMemory>()
                + 2 * size_of::<CgroupCapture>()
                + 8
                + 8
                + 16
                + size_of::<CgroupCapture>()
                + OOM_MESSAGE_LEN
        );
        assert_eq!(size_of::<OomContextEndRecord>(), 16 + 24);
        assert_eq!(
            size_of::<SigkillRecord>(),
            16 + 24 + 8 + 8 + 2 * size_of::<CgroupCapture>() + SIGNAL_RAW_LEN
        );
        assert_eq!(
            size_of::<SigkillTargetRecord>(),
            16 + 24 + 8 + size_of::<TaskMemory>() + 2 * size_of::<CgroupCapture>()
        );
        assert_eq!(size_of::<KernelOffsets>(), 35 * 4);
    }
}
