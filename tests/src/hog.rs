//! The memory hog (`src/bin/oomtrace-hog.rs`), run in a cgroup.

use std::ffi::CString;
use std::io::{self, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{MemoryCgroup, wait_timeout};

const MIB: u64 = 1 << 20;

/// The hog: `$OOMTRACE_HOG` (the guests' runner sets it), else the one cargo built next to the
/// running test binary (`target/…/deps/<test>` → `target/…/oomtrace-hog`). A test that also
/// runs in the kernel matrix's guests must find it here: `env!("CARGO_BIN_EXE_oomtrace-hog")`
/// is a path on the machine that built it.
pub fn hog_binary() -> PathBuf {
    let binary = match std::env::var_os("OOMTRACE_HOG") {
        Some(path) => PathBuf::from(path),
        None => {
            let test = std::env::current_exe().expect("the path of the running test binary");
            let profile_dir = test
                .parent()
                .and_then(Path::parent)
                .expect("a test binary in target/…/deps/");
            profile_dir.join("oomtrace-hog")
        }
    };
    assert!(
        binary.is_file(),
        "the hog {} does not exist: cargo builds it with the tests; elsewhere set OOMTRACE_HOG",
        binary.display()
    );
    binary
}

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
        let max_mib = (cgroup.limit_bytes().saturating_mul(4) / MIB).max(16);
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

    /// A hog that joins `cgroup` before it runs (so nothing it touches is charged elsewhere)
    /// and allocates at once (`--no-wait`), with `options` (e.g. `["--max-mib", "1",
    /// "--hold"]`); its output goes nowhere. For many members of one cgroup at once: no pipes.
    pub fn spawn_started_in(
        binary: impl AsRef<Path>,
        cgroup: &MemoryCgroup,
        options: &[&str],
    ) -> Self {
        let binary = binary.as_ref();
        let procs_files: Vec<CString> = cgroup
            .procs_files()
            .iter()
            .map(|path| CString::new(path.as_os_str().as_bytes()).expect("a path without NUL"))
            .collect();
        let mut command = Command::new(binary);
        command
            .arg("--no-wait")
            .args(options)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: between fork and exec the closure only makes system calls (open, write,
        // close) on memory prepared before the fork: nothing allocates or takes a lock.
        unsafe {
            command.pre_exec(move || {
                for path in &procs_files {
                    join_cgroup(path)?;
                }
                Ok(())
            });
        }
        let child = command.spawn().unwrap_or_else(|err| {
            panic!(
                "spawning the hog {} in {}: {err}",
                binary.display(),
                cgroup.path()
            )
        });
        Self { child, start: None }
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

/// Moves the calling process into the cgroup of `procs_file` ("0" is the writer itself).
/// Called between fork and exec: system calls only.
fn join_cgroup(procs_file: &CString) -> io::Result<()> {
    // SAFETY: a NUL-terminated path that outlives the call.
    let fd = unsafe { libc::open(procs_file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: writes one byte from a static buffer to the descriptor just opened.
    let written = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
    let result = if written == 1 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    };
    // SAFETY: closes the descriptor opened above, once.
    unsafe { libc::close(fd) };
    result
}
