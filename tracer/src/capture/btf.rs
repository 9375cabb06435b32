//! A small reader for the kernel's BPF Type Format (BTF).
//!
//! Rust eBPF programs cannot emit CO-RE relocations, so the loader looks up the kernel struct
//! member offsets the programs need in `/sys/kernel/btf/vmlinux` at load time. Only what that
//! takes is implemented: the type and string sections of a little-endian, non-split BTF blob,
//! struct/union member offsets and types, enum values, the ids of named types, and the
//! parameters of function pointer typedefs (a tracepoint's `btf_trace_*` prototype). The format
//! is described in the kernel's `Documentation/bpf/btf.rst`.
//!
//! The kernel's BTF is megabytes: it is read once ([`VmlinuxBtf`], mapped where the kernel
//! allows it, so that it costs no memory), the reader borrows it instead of copying it, and
//! everything is let go once the few facts the loader needs are out of it. aya needs a BTF of
//! its own only to find a BTF program's attach point by name; [`attach_point`] makes one that
//! holds that one type at its id, instead of aya parsing the whole of it again.

use std::{collections::HashMap, fmt};

use anyhow::Context as _;

/// Where the running kernel exposes its own BTF.
pub const VMLINUX_BTF_PATH: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const BTF_VERSION: u8 = 1;
/// Size of `struct btf_header`. Writers may append fields, which `hdr_len` accounts for.
const HEADER_LEN: usize = 24;
/// Size of `struct btf_type`: name_off, info, size/type.
const TYPE_HEADER_LEN: usize = 12;
/// Bounds nesting of anonymous members and modifier chains, so that cyclic type graphs in
/// malformed input end instead of overflowing the stack.
const MAX_DEPTH: usize = 32;
/// Bounds the member entries one lookup visits, so that malformed input sharing anonymous
/// types many times over cannot make a lookup take exponential time.
const MAX_MEMBER_VISITS: usize = 1 << 20;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// A type of one [`Btf`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TypeId(u32);

/// What a type is, past typedefs and qualifiers: enough to decide how to read a value of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// An integer or enum of `size` bytes.
    Int {
        size: u32,
    },
    Pointer {
        to: TypeId,
    },
    /// A struct or union; `name` is empty for an anonymous one.
    Struct {
        name: String,
        size: u32,
    },
    Array {
        element: TypeId,
        element_size: u32,
        len: u32,
    },
    /// Anything else: void, a function, a float, a forward declaration.
    Other,
}

/// Parsed BTF type and string sections, borrowed from the blob.
pub struct Btf<'a> {
    /// The type section.
    types: &'a [u8],
    /// Offset in `types` of each type's record, indexed by type id; entry 0 stands for void.
    type_offsets: Vec<u32>,
    /// The string section. Validated to start and end with NUL, so every in-range offset
    /// names a terminated string.
    strings: &'a [u8],
    /// Id of the first STRUCT/UNION with members, by name.
    structs: HashMap<&'a [u8], u32>,
    /// Id of the first ENUM/ENUM64 with enumerators, by name.
    enums: HashMap<&'a [u8], u32>,
}

impl fmt::Debug for Btf<'_> {
    // The sections are megabytes long; their sizes are what is worth showing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Btf")
            .field("types", &(self.type_offsets.len() - 1))
            .field("string_bytes", &self.strings.len())
            .finish_non_exhaustive()
    }
}

/// Why a BTF blob could not be parsed.
#[derive(Debug)]
pub enum BtfError {
    /// The blob is shorter than the BTF header.
    TruncatedHeader { len: usize },
    /// The blob does not start with the BTF magic number.
    BadMagic { magic: u16 },
    /// The blob is big-endian BTF, which is not supported.
    BigEndian,
    /// The BTF version is not 1.
    UnsupportedVersion { version: u8 },
    /// `hdr_len` is shorter than the header or longer than the blob.
    BadHeaderLength { hdr_len: u32 },
    /// A section does not lie within the blob.
    SectionOutOfBounds { section: &'static str, end: u64 },
    /// The string section does not start and end with NUL.
    BadStringSection,
    /// A type record is truncated, of unknown kind, or names a string out of range.
    BadTypeRecord { id: u32, reason: &'static str },
}

impl fmt::Display for BtfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TruncatedHeader { len } => write!(f, "BTF blob of {len} bytes has no header"),
            Self::BadMagic { magic } => write!(f, "bad BTF magic {magic:#06x}"),
            Self::BigEndian => write!(f, "big-endian BTF is not supported"),
            Self::UnsupportedVersion { version } => write!(f, "unsupported BTF version {version}"),
            Self::BadHeaderLength { hdr_len } => write!(f, "bad BTF header length {hdr_len}"),
            Self::SectionOutOfBounds { section, end } => {
                write!(f, "BTF {section} section ends past the blob, at {end}")
            }
            Self::BadStringSection => write!(f, "BTF string section is not NUL-delimited"),
            Self::BadTypeRecord { id, reason } => write!(f, "bad BTF type record {id}: {reason}"),
        }
    }
}

impl std::error::Error for BtfError {}

/// The fixed part of a type record (`struct btf_type`), decoded.
#[derive(Clone, Copy)]
struct TypeRecord {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    size_or_type: u32,
    /// Offset in the type section of the kind-specific data that follows the record.
    data: usize,
}

