//! oomtrace's kernel side: what the OOM killer knows at the moment it marks a victim.
//!
//! * `mark_victim` (tracepoint `oom:mark_victim`) copies the raw tracepoint record; the agent
//!   decodes it with the field offsets of the live tracefs `format` file. It also records the
//!   current task, which is the one whose allocation invoked the OOM killer.
//! * `mark_victim_btf` (`tp_btf`, or `mark_victim_raw` as `raw_tp` where tp_btf is refused) gets
//!   the victim's `task_struct` and captures its memory and both parties' cgroup ids and paths
//!   before the cgroup can be removed. Loaded only where the tracepoint passes the task: before
//!   6.9 (and its backports) it passes only the pid.
//!
//! * `oom_kill_process_fentry`/`_fexit` (or `_kprobe`/`_kretprobe` where the kernel has no BPF
//!   trampolines) capture what only the OOM killer's `oom_control` knows: the domain whose limit
//!   was hit, the victim it chose (`oc->chosen`: its task, memory and cgroups), the kernel's
//!   badness score, and the constraint; and mark where one invocation ends.
//!
//! * `signal_generate` (tracepoint `signal:signal_generate`) reports every SIGKILL, whoever sent
//!   it: it reads `sig` at the offset the agent found in the tracepoint's `format` file and
//!   returns before touching the ring buffer for any other signal.
//! * `signal_generate_btf` (`tp_btf`, or `signal_generate_raw` as `raw_tp`) gets the target's
//!   `task_struct` and captures its memory and cgroups before the killed process can be reaped:
//!   the OOM killer SIGKILLs each victim right before it marks it, so this names the victim on
//!   every kernel.
//!
//! Struct offsets come from [`KERNEL_OFFSETS`], which the agent fills from the running kernel's
//! BTF: nothing here depends on the kernel it was built on.
#![no_std]
#![no_main]

use core::{ffi::c_void, ptr::addr_of_mut};

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{bpf_probe_read_kernel as probe_read_raw, bpf_probe_read_kernel_str},
    },
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, map, raw_tracepoint, tracepoint},
    maps::{PerCpuArray, RingBuf},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RawTracePointContext,
        RetProbeContext, TracePointContext,
    },
};
use aya_log_ebpf::warn;
use tracer_common::{
    CGROUP_NAME_LEN, CGROUP_PATH_DEPTH, CgroupCapture, KernelOffsets, MarkVictimRecord,
    OFFSET_ABSENT, OOM_MESSAGE_LEN, OomContextEndRecord, OomContextRecord, RecordHeader, SIGKILL,
    SIGNAL_RAW_LEN, SigkillRecord, SigkillTargetRecord, TRACEPOINT_RAW_LEN, TaskIdentity,
    TaskMemory, VictimTaskRecord, cgroup_flags, memory_flags, oom_flags, record_kind,
};

/// Records for the agent. The agent sets its size when it loads the object (`--ringbuf-size`,
/// 1 MiB by default; the agent copies records out as they come); this one is unused.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Records lost because `EVENTS` was full, per CPU; the agent sums and reports them.
#[map]
static DROPPED: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Filled by the agent from the running kernel's BTF before loading.
#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets::ABSENT;

/// Offset of `sig` in the `signal:signal_generate` record, from its tracefs `format` file.
#[unsafe(no_mangle)]
static SIGNAL_SIG_OFFSET: u32 = OFFSET_ABSENT;

/// Errors, as negative numbers for the log: kernel errnos pass through unchanged.
const ERR_RINGBUF_FULL: i64 = -1000;
const ERR_OFFSET_ABSENT: i64 = -1001;
const ERR_NULL_POINTER: i64 = -1002;

/// Reserves a `$record` in `EVENTS` (a full ring buffer is counted in `DROPPED`), runs `$fill`
/// with `$record` a pointer to it, and submits the entry when that returns `Ok`, else discards
/// it. `$fill` writes every field through the pointer, and must not return early (no `?`): the
/// entry would be neither submitted nor discarded, which the verifier refuses. A macro rather
/// than a function taking a closure: a closure left out of line would pass the ring-buffer
/// pointer to a BPF-to-BPF call, which older verifiers refuse.
macro_rules! emit {
    ($type:ty, |$record:ident| $fill:block) => {{
        match EVENTS.reserve::<$type>(0) {
            None => {
                count_drop();
                Err(ERR_RINGBUF_FULL)
            }
            Some(mut entry) => {
                let $record = entry.as_mut_ptr();
                let filled: Result<(), i64> = $fill;
                match filled {
                    Ok(()) => entry.submit(0),
                    Err(_) => entry.discard(0),
                }
                filled
            }
        }
    }};
}

