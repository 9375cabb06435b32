//! Decode: ring-buffer bytes into typed parts of a kill.
//!
//! Nothing here touches the kernel, so every function is tested on hand-made bytes.

pub mod captured_cgroup;
pub mod mark_victim;
pub mod signal;

use std::fmt;

use tracer_common::{
    MarkVictimRecord, OomContextEndRecord, OomContextRecord, RecordHeader, SigkillRecord,
    SigkillTargetRecord, TaskIdentity, TaskMemory, VictimTaskRecord, cgroup_flags, memory_flags,
    oom_flags, record_kind,
};

pub use self::captured_cgroup::CgroupRef;
use self::mark_victim::{MarkVictimFields, MarkVictimLayout};
use self::signal::{SignalFields, SignalLayout};

/// A task: kernel pid (thread id), tgid (process id) and comm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
}

impl From<&TaskIdentity> for Task {
    fn from(task: &TaskIdentity) -> Self {
        let TaskIdentity { pid, tgid, comm } = task;
        Task {
            pid: *pid,
            tgid: *tgid,
            comm: c_string(comm),
        }
    }
}

/// A task's memory as the programs read it from its `task_struct`; what a read missed is `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskMemoryPart {
    pub mm: Option<MmCounters>,
    pub uid: Option<u32>,
    pub oom_score_adj: Option<i16>,
}

/// The counters of an `mm_struct`: pages, except `pgtables_bytes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmCounters {
    pub total_vm_pages: u64,
    pub anon_pages: u64,
    pub file_pages: u64,
    pub shmem_pages: u64,
    pub swap_entries: u64,
    pub pgtables_bytes: u64,
}

impl From<&TaskMemory> for TaskMemoryPart {
    fn from(memory: &TaskMemory) -> Self {
        let TaskMemory {
            total_vm_pages,
            anon_pages,
            file_pages,
            shmem_pages,
            swap_entries,
            pgtables_bytes,
            uid,
            oom_score_adj,
            _pad,
            flags,
            _pad2,
        } = *memory;
        // A per-CPU counter's approximate value can lag below zero; the kernel clamps it too.
        let pages = |count: i64| u64::try_from(count).unwrap_or(0);
        TaskMemoryPart {
            mm: (flags & memory_flags::MM != 0).then_some(MmCounters {
                total_vm_pages,
                anon_pages: pages(anon_pages),
                file_pages: pages(file_pages),
                shmem_pages: pages(shmem_pages),
                swap_entries: pages(swap_entries),
                pgtables_bytes: pages(pgtables_bytes),
            }),
            uid: (flags & memory_flags::UID != 0).then_some(uid),
            oom_score_adj: (flags & memory_flags::OOM_SCORE_ADJ != 0).then_some(oom_score_adj),
        }
    }
}

impl TaskMemoryPart {
    /// In the units of the `mark_victim` tracepoint's fields (kB), so that either source
    /// fills the same victim fields.
    pub fn to_fields(self, pid: u32, comm: Option<String>, page_kb: u64) -> MarkVictimFields {
        let kb = |pages: u64| pages.saturating_mul(page_kb);
        MarkVictimFields {
            pid,
            comm,
            total_vm_kb: self.mm.map(|mm| kb(mm.total_vm_pages)),
            anon_rss_kb: self.mm.map(|mm| kb(mm.anon_pages)),
            file_rss_kb: self.mm.map(|mm| kb(mm.file_pages)),
            shmem_rss_kb: self.mm.map(|mm| kb(mm.shmem_pages)),
            uid: self.uid,
            pgtables_kb: self.mm.map(|mm| mm.pgtables_bytes / 1024),
            oom_score_adj: self.oom_score_adj,
        }
    }
}