impl TypeRecord {
    fn read(types: &[u8], at: usize) -> Option<Self> {
        let info = le_u32(types, at.checked_add(4)?)?;
        Some(Self {
            name_off: le_u32(types, at)?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type: le_u32(types, at.checked_add(8)?)?,
            data: at.checked_add(TYPE_HEADER_LEN)?,
        })
    }

    /// Length of the kind-specific data, or `None` for a kind this reader does not know.
    fn data_len(&self) -> Option<usize> {
        Some(match self.kind {
            KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
            KIND_ARRAY => 12,
            KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * self.vlen,
            KIND_ENUM | KIND_FUNC_PROTO => 8 * self.vlen,
            KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
            | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
            _ => return None,
        })
    }

    /// Size of one entry of the kind-specific data for kinds whose entries start with a name.
    fn named_entry_len(&self) -> Option<usize> {
        match self.kind {
            KIND_STRUCT | KIND_UNION | KIND_ENUM64 => Some(12),
            KIND_ENUM => Some(8),
            _ => None,
        }
    }
}

/// One `struct btf_member`.
struct Member {
    name_off: u32,
    type_id: u32,
    offset: u32,
}

/// The `name` section: the `len` bytes at `start` in `bytes`, if they lie within it.
fn section<'a>(
    bytes: &'a [u8],
    name: &'static str,
    start: u64,
    len: u32,
) -> Result<&'a [u8], BtfError> {
    let end = start + u64::from(len);
    let range = usize::try_from(start).ok().zip(usize::try_from(end).ok());
    let section = range.and_then(|(start, end)| bytes.get(start..end));
    section.ok_or(BtfError::SectionOutOfBounds { section: name, end })
}

/// The NUL-terminated string at `offset` in `strings`, without the NUL.
fn c_str(strings: &[u8], offset: u32) -> Option<&[u8]> {
    let rest = strings.get(offset as usize..)?;
    rest.get(..rest.iter().position(|&byte| byte == 0)?)
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(word.try_into().ok()?))
}

/// The running kernel's BTF: mapped read-only where the kernel allows it (it maps its own copy
/// into the agent, so the agent's resident memory does not grow by its size), else read.
pub enum VmlinuxBtf {
    Mapped {
        address: *mut libc::c_void,
        len: usize,
    },
    Read(Vec<u8>),
}

impl VmlinuxBtf {
    pub fn open() -> anyhow::Result<Self> {
        use std::os::fd::AsRawFd as _;
        let file = std::fs::File::open(VMLINUX_BTF_PATH)
            .with_context(|| format!("failed to open {VMLINUX_BTF_PATH}"))?;
        let len = file
            .metadata()
            .with_context(|| format!("failed to read {VMLINUX_BTF_PATH}"))?
            .len();
        if let Ok(len) = usize::try_from(len)
            && len > 0
        {
            // SAFETY: a fresh read-only private mapping of a file we hold open; nothing else
            // maps it, and `Drop` unmaps exactly this range.
            let address = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE,
                    file.as_raw_fd(),
                    0,
                )
            };
            if address != libc::MAP_FAILED {
                return Ok(VmlinuxBtf::Mapped { address, len });
            }
        }
        // Kernels before 6.15 cannot map it.
        let bytes = std::fs::read(VMLINUX_BTF_PATH)
            .with_context(|| format!("failed to read {VMLINUX_BTF_PATH}"))?;
        Ok(VmlinuxBtf::Read(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        match self {
            // SAFETY: the mapping is `len` readable bytes for as long as `self` lives.
            VmlinuxBtf::Mapped { address, len } => unsafe {
                std::slice::from_raw_parts(address.cast::<u8>(), *len)
            },
            VmlinuxBtf::Read(bytes) => bytes,
        }
    }
}

impl Drop for VmlinuxBtf {
    fn drop(&mut self) {
        if let VmlinuxBtf::Mapped { address, len } = *self {
            // SAFETY: the mapping `open` made; no slice of it outlives `self`.
            unsafe { libc::munmap(address, len) };
        }
    }
}

impl<'a> Btf<'a> {
    /// Parses a little-endian, non-split BTF blob, validating every type record.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BtfError> {
        let Some(header @ &[magic_low, magic_high, version, _flags, ..]) = bytes.get(..HEADER_LEN)
        else {
            return Err(BtfError::TruncatedHeader { len: bytes.len() });
        };
        // `header` holds HEADER_LEN bytes, so these reads cannot fail.
        let field = |at| le_u32(header, at).unwrap_or_default();
        let magic = u16::from_le_bytes([magic_low, magic_high]);
        if magic == BTF_MAGIC.swap_bytes() {
            return Err(BtfError::BigEndian);
        }
        if magic != BTF_MAGIC {
            return Err(BtfError::BadMagic { magic });
        }
        if version != BTF_VERSION {
            return Err(BtfError::UnsupportedVersion { version });
        }
        let hdr_len = field(4);
        if (hdr_len as usize) < HEADER_LEN || hdr_len as usize > bytes.len() {
            return Err(BtfError::BadHeaderLength { hdr_len });
        }
        // Section offsets are relative to the end of the header; u64 sums cannot overflow.
        let section_start = |at| u64::from(hdr_len) + u64::from(field(at));
        let types = section(bytes, "type", section_start(8), field(12))?;
        let strings = section(bytes, "string", section_start(16), field(20))?;
        if strings.first() != Some(&0) || strings.last() != Some(&0) {
            return Err(BtfError::BadStringSection);
        }