#[tracepoint]
pub fn mark_victim(ctx: TracePointContext) -> u32 {
    if let Err(err) = try_mark_victim(&ctx) {
        warn!(&ctx, "oom:mark_victim capture failed: {}", err);
    }
    0
}

#[tracepoint]
pub fn signal_generate(ctx: TracePointContext) -> u32 {
    if let Err(err) = try_signal_generate(&ctx) {
        warn!(&ctx, "signal:signal_generate capture failed: {}", err);
    }
    0
}

/// `TP_PROTO(int sig, struct kernel_siginfo *info, struct task_struct *task, int group,
/// int result)`.
#[btf_tracepoint(function = "signal_generate")]
pub fn signal_generate_btf(ctx: BtfTracePointContext) -> i32 {
    let sig = ctx.arg::<u64>(0) as i32;
    let task: *const c_void = ctx.arg(2);
    if let Err(err) = try_sigkill_target(sig, task as u64) {
        warn!(&ctx, "tp_btf signal_generate capture failed: {}", err);
    }
    0
}

#[raw_tracepoint(tracepoint = "signal_generate")]
pub fn signal_generate_raw(ctx: RawTracePointContext) -> i32 {
    let sig = ctx.arg::<u64>(0) as i32;
    let task: *const c_void = ctx.arg(2);
    if let Err(err) = try_sigkill_target(sig, task as u64) {
        warn!(&ctx, "raw_tp signal_generate capture failed: {}", err);
    }
    0
}

#[btf_tracepoint(function = "mark_victim")]
pub fn mark_victim_btf(ctx: BtfTracePointContext) -> i32 {
    let victim: *const c_void = ctx.arg(0);
    if let Err(err) = try_victim_task(victim as u64) {
        warn!(&ctx, "tp_btf mark_victim capture failed: {}", err);
    }
    0
}

#[raw_tracepoint(tracepoint = "mark_victim")]
pub fn mark_victim_raw(ctx: RawTracePointContext) -> i32 {
    let victim: *const c_void = ctx.arg(0);
    if let Err(err) = try_victim_task(victim as u64) {
        warn!(&ctx, "raw_tp mark_victim capture failed: {}", err);
    }
    0
}

#[fentry(function = "oom_kill_process")]
pub fn oom_kill_process_fentry(ctx: FEntryContext) -> i32 {
    let oc: *const c_void = ctx.arg(0);
    let message: *const c_void = ctx.arg(1);
    if let Err(err) = try_oom_context(oc as u64, message as u64) {
        warn!(&ctx, "fentry oom_kill_process capture failed: {}", err);
    }
    0
}

#[fexit(function = "oom_kill_process")]
pub fn oom_kill_process_fexit(ctx: FExitContext) -> i32 {
    if let Err(err) = try_oom_context_end() {
        warn!(&ctx, "fexit oom_kill_process capture failed: {}", err);
    }
    0
}

#[kprobe]
pub fn oom_kill_process_kprobe(ctx: ProbeContext) -> u32 {
    let oc: u64 = ctx.arg(0).unwrap_or(0);
    let message: u64 = ctx.arg(1).unwrap_or(0);
    if let Err(err) = try_oom_context(oc, message) {
        warn!(&ctx, "kprobe oom_kill_process capture failed: {}", err);
    }
    0
}

#[kretprobe]
pub fn oom_kill_process_kretprobe(ctx: RetProbeContext) -> u32 {
    if let Err(err) = try_oom_context_end() {
        warn!(&ctx, "kretprobe oom_kill_process capture failed: {}", err);
    }
    0
}

fn try_mark_victim(ctx: &TracePointContext) -> Result<(), i64> {
    emit!(MarkVictimRecord, |record| {
        // SAFETY: `record` points at a reserved entry of the right size; every field is
        // written through raw pointers before submit.
        unsafe {
            (*record).header = header(record_kind::MARK_VICTIM);
            (*record).trigger = current_task();
            (*record).trigger_cgroup_id = bpf_get_current_cgroup_id();
            let raw = addr_of_mut!((*record).raw).cast::<c_void>();
            let read = probe_read_raw(raw, TRACEPOINT_RAW_LEN as u32, ctx.as_ptr().cast_const());
            (*record).raw_ok = u32::from(read == 0);
            (*record)._pad = 0;
        }
        Ok(())
    })
}

