//! `build` and `run`: the agent binary, and running it as a user would.

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

pub fn run(env: &Env, options: Options) -> anyhow::Result<()> {
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
    // Replace this process, so that Ctrl-C and SIGTERM reach the agent directly.
    let err = command.exec();
    Err(err).with_context(|| format!("starting {}", agent.display()))
}