        let mut btf = Self {
            types,
            type_offsets: vec![0],
            strings,
            structs: HashMap::new(),
            enums: HashMap::new(),
        };
        let mut at = 0;
        while at < types.len() {
            let id = btf.type_offsets.len() as u32;
            let bad = |reason| BtfError::BadTypeRecord { id, reason };
            let record = TypeRecord::read(types, at).ok_or(bad("truncated record"))?;
            let data_len = record.data_len().ok_or(bad("unknown kind"))?;
            // Cannot overflow: `data` is within 12 bytes of the section, `data_len` below 1 MiB.
            let end = record.data + data_len;
            if end > types.len() {
                return Err(bad("record runs past the type section"));
            }
            let name =
                c_str(strings, record.name_off).ok_or(bad("name past the string section"))?;
            if let Some(entry_len) = record.named_entry_len() {
                let mut entries = (record.data..end).step_by(entry_len);
                // The section ends with NUL, so an offset within it is enough to name a string.
                let named =
                    |at| le_u32(types, at).is_some_and(|off| (off as usize) < strings.len());
                if !entries.all(named) {
                    return Err(bad("member name past the string section"));
                }
            }
            let index = match record.kind {
                KIND_STRUCT | KIND_UNION => Some(&mut btf.structs),
                KIND_ENUM | KIND_ENUM64 => Some(&mut btf.enums),
                _ => None,
            };
            // Skipping empty types makes forward declarations give way to definitions.
            if let Some(index) = index
                && record.vlen > 0
                && !name.is_empty()
            {
                index.entry(name).or_insert(id);
            }
            btf.type_offsets.push(at as u32);
            at = end;
        }
        Ok(btf)
    }

    /// Byte offset of `member` inside the struct or union named `struct_name`.
    ///
    /// Members of anonymous struct/union members are searched too, recursively, and their
    /// offsets added. Returns `None` when the type or member does not exist, or the member is a
    /// bitfield not starting on a byte boundary. If several types share the name, the first
    /// STRUCT/UNION with members is used, skipping forward declarations.
    pub fn member_offset(&self, struct_name: &str, member: &str) -> Option<u32> {
        let (offset, _) = self.member(self.struct_id(struct_name)?, member)?;
        Some(offset)
    }

    /// The struct or union named `name`, as [`member_offset`](Self::member_offset) picks it.
    pub fn struct_id(&self, name: &str) -> Option<TypeId> {
        self.structs.get(name.as_bytes()).copied().map(TypeId)
    }

    /// Byte offset and type of `member` in the struct or union `id`, searched as
    /// [`member_offset`](Self::member_offset) does.
    pub fn member(&self, id: TypeId, member: &str) -> Option<(u32, TypeId)> {
        let mut visits = MAX_MEMBER_VISITS;
        let (offset, type_id) = self.find_member(id.0, member.as_bytes(), 0, &mut visits)?;
        Some((offset, TypeId(type_id)))
    }

    /// What `id` is, past typedefs and qualifiers.
    pub fn shape(&self, id: TypeId) -> Option<Shape> {
        let id = self.strip_modifiers(id.0)?;
        if id == 0 {
            return Some(Shape::Other);
        }
        let record = self.record(id)?;
        Some(match record.kind {
            KIND_INT | KIND_ENUM | KIND_ENUM64 => Shape::Int {
                size: record.size_or_type,
            },
            KIND_PTR => Shape::Pointer {
                to: TypeId(record.size_or_type),
            },
            KIND_STRUCT | KIND_UNION => Shape::Struct {
                name: String::from_utf8_lossy(c_str(self.strings, record.name_off)?).into_owned(),
                size: record.size_or_type,
            },
            KIND_ARRAY => {
                let element = le_u32(self.types, record.data)?;
                let len = le_u32(self.types, record.data.checked_add(8)?)?;
                Shape::Array {
                    element: TypeId(element),
                    element_size: self.size_of(element, 0)?,
                    len,
                }
            }
            _ => Shape::Other,
        })
    }

    /// The parameter types of the function pointer that typedef `name` names, e.g. a
    /// tracepoint's `btf_trace_<name>`, whose first parameter is the probe's `void *` and whose
    /// others are the tracepoint's `TP_PROTO`. `None` when no such typedef exists.
    pub fn function_pointer_params(&self, name: &str) -> Option<Vec<TypeId>> {
        let typedef = (1..self.type_offsets.len() as u32).find(|&id| {
            self.record(id).is_some_and(|record| {
                record.kind == KIND_TYPEDEF
                    && c_str(self.strings, record.name_off) == Some(name.as_bytes())
            })
        })?;
        let pointer = self.record(self.strip_modifiers(typedef)?)?;
        let proto_id = match pointer.kind {
            KIND_PTR => self.strip_modifiers(pointer.size_or_type)?,
            _ => return None,
        };
        let proto = self.record(proto_id)?;
        if proto.kind != KIND_FUNC_PROTO {
            return None;
        }
        (0..proto.vlen)
            .map(|i| {
                let at = proto.data.checked_add(i.checked_mul(8)?.checked_add(4)?)?;
                le_u32(self.types, at).map(TypeId)
            })
            .collect()
    }

    /// Value of `enumerator` in whichever enum has it, named or anonymous (the kernel's
    /// `MM_ANONPAGES` and friends belong to an enum without a name).
    pub fn enumerator_value(&self, enumerator: &str) -> Option<i64> {
        (1..self.type_offsets.len() as u32).find_map(|id| {
            let record = self.record(id)?;
            matches!(record.kind, KIND_ENUM | KIND_ENUM64)
                .then(|| self.enumerator_in(&record, enumerator))?
        })
    }

    /// Id of the first TYPEDEF named `name`: `btf_trace_<tracepoint>` is a BTF tracepoint's
    /// attach point.
    pub fn typedef_id(&self, name: &str) -> Option<u32> {
        self.type_id(KIND_TYPEDEF, name)
    }

    /// Id of the first FUNC named `name`: the attach point of fentry and fexit.
    pub fn func_id(&self, name: &str) -> Option<u32> {
        self.type_id(KIND_FUNC, name)
    }

    fn type_id(&self, kind: u32, name: &str) -> Option<u32> {
        (1..self.type_offsets.len() as u32).find(|&id| {
            self.record(id).is_some_and(|record| {
                record.kind == kind && c_str(self.strings, record.name_off) == Some(name.as_bytes())
            })
        })
    }

    /// Size in bytes of the struct named `struct_name`.
    pub fn struct_size(&self, struct_name: &str) -> Option<u32> {
        let record = self.record(*self.structs.get(struct_name.as_bytes())?)?;
        matches!(record.kind, KIND_STRUCT | KIND_UNION).then_some(record.size_or_type)
    }

    /// Value of `enumerator` in the enum named `enum_name` (ENUM or ENUM64).
    ///
    /// Unsigned 64-bit values above `i64::MAX` are returned with their bits reinterpreted.
    pub fn enum_value(&self, enum_name: &str, enumerator: &str) -> Option<i64> {
        let record = self.record(*self.enums.get(enum_name.as_bytes())?)?;
        self.enumerator_in(&record, enumerator)
    }

    fn enumerator_in(&self, record: &TypeRecord, enumerator: &str) -> Option<i64> {
        let entry_len = record.named_entry_len()?;
        (0..record.vlen).find_map(|i| {
            let at = record.data + i * entry_len;
            if c_str(self.strings, le_u32(self.types, at)?)? != enumerator.as_bytes() {
                return None;
            }
            let low = le_u32(self.types, at + 4)?;
            Some(match record.kind {
                KIND_ENUM64 => {
                    let high = le_u32(self.types, at + 8)?;
                    ((u64::from(high) << 32) | u64::from(low)) as i64
                }
                // For 32-bit enums kind_flag says the values are signed.
                _ if record.kind_flag => i64::from(low as i32),
                _ => i64::from(low),
            })
        })
    }

    fn record(&self, id: u32) -> Option<TypeRecord> {
        let at = *self.type_offsets.get(id as usize).filter(|_| id != 0)?;
        TypeRecord::read(self.types, at as usize)
    }

    fn members(&self, record: &TypeRecord) -> impl Iterator<Item = Member> {
        (0..record.vlen).map_while(move |i| {
            let at = record.data.checked_add(i.checked_mul(12)?)?;
            Some(Member {
                name_off: le_u32(self.types, at)?,
                type_id: le_u32(self.types, at.checked_add(4)?)?,
                offset: le_u32(self.types, at.checked_add(8)?)?,
            })
        })
    }

    /// Size in bytes of a value of type `id`, if it has one.
    fn size_of(&self, id: u32, depth: usize) -> Option<u32> {
        let record = self.record(self.strip_modifiers(id)?)?;
        match record.kind {
            KIND_INT | KIND_ENUM | KIND_ENUM64 | KIND_STRUCT | KIND_UNION => {
                Some(record.size_or_type)
            }
            KIND_PTR => Some(size_of::<u64>() as u32),
            KIND_ARRAY if depth < MAX_DEPTH => {
                let element = le_u32(self.types, record.data)?;
                let len = le_u32(self.types, record.data.checked_add(8)?)?;
                self.size_of(element, depth + 1)?.checked_mul(len)
            }
            _ => None,
        }
    }

    /// Searches the struct or union `id` for `member`, descending into anonymous members;
    /// returns its byte offset and type.
    fn find_member(
        &self,
        id: u32,
        member: &[u8],
        depth: usize,
        visits: &mut usize,
    ) -> Option<(u32, u32)> {
        let record = self.record(self.strip_modifiers(id)?)?;
        if depth > MAX_DEPTH || !matches!(record.kind, KIND_STRUCT | KIND_UNION) {
            return None;
        }
        for candidate in self.members(&record) {
            *visits = visits.checked_sub(1)?;
            // With kind_flag the top byte holds the bitfield size, not offset bits.
            let offset_mask: u32 = if record.kind_flag { 0xff_ffff } else { !0 };
            let bit_offset = candidate.offset & offset_mask;
            let name = c_str(self.strings, candidate.name_off)?;
            if name == member {
                return bit_offset
                    .is_multiple_of(8)
                    .then_some((bit_offset / 8, candidate.type_id));
            }
            if name.is_empty()
                && bit_offset.is_multiple_of(8)
                && let Some((inner, type_id)) =
                    self.find_member(candidate.type_id, member, depth + 1, visits)
            {
                return Some(((bit_offset / 8).checked_add(inner)?, type_id));
            }
        }
        None
    }

    /// Follows typedefs and qualifiers from `id` to the type they name.
    fn strip_modifiers(&self, mut id: u32) -> Option<u32> {
        for _ in 0..MAX_DEPTH {
            let record = self.record(id)?;
            match record.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = record.size_or_type
                }
                _ => return Some(id),
            }
        }
        None
    }
}