/// Every signal on the host passes here: anything but SIGKILL costs one 4-byte read.
fn try_signal_generate(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: a read-only global; volatile so the compiler cannot fold in the default.
    let sig_offset = unsafe { core::ptr::read_volatile(&SIGNAL_SIG_OFFSET) };
    if sig_offset == OFFSET_ABSENT {
        return Err(ERR_OFFSET_ABSENT);
    }
    // SAFETY: bpf_probe_read of the tracepoint record; fails instead of faulting.
    let sig: i32 = unsafe { ctx.read_at(sig_offset as usize) }.map_err(i64::from)?;
    if sig != SIGKILL {
        return Ok(());
    }
    let offsets = kernel_offsets();
    emit!(SigkillRecord, |record| {
        // SAFETY: as in `try_mark_victim`.
        unsafe {
            (*record).header = header(record_kind::SIGKILL);
            (*record).sender = current_task();
            (*record).sender_cgroup_id = bpf_get_current_cgroup_id();
            // Without BTF offsets the walk fails at once and the flags say so.
            capture_task_cgroups(
                bpf_get_current_task(),
                addr_of_mut!((*record).sender_cgroup),
                addr_of_mut!((*record).sender_memcg),
                &offsets,
            );
            let raw = addr_of_mut!((*record).raw).cast::<c_void>();
            let read = probe_read_raw(raw, SIGNAL_RAW_LEN as u32, ctx.as_ptr().cast_const());
            (*record).raw_ok = u32::from(read == 0);
            (*record)._pad = 0;
        }
        Ok(())
    })
}

fn try_sigkill_target(sig: i32, target: u64) -> Result<(), i64> {
    if sig != SIGKILL {
        return Ok(());
    }
    let offsets = kernel_offsets();
    emit!(SigkillTargetRecord, |record| {
        // SAFETY: as in `try_mark_victim`.
        unsafe {
            (*record).header = header(record_kind::SIGKILL_TARGET);
            task_identity(target, &offsets).map(|identity| {
                (*record).target = identity;
                (*record)._pad = 0;
                capture_task_state(
                    target,
                    TaskState {
                        ns_pid: addr_of_mut!((*record).target_ns_pid),
                        memory: addr_of_mut!((*record).target_memory),
                        cgroup: addr_of_mut!((*record).target_cgroup),
                        memcg: addr_of_mut!((*record).target_memcg),
                    },
                    &offsets,
                );
            })
        }
    })
}

fn try_victim_task(victim: u64) -> Result<(), i64> {
    let offsets = kernel_offsets();
    emit!(VictimTaskRecord, |record| {
        // SAFETY: as in `try_mark_victim`.
        unsafe {
            (*record).header = header(record_kind::VICTIM_TASK);
            (*record).trigger = current_task();
            task_identity(victim, &offsets).map(|identity| {
                (*record).victim = identity;
                (*record)._pad = 0;
                // Partial data is still worth sending: the flags say what is missing.
                capture_task_state(
                    victim,
                    TaskState {
                        ns_pid: addr_of_mut!((*record).victim_ns_pid),
                        memory: addr_of_mut!((*record).victim_memory),
                        cgroup: addr_of_mut!((*record).victim_cgroup),
                        memcg: addr_of_mut!((*record).victim_memcg),
                    },
                    &offsets,
                );
                let trigger = bpf_get_current_task();
                capture_task_cgroups(
                    trigger,
                    addr_of_mut!((*record).trigger_cgroup),
                    addr_of_mut!((*record).trigger_memcg),
                    &offsets,
                );
            })
        }
    })
}

