//! Finding tracefs and parsing tracepoint `format` files.
//!
//! A tracepoint's record layout differs between kernels (fields are added, widths follow the
//! architecture), so the agent reads the live `events/<category>/<name>/format` file at startup
//! instead of hard-coding offsets.

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// Where tracefs is mounted on current systems.
const TRACEFS: &str = "/sys/kernel/tracing";
/// Where tracefs appears on systems that only mount debugfs.
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";

/// A parsed tracepoint `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracepointFormat {
    /// The `name:` line, e.g. `mark_victim`.
    pub name: String,
    /// The `ID:` line: the event's type id, as found in `common_type`.
    pub id: u32,
    /// Every field in record order, the `common_*` header included.
    pub fields: Vec<FormatField>,
}

/// One `field:` line of a `format` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatField {
    /// The declared name without any array suffix, e.g. `comm` for `char comm[16]`.
    pub name: String,
    /// The declared type: `unsigned long`, `__data_loc char[]`, or `char[16]` for a fixed array.
    pub c_type: String,
    /// Byte offset from the start of the record.
    pub offset: usize,
    /// Size in bytes (4 for a `__data_loc` field: the descriptor, not the data).
    pub size: usize,
    /// Whether the kernel declared the type signed; false when the line has no `signed:`.
    pub signed: bool,
    /// Whether the field is a `__data_loc` descriptor: low 16 bits the data's offset from the
    /// start of the record, high 16 bits its length.
    pub data_loc: bool,
}

/// Why a `format` file could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// There is no `name:` line.
    MissingName,
    /// There is no `ID:` line.
    MissingId,
    /// The `ID:` line does not hold a number.
    InvalidId { line: String },
    /// A `field:` line cannot be understood.
    MalformedField { line: String, reason: String },
    /// The file declares no fields at all.
    NoFields,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingName => f.write_str("tracepoint format has no `name:` line"),
            Self::MissingId => f.write_str("tracepoint format has no `ID:` line"),
            Self::InvalidId { line } => {
                write!(f, "tracepoint format has an invalid ID line {line:?}")
            }
            Self::MalformedField { line, reason } => {
                write!(f, "malformed tracepoint field line {line:?}: {reason}")
            }
            Self::NoFields => f.write_str("tracepoint format declares no fields"),
        }
    }
}

impl std::error::Error for FormatError {}

impl TracepointFormat {
    /// Parses the text of a `format` file. Blank and unrecognised lines (`format:`,
    /// `print fmt:`) are skipped; a `field:` line that cannot be parsed is an error.
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        let mut name = None;
        let mut id = None;
        let mut fields = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(value) = line.strip_prefix("name:") {
                name = Some(value.trim().to_owned());
            } else if let Some(value) = line.strip_prefix("ID:") {
                let parsed = value.trim().parse().map_err(|_| FormatError::InvalidId {
                    line: line.to_owned(),
                })?;
                id = Some(parsed);
            } else if line.starts_with("field:") {
                fields.push(parse_field(line)?);
            }
        }
        if fields.is_empty() {
            return Err(FormatError::NoFields);
        }
        Ok(Self {
            name: name.ok_or(FormatError::MissingName)?,
            id: id.ok_or(FormatError::MissingId)?,
            fields,
        })
    }

    /// The field called `name`, if the format declares one.
    pub fn field(&self, name: &str) -> Option<&FormatField> {
        self.fields.iter().find(|field| field.name == name)
    }
}

/// Parses `field:<declaration>;\toffset:N;\tsize:N;\tsigned:N;`.
fn parse_field(line: &str) -> Result<FormatField, FormatError> {
    let malformed = |reason: &str| FormatError::MalformedField {
        line: line.to_owned(),
        reason: reason.to_owned(),
    };
    let mut declaration = None;
    let (mut offset, mut size, mut signed) = (None, None, false);
    let parts = line
        .split(';')
        .map(str::trim)
        .filter(|part| !part.is_empty());
    for part in parts {
        let Some((key, value)) = part.split_once(':') else {
            return Err(malformed(&format!("`{part}` is not `key:value`")));
        };
        let not_a_number = |_| malformed(&format!("`{key}` is not a number"));
        let number = || value.trim().parse::<usize>().map_err(not_a_number);
        match key.trim() {
            "field" => declaration = Some(value.trim()),
            "offset" => offset = Some(number()?),
            "size" => size = Some(number()?),
            "signed" => signed = number()? != 0,
            // Unknown attributes may appear on future kernels; they do not affect the layout.
            _ => {}
        }
    }
    let declaration = declaration.ok_or_else(|| malformed("no declaration"))?;
    let (c_type, name) = split_declaration(declaration).ok_or_else(|| {
        malformed("the declaration is not `<type> <name>` or `<type> <name>[<len>]`")
    })?;
    Ok(FormatField {
        data_loc: c_type.starts_with("__data_loc"),
        name,
        c_type,
        offset: offset.ok_or_else(|| malformed("no `offset:`"))?,
        size: size.ok_or_else(|| malformed("no `size:`"))?,
        signed,
    })
}

