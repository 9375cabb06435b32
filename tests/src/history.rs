//! The agent's history file in a test, and the history commands run as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use oomtrace::history::query::Listed;
use oomtrace::record::{Body, OomKillRecord};

use crate::agent_binary;

/// Where the tests keep history files: `$OOMTRACE_HISTORY_DIR` (`cargo xtask test` sets it),
/// else `target/oomtrace-test-history` in the workspace.
pub fn history_dir() -> PathBuf {
    let dir = match std::env::var_os("OOMTRACE_HISTORY_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/oomtrace-test-history"),
    };
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|err| panic!("creating the history directory {}: {err}", dir.display()));
    dir
}

/// The pid of the victim a listed record names, if it is a kill's (`oom_kill`, or
/// `oom_mark_exiting`).
pub fn victim_pid(listed: &Listed) -> Option<u32> {
    match &listed.record()?.body {
        Body::OomKill(OomKillRecord { victim, .. })
        | Body::OomMarkExiting(OomKillRecord { victim, .. }) => victim.process.pid,
        _ => None,
    }
}

/// A history file of this test's own, removed (with its -wal and -shm) when dropped.
pub struct HistoryFile {
    path: PathBuf,
    /// Made for the test, and removed with it; a deployed agent's file is left alone.
    owned: bool,
}

impl HistoryFile {
    /// A fresh path in [`history_dir`]; the agent creates the file.
    pub fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = history_dir().join(format!(
            "history-{}-{}.db",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = Self { path, owned: true };
        file.remove();
        file
    }

    /// The history a deployed agent keeps at `path`, read and never removed.
    pub fn deployed(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            owned: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `--history PATH` for the agent.
    pub fn agent_args(&self) -> [&str; 2] {
        [
            "--history",
            self.path.to_str().expect("the history path is UTF-8"),
        ]
    }

    /// `oomtrace SUBCOMMAND --history PATH ARGS…`, which must succeed; its stdout.
    pub fn run(&self, subcommand: &str, args: &[&str]) -> String {
        let output = self.run_raw(subcommand, args);
        assert!(
            output.status.success(),
            "`oomtrace {subcommand} {args:?}` failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("the history commands print UTF-8")
    }

    /// `oomtrace SUBCOMMAND --history PATH ARGS…`, whatever its outcome.
    pub fn run_raw(&self, subcommand: &str, args: &[&str]) -> Output {
        let binary = agent_binary();
        Command::new(&binary)
            .arg(subcommand)
            .arg("--history")
            .arg(&self.path)
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .unwrap_or_else(|err| panic!("running {} {subcommand}: {err}", binary.display()))
    }

    /// `oomtrace history --format json ARGS…`: the stored records, newest first, each with
    /// where it is in the history (`history.id`, what `show` takes). Panics on a row whose
    /// record the agent could not read back.
    pub fn records(&self, args: &[&str]) -> Vec<Listed> {
        let mut all_args = vec!["--format", "json"];
        all_args.extend_from_slice(args);
        let stdout = self.run("history", &all_args);
        let listed: Vec<Listed> = serde_json::from_str(&stdout).unwrap_or_else(|err| {
            panic!("`oomtrace history --format json` printed no list of records ({err}):\n{stdout}")
        });
        if let Some(unreadable) = listed.iter().find(|listed| listed.record().is_none()) {
            panic!(
                "the history holds a record it cannot read: {}",
                crate::pretty(unreadable)
            );
        }
        listed
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.path.as_os_str().to_owned();
            name.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(name));
        }
    }
}

impl Default for HistoryFile {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for HistoryFile {
    fn drop(&mut self) {
        if self.owned {
            self.remove();
        }
    }
}

/// A directory with an empty read-only tmpfs mounted on it (root writes through file modes, not
/// through a read-only mount); unmounted and removed when dropped.
pub struct ReadOnlyDir {
    path: PathBuf,
    mounted: bool,
}

impl ReadOnlyDir {
    pub fn mount() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = history_dir().join(format!(
            "read-only-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|err| panic!("creating {}: {err}", path.display()));
        let mut dir = Self {
            path,
            mounted: false,
        };
        let target = c_path(&dir.path);
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let result = unsafe {
            libc::mount(
                c"oomtrace-test-ro".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                c"size=64k".as_ptr().cast(),
            )
        };
        assert!(
            result == 0,
            "mounting a read-only tmpfs on {}: {}",
            dir.path.display(),
            std::io::Error::last_os_error()
        );
        dir.mounted = true;
        dir
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        if self.mounted {
            let target = c_path(&self.path);
            // SAFETY: a NUL-terminated path; MNT_DETACH also succeeds while a file is open.
            if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } != 0 {
                eprintln!(
                    "unmounting {}: {}",
                    self.path.display(),
                    std::io::Error::last_os_error()
                );
                return;
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn c_path(path: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt as _;
    std::ffi::CString::new(path.as_os_str().as_bytes()).expect("a path without NUL")
}
