//! The agent's side of the history: inserting events, skipping ones already known, and keeping
//! the file within its retention.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension as _, params};

use super::row::{EventKind, EventRow};
use super::schema;

/// How long and how much history is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Duration,
    /// All rows together.
    pub max_rows: u64,
    /// SIGKILL rows, part of `max_rows`. Any user can send SIGKILLs by the thousand; the rest
    /// of `max_rows` is the OOM kills' own, so that a flood of them never evicts one.
    pub max_sigkill_rows: u64,
}

impl Retention {
    /// SIGKILLs get a tenth of the rows.
    pub fn new(max_age: Duration, max_rows: u64) -> Self {
        Retention {
            max_age,
            max_rows,
            max_sigkill_rows: max_rows / 10,
        }
    }
}

/// Retention is applied at startup and after this many inserts: no timer wakes an idle agent,
/// and a busy one trims a little at a time.
const RETENTION_EVERY: u32 = 100;

/// What an insert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    /// Stored under this id.
    New(i64),
    /// Already stored (the same boot, kind, pid and kernel time, or for a backfilled kill, a kill
    /// of that pid near that time): nothing written.
    Known,
}

/// The ids of the history's rows, handed out before the rows are stored: the agent is the
/// history's only writer, so the next id is known in memory, and a kill's outputs can say where
/// it is stored without waiting for the disk. Shared by the writer thread and the output side.
///
/// Ids only grow while the agent runs: a row that retention deletes never gives its id to
/// another. At start the next id is one past the file's highest, as SQLite would choose it. An
/// id handed out whose row is then given up (a disk that never took writes again) stays unused.
#[derive(Debug, Default)]
pub struct Ids {
    /// The next id; 0 until the history was opened.
    next: AtomicI64,
    /// Whether rows are stored as they come: the history is open and none waits to be stored.
    taking_writes: AtomicBool,
}

impl Ids {
    /// An id for a row the writer will store, if the history takes writes now; `None` while it
    /// is not open, or while earlier rows wait for the disk (those get their id when stored).
    pub fn reserve(&self) -> Option<i64> {
        if !self.taking_writes.load(Ordering::Acquire) || self.next.load(Ordering::Acquire) == 0 {
            return None;
        }
        Some(self.next.fetch_add(1, Ordering::AcqRel))
    }

    /// An id for a row stored now; only once the history was opened.
    fn take(&self) -> i64 {
        self.next.fetch_add(1, Ordering::AcqRel)
    }

    /// The history was opened and its highest id is `highest`: never hand out one at or below it.
    fn opened(&self, highest: i64) {
        self.next
            .fetch_max(highest.saturating_add(1), Ordering::AcqRel);
    }

    /// Whether rows are stored as they come (see [`Ids::reserve`]).
    pub fn set_taking_writes(&self, taking: bool) {
        self.taking_writes.store(taking, Ordering::Release);
    }
}

pub struct Store {
    conn: Connection,
    retention: Retention,
    inserts_since_retention: u32,
    ids: Arc<Ids>,
}

impl Store {
    /// Opens (creating and migrating) the history at `path` and applies the retention; the
    /// file is `group`'s too when given (`--history-group`).
    pub fn open(path: &Path, retention: Retention, group: Option<u32>) -> anyhow::Result<Self> {
        Self::open_with(path, retention, group, Arc::default())
    }

    /// [`Store::open`], its rows numbered by `ids`, which it brings in step with the file.
    pub fn open_with(
        path: &Path,
        retention: Retention,
        group: Option<u32>,
        ids: Arc<Ids>,
    ) -> anyhow::Result<Self> {
        let conn = schema::open_read_write(path, group)?;
        let highest: i64 =
            conn.query_row("SELECT coalesce(max(id), 0) FROM events", [], |row| {
                row.get(0)
            })?;
        ids.opened(highest);
        let mut store = Store {
            conn,
            retention,
            inserts_since_retention: 0,
            ids,
        };
        store.apply_retention(jiff::Timestamp::now())?;
        Ok(store)
    }

    /// Stores `row` under the next id, unless the same event is stored already.
    pub fn insert(&mut self, row: &EventRow) -> anyhow::Result<Inserted> {
        let id = self.ids.take();
        self.insert_as(row, id)
    }

