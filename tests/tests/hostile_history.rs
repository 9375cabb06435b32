//! The history against hostile disks: another application's SQLite file named as the history
//! is left byte-identical; a history on a full tmpfs keeps the kills it could not store and
//! stores them once space comes back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use oomtrace::record::{Body, Record};
use oomtrace_tests::{Agent, Hog, MemoryCgroup, require_root};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");

/// A scratch directory, removed (unmounted first, if it is a mount) when dropped.
struct Scratch {
    dir: PathBuf,
    mounted: bool,
}

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("oomtrace-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Scratch {
            dir,
            mounted: false,
        }
    }

    fn mount_tmpfs(&mut self, size: &str) {
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&self.dir)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a tmpfs on {}",
            self.dir.display()
        );
        self.mounted = true;
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

#[test]
fn another_applications_sqlite_file_is_left_byte_identical() {
    require_root();
    let scratch = Scratch::new("foreign-history");
    let path = scratch.dir.join("customers.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("a SQLite file");
        conn.execute_batch(
            "CREATE TABLE events (id INTEGER PRIMARY KEY, customer TEXT);
             INSERT INTO events (customer) VALUES ('ada');
             PRAGMA user_version = 1;",
        )
        .expect("another application's schema");
    }
    let before = std::fs::read(&path).expect("the file");
    let path_arg = path.to_str().expect("a UTF-8 path");
    let agent = Agent::start_with(&["--history", path_arg]);
    agent.wait_for_log("history: cannot open", Duration::from_secs(10));
    let stopped = agent.stop();
    assert_eq!(
        std::fs::read(&path).expect("the file"),
        before,
        "the file was changed; log:\n{}",
        stopped.stderr
    );
    for suffix in ["-wal", "-shm", "-journal"] {
        assert!(!sibling(&path, suffix).exists(), "{suffix} was created");
    }
    assert!(
        stopped.stderr.contains("not an oomtrace history"),
        "the log says why:\n{}",
        stopped.stderr
    );
    println!("another application's SQLite file: refused, byte-identical");
}

#[test]
fn kills_stored_late_once_a_full_disk_frees_space() {
    require_root();
    let mut scratch = Scratch::new("full-history");
    scratch.mount_tmpfs("4m");
    let history = scratch.dir.join("oomtrace.db");
    let history_arg = history.to_str().expect("a UTF-8 path");
    let mut agent = Agent::start_with(&["--history", history_arg]);
    agent.wait_for_log("history: storing kills in", Duration::from_secs(10));

    // Fill what is left, to the last block.
    let filler = scratch.dir.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4096"])
        .arg(format!("of={}", filler.display()))
        .status();
    let cgroup = MemoryCgroup::create(48 << 20);
    let pids: Vec<u32> = (0..2)
        .map(|_| Hog::spawn_in(HOG, &cgroup).wait_oom_killed(Duration::from_secs(30)))
        .collect();
    let kills = agent.wait_for_kills(&pids, Duration::from_secs(30));
    assert_eq!(kills.len(), 2, "both kills reported while the disk is full");
    std::thread::sleep(Duration::from_secs(3));
    std::fs::remove_file(&filler).expect("freeing the space");
    std::thread::sleep(Duration::from_secs(5));

    let stopped = agent.stop();
    let stopped_body = stopped.agent_stopped();
    assert_eq!(
        stopped_body.totals.history_write_errors, 0,
        "nothing given up; log:\n{}",
        stopped.stderr
    );
    let output = Command::new(oomtrace_tests::agent_binary())
        .args(["history", "--history", history_arg, "--kind", "oom_kill"])
        .args(["--format", "jsonl", "--limit", "1000"])
        .output()
        .expect("oomtrace history");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored: Vec<Record> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a typed record"))
        .collect();
    for pid in &pids {
        assert!(
            stored.iter().any(|record| matches!(
                &record.body,
                Body::OomKill(kill) if kill.victim.process.pid == Some(*pid)
            )),
            "the kill of {pid}, refused by the full disk, was never stored; log:\n{}",
            stopped.stderr
        );
    }
    assert!(
        stopped.stderr.contains("stored late"),
        "the disk was full when they came:\n{}",
        stopped.stderr
    );
    println!("two kills on a full tmpfs: both stored once space came back");
}

/// The history commands as people type them: piped into a reader that stops early, with an
/// empty filter, and with a far RFC 3339 bound.
#[test]
fn the_history_commands_take_pipes_empty_filters_and_far_times() {
    require_root();
    let history = oomtrace_tests::HistoryFile::new();
    let cgroup = MemoryCgroup::create(48 << 20);
    let mut agent = Agent::start_with(&history.agent_args());
    let pid = Hog::spawn_in(HOG, &cgroup).wait_oom_killed(Duration::from_secs(30));
    assert_eq!(
        agent.wait_for_kills(&[pid], Duration::from_secs(30)).len(),
        1
    );
    agent.stop();

    let binary = oomtrace_tests::agent_binary();
    let path = history.path().to_str().expect("a UTF-8 path");
    // The reader is gone before the first line is written.
    let piped = Command::new("bash")
        .args(["-o", "pipefail", "-c"])
        .arg(format!(
            "'{}' history --history '{path}' --format json | true",
            binary.display()
        ))
        .output()
        .expect("running bash");
    assert!(
        piped.status.success() && piped.stderr.is_empty(),
        "`history | true` ended with {} and said {:?}",
        piped.status,
        String::from_utf8_lossy(&piped.stderr)
    );

    let empty = history.run_raw("history", &["--container", ""]);
    assert_eq!(
        empty.status.code(),
        Some(2),
        "an empty --container is refused"
    );
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("matches every kill"),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );

    let far = history.run(
        "history",
        &["--until", "9999-12-31T23:59:59Z", "--format", "jsonl"],
    );
    assert!(
        far.lines().any(|line| {
            serde_json::from_str::<Record>(line).is_ok_and(|record| {
                matches!(&record.body, Body::OomKill(kill) if kill.victim.process.pid == Some(pid))
            })
        }),
        "the kill of {pid} is before 9999-12-31T23:59:59Z:\n{far}"
    );
    println!("history | true exits 0 quietly; --container \"\" is refused; 9999-12-31 is a bound");
}
