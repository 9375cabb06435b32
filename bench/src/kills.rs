//! Real OOM kills: a throw-away memory cgroup with a small limit, and hogs that outgrow it.

use std::{
    fs,
    io::Write as _,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::sys::{check_interrupted, send_signal};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Small enough that a kill takes a few milliseconds of allocation.
pub const LIMIT_BYTES: u64 = 16 << 20;
/// The hog's own cap, should the limit not apply: it fails instead of eating the host.
const HOG_MAX_MIB: &str = "256";
const HOG_TIMEOUT: Duration = Duration::from_secs(10);
const EMPTY_TIMEOUT: Duration = Duration::from_secs(5);

/// A memory cgroup with LIMIT_BYTES and no swap: v1 on hybrid and v1 hosts, v2 on pure v2 ones.
/// Its processes are killed and its directory removed on drop.
pub struct MemoryCgroup {
    dir: PathBuf,
}

impl MemoryCgroup {
    pub fn create() -> anyhow::Result<Self> {
        let root = Path::new(CGROUP_ROOT);
        let name = format!("oomtrace-bench-{}", std::process::id());
        let pure_v2 = fs::read_to_string(root.join("cgroup.controllers"))
            .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "memory"));
        if pure_v2 {
            Self::create_v2(&root.join(name))
        } else if root.join("memory/memory.limit_in_bytes").exists() {
            Self::create_v1(&root.join("memory").join(name))
        } else {
            bail!(
                "no memory controller: not in {CGROUP_ROOT}/cgroup.controllers, no {CGROUP_ROOT}/memory"
            )
        }
    }

    fn create_v1(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir(dir).with_context(|| format!("making cgroup {}", dir.display()))?;
        let cgroup = Self {
            dir: dir.to_owned(),
        };
        cgroup.write("memory.limit_in_bytes", &LIMIT_BYTES.to_string())?;
        // Memory plus swap at the same limit: no swap. It may not be set below the memory limit,
        // hence second. Absent when the kernel has no swap accounting.
        if dir.join("memory.memsw.limit_in_bytes").exists() {
            cgroup.write("memory.memsw.limit_in_bytes", &LIMIT_BYTES.to_string())?;
        }
        Ok(cgroup)
    }

    fn create_v2(dir: &Path) -> anyhow::Result<Self> {
        let subtree_control = Path::new(CGROUP_ROOT).join("cgroup.subtree_control");
        let enabled = fs::read_to_string(&subtree_control).unwrap_or_default();
        if !enabled.split_whitespace().any(|c| c == "memory") {
            write_file(&subtree_control, "+memory")?;
        }
        fs::create_dir(dir).with_context(|| format!("making cgroup {}", dir.display()))?;
        let cgroup = Self {
            dir: dir.to_owned(),
        };
        cgroup.write("memory.max", &LIMIT_BYTES.to_string())?;
        if dir.join("memory.swap.max").exists() {
            cgroup.write("memory.swap.max", "0")?;
        }
        Ok(cgroup)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Starts a hog, moves it here, then releases it; returns its pid once the OOM killer has
    /// ended it (an error if it ended any other way).
    pub fn oom_kill_one(&self, hog_binary: &Path) -> anyhow::Result<u32> {
        oom_kill_in(&self.dir, hog_binary)
    }

    fn write(&self, file: &str, value: &str) -> anyhow::Result<()> {
        write_file(&self.dir.join(file), value)
    }

    fn remove(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + EMPTY_TIMEOUT;
        loop {
            let procs = fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|pid| pid.trim().parse().ok()) {
                send_signal(pid, libc::SIGKILL);
            }
            match fs::remove_dir(&self.dir) {
                Ok(()) => return Ok(()),
                Err(err) if Instant::now() >= deadline => {
                    return Err(err).with_context(|| format!("removing {}", self.dir.display()));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        if let Err(err) = self.remove() {
            eprintln!("xtask bench: {err:#}");
        }
    }
}

/// Starts a hog, moves it into the memory cgroup at `dir` (whose limit must be small), then
/// releases it; returns its pid once the OOM killer has ended it (an error if it ended any other
/// way).
pub fn oom_kill_in(dir: &Path, hog_binary: &Path) -> anyhow::Result<u32> {
    check_interrupted()?;
    let mut hog = Hog::spawn(hog_binary)?;
    // Into the cgroup before it allocates anything, so that its memory is charged here.
    write_file(&dir.join("cgroup.procs"), &hog.pid().to_string())?;
    hog.release()?;
    hog.wait_oom_killed()?;
    Ok(hog.pid())
}

/// A running `oomtrace-hog`; killed and reaped on drop if still running.
struct Hog {
    child: Child,
}

impl Hog {
    fn spawn(binary: &Path) -> anyhow::Result<Self> {
        let child = Command::new(binary)
            .args(["--max-mib", HOG_MAX_MIB])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Ok(Self { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes the byte the hog waits for before allocating.
    fn release(&mut self) -> anyhow::Result<()> {
        let mut stdin = self.child.stdin.take().context("the hog has no stdin")?;
        stdin.write_all(b"x").context("releasing the hog")
    }

    fn wait_oom_killed(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + HOG_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().context("waiting for the hog")? {
                if status.signal() == Some(libc::SIGKILL) {
                    return Ok(());
                }
                bail!(
                    "the hog (pid {}) ended with {status}, not by the OOM killer",
                    self.pid()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "the hog (pid {}) still runs after {HOG_TIMEOUT:?}",
                    self.pid()
                );
            }
            std::thread::sleep(Duration::from_micros(500));
        }
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

fn write_file(path: &Path, value: &str) -> anyhow::Result<()> {
    fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}