    /// Stores `row` under `id` (handed out by [`Ids::reserve`]) in one committed transaction,
    /// unless the same event is stored already.
    pub fn insert_as(&mut self, row: &EventRow, id: i64) -> anyhow::Result<Inserted> {
        let EventRow {
            time_ns,
            kind,
            source,
            boot_id,
            ktime_ns,
            victim_pid,
            victim_comm,
            container_name,
            container_id,
            pod,
            namespace,
            trigger_name,
            domain_kind,
            incident_id,
            record,
        } = row;
        let changed = self.conn.execute(
            // Only the same event is skipped: an id already taken is an error, never a skip.
            "INSERT INTO events (time_ns, kind, source, boot_id, ktime_ns, victim_pid,
                 victim_comm, container_name, container_id, pod, namespace, trigger_name,
                 domain_kind, incident_id, record, id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT (boot_id, kind, victim_pid, ktime_ns) DO NOTHING",
            params![
                time_ns,
                kind.as_str(),
                source.as_str(),
                boot_id,
                ktime_i64(*ktime_ns),
                victim_pid,
                victim_comm,
                container_name,
                container_id,
                pod,
                namespace,
                trigger_name,
                domain_kind,
                incident_id,
                record,
                id,
            ],
        )?;
        if changed == 0 {
            return Ok(Inserted::Known);
        }
        self.inserts_since_retention += 1;
        if self.inserts_since_retention >= RETENTION_EVERY {
            self.apply_retention(jiff::Timestamp::now())?;
        }
        Ok(Inserted::New(id))
    }

    /// The id of an `oom_kill` of `pid` in boot `boot_id` within `tolerance` of `ktime_ns`, if
    /// one is stored. The kernel log's timestamps are not the tracer's clock to the nanosecond,
    /// so a kill recovered from it is matched by pid and nearness.
    pub fn known_kill(
        &self,
        boot_id: &str,
        pid: u32,
        ktime_ns: u64,
        tolerance: Duration,
    ) -> anyhow::Result<Option<i64>> {
        let tolerance = i64::try_from(tolerance.as_nanos()).unwrap_or(i64::MAX);
        let at = ktime_i64(ktime_ns);
        Ok(self
            .conn
            .query_row(
                "SELECT id FROM events
                 WHERE boot_id = ?1 AND kind = ?2 AND victim_pid = ?3
                   AND ktime_ns BETWEEN ?4 AND ?5
                 ORDER BY abs(ktime_ns - ?6) LIMIT 1",
                params![
                    boot_id,
                    EventKind::OomKill.as_str(),
                    pid,
                    at.saturating_sub(tolerance),
                    at.saturating_add(tolerance),
                    at,
                ],
                |row| row.get(0),
            )
            .optional()?)
    }

    /// Stores a kill recovered from the kernel log, unless the same kill (its pid within
    /// `tolerance` of its time, this boot) is stored already, live or from an earlier backfill.
    pub fn insert_backfilled(
        &mut self,
        row: &EventRow,
        tolerance: Duration,
    ) -> anyhow::Result<Inserted> {
        if self
            .known_kill(&row.boot_id, row.victim_pid, row.ktime_ns, tolerance)?
            .is_some()
        {
            return Ok(Inserted::Known);
        }
        self.insert(row)
    }

    /// Deletes what is older than the retention's age, then the oldest rows past its count.
    /// Returns how many rows went.
    pub fn apply_retention(&mut self, now: jiff::Timestamp) -> anyhow::Result<u64> {
        self.inserts_since_retention = 0;
        let Retention {
            max_age,
            max_rows,
            max_sigkill_rows,
        } = self.retention;
        let max_sigkill_rows = max_sigkill_rows.min(max_rows);
        let max_other_rows = max_rows - max_sigkill_rows;
        let max_age = i64::try_from(max_age.as_nanos()).unwrap_or(i64::MAX);
        let cutoff = i64::try_from(now.as_nanosecond())
            .unwrap_or(i64::MAX)
            .saturating_sub(max_age);
        let tx = self.conn.transaction()?;
        let by_age = tx.execute("DELETE FROM events WHERE time_ns < ?1", [cutoff])?;
        let mut by_count = 0;
        for (kinds, keep) in [
            ("kind = ?2", max_sigkill_rows),
            ("kind <> ?2", max_other_rows),
        ] {
            by_count += tx.execute(
                &format!(
                    "DELETE FROM events WHERE id IN
                         (SELECT id FROM events WHERE {kinds}
                          ORDER BY time_ns DESC, id DESC LIMIT -1 OFFSET ?1)"
                ),
                params![
                    i64::try_from(keep).unwrap_or(i64::MAX),
                    EventKind::Sigkill.as_str()
                ],
            )?;
        }
        tx.commit()?;
        Ok((by_age + by_count) as u64)
    }

    /// Frees what SQLite caches for this connection (its pages); the next write reads
    /// its pages back from the OS's cache.
    pub fn release_memory(&self) {
        if let Err(err) = self.conn.execute_batch("PRAGMA shrink_memory") {
            log::debug!("history: releasing memory: {err}");
        }
    }

