//! A read-only reader of BoltDB files (bbolt's format), enough to find podman's containers in
//! its libpod state (`libpod/bolt_state.db`).
//!
//! A file is pages of one size. Pages 0 and 1 are meta pages; the valid one (magic, version,
//! FNV-1a checksum) with the higher transaction id holds the root bucket's page. A bucket is a
//! B+tree of branch pages (keys and child page ids) and leaf pages (keys and values); a value
//! flagged as a bucket holds a nested bucket's root page id, or, for a small bucket, the bucket's
//! one page inline. Layout from bbolt's `page.go`, `bucket.go` and `db.go`, checked against the
//! files podman 4.3 writes (the unit tests' fixture is one).
//!
//! The input is a file on disk that another process writes: every offset, length, page id and
//! count is checked, every walk is bounded in depth and in pages, and anything that does not
//! add up is an error, never a panic. Pure and std-only.

use std::fmt;

const MAGIC: u32 = 0xED0C_DAED;
const VERSION: u32 = 2;
const PAGE_HEADER: usize = 16;
const ELEMENT: usize = 16;
const BUCKET_HEADER: usize = 16;

const BRANCH_PAGE: u16 = 0x01;
const LEAF_PAGE: u16 = 0x02;
const BUCKET_LEAF_FLAG: u32 = 0x01;

/// Page sizes tried for the second meta page when the first is damaged (bbolt uses the OS
/// page size, usually 4 KiB; 64 KiB on some arm64 kernels).
const PAGE_SIZES: [usize; 4] = [4096, 8192, 16384, 65536];
/// Deeper than any real B+tree: a cycle in a damaged file ends here.
const MAX_DEPTH: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BoltError(String);

impl fmt::Display for BoltError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BoltError {}

fn error<T>(message: impl Into<String>) -> Result<T, BoltError> {
    Err(BoltError(message.into()))
}

/// A BoltDB file's bytes, opened at its newest committed transaction.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bolt<'a> {
    data: &'a [u8],
    page_size: usize,
    root: u64,
}

/// A bucket: its root page, or its one page stored inline in its parent.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bucket<'a> {
    db: Bolt<'a>,
    root: Root<'a>,
}

#[derive(Clone, Copy, Debug)]
enum Root<'a> {
    Page(u64),
    Inline(&'a [u8]),
}

/// What a key holds.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Item<'a> {
    Value(&'a [u8]),
    Bucket(Bucket<'a>),
}

impl<'a> Bolt<'a> {
    /// Finds the newest valid meta page.
    pub(crate) fn open(data: &'a [u8]) -> Result<Self, BoltError> {
        let first = meta(data, 0);
        let page_size = match &first {
            Ok(meta) => vec![meta.page_size],
            Err(_) => PAGE_SIZES.to_vec(),
        };
        let second = page_size
            .iter()
            .map(|&size| meta(data, size))
            .find(Result::is_ok)
            .unwrap_or_else(|| error("no second meta page"));
        let newest = match (first, second) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(meta), Err(_)) | (Err(_), Ok(meta)) => meta,
            (Err(a), Err(b)) => return error(format!("not a BoltDB file: {a}; {b}")),
        };
        Ok(Bolt {
            data,
            page_size: newest.page_size,
            root: newest.root,
        })
    }

    /// The top-level bucket, whose keys are the database's buckets.
    pub(crate) fn root(&self) -> Bucket<'a> {
        Bucket {
            db: *self,
            root: Root::Page(self.root),
        }
    }

    /// Page `id` with its overflow pages.
    fn page(&self, id: u64) -> Result<&'a [u8], BoltError> {
        let start = usize::try_from(id)
            .ok()
            .and_then(|id| id.checked_mul(self.page_size))
            .filter(|&start| start.saturating_add(PAGE_HEADER) <= self.data.len());
        let Some(start) = start else {
            return error(format!("page {id} is past the end of the file"));
        };
        let overflow = u32_at(self.data, start + 12).unwrap_or(0) as usize;
        let end = overflow
            .checked_add(1)
            .and_then(|pages| pages.checked_mul(self.page_size))
            .and_then(|len| start.checked_add(len))
            .map_or(self.data.len(), |end| end.min(self.data.len()));
        Ok(&self.data[start..end])
    }
}

