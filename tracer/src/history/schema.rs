//! The history's schema, its migrations, and opening the file for the agent (read-write) or for
//! a query (read-only, creating nothing).

use std::path::Path;
use std::time::Duration;

use std::os::unix::fs::OpenOptionsExt as _;

use anyhow::{Context as _, bail};
use rusqlite::{Connection, OpenFlags};

/// Each entry moves the schema one version up; `PRAGMA user_version` is the number applied.
/// Never edit an entry once released: add one.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: one row per event, the full JSON record plus the columns queries filter on.
    "CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        time_ns INTEGER NOT NULL,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        boot_id TEXT NOT NULL,
        ktime_ns INTEGER NOT NULL,
        victim_pid INTEGER NOT NULL,
        victim_comm TEXT,
        container_name TEXT,
        container_id TEXT,
        pod TEXT,
        namespace TEXT,
        trigger_name TEXT,
        domain_kind TEXT,
        incident_id TEXT,
        record TEXT NOT NULL,
        -- One kill is stored once, however often it is seen (live, then again from the kernel log).
        UNIQUE (boot_id, kind, victim_pid, ktime_ns)
    );
    CREATE INDEX events_time ON events (time_ns);
    CREATE INDEX events_container ON events (container_name);
    CREATE INDEX events_incident ON events (boot_id, incident_id) WHERE incident_id IS NOT NULL;",
];

/// `PRAGMA application_id` of an oomtrace history ("oomT"), in the file's header: what says a
/// SQLite file is oomtrace's before anything is written to it.
pub(crate) const APPLICATION_ID: i32 = 0x6f6f_6d54;

/// The history's mode: kills name users, commands and containers, for root's eyes only. SQLite
/// gives its `-wal` and `-shm` files the same.
pub(crate) const FILE_MODE: u32 = 0o600;
/// Its mode with a group the operator named (`--history-group`): readable to that group too.
pub(crate) const GROUP_FILE_MODE: u32 = 0o640;

/// The history file's mode: [`FILE_MODE`], or [`GROUP_FILE_MODE`] with a group.
pub(crate) fn file_mode(group: Option<u32>) -> u32 {
    match group {
        Some(_) => GROUP_FILE_MODE,
        None => FILE_MODE,
    }
}

