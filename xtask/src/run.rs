//! `build` and `run`: the agent binary, and running it as a user would.

use std::io::{self, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::{os::unix::process::CommandExt as _, path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::setup::{Env, is_root, run as run_command};

#[derive(clap::Args)]
pub struct Options {
    /// Arguments for `oomtrace run`, e.g. `cargo xtask run -- --format json`.
    #[arg(last = true)]
    args: Vec<String>,
}

pub fn build(env: &Env) -> anyhow::Result<()> {
    run_command(
        env.cargo()
            .args(["build", "--release", "--package", "tracer"]),
    )
}

/// The release agent, as `build` leaves it.
pub fn agent_binary() -> PathBuf {
    target_dir().join("release/oomtrace")
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_owned()
}

/// `cargo xtask run -- --format json > kills.jsonl` must give a file of JSON Lines, even on the
/// first run, when apt, rustup and cargo have much to say while they install and build. So
/// from the start of the task until the agent is executed, file descriptor 1 is a copy of 2:
/// whatever xtask or anything it runs prints lands on stderr, and the agent gets stdout back.
pub struct StdoutReserved {
    stdout: OwnedFd,
}

impl StdoutReserved {
    pub fn hold() -> io::Result<Self> {
        io::stdout().flush()?;
        // Close-on-exec: the programs run meanwhile must not inherit the real stdout.
        // SAFETY: fcntl duplicates a descriptor this process owns; nothing else is touched.
        let saved = unsafe { libc::fcntl(libc::STDOUT_FILENO, libc::F_DUPFD_CLOEXEC, 3) };
        if saved < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `saved` was just created and is owned by nobody else.
        let stdout = unsafe { OwnedFd::from_raw_fd(saved) };
        // SAFETY: dup2 replaces descriptor 1 with a copy of 2; Rust's stdout writes to fd 1.
        if unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(StdoutReserved { stdout })
    }
}

impl Drop for StdoutReserved {
    /// Gives descriptor 1 back: to the agent about to be executed, or to the shell on an error.
    fn drop(&mut self) {
        let _ = io::stdout().flush();
        // SAFETY: as in `hold`; dup2 leaves the new descriptor 1 without close-on-exec.
        unsafe { libc::dup2(self.stdout.as_raw_fd(), libc::STDOUT_FILENO) };
    }
}

pub fn run(env: &Env, options: Options, stdout: StdoutReserved) -> anyhow::Result<()> {
    let Options { args } = options;
    build(env)?;
    let agent = agent_binary();
    // Loading eBPF programs needs privileges: go through sudo when not root already.
    let mut command = if is_root() {
        Command::new(&agent)
    } else {
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(&agent);
        sudo
    };
    command.arg("run").args(args);
    drop(stdout);
    // Replace this process, so that Ctrl-C and SIGTERM reach the agent directly.
    let err = command.exec();
    Err(err).with_context(|| format!("starting {}", agent.display()))
}