fn try_oom_context(oc: u64, message: u64) -> Result<(), i64> {
    let offsets = kernel_offsets();
    emit!(OomContextRecord, |record| {
        // SAFETY: as in `try_mark_victim`.
        unsafe {
            (*record).header = header(record_kind::OOM_CONTEXT);
            (*record).trigger = current_task();
            (*record).flags = 0;
            match read_oom_control(oc, &offsets) {
                Ok((chosen_points, totalpages, gfp_mask, order, constraint)) => {
                    (*record).chosen_points = chosen_points;
                    (*record).totalpages = totalpages;
                    (*record).gfp_mask = gfp_mask;
                    (*record).order = order;
                    (*record).constraint = constraint;
                }
                Err(_) => {
                    (*record).chosen_points = 0;
                    (*record).totalpages = 0;
                    (*record).gfp_mask = 0;
                    (*record).order = 0;
                    (*record).constraint = 0;
                    (*record).flags |= oom_flags::CONTROL_READ_FAILED;
                }
            }
            // Unreadable, `chosen` is 0 and every read of it below fails, leaving its flags
            // clear.
            let chosen = read_at::<u64>(oc, offsets.oom_control_chosen).unwrap_or(0);
            match task_identity(chosen, &offsets) {
                Ok(victim) => (*record).victim = victim,
                Err(_) => {
                    (*record).victim = TaskIdentity {
                        pid: 0,
                        tgid: 0,
                        comm: [0; 16],
                    };
                    (*record).flags |= oom_flags::VICTIM_READ_FAILED;
                }
            }
            (*record)._pad = 0;
            capture_task_state(
                chosen,
                TaskState {
                    ns_pid: addr_of_mut!((*record).victim_ns_pid),
                    memory: addr_of_mut!((*record).victim_memory),
                    cgroup: addr_of_mut!((*record).victim_cgroup),
                    memcg: addr_of_mut!((*record).victim_memcg),
                },
                &offsets,
            );
            let domain = addr_of_mut!((*record).domain);
            (*domain).id = 0;
            (*domain).flags = 0;
            (*domain).depth = 0;
            match read_at::<u64>(oc, offsets.oom_control_memcg) {
                // A NULL memcg: no cgroup limit was hit, the whole host is out of memory.
                Ok(0) => (*record).flags |= oom_flags::HOST_WIDE,
                Ok(memcg) => {
                    let css = memcg + u64::from(offsets.mem_cgroup_css);
                    if offsets.mem_cgroup_css == OFFSET_ABSENT
                        || read_at::<u64>(css, offsets.css_cgroup)
                            .and_then(|cgroup| capture_cgroup(cgroup, domain, &offsets))
                            .is_err()
                    {
                        (*domain).flags |= cgroup_flags::READ_FAILED;
                    }
                }
                Err(_) => (*domain).flags = cgroup_flags::READ_FAILED,
            }
            let dst = addr_of_mut!((*record).message).cast::<c_void>();
            if message == 0
                || bpf_probe_read_kernel_str(dst, OOM_MESSAGE_LEN as u32, message as *const c_void)
                    < 0
            {
                (*record).message[0] = 0;
            }
        }
        Ok(())
    })
}

fn try_oom_context_end() -> Result<(), i64> {
    emit!(OomContextEndRecord, |record| {
        // SAFETY: as in `try_mark_victim`.
        unsafe {
            (*record).header = header(record_kind::OOM_CONTEXT_END);
            (*record).trigger = current_task();
        }
        Ok(())
    })
}

/// `oc->chosen_points`, `->totalpages`, `->gfp_mask`, `->order`, `->constraint`.
#[inline(always)]
unsafe fn read_oom_control(
    oc: u64,
    offsets: &KernelOffsets,
) -> Result<(i64, u64, u32, i32, u32), i64> {
    // SAFETY: see `read_at`.
    unsafe {
        Ok((
            read_at(oc, offsets.oom_control_chosen_points)?,
            read_at(oc, offsets.oom_control_totalpages)?,
            read_at(oc, offsets.oom_control_gfp_mask)?,
            read_at(oc, offsets.oom_control_order)?,
            read_at(oc, offsets.oom_control_constraint)?,
        ))
    }
}

#[inline(always)]
fn header(kind: u32) -> RecordHeader {
    // SAFETY: plain helpers without arguments.
    unsafe {
        RecordHeader {
            kind,
            cpu: bpf_get_smp_processor_id(),
            ktime_ns: bpf_ktime_get_ns(),
        }
    }
}