/// The schema version this oomtrace writes and reads.
pub(crate) fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// How long a statement waits for the other side's lock (the agent's write, a query's read).
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens (creating it and its directory if needed) the history at `path` for the agent, in WAL
/// mode, migrated to the current schema; mode 0600, or 0640 and owned by `group` when given.
pub(crate) fn open_read_write(path: &Path, group: Option<u32>) -> anyhow::Result<Connection> {
    let file_mode = file_mode(group);
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the directory {}", dir.display()))?;
    }
    // SQLite says only "unable to open database file"; the system says why.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(file_mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .context("opening it for writing")?;
    let meta = file.metadata().context("opening it for writing")?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let new = meta.len() == 0;
    if let Some(gid) = group {
        give_to_group(&file, &meta, gid)
            .with_context(|| format!("giving it to group {gid} (--history-group)"))?;
    }
    tighten(&file, &meta, path, file_mode);
    for suffix in ["-wal", "-shm"] {
        if let Ok(side) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(sibling(path, suffix))
            && let Ok(side_meta) = side.metadata()
            && side_meta.is_file()
        {
            if let Some(gid) = group
                && let Err(err) = give_to_group(&side, &side_meta, gid)
            {
                log::warn!(
                    "history: cannot give {} to group {gid}: {err}",
                    sibling(path, suffix).display()
                );
            }
            tighten(&side, &side_meta, &sibling(path, suffix), file_mode);
        }
    }
    drop(file);
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Before anything writes to it, even the journal mode.
    if new {
        conn.pragma_update(None, "application_id", APPLICATION_ID)
            .context("marking it as oomtrace's history")?;
    }
    check_writable(&conn, path)?;
    // WAL: a query never blocks the agent's writes. A commit is in the -wal file once
    // `execute` returns, so it survives the agent being killed; NORMAL skips the fsync per
    // commit, so a power cut may lose the last kills, never corrupt the file.
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .context("setting WAL mode")?;
    if !mode.eq_ignore_ascii_case("wal") {
        bail!(
            "{} cannot be put in WAL mode (journal mode {mode})",
            path.display()
        );
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Makes `gid` the file's group. The agent is a member of it ([`super::join_group`]), so this
/// needs no capability.
fn give_to_group(file: &std::fs::File, meta: &std::fs::Metadata, gid: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::fs::MetadataExt as _;
    if meta.gid() == gid {
        return Ok(());
    }
    // SAFETY: an open descriptor; uid -1 leaves the owner as it is.
    if unsafe { libc::fchown(file.as_raw_fd(), libc::uid_t::MAX, gid) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Gives the history exactly `file_mode`: takes the group's and others' permissions off a
/// history an older oomtrace (or an operator) left readable to them, and gives the group read
/// access with `--history-group`.
fn tighten(file: &std::fs::File, meta: &std::fs::Metadata, path: &Path, file_mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = meta.permissions().mode() & 0o7777;
    if mode == file_mode {
        return;
    }
    match file.set_permissions(std::fs::Permissions::from_mode(file_mode)) {
        Ok(()) => log::info!(
            "history: {} was mode {mode:04o}; now {file_mode:04o}",
            path.display()
        ),
        Err(err) => log::warn!(
            "history: {} is mode {mode:04o}, readable to others; cannot change it: {err}",
            path.display()
        ),
    }
}

/// Whether the file is oomtrace's history: its application id, or (written before there was
/// one) the tables and columns only an oomtrace history has.
fn is_oomtrace_history(conn: &Connection, path: &Path) -> anyhow::Result<bool> {
    let id: i32 = conn
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .with_context(|| format!("cannot read {}", path.display()))?;
    if id == APPLICATION_ID {
        return Ok(true);
    }
    if id != 0 {
        return Ok(false);
    }
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    if tables != ["events"] {
        return Ok(false);
    }
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('events')")?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(columns
        == [
            "id",
            "time_ns",
            "kind",
            "source",
            "boot_id",
            "ktime_ns",
            "victim_pid",
            "victim_comm",
            "container_name",
            "container_id",
            "pod",
            "namespace",
            "trigger_name",
            "domain_kind",
            "incident_id",
            "record",
        ])
}

/// Refuses a file this oomtrace does not understand rather than touching it.
fn check_writable(conn: &Connection, path: &Path) -> anyhow::Result<()> {
    let version = user_version(conn, path)?;
    // A new file was marked before this; an empty one by another program is not adopted.
    if !is_oomtrace_history(conn, path)? {
        bail!(
            "{} is not an oomtrace history (a SQLite file without oomtrace's marker): give \
             --history another path",
            path.display()
        );
    }
    if version > current_version() {
        bail!(
            "{} was written by a newer oomtrace (history schema version {version}; this one \
             knows up to {}): upgrade oomtrace, or give --history another path",
            path.display(),
            current_version()
        );
    }
    if version == 0 && table_count(conn)? > 0 {
        bail!(
            "{} is a SQLite database, but not an oomtrace history: give --history another path",
            path.display()
        );
    }
    Ok(())
}

/// Brings the schema up to date, one migration per transaction.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> anyhow::Result<()> {
    check_writable(conn, path)?;
    let version = user_version(conn, path)?;
    for (applied, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(migration)
            .with_context(|| format!("migrating {} to version {}", path.display(), applied + 1))?;
        tx.pragma_update(None, "user_version", applied as i64 + 1)?;
        tx.commit()?;
    }
    // A history from before the marker: it is oomtrace's (checked above), so say so.
    conn.pragma_update(None, "application_id", APPLICATION_ID)?;
    Ok(())
}

/// Opens the history at `path` for a query: read-only, creating nothing, so that a user who may
/// only read the file can query it. Says clearly what is wrong when it cannot.
pub(crate) fn open_read_only(path: &Path) -> anyhow::Result<Connection> {
    match std::fs::metadata(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "no history at {}: is the agent running with --history?",
            path.display()
        ),
        Err(err) => bail!("cannot read the history at {}: {err}", path.display()),
        Ok(meta) if !meta.is_file() => bail!("the history {} is not a file", path.display()),
        Ok(_) => {}
    }
    // Fails here, with the system's reason, when the file is not readable.
    std::fs::File::open(path)
        .with_context(|| format!("cannot read the history at {}", path.display()))?;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)
        .with_context(|| format!("cannot open the history at {}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    match check_readable(&conn, path) {
        Ok(()) => Ok(conn),
        // Reading a WAL database needs its -shm file. When the agent is not running there is
        // none, and a user who may not write the directory cannot create it; with no -wal
        // file either, everything is in the main file, which can then be read as immutable.
        Err(err) if is_cant_open(&err) && !sibling(path, "-wal").exists() => {
            let conn = Connection::open_with_flags(
                immutable_uri(path),
                flags | OpenFlags::SQLITE_OPEN_URI,
            )
            .with_context(|| format!("cannot open the history at {}", path.display()))?;
            check_readable(&conn, path)?;
            Ok(conn)
        }
        Err(err) => Err(err),
    }
}