/// Splits a C declaration into its type and name, moving an array suffix onto the type:
/// `char comm[16]` becomes (`char[16]`, `comm`).
fn split_declaration(declaration: &str) -> Option<(String, String)> {
    let (base, array_suffix) = match declaration.rfind('[') {
        Some(open) if declaration.ends_with(']') => declaration.split_at(open),
        _ => (declaration, ""),
    };
    let (c_type, name) = base.trim_end().rsplit_once(char::is_whitespace)?;
    let is_identifier = !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let c_type = c_type.trim();
    (is_identifier && !c_type.is_empty())
        .then(|| (format!("{c_type}{array_suffix}"), name.to_owned()))
}

/// Returns the tracefs mount point, mounting tracefs at `/sys/kernel/tracing` when it is not
/// mounted anywhere and we are root.
pub fn tracefs_root() -> anyhow::Result<PathBuf> {
    for candidate in [TRACEFS, DEBUGFS_TRACING] {
        if Path::new(candidate).join("events").is_dir() {
            return Ok(PathBuf::from(candidate));
        }
    }
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    if parse_effective_uid(&status) != Some(0) {
        bail!(
            "tracefs is not mounted at {TRACEFS} and oomtrace is not root to mount it: \
             run `mount -t tracefs nodev {TRACEFS}` as root"
        );
    }
    let why = match Command::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .output()
    {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "`mount -t tracefs nodev {TRACEFS}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(err) => Some(format!("cannot run `mount`: {err}")),
    };
    if let Some(why) = why {
        // In a container, or without CAP_SYS_ADMIN (which oomtrace needs for nothing else),
        // the host has to.
        bail!(
            "tracefs is not mounted at {TRACEFS} ({why}): mount it on the host with \
             `mount -t tracefs nodev {TRACEFS}`, and bind it into a container with \
             `-v {TRACEFS}:{TRACEFS}:ro`"
        );
    }
    log::info!("mounted tracefs at {TRACEFS}");
    Ok(PathBuf::from(TRACEFS))
}

/// The effective uid from the text of `/proc/<pid>/status`: the second number of `Uid:`.
fn parse_effective_uid(status: &str) -> Option<u32> {
    let uids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    uids.split_whitespace().nth(1)?.parse().ok()
}

