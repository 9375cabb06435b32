//! Decoding the raw `signal:signal_generate` tracepoint record.
//!
//! The eBPF program filters on `sig` at the offset the agent hands it, then copies the first
//! [`SIGNAL_RAW_LEN`] bytes of the record verbatim; which fields exist, and where, is learnt from
//! the running kernel's tracefs `format` file, as for `mark_victim`.

use std::fmt;

use tracer_common::SIGNAL_RAW_LEN;

use crate::capture::tracefs::{FormatField, TracepointFormat};

/// `si_code` of a signal the kernel generated itself (`SEND_SIG_PRIV`).
#[cfg(test)]
pub const SI_KERNEL: i32 = 0x80;
/// `si_code` of `kill()` from userspace (also `SEND_SIG_NOINFO`).
#[cfg(test)]
pub const SI_USER: i32 = 0;

/// Where a field lies in the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    offset: usize,
    size: usize,
}

impl Slot {
    fn bytes(self, raw: &[u8]) -> Option<&[u8]> {
        raw.get(self.offset..self.offset.checked_add(self.size)?)
    }

    fn int(self, raw: &[u8]) -> Option<i32> {
        Some(i32::from_le_bytes(self.bytes(raw)?.try_into().ok()?))
    }
}

/// Which `signal_generate` fields the running kernel's record has, and where. `sig` and `pid`
/// are required; the rest are decoded when present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalLayout {
    sig: Slot,
    pid: Slot,
    comm: Option<Slot>,
    code: Option<Slot>,
    errno: Option<Slot>,
    group: Option<Slot>,
    result: Option<Slot>,
}

/// The target of a signal as the record describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalFields {
    pub sig: i32,
    /// The target task's kernel pid (its thread id).
    pub pid: u32,
    pub comm: Option<String>,
    /// `si_code`: [`SI_KERNEL`] when the kernel sent it, [`SI_USER`] for `kill()`.
    pub code: Option<i32>,
    pub errno: Option<i32>,
    /// Non-zero when sent to the whole thread group.
    pub group: Option<i32>,
    /// `TRACE_SIGNAL_DELIVERED` (0), `_IGNORED` (1), `_ALREADY_PENDING` (2), …
    pub result: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalLayoutError {
    Missing(&'static str),
    Unusable { field: &'static str, reason: String },
}

impl fmt::Display for SignalLayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing(field) => {
                write!(f, "the signal_generate format has no `{field}` field")
            }
            Self::Unusable { field, reason } => {
                write!(
                    f,
                    "the signal_generate `{field}` field is unusable: {reason}"
                )
            }
        }
    }
}

impl std::error::Error for SignalLayoutError {}

impl SignalLayout {
    pub fn from_format(format: &TracepointFormat) -> Result<Self, SignalLayoutError> {
        let required = |name: &'static str| {
            let field = format.field(name).ok_or(SignalLayoutError::Missing(name))?;
            int_slot(field).map_err(|reason| SignalLayoutError::Unusable {
                field: name,
                reason,
            })
        };
        let optional = |name: &str| format.field(name).and_then(|field| int_slot(field).ok());
        let comm = format.field("comm").and_then(|field| {
            let fits = !field.data_loc && field.c_type.starts_with("char[") && field.size == 16;
            (fits && within_capture(field).is_ok()).then_some(Slot {
                offset: field.offset,
                size: field.size,
            })
        });
        Ok(Self {
            sig: required("sig")?,
            pid: required("pid")?,
            comm,
            code: optional("code"),
            errno: optional("errno"),
            group: optional("group"),
            result: optional("result"),
        })
    }

    /// The offset of `sig`, which the eBPF program filters on.
    pub fn sig_offset(&self) -> u32 {
        // `from_format` checked it lies within the captured bytes.
        self.sig.offset as u32
    }

    /// Decodes a raw record. `sig` or `pid` beyond `raw` is an error; an optional field that
    /// `raw` does not wholly hold is `None`.
    pub fn decode(&self, raw: &[u8]) -> Result<SignalFields, String> {
        let truncated = |name: &str, slot: Slot| {
            format!(
                "signal_generate record is {} bytes, too short for `{name}` which ends at byte {}",
                raw.len(),
                slot.offset + slot.size
            )
        };
        let sig = self
            .sig
            .int(raw)
            .ok_or_else(|| truncated("sig", self.sig))?;
        let pid = self
            .pid
            .int(raw)
            .ok_or_else(|| truncated("pid", self.pid))?;
        let comm = self.comm.and_then(|slot| slot.bytes(raw)).map(|bytes| {
            let text = bytes.split(|&byte| byte == 0).next().unwrap_or_default();
            String::from_utf8_lossy(text).into_owned()
        });
        let int = |slot: Option<Slot>| slot.and_then(|slot| slot.int(raw));
        Ok(SignalFields {
            sig,
            pid: pid as u32,
            comm,
            code: int(self.code),
            errno: int(self.errno),
            group: int(self.group),
            result: int(self.result),
        })
    }
}