fn check_readable(conn: &Connection, path: &Path) -> anyhow::Result<()> {
    let version = user_version(conn, path)?;
    if version != 0 && !is_oomtrace_history(conn, path)? {
        bail!(
            "{} is not an oomtrace history (a SQLite file without oomtrace's marker)",
            path.display()
        );
    }
    match version {
        0 => bail!(
            "{} is not an oomtrace history (a SQLite database without its schema)",
            path.display()
        ),
        v if v > current_version() => bail!(
            "{} was written by a newer oomtrace (history schema version {v}; this one reads \
             version {}): upgrade oomtrace",
            path.display(),
            current_version()
        ),
        v if v < current_version() => bail!(
            "{} was written by an older oomtrace (history schema version {v}): start the agent \
             once with this version to upgrade it",
            path.display()
        ),
        _ => Ok(()),
    }
}

fn user_version(conn: &Connection, path: &Path) -> anyhow::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
        // SQLite's own message, once: "file is not a database".
        .map_err(|err| match err {
            rusqlite::Error::SqliteFailure(_, Some(message)) => anyhow::anyhow!(message),
            err => anyhow::Error::from(err),
        })
        .with_context(|| {
            format!(
                "cannot read the history at {} (corrupt, or not an oomtrace history)",
                path.display()
            )
        })
}

fn table_count(conn: &Connection) -> anyhow::Result<i64> {
    Ok(conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
        [],
        |row| row.get(0),
    )?)
}

fn is_cant_open(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        matches!(
            cause
                .downcast_ref::<rusqlite::Error>()
                .and_then(rusqlite::Error::sqlite_error_code),
            Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::ReadOnly)
        )
    })
}