    /// For tests, and for the fuzz target that checks queries against this store.
    #[cfg(any(test, fuzzing))]
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// Kernel times fit SQLite's signed integers for 292 years of uptime.
fn ktime_i64(ktime_ns: u64) -> i64 {
    i64::try_from(ktime_ns).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::row::Origin;
    use crate::history::tests::{TempDir, synthetic_row, temp_dir};

    const DAY_NS: i64 = 86_400 * 1_000_000_000;

    fn store(retention: Retention) -> (TempDir, Store) {
        let dir = temp_dir();
        let store = Store::open(&dir.join("store.db"), retention, None).unwrap();
        (dir, store)
    }

    fn roomy() -> Retention {
        Retention::new(Duration::from_secs(3650 * 86_400), 1_000_000)
    }

    fn count(store: &Store) -> i64 {
        store
            .connection()
            .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn the_same_kill_is_stored_once() {
        let (_dir, mut store) = store(roomy());
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        let row = synthetic_row(1, now);
        assert!(matches!(store.insert(&row).unwrap(), Inserted::New(_)));
        assert_eq!(store.insert(&row).unwrap(), Inserted::Known);
        // Another boot's pid 1 at the same kernel time is another kill.
        let other_boot = EventRow {
            boot_id: "another-boot".into(),
            ..row.clone()
        };
        assert!(matches!(
            store.insert(&other_boot).unwrap(),
            Inserted::New(_)
        ));
        assert_eq!(count(&store), 2);
    }

    #[test]
    fn a_backfilled_kill_near_a_known_one_is_skipped() {
        let (_dir, mut store) = store(roomy());
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        let live = synthetic_row(7, now);
        let Inserted::New(id) = store.insert(&live).unwrap() else {
            panic!("stored");
        };
        let tolerance = Duration::from_millis(50);
        let near = live.ktime_ns + 20_000_000;
        assert_eq!(
            store.known_kill(&live.boot_id, 7, near, tolerance).unwrap(),
            Some(id)
        );
        assert_eq!(
            store
                .known_kill(&live.boot_id, 7, live.ktime_ns + 80_000_000, tolerance)
                .unwrap(),
            None
        );
        assert_eq!(store.known_kill("other", 7, near, tolerance).unwrap(), None);
        let backfilled = EventRow {
            source: Origin::Kmsg,
            ktime_ns: near,
            ..live.clone()
        };
        assert_eq!(
            store.insert_backfilled(&backfilled, tolerance).unwrap(),
            Inserted::Known
        );
        let later = EventRow {
            ktime_ns: live.ktime_ns + 5_000_000_000,
            ..backfilled
        };
        assert!(matches!(
            store.insert_backfilled(&later, tolerance).unwrap(),
            Inserted::New(_)
        ));
        assert_eq!(count(&store), 2);
    }

    #[test]
    fn retention_drops_what_is_too_old() {
        let (_dir, mut store) = store(Retention {
            max_age: Duration::from_secs(30 * 86_400),
            ..roomy()
        });
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        for (pid, age_days) in [(1, 0), (2, 29), (3, 31), (4, 400)] {
            store
                .insert(&synthetic_row(pid, now - age_days * DAY_NS))
                .unwrap();
        }
        assert_eq!(store.apply_retention(jiff::Timestamp::now()).unwrap(), 2);
        let mut kept: Vec<u32> = store
            .connection()
            .prepare("SELECT victim_pid FROM events")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        kept.sort_unstable();
        assert_eq!(kept, [1, 2]);
    }

    #[test]
    fn retention_keeps_the_newest_rows_and_runs_as_rows_arrive() {
        let (_dir, mut store) = store(Retention {
            max_rows: 50,
            max_sigkill_rows: 0,
            ..roomy()
        });
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        // Inserted out of time order, as a backfill would.
        for pid in 0..(RETENTION_EVERY * 2) {
            let age = i64::from((pid * 37) % 200);
            store
                .insert(&synthetic_row(pid, now - age * 1_000_000_000))
                .unwrap();
        }
        // Applied by the inserts themselves, no call needed.
        assert_eq!(count(&store), 50);
        let oldest_kept: i64 = store
            .connection()
            .query_row("SELECT min(time_ns) FROM events", [], |row| row.get(0))
            .unwrap();
        assert_eq!(oldest_kept, now - 49 * 1_000_000_000);
    }

    #[test]
    fn a_sigkill_flood_never_evicts_an_oom_kill() {
        let (_dir, mut store) = store(Retention::new(roomy().max_age, 300));
        let now = jiff::Timestamp::now().as_nanosecond() as i64;
        for pid in 0..2 {
            store
                .insert(&synthetic_row(pid, now - 1_000_000_000))
                .unwrap();
        }
        for pid in 100..700 {
            let sigkill = EventRow {
                kind: EventKind::Sigkill,
                ..synthetic_row(pid, now + i64::from(pid))
            };
            store.insert(&sigkill).unwrap();
        }
        store.apply_retention(jiff::Timestamp::now()).unwrap();
        let kinds: Vec<(String, i64)> = store
            .connection()
            .prepare("SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            kinds,
            [("oom_kill".to_owned(), 2), ("sigkill".to_owned(), 30)],
            "the OOM kills keep their share; the newest SIGKILLs fill theirs"
        );
        let newest: u32 = store
            .connection()
            .query_row(
                "SELECT min(victim_pid) FROM events WHERE kind = 'sigkill'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(newest, 670);
    }
}
