//! Decode: ring-buffer bytes into typed parts of a kill.
//!
//! Nothing here touches the kernel, so every function is tested on hand-made bytes.

pub mod cgroup_path;
pub mod mark_victim;

use std::fmt;

use tracer_common::{MarkVictimRecord, RecordHeader, TaskIdentity, VictimTaskRecord, record_kind};

pub use self::cgroup_path::CgroupRef;
use self::mark_victim::{MarkVictimFields, MarkVictimLayout};

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
    pub victim_cgroup: Option<CgroupRef>,
    pub victim_memcg: Option<CgroupRef>,
    pub trigger_cgroup: Option<CgroupRef>,
    pub trigger_memcg: Option<CgroupRef>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    Tracepoint(TracepointPart),
    Task(Box<TaskPart>),
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
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8], layout: &MarkVictimLayout) -> Result<Part, DecodeError> {
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
        kind => Err(DecodeError::UnknownKind { kind }),
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
        victim_cgroup: CgroupRef::from_capture(victim_cgroup),
        victim_memcg: CgroupRef::from_capture(victim_memcg),
        trigger_cgroup: CgroupRef::from_capture(trigger_cgroup),
        trigger_memcg: CgroupRef::from_capture(trigger_memcg),
    }
}

/// Copies a `#[repr(C)]` record out of `bytes`. With `kind`, the length must match exactly: a
/// mismatch means the agent and the eBPF object were built from different sources.
fn read_record<T: Copy>(bytes: &[u8], kind: Option<u32>) -> Result<T, DecodeError> {
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
    // SAFETY: `bytes` holds at least size_of::<T>() bytes, and the records are integers and
    // byte arrays only, for which every bit pattern is valid.
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
        let format = TracepointFormat::parse(include_str!(
            "../../tests/fixtures/tracefs/mark_victim-6.18.format"
        ))
        .unwrap();
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
            victim_cgroup: cgroup_capture(1, &[]),
            victim_memcg: memcg,
            trigger_cgroup: cgroup_capture(1, &[]),
            trigger_memcg: memcg,
        }
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