fn sibling(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// `file:PATH?immutable=1`, with the characters a URI gives meaning to escaped.
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt as _;
    let mut uri = String::from("file:");
    for &byte in path.as_os_str().as_bytes() {
        match byte {
            b'?' | b'#' | b'%' => uri.push_str(&format!("%{byte:02X}")),
            byte if byte.is_ascii() && !byte.is_ascii_control() => uri.push(char::from(byte)),
            byte => uri.push_str(&format!("%{byte:02X}")),
        }
    }
    uri.push_str("?immutable=1");
    uri
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::history::tests::temp_dir;

    #[test]
    fn an_empty_file_is_migrated_to_the_current_version() {
        let dir = temp_dir();
        let path = dir.join("empty.db");
        std::fs::write(&path, b"").unwrap();
        let conn = open_read_write(&path, None).unwrap();
        assert_eq!(user_version(&conn, &path).unwrap(), current_version());
        drop(conn);
        // And the query side reads it.
        open_read_only(&path).unwrap();
    }

    #[test]
    fn a_missing_file_and_directory_are_created_for_the_agent() {
        let dir = temp_dir();
        let path = dir.join("a/b/oomtrace.db");
        open_read_write(&path, None).unwrap();
        assert!(path.is_file());
    }

    #[test]
    fn a_current_file_opens_again_unchanged() {
        let dir = temp_dir();
        let path = dir.join("current.db");
        let conn = open_read_write(&path, None).unwrap();
        conn.execute(
            "INSERT INTO events (time_ns, kind, source, boot_id, ktime_ns, victim_pid, record)
             VALUES (1, 'oom_kill', 'live', 'b', 2, 3, '{}')",
            [],
        )
        .unwrap();
        drop(conn);
        let conn = open_read_write(&path, None).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM events", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        assert_eq!(user_version(&conn, &path).unwrap(), current_version());
    }

    #[test]
    fn a_newer_schema_is_refused_and_left_alone() {
        let dir = temp_dir();
        let path = dir.join("newer.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;")
                .unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let err = format!("{:#}", open_read_write(&path, None).unwrap_err());
        assert!(err.contains("newer oomtrace"), "{err}");
        assert!(err.contains("version 99"), "{err}");
        let err = format!("{:#}", open_read_only(&path).unwrap_err());
        assert!(err.contains("newer oomtrace"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the file was changed"
        );
    }

    #[test]
    fn another_programs_database_is_not_touched() {
        let dir = temp_dir();
        let path = dir.join("other.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE customers (name TEXT);")
            .unwrap();
        let err = format!("{:#}", open_read_write(&path, None).unwrap_err());
        assert!(err.contains("not an oomtrace history"), "{err}");
        let err = format!("{:#}", open_read_only(&path).unwrap_err());
        assert!(err.contains("not an oomtrace history"), "{err}");
    }

    #[test]
    fn the_query_side_creates_nothing_and_says_what_is_missing() {
        let dir = temp_dir();
        let path = dir.join("missing/oomtrace.db");
        let err = format!("{:#}", open_read_only(&path).unwrap_err());
        assert_eq!(
            err,
            format!(
                "no history at {}: is the agent running with --history?",
                path.display()
            )
        );
        assert!(!dir.join("missing").exists());
    }

    #[test]
    fn a_corrupt_file_is_a_clear_error() {
        let dir = temp_dir();
        let path = dir.join("corrupt.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = format!("{:#}", open_read_only(&path).unwrap_err());
        assert!(err.contains("corrupt, or not an oomtrace history"), "{err}");
        assert!(open_read_write(&path, None).is_err());
    }

    #[test]
    fn uris_escape_what_sqlite_would_parse() {
        assert_eq!(
            immutable_uri(Path::new("/var/lib/a?b#c%d.db")),
            "file:/var/lib/a%3Fb%23c%25d.db?immutable=1"
        );
    }

    #[test]
    fn a_foreign_database_with_a_version_is_refused_byte_for_byte_unchanged() {
        let dir = temp_dir();
        let path = dir.join("foreign.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE events (id INTEGER); PRAGMA user_version = 1;")
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        let err = format!("{:#}", open_read_write(&path, None).unwrap_err());
        assert!(err.contains("not an oomtrace history"), "{err}");
        let err = format!("{:#}", open_read_only(&path).unwrap_err());
        assert!(err.contains("not an oomtrace history"), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the file was changed"
        );
        assert!(!sibling(&path, "-wal").exists());
    }

    #[test]
    fn a_history_from_before_the_marker_is_adopted_and_marked() {
        let dir = temp_dir();
        let path = dir.join("older.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
        }
        let conn = open_read_write(&path, None).unwrap();
        let id: i32 = conn
            .pragma_query_value(None, "application_id", |row| row.get(0))
            .unwrap();
        assert_eq!(id, APPLICATION_ID);
    }

    #[test]
    fn the_history_is_for_roots_eyes_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = temp_dir();
        let path = dir.join("mode.db");
        let conn = open_read_write(&path, None).unwrap();
        conn.execute(
            "INSERT INTO events (time_ns, kind, source, boot_id, ktime_ns, victim_pid, record)
             VALUES (1, 'oom_kill', 'live', 'b', 2, 3, '{}')",
            [],
        )
        .unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        for file in [path.clone(), sibling(&path, "-wal"), sibling(&path, "-shm")] {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        drop(conn);
        // One an older oomtrace left readable to all is closed.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_read_write(&path, None).unwrap());
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn with_a_group_the_history_is_its_members_to_read() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        // SAFETY: no preconditions.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        // Root may give it to any group; anyone else to their own.
        let gid = if euid == 0 { 65534 } else { egid };
        let dir = temp_dir();
        let path = dir.join("group.db");
        // One left 0600 by a run without the option is opened up to the group.
        drop(open_read_write(&path, None).unwrap());
        let conn = open_read_write(&path, Some(gid)).unwrap();
        conn.execute(
            "INSERT INTO events (time_ns, kind, source, boot_id, ktime_ns, victim_pid, record)
             VALUES (1, 'oom_kill', 'live', 'b', 2, 3, '{}')",
            [],
        )
        .unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert_eq!(meta.gid(), gid);
        let wal = std::fs::metadata(sibling(&path, "-wal")).unwrap();
        assert_eq!(
            wal.permissions().mode() & 0o777,
            0o640,
            "SQLite copies the mode"
        );
        drop(conn);
        // And closed again once the option is gone.
        drop(open_read_write(&path, None).unwrap());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_fifo_or_a_symlink_is_not_a_history() {
        let dir = temp_dir();
        let fifo = dir.join("fifo.db");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(open_read_write(&fifo, None).is_err());
        let link = dir.join("link.db");
        std::os::unix::fs::symlink(dir.join("elsewhere.db"), &link).unwrap();
        assert!(open_read_write(&link, None).is_err());
        assert!(!dir.join("elsewhere.db").exists());
    }
}
