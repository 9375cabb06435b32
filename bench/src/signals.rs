//! The SIGKILL filter's cost under load. The agent's `signal_generate` programs run for every
//! signal sent on the host and return early for all but SIGKILL; this sends 100,000 SIGCONTs
//! (a signal a sleeping process takes without effect) from a helper process in a tight loop,
//! with `kernel.bpf_stats_enabled=1`, and reads what the programs' counters gained meanwhile.

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::bpf_stats::{self, ProgramStats, StatsEnabled};

/// Signals per measurement.
pub const STORM_SIGNALS: u64 = 100_000;
/// The hidden bench subcommand that sends them (see [`storm`]).
const STORM_COMMAND: &str = "signal-storm";

/// Options of the helper process.
#[derive(clap::Args)]
pub struct StormOptions {
    /// The process to signal.
    #[arg(long)]
    pid: i32,
    /// How many SIGCONTs to send.
    #[arg(long)]
    count: u64,
}

/// The helper process's loop: `kill(pid, SIGCONT)` `count` times, as fast as it goes.
pub fn storm(options: StormOptions) -> anyhow::Result<()> {
    for sent in 0..options.count {
        // SAFETY: kill has no memory-safety preconditions.
        if unsafe { libc::kill(options.pid, libc::SIGCONT) } != 0 {
            let err = std::io::Error::last_os_error();
            bail!("kill({}, SIGCONT) after {sent} signals: {err}", options.pid);
        }
    }
    Ok(())
}

/// What one storm cost the agent's signal programs.
pub struct StormRun {
    pub signals: u64,
    pub elapsed: Duration,
    /// Runs and run time of each signal program during the storm only.
    pub programs: Vec<ProgramStats>,
}

pub fn measure(agent_pid: u32) -> anyhow::Result<StormRun> {
    let target = KillOnDrop(
        Command::new("sleep")
            .arg("3600")
            .spawn()
            .context("starting the signals' target, sleep 3600")?,
    );
    let helper = std::env::current_exe().context("finding the xtask executable")?;
    let stats = StatsEnabled::enable()?;
    let (before, _) = bpf_stats::agent_programs(agent_pid)?;
    let started = Instant::now();
    let status = Command::new(&helper)
        .args([STORM_COMMAND, "--pid", &target.0.id().to_string()])
        .args(["--count", &STORM_SIGNALS.to_string()])
        .status()
        .with_context(|| format!("starting {} {STORM_COMMAND}", helper.display()))?;
    let elapsed = started.elapsed();
    let (after, _) = bpf_stats::agent_programs(agent_pid)?;
    drop(stats);
    if !status.success() {
        bail!("the signal helper failed: {status}");
    }
    let programs = bpf_stats::delta(&before, &after)
        .into_iter()
        .filter(ProgramStats::is_signal_program)
        .collect();
    Ok(StormRun {
        signals: STORM_SIGNALS,
        elapsed,
        programs,
    })
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