/// The kinds of type a BTF program attaches to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachKind {
    /// `btf_trace_<tracepoint>`, for tp_btf.
    Typedef,
    /// The function, for fentry and fexit.
    Func,
}

/// A BTF for aya that holds only `name`, of `kind`, at the kernel's type `id`: aya looks the
/// attach point up by name and hands the kernel its id, which must be the kernel's own. The
/// types before it are forward declarations without names, so that the id comes out right
/// at a fraction of what parsing the kernel's BTF costs aya.
pub fn attach_point(name: &str, kind: AttachKind, id: u32) -> Result<aya::Btf, aya::BtfError> {
    let filler = id.saturating_sub(1) as usize;
    let type_len = (filler + 1) * TYPE_HEADER_LEN;
    let strings: Vec<u8> = [0].into_iter().chain(name.bytes()).chain([0]).collect();
    let mut blob = Vec::with_capacity(HEADER_LEN + type_len + strings.len());
    let word = |blob: &mut Vec<u8>, word: u32| blob.extend(word.to_le_bytes());
    blob.extend(BTF_MAGIC.to_le_bytes());
    blob.extend([BTF_VERSION, 0]);
    word(&mut blob, HEADER_LEN as u32);
    // type_off, type_len, str_off, str_len: relative to the header's end.
    word(&mut blob, 0);
    word(&mut blob, type_len as u32);
    word(&mut blob, type_len as u32);
    word(&mut blob, strings.len() as u32);
    for _ in 0..filler {
        for field in [0, KIND_FWD << 24, 0] {
            word(&mut blob, field);
        }
    }
    let kind = match kind {
        AttachKind::Typedef => KIND_TYPEDEF,
        AttachKind::Func => KIND_FUNC,
    };
    // The name is the string at offset 1; what it is a typedef of, or the prototype, is not
    // asked.
    for field in [1, kind << 24, 0] {
        word(&mut blob, field);
    }
    blob.extend(strings);
    aya::Btf::parse(&blob, aya::Endianness::default())
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// Or'ed into a kind, sets the record's kind_flag (bit 31 of info, once shifted).
    const FLAG: u32 = 0x80;

    /// Builds synthetic little-endian BTF blobs.
    #[derive(Default)]
    struct Builder {
        types: Vec<u32>,
        /// The string section without its leading NUL, which `build` adds.
        strings: Vec<u8>,
        last_id: u32,
    }

    impl Builder {
        fn str(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let offset = self.strings.len() as u32 + 1;
            self.strings.extend(s.bytes().chain([0]));
            offset
        }

        /// Appends a type record (`vlen` is not checked against `data`) and returns its id.
        fn add(&mut self, name: &str, kind: u32, vlen: usize, size: u32, data: &[u32]) -> u32 {
            let name_off = self.str(name);
            self.types
                .extend([name_off, kind << 24 | vlen as u32, size]);
            self.types.extend(data);
            self.last_id += 1;
            self.last_id
        }

        /// Adds a struct or union with `(name, type id, offset)` members.
        fn composite(&mut self, kind: u32, name: &str, members: &[(&str, u32, u32)]) -> u32 {
            let mut data = Vec::new();
            for &(member, type_id, offset) in members {
                data.extend([self.str(member), type_id, offset]);
            }
            self.add(name, kind, members.len(), 64, &data)
        }

        /// Adds an ENUM or ENUM64.
        fn enumeration(&mut self, kind: u32, name: &str, values: &[(&str, i64)]) {
            let mut data = Vec::new();
            for &(enumerator, value) in values {
                data.extend([self.str(enumerator), value as u32]);
                data.extend((kind & 0x1f == KIND_ENUM64).then_some((value >> 32) as u32));
            }
            self.add(name, kind, values.len(), 8, &data);
        }

        fn build(&self) -> Vec<u8> {
            let (type_len, str_len) = (self.types.len() as u32 * 4, self.strings.len() as u32);
            // Magic, version 1 and flags 0 make up the first word.
            let header = [0x0001_eb9f, 24, 0, type_len, type_len, str_len + 1];
            let words = header.iter().chain(&self.types);
            let mut blob: Vec<u8> = words.flat_map(|word| word.to_le_bytes()).collect();
            blob.push(0);
            blob.extend(&self.strings);
            blob
        }
    }

    fn synthetic() -> Vec<u8> {
        let mut b = Builder::default();
        let int = b.add("int", KIND_INT, 0, 4, &[32]);
        b.add("task", KIND_FWD, 0, 0, &[]);
        b.composite(KIND_STRUCT, "task", &[]);
        let deep = b.composite(KIND_STRUCT, "", &[("pad", int, 0), ("deep", int, 32)]);
        let const_deep = b.add("", KIND_CONST, 0, deep, &[]);
        let anon = b.composite(KIND_UNION, "", &[("inner", int, 0), ("", const_deep, 0)]);
        let (pid, tgid, tail) = (("pid", int, 0), ("tgid", int, 32), ("tail", int, 192));
        b.composite(KIND_STRUCT, "task", &[pid, tgid, ("", anon, 64), tail]);
        // With kind_flag the top byte of a member's offset is its bitfield size.
        let (a, bit_b, c) = (("a", int, 3 << 24), ("b", int, 5 << 24 | 3), ("c", int, 32));
        b.composite(KIND_STRUCT | FLAG, "bits", &[a, bit_b, c, ("", int, 40)]);
        b.composite(KIND_UNION, "either", &[("x", int, 0), ("y", int, 0)]);
        b.add("only_fwd", KIND_FWD, 0, 0, &[]);
        b.enumeration(KIND_ENUM, "color", &[("red", 0), ("white", 0xffff_fffe)]);
        b.enumeration(KIND_ENUM | FLAG, "delta", &[("down", -2), ("up", 1)]);
        b.enumeration(KIND_ENUM64 | FLAG, "wide", &[("big", 1 << 40), ("neg", -5)]);
        b.build()
    }

    /// `mm_struct` before 6.2 and since, a tracepoint prototype of each era, and an
    /// anonymous enum: the shapes the loader decides how to read a victim's memory by.
    #[test]
    fn shapes_prototypes_and_anonymous_enumerators() {
        let mut b = Builder::default();
        let long = b.add("long", KIND_INT, 0, 8, &[64]);
        let int = b.add("int", KIND_INT, 0, 4, &[32]);
        let atomic = b.composite(KIND_STRUCT, "atomic64_t", &[("counter", long, 0)]);
        let atomic_long = b.add("atomic_long_t", KIND_TYPEDEF, 0, atomic, &[]);
        let counters = b.add("", KIND_ARRAY, 0, 0, &[atomic_long, int, 4]);
        let rss_old = b.composite(KIND_STRUCT, "mm_rss_stat", &[("count", counters, 0)]);
        let pcpu = b.composite(
            KIND_STRUCT,
            "percpu_counter",
            &[("lock", int, 0), ("count", long, 64)],
        );
        let rss_new = b.add("", KIND_ARRAY, 0, 0, &[pcpu, int, 4]);
        b.composite(
            KIND_STRUCT,
            "mm_old",
            &[("x", int, 0), ("rss_stat", rss_old, 64)],
        );
        b.composite(KIND_STRUCT, "mm_new", &[("rss_stat", rss_new, 128)]);
        let task = b.composite(KIND_STRUCT, "task_struct", &[("pid", int, 0)]);
        let task_ptr = b.add("", KIND_PTR, 0, task, &[]);
        let void_ptr = b.add("", KIND_PTR, 0, 0, &[]);
        let new_proto = b.add("", KIND_FUNC_PROTO, 2, 0, &[0, void_ptr, 0, task_ptr]);
        let old_proto = b.add("", KIND_FUNC_PROTO, 2, 0, &[0, void_ptr, 0, int]);
        let new_ptr = b.add("", KIND_PTR, 0, new_proto, &[]);
        let old_ptr = b.add("", KIND_PTR, 0, old_proto, &[]);
        b.add("btf_trace_new", KIND_TYPEDEF, 0, new_ptr, &[]);
        b.add("btf_trace_old", KIND_TYPEDEF, 0, old_ptr, &[]);
        b.enumeration(KIND_ENUM, "", &[("MM_FILEPAGES", 0), ("MM_ANONPAGES", 1)]);
        let blob = b.build();
        let btf = Btf::parse(&blob).expect("synthetic BTF parses");

        let (offset, id) = btf
            .member(btf.struct_id("mm_old").unwrap(), "rss_stat")
            .unwrap();
        assert_eq!(offset, 8);
        assert!(matches!(btf.shape(id), Some(Shape::Struct { name, .. }) if name == "mm_rss_stat"));
        let (_, array) = btf.member(id, "count").unwrap();
        // The builder makes every struct 64 bytes long.
        let Some(Shape::Array {
            element,
            element_size: 64,
            len: 4,
        }) = btf.shape(array)
        else {
            panic!("atomic_long_t count[4]: {:?}", btf.shape(array));
        };
        // Through the typedef, to the struct.
        assert!(
            matches!(btf.shape(element), Some(Shape::Struct { name, size: 64 }) if name == "atomic64_t")
        );
        let (_, id) = btf
            .member(btf.struct_id("mm_new").unwrap(), "rss_stat")
            .unwrap();
        assert!(matches!(
            btf.shape(id),
            Some(Shape::Array {
                element_size: 64,
                len: 4,
                ..
            })
        ));

        let new = btf.function_pointer_params("btf_trace_new").unwrap();
        assert_eq!(new.len(), 2);
        assert_eq!(btf.shape(new[0]), Some(Shape::Pointer { to: TypeId(0) }));
        let Some(Shape::Pointer { to }) = btf.shape(new[1]) else {
            panic!("a task pointer");
        };
        assert!(matches!(btf.shape(to), Some(Shape::Struct { name, .. }) if name == "task_struct"));
        let old = btf.function_pointer_params("btf_trace_old").unwrap();
        assert_eq!(btf.shape(old[1]), Some(Shape::Int { size: 4 }));
        assert_eq!(btf.function_pointer_params("btf_trace_none"), None);
        // A typedef that is no function pointer.
        assert_eq!(btf.function_pointer_params("atomic_long_t"), None);

        assert_eq!(btf.enumerator_value("MM_ANONPAGES"), Some(1));
        assert_eq!(btf.enumerator_value("MM_SHMEMPAGES"), None);
        assert_eq!(
            btf.enum_value("", "MM_ANONPAGES"),
            None,
            "anonymous: not by name"
        );
    }

    #[test]
    fn synthetic_offsets_and_values() {
        let blob = synthetic();
        let btf = Btf::parse(&blob).expect("synthetic BTF parses");
        let offsets = [
            ("task", "pid", Some(0)),
            ("task", "tgid", Some(4)),
            ("task", "inner", Some(8)), // In an anonymous union.
            ("task", "deep", Some(12)), // In an anonymous struct in that union.
            ("task", "tail", Some(24)),
            ("bits", "a", Some(0)), // A bitfield on a byte boundary.
            ("bits", "b", None),    // A bitfield off a byte boundary.
            ("bits", "c", Some(4)),
            ("either", "y", Some(0)),
            ("task", "nope", None),
            ("nope", "pid", None),
            ("only_fwd", "pid", None),
            ("color", "red", None), // An enum is not a struct.
        ];
        for (name, member, offset) in offsets {
            assert_eq!(btf.member_offset(name, member), offset, "{name}.{member}");
        }
        let values = [
            ("color", "red", Some(0)),
            ("color", "white", Some(0xffff_fffe)),
            ("delta", "down", Some(-2)),
            ("wide", "big", Some(1 << 40)),
            ("wide", "neg", Some(-5)),
            ("wide", "nope", None),
            ("task", "pid", None), // A struct is not an enum.
        ];
        for (name, variant, value) in values {
            assert_eq!(btf.enum_value(name, variant), value, "{name}::{variant}");
        }
    }

    #[test]
    fn malformed_input_is_rejected() {
        let valid = synthetic();
        let patched = |at: usize, bytes: &[u8]| {
            let mut blob = valid.clone();
            blob[at..at + bytes.len()].copy_from_slice(bytes);
            blob
        };
        let with_types = |types: &[u32]| {
            let mut b = Builder::default();
            b.str("s");
            b.types.extend(types);
            b.build()
        };
        let (int, struct_) = (KIND_INT << 24, KIND_STRUCT << 24);
        let cases = [
            (Vec::new(), "blob of 0 bytes has no header"),
            (valid[..10].to_vec(), "blob of 10 bytes has no header"),
            (patched(0, &[0x7f, 0x45]), "bad BTF magic 0x457f"),
            (patched(0, &[0xeb, 0x9f]), "big-endian BTF"),
            (patched(2, &[2]), "unsupported BTF version 2"),
            (patched(4, &[8]), "bad BTF header length 8"),
            (patched(12, &[0xff; 4]), "type section ends past"),
            // The blob ends with the string section's closing NUL.
            (patched(valid.len() - 1, b"x"), "not NUL-delimited"),
            (with_types(&[0, int]), "record 1: truncated"),
            (with_types(&[1, struct_ | 5, 8, 0, 0, 0]), "runs past"),
            (with_types(&[1000, int, 4, 32]), "record 1: name past"),
            (with_types(&[1, struct_ | 1, 8, 1000, 1, 0]), "member name"),
            (with_types(&[0, 31 << 24, 0]), "unknown kind"),
        ];
        for (blob, message) in cases {
            let err = Btf::parse(&blob).expect_err(message);
            assert!(err.to_string().contains(message), "{err} lacks {message:?}");
        }
    }

    #[test]
    fn prefixes_corruptions_and_cycles_do_not_panic() {
        let valid = synthetic();
        for len in 0..valid.len() {
            Btf::parse(&valid[..len]).expect_err("a prefix parsed");
        }
        for bit in 0..valid.len() * 8 {
            let mut blob = valid.clone();
            blob[bit / 8] ^= 1 << (bit % 8);
            if let Ok(btf) = Btf::parse(&blob) {
                btf.member_offset("task", "deep");
                btf.enum_value("wide", "neg");
            }
        }
        let mut b = Builder::default();
        // Type 1 is an anonymous struct whose only member is itself.
        b.composite(KIND_STRUCT, "", &[("", 1, 0)]);
        b.composite(KIND_STRUCT, "outer", &[("", 1, 0)]);
        let blob = b.build();
        let btf = Btf::parse(&blob).expect("cyclic BTF parses");
        assert_eq!(btf.member_offset("outer", "nope"), None);
    }

    /// `bits_offset` of `member` in the first STRUCT `struct_name` with members in a raw dump.
    fn bpftool_bits_offset(raw: &str, struct_name: &str, member: &str) -> Option<u32> {
        let heading = format!("STRUCT '{struct_name}' ");
        let is_heading = |line: &str| line.contains(&heading) && !line.ends_with("vlen=0");
        let mut lines = raw.lines().skip_while(|line| !is_heading(line)).skip(1);
        let prefix = format!("\t'{member}' ");
        let line = lines.find(|line| line.starts_with(&prefix) || !line.starts_with('\t'))?;
        let (_, bits) = line.split_once("bits_offset=")?;
        bits.split_whitespace().next()?.parse().ok()
    }

    #[test]
    fn running_kernel() {
        if !std::path::Path::new(VMLINUX_BTF_PATH).exists() {
            eprintln!("skipping: {VMLINUX_BTF_PATH} does not exist (no CONFIG_DEBUG_INFO_BTF)");
            return;
        }
        let vmlinux = VmlinuxBtf::open().expect("kernel BTF opens");
        let btf = Btf::parse(vmlinux.bytes()).expect("kernel BTF parses");
        let pid = btf.member_offset("task_struct", "pid");
        assert_eq!(
            btf.member_offset("task_struct", "tgid"),
            pid.map(|pid| pid + 4)
        );
        let parent = match btf.member_offset("kernfs_node", "__parent") {
            Some(_) => "__parent",
            None => "parent",
        };
        let members = [
            ("task_struct", "pid"),
            ("kernfs_node", parent),
            ("kernfs_node", "id"),
            ("kernfs_node", "name"),
            ("css_set", "subsys"),
            ("css_set", "dfl_cgrp"),
            ("cgroup", "kn"),
            ("cgroup_subsys_state", "cgroup"),
        ];
        for (struct_name, member) in members {
            let offset = btf.member_offset(struct_name, member);
            assert!(offset.is_some(), "{struct_name}.{member} not found");
        }
        let memory_cgrp_id = btf.enum_value("cgroup_subsys_id", "memory_cgrp_id");
        assert!(
            memory_cgrp_id.is_some(),
            "cgroup_subsys_id::memory_cgrp_id not found"
        );

        let args = ["btf", "dump", "file", VMLINUX_BTF_PATH, "format", "raw"];
        let bpftools = ["/usr/sbin/bpftool", "bpftool"];
        let dump = bpftools.into_iter().find_map(|bpftool| {
            let output = Command::new(bpftool).args(args).output().ok()?;
            output.status.success().then_some(output.stdout)
        });
        let Some(dump) = dump else {
            return eprintln!("skipping the bpftool cross-check: bpftool is not available");
        };
        let raw = String::from_utf8_lossy(&dump);
        // Direct members only: the dump does not flatten anonymous members.
        for (struct_name, member) in members {
            let bits = bpftool_bits_offset(&raw, struct_name, member);
            let bits = bits.unwrap_or_else(|| panic!("bpftool lacks {struct_name}.{member}"));
            let offset = btf.member_offset(struct_name, member);
            assert_eq!(offset, Some(bits / 8), "{struct_name}.{member} vs bpftool");
        }
        // The attach points aya is given: the ids bpftool lists for them.
        for (listed_as, id) in [
            (
                "TYPEDEF 'btf_trace_mark_victim'",
                btf.typedef_id("btf_trace_mark_victim"),
            ),
            ("FUNC 'oom_kill_process'", btf.func_id("oom_kill_process")),
        ] {
            let listed = raw
                .lines()
                .find(|line| line.contains(listed_as))
                .and_then(|line| line.strip_prefix('[')?.split(']').next()?.parse().ok());
            assert_eq!(id, listed, "the id of {listed_as} vs bpftool");
            if let Some(id) = id {
                let (name, kind) = match listed_as.split_once(' ') {
                    Some(("FUNC", name)) => (name.trim_matches('\''), AttachKind::Func),
                    Some((_, name)) => (name.trim_matches('\''), AttachKind::Typedef),
                    None => unreachable!(),
                };
                let stand_in = attach_point(name, kind, id).expect("a stand-in BTF");
                let aya_kind = match kind {
                    AttachKind::Func => aya_obj::btf::BtfKind::Func,
                    AttachKind::Typedef => aya_obj::btf::BtfKind::Typedef,
                };
                assert_eq!(stand_in.id_by_type_name_kind(name, aya_kind).ok(), Some(id));
            }
        }
    }

    #[test]
    fn the_fuzz_targets_seed_is_a_blob_the_reader_answers_from() {
        let seed = include_bytes!("../../../fuzz/corpus/btf/synthetic");
        let btf = Btf::parse(seed).expect("a valid blob");
        assert_eq!(btf.member_offset("task_struct", "tgid"), Some(4));
        assert_eq!(btf.member_offset("task_struct", "cgroups"), Some(24));
        assert_eq!(btf.struct_size("task_struct"), Some(40));
        assert_eq!(
            btf.enum_value("oom_constraint", "CONSTRAINT_MEMCG"),
            Some(3)
        );
        assert_eq!(
            btf.function_pointer_params("btf_trace_mark_victim")
                .map(|params| params.len()),
            Some(2)
        );
        assert!(btf.func_id("oom_kill_process").is_some());
    }
}