/// Reads and parses `<root>/events/<category>/<name>/format`.
pub fn read_format(root: &Path, category: &str, name: &str) -> anyhow::Result<TracepointFormat> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == ErrorKind::NotFound => bail!(
            "tracepoint {category}:{name} does not exist on this kernel ({} is missing)",
            path.display()
        ),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    TracepointFormat::parse(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Saved `mark_victim` format files, for the parser's and the decoder's tests.
#[cfg(test)]
pub(crate) mod fixtures {
    /// The live file of a 6.18 kernel.
    pub(crate) const LIVE_6_18: &str =
        include_str!("../../tests/fixtures/tracefs/mark_victim-6.18.format");
    /// Kernels before 6.9: `pid` only.
    pub(crate) const PID_ONLY: &str =
        include_str!("../../tests/fixtures/tracefs/mark_victim-pid-only.format");
    /// Synthetic: `comm` as a fixed array and 4-byte longs, every offset moved.
    pub(crate) const FIXED_COMM: &str =
        include_str!("../../tests/fixtures/tracefs/mark_victim-fixed-comm.format");
}

#[cfg(test)]
mod tests {
    use super::fixtures::{FIXED_COMM, LIVE_6_18, PID_ONLY};
    use super::*;

    /// (name, c_type, offset, size, signed, data_loc) of every field.
    type Row = (&'static str, &'static str, usize, usize, bool, bool);

    const COMMON: [Row; 4] = [
        ("common_type", "unsigned short", 0, 2, false, false),
        ("common_flags", "unsigned char", 2, 1, false, false),
        ("common_preempt_count", "unsigned char", 3, 1, false, false),
        ("common_pid", "int", 4, 4, true, false),
    ];

    /// The 4 `common_*` fields followed by `payload`, as `FormatField`s.
    fn expected(payload: &[Row]) -> Vec<FormatField> {
        COMMON
            .iter()
            .chain(payload)
            .map(
                |&(name, c_type, offset, size, signed, data_loc)| FormatField {
                    name: name.to_owned(),
                    c_type: c_type.to_owned(),
                    offset,
                    size,
                    signed,
                    data_loc,
                },
            )
            .collect()
    }

    #[test]
    fn parses_the_6_18_format() {
        let format = TracepointFormat::parse(LIVE_6_18).expect("fixture parses");
        assert_eq!((format.name.as_str(), format.id), ("mark_victim", 609));
        let payload = [
            ("pid", "int", 8, 4, true, false),
            ("comm", "__data_loc char[]", 12, 4, false, true),
            ("total_vm", "unsigned long", 16, 8, false, false),
            ("anon_rss", "unsigned long", 24, 8, false, false),
            ("file_rss", "unsigned long", 32, 8, false, false),
            ("shmem_rss", "unsigned long", 40, 8, false, false),
            ("uid", "uid_t", 48, 4, false, false),
            ("pgtables", "unsigned long", 56, 8, false, false),
            ("oom_score_adj", "short", 64, 2, true, false),
        ];
        assert_eq!(format.fields, expected(&payload));
        assert_eq!(format.field("uid").map(|f| f.offset), Some(48));
        assert_eq!(format.field("gid"), None);
    }

    #[test]
    fn parses_the_pid_only_format() {
        let format = TracepointFormat::parse(PID_ONLY).expect("fixture parses");
        assert_eq!((format.name.as_str(), format.id), ("mark_victim", 480));
        assert_eq!(
            format.fields,
            expected(&[("pid", "int", 8, 4, true, false)])
        );
    }

    /// The fixed-comm fixture is synthetic (see `decode::mark_victim`'s tests): an inline
    /// `char comm[16]` and 4-byte `unsigned long`s.
    #[test]
    fn parses_the_fixed_comm_format() {
        let format = TracepointFormat::parse(FIXED_COMM).expect("fixture parses");
        let payload = [
            ("pid", "int", 8, 4, true, false),
            ("comm", "char[16]", 12, 16, true, false),
            ("total_vm", "unsigned long", 28, 4, false, false),
            ("anon_rss", "unsigned long", 32, 4, false, false),
            ("file_rss", "unsigned long", 36, 4, false, false),
            ("shmem_rss", "unsigned long", 40, 4, false, false),
            ("uid", "uid_t", 44, 4, false, false),
            ("pgtables", "unsigned long", 48, 4, false, false),
            ("oom_score_adj", "short", 52, 2, true, false),
        ];
        assert_eq!(format.fields, expected(&payload));
    }

    #[test]
    fn tolerates_old_kernels_and_odd_whitespace() {
        // Kernels before 2.6.31 printed no `signed:`; spacing and line endings vary.
        let text = "name:  mark_victim \r\nID:480\r\nsomething new: 1\r\n\
                    field:int pid ;  offset: 8 ;size:4;\r\n  field:char comm [16];offset:12;size:16;";
        let format = TracepointFormat::parse(text).expect("lenient parse");
        let payload = [
            ("pid", "int", 8, 4, false, false),
            ("comm", "char[16]", 12, 16, false, false),
        ];
        assert_eq!(format.fields, expected(&payload)[COMMON.len()..]);
    }

    #[test]
    fn rejects_malformed_field_lines() {
        for line in [
            "field:int pid;\toffset:eight;\tsize:4;\tsigned:1;",
            "field:int pid;\toffset:8;\tsigned:1;",
            "field:int pid;\tsize:4;",
            "field:pid;\toffset:8;\tsize:4;",
            "field:;\toffset:8;\tsize:4;",
            "field:int pid;\toffset:8;\tsize:4;\tsigned:yes;",
            "field:int pid;\toffset 8;\tsize:4;",
            "field:int pid-1;\toffset:8;\tsize:4;",
        ] {
            let error = TracepointFormat::parse(&format!("name: x\nID: 1\n\t{line}\n"));
            assert!(
                matches!(&error, Err(FormatError::MalformedField { line: l, .. }) if l == line),
                "{line:?} gave {error:?}"
            );
            let message = error.map_or_else(|e| e.to_string(), |_| String::new());
            assert!(message.contains("field:") && !message.contains('\n'));
        }
    }

    #[test]
    fn rejects_formats_without_name_id_or_fields() {
        let pid = "\tfield:int pid;\toffset:8;\tsize:4;\n";
        let invalid_id = FormatError::InvalidId {
            line: "ID: -1".to_owned(),
        };
        for (text, expected) in [
            (format!("ID: 1\n{pid}"), FormatError::MissingName),
            (format!("name: x\n{pid}"), FormatError::MissingId),
            (format!("name: x\nID: -1\n{pid}"), invalid_id),
            (
                "name: x\nID: 1\nformat:\n".to_owned(),
                FormatError::NoFields,
            ),
        ] {
            assert_eq!(TracepointFormat::parse(&text), Err(expected));
        }
    }

    #[test]
    fn reads_the_effective_uid() {
        let status = "Name:\tcat\nUmask:\t0022\nUid:\t1000\t0\t1000\t1000\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(parse_effective_uid("Uid:\t0\t1000\t0\t0\n"), Some(1000));
        assert_eq!(parse_effective_uid("Name:\tcat\n"), None);
    }

    #[test]
    fn read_format_reads_and_reports_missing_tracepoints() {
        let root = std::env::temp_dir().join(format!("oomtrace-tracefs-{}", std::process::id()));
        let event = root.join("events/oom/mark_victim");
        std::fs::create_dir_all(&event).expect("create temp tracefs");
        std::fs::write(event.join("format"), LIVE_6_18).expect("write format");
        let format = read_format(&root, "oom", "mark_victim");
        let missing = read_format(&root, "oom", "no_such_event");
        std::fs::remove_dir_all(&root).expect("remove temp tracefs");
        assert_eq!(format.expect("format reads").id, 609);
        let message = missing.expect_err("missing tracepoint").to_string();
        assert!(message.contains("oom:no_such_event does not exist"));
    }
}