impl<'a> Bucket<'a> {
    /// What `key` holds, if anything.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Item<'a>>, BoltError> {
        let mut found = None;
        self.walk(&mut |k, item| {
            if k == key {
                found = Some(item);
                false
            } else {
                true
            }
        })?;
        Ok(found)
    }

    /// The nested bucket at `key`; an error if `key` holds a plain value.
    pub(crate) fn bucket(&self, key: &[u8]) -> Result<Option<Bucket<'a>>, BoltError> {
        match self.get(key)? {
            Some(Item::Bucket(bucket)) => Ok(Some(bucket)),
            Some(Item::Value(_)) => error(format!(
                "{} is a value, not a bucket",
                String::from_utf8_lossy(key)
            )),
            None => Ok(None),
        }
    }

    /// The plain value at `key`; an error if `key` holds a bucket.
    pub(crate) fn value(&self, key: &[u8]) -> Result<Option<&'a [u8]>, BoltError> {
        match self.get(key)? {
            Some(Item::Value(value)) => Ok(Some(value)),
            Some(Item::Bucket(_)) => error(format!(
                "{} is a bucket, not a value",
                String::from_utf8_lossy(key)
            )),
            None => Ok(None),
        }
    }

    /// Calls `visit` with each key and what it holds, in key order, until it returns false.
    pub(crate) fn walk(
        &self,
        visit: &mut dyn FnMut(&'a [u8], Item<'a>) -> bool,
    ) -> Result<(), BoltError> {
        // A tree visits each page once: more visits than the file has pages means a damaged
        // file whose pages point at each other.
        let mut budget = self.db.data.len() / self.db.page_size + 1;
        let mut walk = Walk {
            visit,
            budget: &mut budget,
        };
        match self.root {
            Root::Page(id) => self
                .walk_page(self.db.page(id)?, id, 0, &mut walk)
                .map(|_| ()),
            Root::Inline(page) => self.walk_page(page, 0, 0, &mut walk).map(|_| ()),
        }
    }

    /// Returns whether to go on.
    fn walk_page(
        &self,
        page: &'a [u8],
        id: u64,
        depth: usize,
        walk: &mut Walk<'_, 'a>,
    ) -> Result<bool, BoltError> {
        if depth > MAX_DEPTH {
            return error(format!("page {id}: deeper than {MAX_DEPTH} levels"));
        }
        if *walk.budget == 0 {
            return error("more pages visited than the file holds: pages point at each other");
        }
        *walk.budget -= 1;
        let flags = u16_at(page, 8).ok_or_else(|| BoltError(format!("page {id}: no header")))?;
        let count = u16_at(page, 10).unwrap_or(0) as usize;
        if !matches!(flags, BRANCH_PAGE | LEAF_PAGE) {
            return error(format!(
                "page {id}: flags {flags:#x}, neither a branch nor a leaf"
            ));
        }
        for index in 0..count {
            let at = PAGE_HEADER + index * ELEMENT;
            let field = |offset: usize| {
                u32_at(page, at + offset)
                    .ok_or_else(|| BoltError(format!("page {id}: element {index} is cut off")))
            };
            if flags == BRANCH_PAGE {
                let (pos, key_len) = (field(0)?, field(4)?);
                let child = u64_at(page, at + 8)
                    .ok_or_else(|| BoltError(format!("page {id}: element {index} is cut off")))?;
                // The key only says where the child's keys start: the child says them all.
                bytes(page, at, pos, key_len, id)?;
                if child == id {
                    return error(format!("page {id}: a branch to itself"));
                }
                if !self.walk_page(self.db.page(child)?, child, depth + 1, walk)? {
                    return Ok(false);
                }
            } else {
                let (item_flags, pos, key_len, value_len) =
                    (field(0)?, field(4)?, field(8)?, field(12)?);
                let key = bytes(page, at, pos, key_len, id)?;
                let value_pos = pos
                    .checked_add(key_len)
                    .ok_or_else(|| BoltError(format!("page {id}: element {index} overflows")))?;
                let value = bytes(page, at, value_pos, value_len, id)?;
                let item = if item_flags & BUCKET_LEAF_FLAG != 0 {
                    Item::Bucket(self.nested(value, id)?)
                } else {
                    Item::Value(value)
                };
                if !(walk.visit)(key, item) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    fn nested(&self, value: &'a [u8], id: u64) -> Result<Bucket<'a>, BoltError> {
        let root = u64_at(value, 0)
            .ok_or_else(|| BoltError(format!("page {id}: a bucket without its header")))?;
        let root = if root == 0 {
            Root::Inline(&value[BUCKET_HEADER.min(value.len())..])
        } else {
            Root::Page(root)
        };
        Ok(Bucket { db: self.db, root })
    }
}

/// One walk's callback and what is left of its page budget.
struct Walk<'w, 'a> {
    visit: &'w mut dyn FnMut(&'a [u8], Item<'a>) -> bool,
    budget: &'w mut usize,
}

struct Meta {
    page_size: usize,
    root: u64,
    txid: u64,
}

/// The meta page at byte `at`, if it is valid.
fn meta(data: &[u8], at: usize) -> Result<Meta, BoltError> {
    let field = |offset: usize| {
        u32_at(data, at + PAGE_HEADER + offset)
            .ok_or_else(|| BoltError(format!("the meta page at byte {at} is cut off")))
    };
    let wide = |offset: usize| {
        u64_at(data, at + PAGE_HEADER + offset)
            .ok_or_else(|| BoltError(format!("the meta page at byte {at} is cut off")))
    };
    if field(0)? != MAGIC {
        return error(format!("no BoltDB magic at byte {at}"));
    }
    if field(4)? != VERSION {
        return error(format!("BoltDB version {} at byte {at}, not 2", field(4)?));
    }
    let checksum = wide(56)?;
    let start = at + PAGE_HEADER;
    if fnv1a(&data[start..start + 56]) != checksum {
        return error(format!("the meta page at byte {at} fails its checksum"));
    }
    let page_size = field(8)? as usize;
    if !(1024..=1 << 20).contains(&page_size) {
        return error(format!("page size {page_size} at byte {at}"));
    }
    Ok(Meta {
        page_size,
        root: wide(16)?,
        txid: wide(48)?,
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `len` bytes at `pos` past the element that starts at `element` (bbolt's element offsets are
/// relative to the element itself).
fn bytes(page: &[u8], element: usize, pos: u32, len: u32, id: u64) -> Result<&[u8], BoltError> {
    let start = element.checked_add(pos as usize);
    let end = start.and_then(|start| start.checked_add(len as usize));
    match (start, end) {
        (Some(start), Some(end)) if end <= page.len() => Ok(&page[start..end]),
        _ => error(format!("page {id}: a key or value runs past the page")),
    }
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        data.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        data.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        data.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// podman 4.3's libpod state on the project's test machine: three containers (`shop_db_1`
    /// created, `web` and `restarter` running), in a private storage root.
    const PODMAN_STATE: &[u8] = include_bytes!("../../../fixtures/state/podman/bolt_state.db");

    fn container_names(data: &[u8]) -> Result<Vec<(String, String)>, BoltError> {
        let db = Bolt::open(data)?;
        let all = db
            .root()
            .bucket(b"all-ctrs")?
            .ok_or_else(|| BoltError("no all-ctrs".to_owned()))?;
        let mut names = Vec::new();
        all.walk(&mut |key, item| {
            if let Item::Value(name) = item {
                names.push((
                    String::from_utf8_lossy(key).into_owned(),
                    String::from_utf8_lossy(name).into_owned(),
                ));
            }
            true
        })?;
        Ok(names)
    }

    #[test]
    fn reads_podmans_containers() {
        let names = container_names(PODMAN_STATE).expect("a valid file");
        let mut just_names: Vec<&str> = names.iter().map(|(_, name)| name.as_str()).collect();
        just_names.sort_unstable();
        assert_eq!(just_names, ["restarter", "shop_db_1", "web"]);
        for (id, _) in &names {
            assert_eq!(id.len(), 64, "{id}");
        }

        let db = Bolt::open(PODMAN_STATE).expect("a valid file");
        let ctr = db.root().bucket(b"ctr").unwrap().expect("the ctr bucket");
        let (id, _) = names.iter().find(|(_, name)| name == "web").unwrap();
        let web = ctr.bucket(id.as_bytes()).unwrap().expect("web's bucket");
        let config = web.value(b"config").unwrap().expect("web's config");
        assert!(config.starts_with(b"{") && config.ends_with(b"}"));
        assert!(matches!(
            web.get(b"dependencies"),
            Ok(Some(Item::Bucket(_)))
        ));
        assert!(web.get(b"no such key").unwrap().is_none());
        assert!(web.bucket(b"config").is_err(), "a value is not a bucket");
    }

    #[test]
    fn the_newest_valid_meta_page_wins() {
        // Damaging the newer meta page falls back to the older one, which (podman having
        // written nothing in between) describes a complete, older tree.
        let db = Bolt::open(PODMAN_STATE).expect("a valid file");
        let newer_at =
            if meta(PODMAN_STATE, 0).unwrap().txid > meta(PODMAN_STATE, 4096).unwrap().txid {
                0
            } else {
                4096
            };
        let mut damaged = PODMAN_STATE.to_vec();
        damaged[newer_at + PAGE_HEADER + 20] ^= 0xff;
        let older = Bolt::open(&damaged).expect("the other meta page is valid");
        assert_ne!(older.root, db.root);

        let mut both = damaged.clone();
        let older_at = 4096 - newer_at;
        both[older_at + PAGE_HEADER] ^= 0xff;
        assert!(Bolt::open(&both).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Bolt::open(b"").is_err());
        assert!(Bolt::open(&[0u8; 8192]).is_err());
        assert!(Bolt::open(br#"{"not": "bolt"}"#).is_err());
        // A valid header over truncated or scribbled pages.
        for len in [4096, 8192, 8200, 20_000, PODMAN_STATE.len() / 2] {
            let _ = container_names(&PODMAN_STATE[..len]);
        }
        let mut scribbled = PODMAN_STATE.to_vec();
        for (i, byte) in scribbled.iter_mut().enumerate().skip(8192) {
            *byte = byte.wrapping_mul(31).wrapping_add(i as u8);
        }
        assert!(container_names(&scribbled).is_err());
    }

    #[test]
    fn a_page_that_branches_to_itself_is_refused() {
        let page_size = 4096;
        let mut data = vec![0u8; page_size * 3];
        for (at, txid) in [(0, 1u64), (page_size, 0)] {
            let meta = &mut data[at + PAGE_HEADER..];
            meta[0..4].copy_from_slice(&MAGIC.to_le_bytes());
            meta[4..8].copy_from_slice(&VERSION.to_le_bytes());
            meta[8..12].copy_from_slice(&(page_size as u32).to_le_bytes());
            meta[16..24].copy_from_slice(&2u64.to_le_bytes());
            meta[48..56].copy_from_slice(&txid.to_le_bytes());
            let sum = fnv1a(&meta[..56]);
            meta[56..64].copy_from_slice(&sum.to_le_bytes());
        }
        let page = &mut data[2 * page_size..];
        page[0..8].copy_from_slice(&2u64.to_le_bytes());
        page[8..10].copy_from_slice(&BRANCH_PAGE.to_le_bytes());
        page[10..12].copy_from_slice(&1u16.to_le_bytes());
        page[PAGE_HEADER + 8..PAGE_HEADER + 16].copy_from_slice(&2u64.to_le_bytes());
        let db = Bolt::open(&data).expect("valid meta pages");
        assert!(db.root().get(b"x").is_err());
    }
}