/// The current task from helpers alone, so it works without BTF.
#[inline(always)]
fn current_task() -> TaskIdentity {
    let pid_tgid = bpf_get_current_pid_tgid();
    TaskIdentity {
        pid: pid_tgid as u32,
        tgid: (pid_tgid >> 32) as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

#[inline(always)]
fn kernel_offsets() -> KernelOffsets {
    // SAFETY: a read-only global; volatile so the compiler cannot fold in the ABSENT default.
    unsafe { core::ptr::read_volatile(&KERNEL_OFFSETS) }
}

#[inline(always)]
fn count_drop() {
    if let Some(dropped) = DROPPED.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot: no other writer while this program runs on this CPU.
        unsafe { *dropped += 1 }
    }
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
unsafe fn read_at<T>(base: u64, offset: u32) -> Result<T, i64> {
    if offset == OFFSET_ABSENT {
        return Err(ERR_OFFSET_ABSENT);
    }
    if base == 0 {
        return Err(ERR_NULL_POINTER);
    }
    // SAFETY: bpf_probe_read_kernel checks the address and fails instead of faulting.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.map_err(i64::from)
}

#[inline(always)]
unsafe fn task_identity(task: u64, offsets: &KernelOffsets) -> Result<TaskIdentity, i64> {
    // SAFETY: see `read_at`.
    unsafe {
        Ok(TaskIdentity {
            pid: read_at(task, offsets.task_pid)?,
            tgid: read_at(task, offsets.task_tgid)?,
            comm: read_at(task, offsets.task_comm)?,
        })
    }
}

/// `task`'s pid in its innermost pid namespace: `task->thread_pid->numbers[level].nr`.
#[inline(always)]
unsafe fn namespace_pid(task: u64, offsets: &KernelOffsets) -> Result<u32, i64> {
    // Pid namespaces nest at most 32 deep (MAX_PID_NS_LEVEL).
    const MAX_LEVEL: u32 = 32;
    if offsets.pid_numbers == OFFSET_ABSENT
        || offsets.upid_nr == OFFSET_ABSENT
        || offsets.upid_size == OFFSET_ABSENT
    {
        return Err(ERR_OFFSET_ABSENT);
    }
    // SAFETY: see `read_at`.
    unsafe {
        let pid: u64 = read_at(task, offsets.task_thread_pid)?;
        let level: u32 = read_at(pid, offsets.pid_level)?;
        if level > MAX_LEVEL {
            return Err(ERR_OFFSET_ABSENT);
        }
        let upid = offsets
            .pid_numbers
            .wrapping_add(level.wrapping_mul(offsets.upid_size))
            .wrapping_add(offsets.upid_nr);
        let nr: i32 = read_at(pid, upid)?;
        Ok(nr as u32)
    }
}

/// Where a record keeps what is read of a victim's (or a SIGKILL target's) task beyond who it
/// is.
struct TaskState {
    ns_pid: *mut u32,
    memory: *mut TaskMemory,
    cgroup: *mut CgroupCapture,
    memcg: *mut CgroupCapture,
}

/// The same reads wherever the kernel hands over the victim's task: its namespace pid, its
/// memory and its cgroups. For an unreadable `task` every part is left flagged unread.
#[inline(always)]
unsafe fn capture_task_state(task: u64, out: TaskState, offsets: &KernelOffsets) {
    // SAFETY: the callers pass pointers into a reserved ring-buffer entry.
    unsafe {
        out.ns_pid.write(namespace_pid(task, offsets).unwrap_or(0));
        capture_task_memory(task, out.memory, offsets);
        capture_task_cgroups(task, out.cgroup, out.memcg, offsets);
    }
}

/// `task`'s memory counters, uid and `oom_score_adj`, each part flagged once read.
#[inline(always)]
unsafe fn capture_task_memory(task: u64, out: *mut TaskMemory, offsets: &KernelOffsets) {
    // SAFETY: see `read_at`; `out` points into a reserved ring-buffer entry.
    unsafe {
        let mut memory = TaskMemory {
            total_vm_pages: 0,
            anon_pages: 0,
            file_pages: 0,
            shmem_pages: 0,
            swap_entries: 0,
            pgtables_bytes: 0,
            uid: 0,
            oom_score_adj: 0,
            _pad: 0,
            flags: 0,
            _pad2: 0,
        };
        if let Ok(mm) = read_at::<u64>(task, offsets.task_mm)
            && let Ok(total_vm) = read_at::<u64>(mm, offsets.mm_total_vm)
            && let Ok(anon) = read_at::<i64>(mm, offsets.mm_anon_pages)
            && let Ok(file) = read_at::<i64>(mm, offsets.mm_file_pages)
            && let Ok(shmem) = read_at::<i64>(mm, offsets.mm_shmem_pages)
            && let Ok(swap) = read_at::<i64>(mm, offsets.mm_swap_entries)
            && let Ok(pgtables) = read_at::<i64>(mm, offsets.mm_pgtables_bytes)
        {
            memory.total_vm_pages = total_vm;
            memory.anon_pages = anon;
            memory.file_pages = file;
            memory.shmem_pages = shmem;
            memory.swap_entries = swap;
            memory.pgtables_bytes = pgtables;
            memory.flags |= memory_flags::MM;
        }
        if let Ok(uid) = read_at::<u64>(task, offsets.task_real_cred)
            .and_then(|cred| read_at::<u32>(cred, offsets.cred_uid))
        {
            memory.uid = uid;
            memory.flags |= memory_flags::UID;
        }
        if let Ok(adj) = read_at::<u64>(task, offsets.task_signal)
            .and_then(|signal| read_at::<i16>(signal, offsets.signal_oom_score_adj))
        {
            memory.oom_score_adj = adj;
            memory.flags |= memory_flags::OOM_SCORE_ADJ;
        }
        out.write(memory);
    }
}

/// Captures `task`'s cgroup2 cgroup and its memory-controller cgroup.
#[inline(always)]
unsafe fn capture_task_cgroups(
    task: u64,
    cgroup: *mut CgroupCapture,
    memcg: *mut CgroupCapture,
    offsets: &KernelOffsets,
) {
    // SAFETY: the callers pass pointers into a reserved ring-buffer entry.
    unsafe {
        for capture in [cgroup, memcg] {
            (*capture).id = 0;
            (*capture).flags = 0;
            (*capture).depth = 0;
        }
        let Ok(css_set) = read_at::<u64>(task, offsets.task_cgroups) else {
            (*cgroup).flags = cgroup_flags::READ_FAILED;
            (*memcg).flags = cgroup_flags::READ_FAILED;
            return;
        };
        if read_at::<u64>(css_set, offsets.css_set_dfl_cgrp)
            .and_then(|dfl_cgrp| capture_cgroup(dfl_cgrp, cgroup, offsets))
            .is_err()
        {
            (*cgroup).flags |= cgroup_flags::READ_FAILED;
        }
        if read_at::<u64>(css_set, offsets.css_set_memory_css)
            .and_then(|css| read_at::<u64>(css, offsets.css_cgroup))
            .and_then(|memcg_cgroup| capture_cgroup(memcg_cgroup, memcg, offsets))
            .is_err()
        {
            (*memcg).flags |= cgroup_flags::READ_FAILED;
        }
    }
}

/// Fills `out` with the cgroup's id and its kernfs path, leaf first, up to the hierarchy root.
#[inline(always)]
unsafe fn capture_cgroup(
    cgroup: u64,
    out: *mut CgroupCapture,
    offsets: &KernelOffsets,
) -> Result<(), i64> {
    // SAFETY: see `read_at`; `out` points into a reserved ring-buffer entry.
    unsafe {
        let mut node: u64 = read_at(cgroup, offsets.cgroup_kn)?;
        (*out).id = read_at(node, offsets.kernfs_node_id)?;
        (*out).flags = cgroup_flags::PRESENT;
        for depth in 0..CGROUP_PATH_DEPTH {
            let parent: u64 = read_at(node, offsets.kernfs_node_parent)?;
            if parent == 0 {
                // `node` is the hierarchy root, whose name is not part of the path.
                return Ok(());
            }
            let name: u64 = read_at(node, offsets.kernfs_node_name)?;
            let dst = addr_of_mut!((*out).names[depth]).cast::<c_void>();
            let len = bpf_probe_read_kernel_str(dst, CGROUP_NAME_LEN as u32, name as *const c_void);
            if len < 0 {
                return Err(len);
            }
            (*out).depth = depth as u32 + 1;
            node = parent;
        }
        if read_at::<u64>(node, offsets.kernfs_node_parent)? != 0 {
            (*out).flags |= cgroup_flags::TRUNCATED;
        }
        Ok(())
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The helpers used here (probe_read_kernel, ringbuf) are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