fn int_slot(field: &FormatField) -> Result<Slot, String> {
    if field.data_loc || field.size != 4 {
        return Err(format!(
            "`{}` of size {}, expected a 4-byte integer",
            field.c_type, field.size
        ));
    }
    within_capture(field)?;
    Ok(Slot {
        offset: field.offset,
        size: field.size,
    })
}

fn within_capture(field: &FormatField) -> Result<(), String> {
    match field.offset.checked_add(field.size) {
        Some(end) if end <= SIGNAL_RAW_LEN => Ok(()),
        _ => Err(format!(
            "offset {} size {} lies beyond the {SIGNAL_RAW_LEN} captured bytes",
            field.offset, field.size
        )),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The live `signal_generate` format of this project's 6.18 test machine.
    pub(crate) const LIVE_6_18: &str =
        include_str!("../../tests/fixtures/tracefs/signal_generate-6.18.format");

    pub(crate) fn layout_6_18() -> SignalLayout {
        SignalLayout::from_format(&TracepointFormat::parse(LIVE_6_18).unwrap()).unwrap()
    }

    /// A record as the 6.18 kernel lays it out.
    pub(crate) fn raw_6_18(sig: i32, code: i32, pid: u32, comm: &str) -> [u8; SIGNAL_RAW_LEN] {
        let mut raw = [0u8; SIGNAL_RAW_LEN];
        raw[8..12].copy_from_slice(&sig.to_le_bytes());
        raw[16..20].copy_from_slice(&code.to_le_bytes());
        raw[20..20 + comm.len()].copy_from_slice(comm.as_bytes());
        raw[36..40].copy_from_slice(&pid.to_le_bytes());
        raw[40..44].copy_from_slice(&1i32.to_le_bytes());
        raw
    }

    #[test]
    fn the_6_18_format_gives_every_field() {
        let layout = layout_6_18();
        assert_eq!(layout.sig_offset(), 8);
        let fields = layout
            .decode(&raw_6_18(9, SI_USER, 4242, "postgres"))
            .unwrap();
        assert_eq!(
            fields,
            SignalFields {
                sig: 9,
                pid: 4242,
                comm: Some("postgres".into()),
                code: Some(SI_USER),
                errno: Some(0),
                group: Some(1),
                result: Some(0),
            }
        );
    }

    #[test]
    fn truncated_records_are_errors_not_panics() {
        let layout = layout_6_18();
        let raw = raw_6_18(9, SI_KERNEL, 7, "hog");
        for len in 0..40 {
            assert!(layout.decode(&raw[..len]).is_err(), "{len} bytes");
        }
        // `pid` ends at 40: the rest is optional.
        let fields = layout.decode(&raw[..40]).unwrap();
        assert_eq!(
            (fields.pid, fields.code, fields.result),
            (7, Some(0x80), None)
        );
    }

    #[test]
    fn a_format_without_sig_or_pid_is_refused() {
        let without_sig = LIVE_6_18.replace("field:int sig;", "field:int signo;");
        assert_eq!(
            SignalLayout::from_format(&TracepointFormat::parse(&without_sig).unwrap()),
            Err(SignalLayoutError::Missing("sig"))
        );
        let far = LIVE_6_18.replace("offset:36;", "offset:96;");
        assert!(matches!(
            SignalLayout::from_format(&TracepointFormat::parse(&far).unwrap()),
            Err(SignalLayoutError::Unusable { field: "pid", .. })
        ));
    }
}