/// A task read in full from its `task_struct`: `oom_kill_process`'s `oc->chosen`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskDetails {
    pub task: Task,
    /// Its pid in its innermost pid namespace (1: a container's main process).
    pub ns_pid: Option<u32>,
    pub memory: TaskMemoryPart,
    pub cgroup: Option<CgroupRef>,
    pub memcg: Option<CgroupRef>,
}

/// What the classic `oom:mark_victim` tracepoint saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracepointPart {
    pub cpu: u32,
    pub ktime_ns: u64,
    /// `None` when the kernel could not copy the record or it did not decode.
    pub victim: Option<MarkVictimFields>,
    pub trigger: Task,
    pub trigger_cgroup_id: u64,
}

/// What the BTF (or raw) tracepoint read from the victim's and the current task's structs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskPart {
    pub cpu: u32,
    pub ktime_ns: u64,
    pub victim: Task,
    pub trigger: Task,
    /// The victim's pid in its innermost pid namespace (1: a container's main process).
    pub victim_ns_pid: Option<u32>,
    pub victim_memory: TaskMemoryPart,
    pub victim_cgroup: Option<CgroupRef>,
    pub victim_memcg: Option<CgroupRef>,
    pub trigger_cgroup: Option<CgroupRef>,
    pub trigger_memcg: Option<CgroupRef>,
}

/// Whose memory ran out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Domain {
    /// No cgroup limit was hit: the whole host is out of memory.
    Host,
    /// The memory cgroup whose limit was hit.
    Cgroup(CgroupRef),
    /// A limit was hit, but reading its cgroup failed.
    Unknown,
}

/// What `oom_kill_process` knew on entry: the OOM killer's own view of the invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextPart {
    pub cpu: u32,
    pub ktime_ns: u64,
    pub trigger: Task,
    /// `oc->chosen`, the victim the OOM killer picked; `None` when reading it failed.
    pub chosen: Option<TaskDetails>,
    /// `None` when reading `oom_control` failed.
    pub control: Option<OomControl>,
    pub domain: Domain,
    pub message: String,
}

/// The scalars of `struct oom_control`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OomControl {
    /// The kernel's badness score of the chosen victim.
    pub chosen_points: i64,
    pub totalpages: u64,
    pub gfp_mask: u32,
    pub order: i32,
    /// `enum oom_constraint`, numbered as this kernel's BTF says.
    pub constraint: u32,
}

/// `oom_kill_process` returned on this thread: its invocation has marked every victim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextEndPart {
    pub cpu: u32,
    pub ktime_ns: u64,
    pub trigger: Task,
}

/// A SIGKILL as `signal:signal_generate` saw it: the target from the tracepoint record, the
/// sender (the current task) from helpers and, where BTF offsets are known, its cgroups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigkillPart {
    pub cpu: u32,
    pub ktime_ns: u64,
    pub target: SignalFields,
    pub sender: Task,
    pub sender_cgroup_id: u64,
    pub sender_cgroup: Option<CgroupRef>,
    pub sender_memcg: Option<CgroupRef>,
}

