//! Per-program kernel cost: `kernel.bpf_stats_enabled` and `bpftool prog show`.

use std::{fs, process::Command};

use anyhow::{Context as _, bail};
use serde_json::Value;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// The agent's program names as bpftool shows them: the kernel keeps 15 characters.
const AGENT_PROGRAM_PREFIXES: [&str; 2] = ["mark_victim", "oom_kill_proce"];

/// `sysctl -w kernel.bpf_stats_enabled=1` while alive; the old value is restored on drop.
/// Counting costs two clock reads per program run, so it stays off outside the measurement.
pub struct StatsEnabled {
    old: String,
}

impl StatsEnabled {
    pub fn enable() -> anyhow::Result<Self> {
        let old = fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("reading {STATS_SYSCTL}"))?
            .trim()
            .to_owned();
        fs::write(STATS_SYSCTL, "1").with_context(|| format!("writing 1 to {STATS_SYSCTL}"))?;
        Ok(Self { old })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(err) = fs::write(STATS_SYSCTL, &self.old) {
            eprintln!(
                "xtask bench: restoring {STATS_SYSCTL} to {}: {err}",
                self.old
            );
        }
    }
}

pub struct ProgramStats {
    pub name: String,
    pub kind: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

/// How the agent's programs were told apart from the others loaded.
#[derive(Clone, Copy)]
pub enum MatchedBy {
    Pid,
    Name,
}

/// The agent's programs (by its pid where bpftool reports owners, else by name).
pub fn agent_programs(agent_pid: u32) -> anyhow::Result<(Vec<ProgramStats>, MatchedBy)> {
    let output = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("starting bpftool -j prog show")?;
    if !output.status.success() {
        bail!(
            "bpftool -j prog show failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let programs: Vec<Value> =
        serde_json::from_slice(&output.stdout).context("parsing bpftool -j prog show")?;
    let reports_owners = programs.iter().any(|program| program.get("pids").is_some());
    let matched_by = if reports_owners {
        MatchedBy::Pid
    } else {
        MatchedBy::Name
    };
    let stats = programs
        .iter()
        .filter(|program| match matched_by {
            MatchedBy::Pid => owned_by(program, agent_pid),
            MatchedBy::Name => has_agent_name(program),
        })
        .map(program_stats)
        .collect();
    Ok((stats, matched_by))
}

fn owned_by(program: &Value, pid: u32) -> bool {
    program["pids"].as_array().is_some_and(|owners| {
        owners
            .iter()
            .any(|owner| owner["pid"].as_u64() == Some(u64::from(pid)))
    })
}

fn has_agent_name(program: &Value) -> bool {
    program["name"].as_str().is_some_and(|name| {
        AGENT_PROGRAM_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
    })
}

fn program_stats(program: &Value) -> ProgramStats {
    ProgramStats {
        name: program["name"].as_str().unwrap_or("?").to_owned(),
        kind: program["type"].as_str().unwrap_or("?").to_owned(),
        // bpftool leaves both out while a program has not run with stats on.
        run_cnt: program["run_cnt"].as_u64().unwrap_or(0),
        run_time_ns: program["run_time_ns"].as_u64().unwrap_or(0),
    }
}
