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

/// SIGKILLs per flood.
pub const FLOOD_SIGKILLS: u64 = 5_000;

/// What a flood of SIGKILLs from one sender cost the agent (history on).
#[derive(Clone)]
pub struct FloodRun {
    pub sigkills: u64,
    /// How long sending them took.
    pub elapsed: Duration,
    /// The agent's user + system CPU time from the first SIGKILL until it was done with them.
    pub agent_cpu_ms: f64,
    /// The agent's resident memory before the flood, right after it, and once it settled.
    pub rss_kib: [u64; 3],
    /// Of which anonymous (the heap, stacks): what a burst could leave behind. The rest is
    /// mostly the executable's pages, which the agent gives back after a burst and maps back as
    /// its idle work runs.
    pub anon_kib: [u64; 3],
}

impl FloodRun {
    /// The figure the budget is on: CPU per 1,000 SIGKILLs.
    pub fn cpu_ms_per_1000(&self) -> f64 {
        self.agent_cpu_ms * 1000.0 / self.sigkills.max(1) as f64
    }
}

/// `sleep 3600 & kill -9 $!`, [`FLOOD_SIGKILLS`] times, as one process: what any user can do.
/// Measures the agent's CPU until it has handled them (its CPU time stops growing).
pub fn measure_flood(agent_pid: u32) -> anyhow::Result<FloodRun> {
    // Idle: the agent gives back what starting touched 2 s after attach, and maps back the
    // code its idle work runs over the next seconds; compared once that stands still.
    let before = super::sys::memory_standing_still(agent_pid)?;
    let cpu_before = super::sys::cpu_ms(agent_pid)?;
    let started = Instant::now();
    for sent in 0..FLOOD_SIGKILLS {
        let mut child = Command::new("sleep")
            .arg("3600")
            .spawn()
            .with_context(|| format!("starting the flood's target after {sent} SIGKILLs"))?;
        child.kill().context("SIGKILL to the flood's target")?;
        child.wait().context("reaping the flood's target")?;
    }
    let elapsed = started.elapsed();
    // Done once its CPU time stands still for a second.
    let mut last = super::sys::cpu_ms(agent_pid)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = super::sys::cpu_ms(agent_pid)?;
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let after = super::sys::memory(agent_pid)?;
    // The agent gives a burst's memory back 5 s after its last event; then as idle.
    std::thread::sleep(Duration::from_secs(6));
    let settled = super::sys::memory_standing_still(agent_pid)?;
    Ok(FloodRun {
        sigkills: FLOOD_SIGKILLS,
        elapsed,
        agent_cpu_ms: last - cpu_before,
        rss_kib: [before.rss_kib, after.rss_kib, settled.rss_kib],
        anon_kib: [before.anon_kib, after.anon_kib, settled.anon_kib],
    })
}

/// The flood's figures, as a results section.
pub fn flood_markdown(runs: &[FloodRun]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## A SIGKILL flood, history on: {FLOOD_SIGKILLS} SIGKILLs from one process\n"
    );
    let _ = writeln!(
        out,
        "| run | sent in (ms) | agent CPU (ms) | CPU per 1,000 SIGKILLs (ms, budget 136) | VmRSS before / after / settled (MiB) | of which anonymous (MiB) |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- |");
    for (index, run) in runs.iter().enumerate() {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} |",
            index + 1,
            run.elapsed.as_secs_f64() * 1e3,
            run.agent_cpu_ms,
            run.cpu_ms_per_1000(),
            mib(run.rss_kib[0]),
            mib(run.rss_kib[1]),
            mib(run.rss_kib[2]),
            mib(run.anon_kib[0]),
            mib(run.anon_kib[1]),
            mib(run.anon_kib[2]),
        );
    }
    let _ = writeln!(
        out,
        "\nOne process starts a `sleep` and SIGKILLs it, {FLOOD_SIGKILLS} times (as `sleep 100 & \
         kill -9 $!` in a shell loop); the agent runs as the bench starts it, its history on. Its \
         utime + stime (/proc/<pid>/stat) from before the first SIGKILL until it stands still for \
         a second. Every SIGKILL is logged; each sender's beyond 100 at once and 10 a second is \
         neither stored nor counted in the metrics (`sigkills_rate_limited`). VmRSS before: once it \
         read the same three seconds in a row (the agent maps back the code its idle work runs \
         in the seconds after it gave startup's back); settled: likewise, from 6 s after the \
         flood (the agent gives a burst's memory back 5 s after its last event).\n"
    );
    out
}
