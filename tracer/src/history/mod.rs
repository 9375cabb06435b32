//! The durable history: every `oom_kill` and `sigkill` the agent reports, stored in an embedded
//! SQLite database (WAL mode) as it is written out, under an id its outputs name, and read back
//! by `oomtrace history`, `show` and `stats` (see `crate::report`).
//!
//! - [`schema`]: the table, its migrations, opening the file read-write or read-only.
//! - [`row`]: an event's row: its record, as JSON, and the columns queries filter on.
//! - [`store`]: inserting (each event once), matching a backfilled kill, retention.
//! - [`writer`]: the agent's writer thread behind a bounded queue; live events and kernel-log
//!   backfills both go through it, so one connection writes the file, and each row's id is
//!   known before it is stored.
//! - [`query`]: what the report commands ask.

pub mod query;
pub mod row;
pub(crate) mod schema;
pub mod store;
pub(crate) mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use self::row::{EventRow, Origin};
use self::store::Retention;
use self::writer::HistoryWriter;
use crate::record::{HistoryRef, Record};

/// Where the agent keeps its history unless told otherwise.
pub const DEFAULT_PATH: &str = "/var/lib/oomtrace/oomtrace.db";

/// Makes the agent a member of group `gid` (`--history-group`), so that it can give the history
/// file to that group without `CAP_CHOWN`, and SQLite its `-wal` and `-shm` files. Done before
/// the capabilities are dropped and before any thread starts (each thread keeps its own groups).
pub fn join_group(gid: u32) -> std::io::Result<()> {
    // SAFETY: a null list of size 0 asks only for the count.
    let count = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    let mut groups = vec![0; usize::try_from(count).map_err(|_| std::io::Error::last_os_error())?];
    // SAFETY: `groups` holds `count` entries.
    let count = unsafe { libc::getgroups(count, groups.as_mut_ptr()) };
    groups.truncate(usize::try_from(count).map_err(|_| std::io::Error::last_os_error())?);
    // SAFETY: getegid has no preconditions.
    if groups.contains(&gid) || unsafe { libc::getegid() } == gid {
        return Ok(());
    }
    groups.push(gid);
    // SAFETY: `groups` is a valid list of its length.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The agent's history: the writer, and this boot's id for every row.
pub struct History {
    writer: HistoryWriter,
    boot_id: String,
}

impl History {
    /// Starts the writer of the history at `path`; the file is `group`'s too when given.
    pub fn start(path: PathBuf, retention: Retention, group: Option<u32>) -> std::io::Result<Self> {
        Ok(History {
            writer: HistoryWriter::start(path, retention, group)?,
            boot_id: boot_id(),
        })
    }

    /// Events that could not be stored; shared, so a metrics endpoint can read it.
    pub fn error_counter(&self) -> Arc<AtomicU64> {
        self.writer.error_counter()
    }

    /// Where `record` will be stored, if the history keeps its kind (kills), decided now
    /// without waiting for the disk; `None` too while the history takes no writes (it is stored
    /// later all the same). The record then goes to [`History::store`].
    pub fn place(&mut self, record: &Record) -> Option<HistoryRef> {
        let key = EventRow::key_of(record)?;
        let id = self.writer.reserve(key)?;
        Some(HistoryRef {
            id,
            source: Origin::Live.as_str().to_owned(),
            boot_id: self.boot_id.clone(),
        })
    }

    /// Hands `record` to the history's writer, under the id [`History::place`] put in it (its
    /// `history`, which the stored record leaves out: the row's columns say it), if the history
    /// keeps its kind. Waits only while the writer's queue is full.
    pub async fn store(&mut self, mut record: Record) {
        if !EventRow::keeps(&record) {
            return;
        }
        let id = record.history.take().map(|place| place.id);
        match EventRow::from_record(&record, Origin::Live, &self.boot_id) {
            Ok(row) => self.writer.send(row, id).await,
            Err(err) => log::error!("history: a record cannot be stored: {err:#}"),
        }
    }

    /// Stores kills recovered from the kernel log (from this boot), each unless a kill of its
    /// pid within `tolerance` of its kernel time is known already: traced live, or backfilled by
    /// an earlier run.
    pub async fn backfill(
        &mut self,
        records: &[Record],
        tolerance: std::time::Duration,
    ) -> anyhow::Result<writer::Backfilled> {
        let rows = records
            .iter()
            .map(|record| EventRow::from_record(record, Origin::Kmsg, &self.boot_id))
            .collect::<anyhow::Result<Vec<_>>>()?;
        self.writer.backfill(rows, tolerance).await
    }

    /// Gives back the memory SQLite's page cache took in a burst, once it is over.
    pub async fn release_memory(&mut self) {
        self.writer.release_memory().await;
    }

    /// Stores what is queued and closes the file.
    pub fn close(self) {
        self.writer.close();
    }
}

/// This boot's id: pids and kernel times are only unique within one boot.
fn boot_id() -> String {
    const PATH: &str = "/proc/sys/kernel/random/boot_id";
    match std::fs::read_to_string(PATH) {
        Ok(id) => id.trim().to_owned(),
        Err(err) => {
            log::warn!("history: reading {PATH}: {err}; kills are stored under boot `unknown`");
            "unknown".to_owned()
        }
    }
}

#[cfg(test)]
pub mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::row::{EventKind, EventRow, Origin};

    /// A directory removed when dropped.
    pub struct TempDir(PathBuf);

    impl std::ops::Deref for TempDir {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub fn temp_dir() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "oomtrace-history-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// An `oom_kill` of `pid` at `time_ns` in a boot called `boot`, its record minimal.
    pub fn synthetic_row(pid: u32, time_ns: i64) -> EventRow {
        let record = crate::record::tests::from_value(serde_json::json!({
            "schema_version": 1, "kind": "oom_kill",
            "time": jiff::Timestamp::from_nanosecond(i128::from(time_ns)).unwrap().to_string(),
            "ktime_ns": 1_000_000 + u64::from(pid),
            "victim": {"process": {"pid": pid, "executable": {"name": "hog"}}},
            "trigger": {"process": {"pid": pid, "executable": {"name": "hog"}}},
            "domain": {"kind": "cgroup"}
        }));
        let row = EventRow::from_record(&record, Origin::Live, "boot").unwrap();
        assert_eq!(row.kind, EventKind::OomKill);
        row
    }
}
