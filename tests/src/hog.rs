//! The memory hog (`src/bin/oomtrace-hog.rs`), run in a cgroup.

use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{MemoryCgroup, wait_timeout};

const MIB: u64 = 1 << 20;

/// A running `oomtrace-hog`, which allocates until the OOM killer ends it.
pub struct Hog {
    child: Child,
    /// Writing a byte here makes the hog start allocating.
    start: Option<ChildStdin>,
}

impl Hog {
    /// Spawns the hog at `binary` (tests pass `env!("CARGO_BIN_EXE_oomtrace-hog")`, which
    /// cargo only sets for them) in `cgroup`, and releases it.
    pub fn spawn_in(binary: impl AsRef<Path>, cgroup: &MemoryCgroup) -> Self {
        let mut hog = Self::spawn_held_in(binary, cgroup);
        hog.release();
        hog
    }

    /// Spawns the hog in `cgroup` without letting it allocate yet: see [`release`](Self::release).
    pub fn spawn_held_in(binary: impl AsRef<Path>, cgroup: &MemoryCgroup) -> Self {
        Self::spawn_held_with(binary, cgroup, &[])
    }

    /// [`spawn_in`](Self::spawn_in) with the hog's options, e.g. `["--mib-per-second", "32"]`
    /// or `["--hold", "--max-mib", "64"]` (they come last, so they win).
    pub fn spawn_with(binary: impl AsRef<Path>, cgroup: &MemoryCgroup, options: &[&str]) -> Self {
        let mut hog = Self::spawn_held_with(binary, cgroup, options);
        hog.release();
        hog
    }

    /// [`spawn_held_in`](Self::spawn_held_in) with the hog's options.
    pub fn spawn_held_with(
        binary: impl AsRef<Path>,
        cgroup: &MemoryCgroup,
        options: &[&str],
    ) -> Self {
        // Well past the limit, so reaching it means the limit did not work; yet bounded.
        let max_mib = (4 * cgroup.limit_bytes() / MIB).max(16);
        let binary = binary.as_ref();
        let mut child = Command::new(binary)
            .args(["--max-mib", &max_mib.to_string()])
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("spawning the hog {}: {err}", binary.display()));
        let start = child.stdin.take();
        let hog = Self { child, start };
        cgroup.add(hog.pid());
        hog
    }

    /// Makes the OOM killer pick this hog first (1000) or never (-1000).
    pub fn set_oom_score_adj(&self, adj: i32) {
        let path = format!("/proc/{}/oom_score_adj", self.pid());
        std::fs::write(&path, adj.to_string())
            .unwrap_or_else(|err| panic!("writing {adj} to {path}: {err}"));
    }

    /// Waits until a `--hold` hog holds its memory (it says so on stdout).
    pub fn wait_holding(&mut self) {
        use std::io::BufRead as _;
        let stdout = self
            .child
            .stdout
            .take()
            .expect("the hog's stdout is read once");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the hog's stdout");
        assert!(
            line.starts_with("held "),
            "the hog (pid {}) should say it holds its memory, it said {line:?}",
            self.pid()
        );
    }

    /// Lets the hog allocate.
    pub fn release(&mut self) {
        let mut start = self.start.take().expect("the hog is released only once");
        start
            .write_all(b"\n")
            .expect("writing the start byte to the hog");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the hog to end; panics (after killing it) if it still runs after `timeout`.
    pub fn wait(mut self, timeout: Duration) -> ExitStatus {
        wait_timeout(&mut self.child, timeout).unwrap_or_else(|| {
            panic!(
                "the hog (pid {}) still runs after {timeout:?}: no OOM kill ended it",
                self.pid()
            )
        })
    }

    /// Waits up to `timeout` for the hog to end and panics unless the OOM killer's SIGKILL
    /// ended it. Returns its pid.
    pub fn wait_oom_killed(self, timeout: Duration) -> u32 {
        let pid = self.pid();
        let status = self.wait(timeout);
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "the OOM killer should SIGKILL hog {pid}, it ended with {status}"
        );
        pid
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