/// A SIGKILL's target as the BTF (or raw) `signal_generate` program read its `task_struct`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigkillTargetPart {
    pub cpu: u32,
    pub ktime_ns: u64,
    pub target: Task,
    pub target_ns_pid: Option<u32>,
    pub target_memory: TaskMemoryPart,
    pub target_cgroup: Option<CgroupRef>,
    pub target_memcg: Option<CgroupRef>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Tracepoint(TracepointPart),
    Task(Box<TaskPart>),
    Context(Box<ContextPart>),
    ContextEnd(ContextEndPart),
    Sigkill(Box<SigkillPart>),
    SigkillTarget(Box<SigkillTargetPart>),
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than a record header.
    Truncated {
        len: usize,
    },
    UnknownKind {
        kind: u32,
    },
    WrongSize {
        kind: u32,
        len: usize,
        expected: usize,
    },
    /// A SIGKILL record whose tracepoint bytes are missing or do not decode.
    BadSignalRecord {
        reason: String,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { len } => write!(f, "record of {len} bytes has no header"),
            DecodeError::UnknownKind { kind } => write!(f, "unknown record kind {kind}"),
            DecodeError::WrongSize {
                kind,
                len,
                expected,
            } => write!(
                f,
                "record kind {kind} is {len} bytes, expected {expected}: agent and eBPF object \
                 disagree"
            ),
            DecodeError::BadSignalRecord { reason } => write!(f, "SIGKILL record: {reason}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one ring-buffer record that is not a SIGKILL.
#[cfg(test)]
pub fn decode(bytes: &[u8], layout: &MarkVictimLayout) -> Result<Part, DecodeError> {
    decode_with(bytes, layout, None)
}

/// Decodes one ring-buffer record; `signal` is `None` when SIGKILLs are not traced.
pub fn decode_with(
    bytes: &[u8],
    layout: &MarkVictimLayout,
    signal: Option<&SignalLayout>,
) -> Result<Part, DecodeError> {
    let header: RecordHeader = read_record(bytes, None)?;
    match header.kind {
        record_kind::MARK_VICTIM => {
            let record: MarkVictimRecord = read_record(bytes, Some(header.kind))?;
            Ok(Part::Tracepoint(tracepoint_part(&record, layout)))
        }
        record_kind::VICTIM_TASK => {
            let record: VictimTaskRecord = read_record(bytes, Some(header.kind))?;
            Ok(Part::Task(Box::new(task_part(&record))))
        }
        record_kind::OOM_CONTEXT => {
            let record: OomContextRecord = read_record(bytes, Some(header.kind))?;
            Ok(Part::Context(Box::new(context_part(&record))))
        }
        record_kind::OOM_CONTEXT_END => {
            let record: OomContextEndRecord = read_record(bytes, Some(header.kind))?;
            let OomContextEndRecord { header, trigger } = record;
            Ok(Part::ContextEnd(ContextEndPart {
                cpu: header.cpu,
                ktime_ns: header.ktime_ns,
                trigger: Task::from(&trigger),
            }))
        }
        record_kind::SIGKILL => {
            let record: SigkillRecord = read_record(bytes, Some(header.kind))?;
            let signal = signal.ok_or_else(|| DecodeError::BadSignalRecord {
                reason: "no signal_generate layout to decode it with".to_owned(),
            })?;
            Ok(Part::Sigkill(Box::new(sigkill_part(&record, signal)?)))
        }
        record_kind::SIGKILL_TARGET => {
            let record: SigkillTargetRecord = read_record(bytes, Some(header.kind))?;
            let SigkillTargetRecord {
                header,
                target,
                target_ns_pid,
                _pad,
                target_memory,
                target_cgroup,
                target_memcg,
            } = record;
            Ok(Part::SigkillTarget(Box::new(SigkillTargetPart {
                cpu: header.cpu,
                ktime_ns: header.ktime_ns,
                target: Task::from(&target),
                target_ns_pid: Some(target_ns_pid).filter(|&pid| pid != 0),
                target_memory: TaskMemoryPart::from(&target_memory),
                target_cgroup: CgroupRef::from_capture(&target_cgroup),
                target_memcg: CgroupRef::from_capture(&target_memcg),
            })))
        }
        kind => Err(DecodeError::UnknownKind { kind }),
    }
}

fn sigkill_part(record: &SigkillRecord, layout: &SignalLayout) -> Result<SigkillPart, DecodeError> {
    let SigkillRecord {
        header,
        sender,
        sender_cgroup_id,
        raw_ok,
        _pad,
        sender_cgroup,
        sender_memcg,
        raw,
    } = record;
    if *raw_ok == 0 {
        return Err(DecodeError::BadSignalRecord {
            reason: "the kernel could not copy the signal_generate record".to_owned(),
        });
    }
    let target = layout
        .decode(raw)
        .map_err(|reason| DecodeError::BadSignalRecord { reason })?;
    Ok(SigkillPart {
        cpu: header.cpu,
        ktime_ns: header.ktime_ns,
        target,
        sender: Task::from(sender),
        sender_cgroup_id: *sender_cgroup_id,
        sender_cgroup: CgroupRef::from_capture(sender_cgroup),
        sender_memcg: CgroupRef::from_capture(sender_memcg),
    })
}

fn context_part(record: &OomContextRecord) -> ContextPart {
    let OomContextRecord {
        header,
        trigger,
        victim,
        victim_ns_pid,
        _pad,
        victim_memory,
        victim_cgroup,
        victim_memcg,
        chosen_points,
        totalpages,
        gfp_mask,
        order,
        constraint,
        flags,
        domain,
        message,
    } = record;
    let domain = if flags & oom_flags::HOST_WIDE != 0 {
        Domain::Host
    } else if domain.flags & cgroup_flags::READ_FAILED != 0
        && domain.flags & cgroup_flags::PRESENT == 0
    {
        Domain::Unknown
    } else {
        CgroupRef::from_capture(domain).map_or(Domain::Unknown, Domain::Cgroup)
    };
    ContextPart {
        cpu: header.cpu,
        ktime_ns: header.ktime_ns,
        trigger: Task::from(trigger),
        chosen: (flags & oom_flags::VICTIM_READ_FAILED == 0).then(|| TaskDetails {
            task: Task::from(victim),
            ns_pid: Some(*victim_ns_pid).filter(|&pid| pid != 0),
            memory: TaskMemoryPart::from(victim_memory),
            cgroup: CgroupRef::from_capture(victim_cgroup),
            memcg: CgroupRef::from_capture(victim_memcg),
        }),
        control: (flags & oom_flags::CONTROL_READ_FAILED == 0).then_some(OomControl {
            chosen_points: *chosen_points,
            totalpages: *totalpages,
            gfp_mask: *gfp_mask,
            order: *order,
            constraint: *constraint,
        }),
        domain,
        message: c_string(message),
    }
}

fn tracepoint_part(record: &MarkVictimRecord, layout: &MarkVictimLayout) -> TracepointPart {
    let MarkVictimRecord {
        header,
        trigger,
        trigger_cgroup_id,
        raw_ok,
        _pad,
        raw,
    } = record;
    let victim = if *raw_ok != 0 {
        layout
            .decode(raw)
            .inspect_err(|err| log::warn!("oom:mark_victim record: {err}"))
            .ok()
    } else {
        log::warn!("the kernel could not copy an oom:mark_victim record");
        None
    };
    TracepointPart {
        cpu: header.cpu,
        ktime_ns: header.ktime_ns,
        victim,
        trigger: Task::from(trigger),
        trigger_cgroup_id: *trigger_cgroup_id,
    }
}

fn task_part(record: &VictimTaskRecord) -> TaskPart {
    let VictimTaskRecord {
        header,
        victim,
        trigger,
        victim_ns_pid,
        _pad: _,
        victim_memory,
        victim_cgroup,
        victim_memcg,
        trigger_cgroup,
        trigger_memcg,
    } = record;
    TaskPart {
        cpu: header.cpu,
        ktime_ns: header.ktime_ns,
        victim: Task::from(victim),
        trigger: Task::from(trigger),
        victim_ns_pid: Some(*victim_ns_pid).filter(|&pid| pid != 0),
        victim_memory: TaskMemoryPart::from(victim_memory),
        victim_cgroup: CgroupRef::from_capture(victim_cgroup),
        victim_memcg: CgroupRef::from_capture(victim_memcg),
        trigger_cgroup: CgroupRef::from_capture(trigger_cgroup),
        trigger_memcg: CgroupRef::from_capture(trigger_memcg),
    }
}

/// Copies a `#[repr(C)]` record out of `bytes`. With `kind`, the length must match exactly: a
/// mismatch means the agent and the eBPF object were built from different sources.
fn read_record<T: aya::Pod>(bytes: &[u8], kind: Option<u32>) -> Result<T, DecodeError> {
    let expected = size_of::<T>();
    match kind {
        None if bytes.len() < expected => {
            return Err(DecodeError::Truncated { len: bytes.len() });
        }
        Some(kind) if bytes.len() != expected => {
            return Err(DecodeError::WrongSize {
                kind,
                len: bytes.len(),
                expected,
            });
        }
        _ => {}
    }
    // SAFETY: `bytes` holds at least size_of::<T>() bytes, and `T: Pod` promises that every
    // bit pattern of them is a valid `T`.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

/// A NUL-terminated (or NUL-padded) kernel string, decoded lossily.
pub(crate) fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use tracer_common::{CgroupCapture, TRACEPOINT_RAW_LEN, cgroup_flags};

    use super::*;
    use crate::capture::tracefs::TracepointFormat;

    pub(crate) fn layout_6_18() -> MarkVictimLayout {
        let format = TracepointFormat::parse(crate::capture::tracefs::fixtures::LIVE_6_18).unwrap();
        MarkVictimLayout::from_format(&format).unwrap()
    }

    pub(crate) fn as_bytes<T>(record: &T) -> Vec<u8> {
        // SAFETY: test records are plain integers and arrays.
        unsafe {
            std::slice::from_raw_parts((record as *const T).cast::<u8>(), size_of::<T>()).to_vec()
        }
    }

    pub(crate) fn task_identity(pid: u32, tgid: u32, comm: &str) -> TaskIdentity {
        let mut bytes = [0; 16];
        bytes[..comm.len()].copy_from_slice(comm.as_bytes());
        TaskIdentity {
            pid,
            tgid,
            comm: bytes,
        }
    }

    /// A tracepoint record as the 6.18 kernel lays it out.
    pub(crate) fn mark_victim_record(cpu: u32, pid: u32, anon_rss_kb: u64) -> MarkVictimRecord {
        let mut raw = [0u8; TRACEPOINT_RAW_LEN];
        raw[8..12].copy_from_slice(&(pid as i32).to_le_bytes());
        // __data_loc comm: offset 72, length 4 ("hog\0").
        raw[12..16].copy_from_slice(&(72u32 | (4 << 16)).to_le_bytes());
        raw[24..32].copy_from_slice(&anon_rss_kb.to_le_bytes());
        raw[72..76].copy_from_slice(b"hog\0");
        MarkVictimRecord {
            header: RecordHeader {
                kind: record_kind::MARK_VICTIM,
                cpu,
                ktime_ns: 1_000,
            },
            trigger: task_identity(pid, pid, "hog"),
            trigger_cgroup_id: 1,
            raw_ok: 1,
            _pad: 0,
            raw,
        }
    }

    pub(crate) fn cgroup_capture(id: u64, leaf_first: &[&str]) -> CgroupCapture {
        let mut capture = CgroupCapture {
            id,
            flags: cgroup_flags::PRESENT,
            depth: leaf_first.len() as u32,
            names: [[0; tracer_common::CGROUP_NAME_LEN]; tracer_common::CGROUP_PATH_DEPTH],
        };
        for (slot, name) in capture.names.iter_mut().zip(leaf_first) {
            slot[..name.len()].copy_from_slice(name.as_bytes());
        }
        capture
    }

    pub(crate) fn context_record(
        cpu: u32,
        trigger: u32,
        victim: u32,
        memcg: Option<u64>,
    ) -> OomContextRecord {
        let mut message = [0; tracer_common::OOM_MESSAGE_LEN];
        message[..27].copy_from_slice(b"Memory cgroup out of memory");
        let (flags, domain) = match memcg {
            Some(id) => (0, cgroup_capture(id, &["oomtrace-test-1"])),
            None => {
                let mut absent = cgroup_capture(0, &[]);
                absent.flags = 0;
                (oom_flags::HOST_WIDE, absent)
            }
        };
        OomContextRecord {
            header: RecordHeader {
                kind: record_kind::OOM_CONTEXT,
                cpu,
                ktime_ns: 999,
            },
            trigger: task_identity(trigger, trigger, "builder"),
            victim: task_identity(victim, victim, "hog"),
            victim_ns_pid: 0,
            _pad: 0,
            victim_memory: task_memory(16_000),
            victim_cgroup: cgroup_capture(4242, &["oomtrace-test-1"]),
            victim_memcg: cgroup_capture(4242, &["oomtrace-test-1"]),
            chosen_points: 16_500,
            totalpages: 16_384,
            gfp_mask: 0xcc0,
            order: 0,
            constraint: 3,
            flags,
            domain,
            message,
        }
    }

    /// A task's memory as the programs read it: `anon_pages` of anonymous memory, a page of
    /// file, 239 of shmem, everything read.
    pub(crate) fn task_memory(anon_pages: i64) -> TaskMemory {
        TaskMemory {
            total_vm_pages: 17_000,
            anon_pages,
            file_pages: 1,
            shmem_pages: 239,
            swap_entries: 0,
            pgtables_bytes: 172_032,
            uid: 1000,
            oom_score_adj: 0,
            _pad: 0,
            flags: memory_flags::MM | memory_flags::UID | memory_flags::OOM_SCORE_ADJ,
            _pad2: 0,
        }
    }

    pub(crate) fn context_end_record(cpu: u32, trigger: u32) -> OomContextEndRecord {
        OomContextEndRecord {
            header: RecordHeader {
                kind: record_kind::OOM_CONTEXT_END,
                cpu,
                ktime_ns: 1_100,
            },
            trigger: task_identity(trigger, trigger, "builder"),
        }
    }

    /// A SIGKILL to `target` (`postgres`) sent by `sender` (`bash`) with `si_code` `code`.
    pub(crate) fn sigkill_record(target: u32, sender: u32, code: i32) -> SigkillRecord {
        let mut no_cgroup = cgroup_capture(0, &[]);
        no_cgroup.flags = cgroup_flags::READ_FAILED;
        SigkillRecord {
            header: RecordHeader {
                kind: record_kind::SIGKILL,
                cpu: 0,
                ktime_ns: 990,
            },
            sender: task_identity(sender, sender, "bash"),
            sender_cgroup_id: 77,
            raw_ok: 1,
            _pad: 0,
            sender_cgroup: cgroup_capture(77, &["session-1.scope", "user.slice"]),
            sender_memcg: no_cgroup,
            raw: signal::tests::raw_6_18(tracer_common::SIGKILL, code, target, "postgres"),
        }
    }

    pub(crate) fn sigkill(target: u32, sender: u32, code: i32) -> Part {
        let layout = signal::tests::layout_6_18();
        decode_with(
            &as_bytes(&sigkill_record(target, sender, code)),
            &layout_6_18(),
            Some(&layout),
        )
        .unwrap()
    }

    /// What the BTF program reads of `target` (`postgres` in container `web`).
    pub(crate) fn sigkill_target(target: u32) -> Part {
        let record = SigkillTargetRecord {
            header: RecordHeader {
                kind: record_kind::SIGKILL_TARGET,
                cpu: 0,
                ktime_ns: 991,
            },
            target: task_identity(target, target, "postgres"),
            target_ns_pid: 1,
            _pad: 0,
            target_memory: task_memory(30_000),
            target_cgroup: cgroup_capture(5, &["libpod-abc", "libpod_parent"]),
            target_memcg: cgroup_capture(6, &["libpod-abc", "libpod_parent"]),
        };
        decode(&as_bytes(&record), &layout_6_18()).unwrap()
    }

    pub(crate) fn victim_task_record(cpu: u32, pid: u32) -> VictimTaskRecord {
        let memcg = cgroup_capture(4242, &["oomtrace-test-1"]);
        VictimTaskRecord {
            header: RecordHeader {
                kind: record_kind::VICTIM_TASK,
                cpu,
                ktime_ns: 1_001,
            },
            victim: task_identity(pid, pid, "hog"),
            trigger: task_identity(pid, pid, "hog"),
            victim_ns_pid: 0,
            _pad: 0,
            victim_memory: task_memory(16_000),
            victim_cgroup: cgroup_capture(1, &[]),
            victim_memcg: memcg,
            trigger_cgroup: cgroup_capture(1, &[]),
            trigger_memcg: memcg,
        }
    }

    #[test]
    fn the_victims_namespace_pid_is_known_only_when_read() {
        let mut record = victim_task_record(0, 4242);
        let ns_pid = |record: &VictimTaskRecord| match decode(&as_bytes(record), &layout_6_18()) {
            Ok(Part::Task(part)) => part.victim_ns_pid,
            other => panic!("expected a task part, got {other:?}"),
        };
        assert_eq!(ns_pid(&record), None, "0: not read");
        record.victim_ns_pid = 1;
        assert_eq!(ns_pid(&record), Some(1));
        record.victim_ns_pid = 4242;
        assert_eq!(ns_pid(&record), Some(4242));
    }

    #[test]
    fn decodes_a_tracepoint_record() {
        let bytes = as_bytes(&mark_victim_record(1, 4242, 65536));
        let Part::Tracepoint(part) = decode(&bytes, &layout_6_18()).unwrap() else {
            panic!("wrong part");
        };
        let victim = part.victim.unwrap();
        assert_eq!(victim.pid, 4242);
        assert_eq!(victim.comm.as_deref(), Some("hog"));
        assert_eq!(victim.anon_rss_kb, Some(65536));
        assert_eq!(part.trigger.comm, "hog");
        assert_eq!((part.cpu, part.ktime_ns), (1, 1_000));
    }

    #[test]
    fn a_failed_kernel_copy_keeps_the_trigger() {
        let mut record = mark_victim_record(0, 7, 1);
        record.raw_ok = 0;
        let Part::Tracepoint(part) = decode(&as_bytes(&record), &layout_6_18()).unwrap() else {
            panic!("wrong part");
        };
        assert_eq!(part.victim, None);
        assert_eq!(part.trigger.pid, 7);
    }

    #[test]
    fn decodes_a_task_record() {
        let bytes = as_bytes(&victim_task_record(0, 99));
        let Part::Task(part) = decode(&bytes, &layout_6_18()).unwrap() else {
            panic!("wrong part");
        };
        assert_eq!(part.victim.pid, 99);
        let memcg = part.victim_memcg.unwrap();
        assert_eq!((memcg.id, memcg.path.as_str()), (4242, "/oomtrace-test-1"));
        assert_eq!(part.victim_cgroup.unwrap().path, "/");
    }

    #[test]
    fn decodes_oom_control_and_its_domain() {
        let layout = layout_6_18();
        let Part::Context(part) =
            decode(&as_bytes(&context_record(1, 50, 60, Some(4242))), &layout).unwrap()
        else {
            panic!("wrong part");
        };
        let chosen = part.chosen.as_ref().unwrap();
        assert_eq!((chosen.task.pid, chosen.task.tgid), (60, 60));
        assert_eq!(chosen.memory.mm.unwrap().anon_pages, 16_000);
        assert_eq!(chosen.memcg.as_ref().unwrap().path, "/oomtrace-test-1");
        assert_eq!(part.trigger.comm, "builder");
        assert_eq!(part.control.unwrap().chosen_points, 16_500);
        assert_eq!(part.message, "Memory cgroup out of memory");
        let Domain::Cgroup(domain) = &part.domain else {
            panic!("a memcg OOM has a cgroup domain: {:?}", part.domain);
        };
        assert_eq!(
            (domain.id, domain.path.as_str()),
            (4242, "/oomtrace-test-1")
        );

        let Part::Context(host) =
            decode(&as_bytes(&context_record(1, 50, 60, None)), &layout).unwrap()
        else {
            panic!("wrong part");
        };
        assert_eq!(host.domain, Domain::Host);

        let mut failed = context_record(1, 50, 60, Some(1));
        failed.flags = oom_flags::VICTIM_READ_FAILED | oom_flags::CONTROL_READ_FAILED;
        failed.domain.flags = cgroup_flags::READ_FAILED;
        let Part::Context(failed) = decode(&as_bytes(&failed), &layout).unwrap() else {
            panic!("wrong part");
        };
        assert_eq!((failed.chosen, failed.control), (None, None));
        assert_eq!(failed.domain, Domain::Unknown);
    }

    #[test]
    fn decodes_the_end_of_an_invocation() {
        let part = decode(&as_bytes(&context_end_record(0, 50)), &layout_6_18()).unwrap();
        assert!(matches!(
            part,
            Part::ContextEnd(ContextEndPart {
                trigger: Task { pid: 50, .. },
                ..
            })
        ));
    }

    #[test]
    fn decodes_a_sigkill_record() {
        let Part::Sigkill(part) = sigkill(4242, 456, signal::SI_USER) else {
            panic!("wrong part");
        };
        assert_eq!(part.target.pid, 4242);
        assert_eq!(part.target.comm.as_deref(), Some("postgres"));
        assert_eq!(part.target.code, Some(0));
        assert_eq!((part.sender.pid, part.sender.comm.as_str()), (456, "bash"));
        assert_eq!(
            part.sender_cgroup.unwrap().path,
            "/user.slice/session-1.scope"
        );
        assert_eq!(part.sender_memcg, None);
    }

    #[test]
    fn decodes_a_sigkill_target_record() {
        let Part::SigkillTarget(part) = sigkill_target(4242) else {
            panic!("wrong part");
        };
        assert_eq!((part.target.pid, part.cpu), (4242, 0));
        assert_eq!(part.target_memcg.unwrap().path, "/libpod_parent/libpod-abc");
    }

    #[test]
    fn bad_sigkill_records_are_errors_not_panics() {
        let layout = layout_6_18();
        let signal = signal::tests::layout_6_18();
        let full = as_bytes(&sigkill_record(1, 2, 0));
        for len in 0..full.len() {
            assert!(decode_with(&full[..len], &layout, Some(&signal)).is_err());
        }
        // Without a layout (the format file was unreadable) it cannot be decoded.
        assert!(matches!(
            decode_with(&full, &layout, None),
            Err(DecodeError::BadSignalRecord { .. })
        ));
        let mut failed = sigkill_record(1, 2, 0);
        failed.raw_ok = 0;
        assert!(matches!(
            decode_with(&as_bytes(&failed), &layout, Some(&signal)),
            Err(DecodeError::BadSignalRecord { .. })
        ));
    }

    #[test]
    fn rejects_malformed_records() {
        let layout = layout_6_18();
        assert_eq!(
            decode(&[1, 0, 0], &layout),
            Err(DecodeError::Truncated { len: 3 })
        );
        let mut unknown = as_bytes(&mark_victim_record(0, 1, 1));
        unknown[0] = 77;
        assert_eq!(
            decode(&unknown, &layout),
            Err(DecodeError::UnknownKind { kind: 77 })
        );
        let short = &as_bytes(&mark_victim_record(0, 1, 1))[..40];
        assert!(matches!(
            decode(short, &layout),
            Err(DecodeError::WrongSize {
                kind: 1,
                len: 40,
                ..
            })
        ));
        // Every prefix of a valid record is an error, never a panic.
        let full = as_bytes(&victim_task_record(0, 1));
        for len in 0..full.len() {
            assert!(decode(&full[..len], &layout).is_err());
        }
    }
}
