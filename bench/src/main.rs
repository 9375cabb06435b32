//! oomtrace's bench, run by `cargo xtask bench`: the release agent's attach time, idle
//! footprint, kill-to-output latency and per-event kernel cost on this machine, next to a
//! bpftrace one-liner doing the same job. Benchmarks print figures; nothing here asserts on
//! timing. Results go to `bench/results/`, beside this crate.

mod axis;
mod bpf_stats;
mod burst;
mod cgroup_axis;
mod containers;
mod guest_peers;
mod kills;
mod peer;
mod report;
mod signals;
mod stats;
mod sys;
mod targets;
mod watched;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use bpf_stats::{MatchedBy, ProgramStats, StatsEnabled};
use clap::{Parser, Subcommand};
use kills::MemoryCgroup;
use sys::Memory;
use watched::{Line, Stream, Watched};
use xtask::{
    run::{agent_binary, build, target_dir, workspace_root},
    setup::{Apt, Env, is_root, run as run_command},
};

#[derive(Parser)]
#[command(
    bin_name = "cargo xtask bench",
    about = "oomtrace's bench: attach time, footprint, kill-to-output latency, kernel cost",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    helper: Option<Helper>,
    #[command(flatten)]
    options: Options,
}

#[derive(Subcommand)]
enum Helper {
    /// The bench's signal helper: SIGCONTs to one process from a tight loop.
    #[command(hide = true, name = "signal-storm")]
    SignalStorm(signals::StormOptions),
}

fn main() -> std::process::ExitCode {
    let Cli { helper, options } = Cli::parse();
    let result = match helper {
        // No setup: it runs inside a bench that has done it.
        Some(Helper::SignalStorm(storm)) => signals::storm(storm),
        None => xtask::setup::setup().and_then(|env| bench(&env, options)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench: error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[derive(clap::Args)]
pub struct Options {
    /// Runs per figure; each figure is the median, with min and max, over the runs.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// How long the agent sits idle while its CPU time is measured.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
    /// OOM kills in the latency measurement.
    #[arg(long, default_value_t = 200)]
    kills: usize,
    /// Members of the `memory.oom.group` bursts, killed at once in the Debian 6.1 VM.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
    burst_sizes: Vec<usize>,
    /// VM boots per burst size (0: no bursts). Under software emulation a boot of 1,000
    /// members takes a minute or two.
    #[arg(long, default_value_t = 5)]
    burst_runs: usize,
    /// VM boots per burst size for each kprobe peer (bcc's `oomkill`, bpftrace's `oomkill.bt`)
    /// next to the agent (0: no peers in the VM). Their initramfs is about 400 MB.
    #[arg(long, default_value_t = 1)]
    peer_burst_runs: usize,
    /// Only the bursts: print their table, write no results file.
    #[arg(long)]
    burst_only: bool,
    /// Extra idle processes on the host for the process-count axis of the kill latency.
    #[arg(long, value_delimiter = ',', default_value = "0,1000,10000")]
    process_counts: Vec<usize>,
    /// OOM kills at each process count (0: no axis).
    #[arg(long, default_value_t = 200)]
    axis_kills: usize,
    /// Between the axis's kills: more than a second, so that each is its own invocation.
    #[arg(long, default_value_t = 1200)]
    axis_gap_ms: u64,
    /// How long the agent sits idle with the memory timeline's recorder on (0: not measured).
    #[arg(long, default_value_t = 600)]
    recorder_idle_seconds: u64,
    /// Memory cgroups with a limit (and an idle process each) for the cgroup-count axis.
    #[arg(long, value_delimiter = ',', default_value = "0,100,500,1000")]
    cgroup_counts: Vec<usize>,
    /// OOM kills at each cgroup count, each in another of the cgroups (0: no axis).
    #[arg(long, default_value_t = 200)]
    cgroup_kills: usize,
    /// How long the agent sits idle at each cgroup count while its CPU time is measured.
    #[arg(long, default_value_t = 60)]
    cgroup_idle_seconds: u64,
    /// Only the process-count and cgroup-count axes and the recorder's idle cost; written to a
    /// results file of their own (`…-axis.md`).
    #[arg(long)]
    axis_only: bool,
    /// Measure this agent binary instead of building one: an earlier build, to compare.
    #[arg(long, value_name = "PATH")]
    agent: Option<PathBuf>,
    /// Only the SIGKILL flood (CPU per 1,000 SIGKILLs, history on), this many runs; printed, no
    /// results file.
    #[arg(long, value_name = "RUNS")]
    flood_only: Option<usize>,
    /// Passed to every `oomtrace run` of the bench, e.g. `--ringbuf-size 1M` to compare.
    #[arg(long, value_name = "SIZE")]
    ringbuf_size: Option<String>,
}

impl Options {
    /// Extra arguments for every agent the bench starts.
    fn agent_args(&self) -> Vec<String> {
        match &self.ringbuf_size {
            Some(size) => vec!["--ringbuf-size".to_owned(), size.clone()],
            None => Vec::new(),
        }
    }
}

/// Past this much idle time in total, the idle CPU time is measured in the first run only.
const IDLE_BUDGET: Duration = Duration::from_secs(120);
/// Past this much projected kill time for the remaining runs, the latency is measured once.
const LATENCY_BUDGET: Duration = Duration::from_secs(120);
/// The ring-buffer sizes whose idle footprint every run measures, in bytes.
const RING_SIZES: [(&str, u64); 3] = [("256K", 256 << 10), ("1M", 1 << 20), ("4M", 4 << 20)];
/// Kills in the short burst the bpftrace peer sees in every run.
const PEER_BURST_KILLS: usize = 20;
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
/// From attach to idle: the agent gives back what starting touched 2 s after attach.
const STARTUP_SETTLES: Duration = Duration::from_secs(3);
/// How long after the last kill its output may still arrive.
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(5);

pub fn bench(env: &Env, options: Options) -> anyhow::Result<()> {
    if !is_root() {
        bail!("the bench loads eBPF programs and makes cgroups: run it as root");
    }
    if options.runs == 0 || options.kills == 0 {
        bail!("--runs and --kills must be at least 1");
    }
    let started = Instant::now();
    let load_at_start = sys::load_average()?;
    sys::catch_interrupts();
    if options.burst_only {
        let bursts = burst::measure(
            env,
            &options.burst_sizes,
            options.burst_runs.max(1),
            options.peer_burst_runs,
            &options.agent_args(),
        )?;
        println!("\n{}", report::bursts_markdown(&bursts));
        return Ok(());
    }
    if let Some(runs) = options.flood_only {
        // The release agent only: no static builds, no tools.
        let agent = match &options.agent {
            Some(agent) => agent.clone(),
            None => {
                build(env)?;
                agent_binary()
            }
        };
        let floods = (0..runs.max(1))
            .map(|_| measure_flood(&options, &agent))
            .collect::<anyhow::Result<Vec<_>>>()?;
        println!("\n{}", signals::flood_markdown(&floods));
        return Ok(());
    }
    if options.axis_only {
        let (agent, hog) = build_agent_and_hog(env, &options)?;
        let (points, idle, cgroup_points) = measure_axis(&options, &agent, &hog)?;
        let load = report::Load {
            at_start: load_at_start,
            at_end: sys::load_average()?,
        };
        let markdown = report::axis_only_markdown(&options, &load, started.elapsed())?
            + &axis::markdown(&points, idle.as_ref(), options.axis_gap())
            + &cgroup_axis::markdown(&cgroup_points, options.axis_gap());
        println!("\n{markdown}");
        let path = write_results(&markdown, "-axis")?;
        println!("xtask bench: written to {}", path.display());
        return Ok(());
    }
    let binaries = build_binaries(env, &options)?;
    install_tools()?;
    let podman = match containers::Podman::start(&binaries.static_hog) {
        Ok(podman) => Some(podman),
        Err(err) => {
            eprintln!("xtask bench: no latency with container attribution: {err:#}");
            None
        }
    };
    let cgroup = MemoryCgroup::create()?;
    println!("xtask bench: OOM kills in {}", cgroup.dir().display());
    let mut runs = measure_runs(&options, &binaries, &cgroup, podman.as_ref())?;
    drop(cgroup);
    drop(podman);
    (runs.axis, runs.recorder_idle, runs.cgroup_axis) =
        measure_axis(&options, &binaries.agent, &binaries.hog)?;
    if options.burst_runs > 0 {
        runs.bursts = Some(burst::measure(
            env,
            &options.burst_sizes,
            options.burst_runs,
            options.peer_burst_runs,
            &options.agent_args(),
        )?);
    }
    let load = report::Load {
        at_start: load_at_start,
        at_end: sys::load_average()?,
    };
    let markdown = report::markdown(&options, &runs, &load, started.elapsed())?;
    println!("\n{markdown}");
    let path = write_results(&markdown, "")?;
    println!("xtask bench: written to {}", path.display());
    Ok(())
}

impl Options {
    fn axis_gap(&self) -> Duration {
        Duration::from_millis(self.axis_gap_ms)
    }
}

/// The process-count and cgroup-count axes and the recorder's idle cost, as the options ask.
fn measure_axis(
    options: &Options,
    agent: &Path,
    hog: &Path,
) -> anyhow::Result<(
    Vec<axis::AxisPoint>,
    Option<axis::RecorderIdle>,
    Vec<cgroup_axis::CgroupPoint>,
)> {
    let points = if options.axis_kills > 0 {
        axis::measure(
            agent,
            hog,
            &options.process_counts,
            options.axis_kills,
            options.axis_gap(),
        )?
    } else {
        Vec::new()
    };
    let idle = if options.recorder_idle_seconds > 0 {
        println!(
            "xtask bench: the agent idle for {} s with the memory timeline on",
            options.recorder_idle_seconds
        );
        Some(axis::recorder_idle(agent, options.recorder_idle_seconds)?)
    } else {
        None
    };
    let cgroup_points = if options.cgroup_kills > 0 {
        cgroup_axis::measure(
            agent,
            hog,
            &options.cgroup_counts,
            options.cgroup_kills,
            Duration::from_secs(options.cgroup_idle_seconds),
            options.axis_gap(),
        )?
    } else {
        Vec::new()
    };
    Ok((points, idle, cgroup_points))
}

struct Binaries {
    agent: PathBuf,
    /// The agent as deploy/Containerfile ships it: linked statically.
    static_agent: PathBuf,
    hog: PathBuf,
    /// For the container image, which has no libc.
    static_hog: PathBuf,
}

/// The agent (built, or `--agent`) and the hog: all that the axes need.
fn build_agent_and_hog(env: &Env, options: &Options) -> anyhow::Result<(PathBuf, PathBuf)> {
    let agent = match &options.agent {
        Some(agent) => agent.clone(),
        None => {
            build(env)?;
            agent_binary()
        }
    };
    run_command(env.cargo().args([
        "build",
        "--release",
        "--package",
        "oomtrace-tests",
        "--bin",
        "oomtrace-hog",
    ]))?;
    Ok((agent, target_dir().join("release/oomtrace-hog")))
}

fn build_binaries(env: &Env, options: &Options) -> anyhow::Result<Binaries> {
    let (agent, hog) = build_agent_and_hog(env, options)?;
    Ok(Binaries {
        agent,
        static_agent: xtask::suite::build_static_agent(env)?,
        hog,
        static_hog: xtask::suite::build_static_hog(env)?,
    })
}

/// bpftool for the kernel-side cost, bpftrace as the peer: from Debian, if missing.
fn install_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = [("bpftool", "version"), ("bpftrace", "--version")]
        .into_iter()
        .filter(|(tool, arg)| {
            Command::new(tool)
                .arg(arg)
                .output()
                .is_err_and(|err| err.kind() == std::io::ErrorKind::NotFound)
        })
        .map(|(tool, _)| tool)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Apt::default().install(&missing)
}

/// What each run measures.
struct Plan {
    idle_cpu: bool,
    latency: bool,
}

/// Everything one run measured.
pub struct Run {
    pub agent: AgentRun,
    /// Idle memory once startup settled, with each of RING_SIZES.
    pub rings: Vec<RingFootprint>,
    /// Idle memory of the static build once startup settled, with the default ring.
    pub static_idle: Memory,
    pub peer: peer::PeerRun,
    /// Kills in a container with attribution on and its cache warm; None without podman.
    pub warm: Option<containers::WarmRun>,
}

pub struct AgentRun {
    pub tier: String,
    pub attach_ms: f64,
    pub idle: Memory,
    pub idle_cpu_ms: Option<f64>,
    pub latency: Option<LatencyRun>,
    /// The SIGKILL filter's programs under 100,000 other signals.
    pub storm: signals::StormRun,
    /// A flood of SIGKILLs from one process.
    pub flood: signals::FloodRun,
}

pub struct RingFootprint {
    pub size: &'static str,
    pub idle: Memory,
}

pub struct LatencyRun {
    pub kills: usize,
    /// Per captured kill: read time minus the kernel's capture time.
    pub latencies_ns: Vec<u64>,
    pub kill_time: Duration,
    pub after: Memory,
    pub programs: Vec<ProgramStats>,
    pub matched_by: MatchedBy,
}

/// The figures of all runs, and what was left out of which.
pub struct Runs {
    pub runs: Vec<Run>,
    pub idle_cpu_every_run: bool,
    pub latency_every_run: bool,
    /// Whether podman was there for the container latency, and if not, why.
    pub podman: Result<(), String>,
    pub bursts: Option<burst::Bursts>,
    pub axis: Vec<axis::AxisPoint>,
    pub recorder_idle: Option<axis::RecorderIdle>,
    pub cgroup_axis: Vec<cgroup_axis::CgroupPoint>,
}

fn measure_runs(
    options: &Options,
    binaries: &Binaries,
    cgroup: &MemoryCgroup,
    podman: Option<&containers::Podman>,
) -> anyhow::Result<Runs> {
    let runs_u32 = u32::try_from(options.runs).unwrap_or(u32::MAX);
    let total_idle = Duration::from_secs(options.idle_seconds).saturating_mul(runs_u32);
    let idle_cpu_every_run = total_idle <= IDLE_BUDGET;
    let mut latency_every_run = true;
    let mut runs = Vec::new();
    for index in 0..options.runs {
        let plan = Plan {
            idle_cpu: index == 0 || idle_cpu_every_run,
            latency: index == 0 || latency_every_run,
        };
        println!("xtask bench: run {} of {}", index + 1, options.runs);
        let agent = measure_agent(options, binaries, cgroup, &plan)
            .with_context(|| format!("run {}: oomtrace", index + 1))?;
        if let Some(latency) = agent.latency.as_ref().filter(|_| index == 0) {
            // Repeat the kills only if they fit the budget, judged by how long they took here.
            let remaining = latency.kill_time.saturating_mul(runs_u32 - 1);
            latency_every_run = remaining <= LATENCY_BUDGET;
        }
        let rings = ring_footprints(binaries)
            .with_context(|| format!("run {}: oomtrace's ring-buffer sizes", index + 1))?;
        let static_idle = idle_memory(&binaries.static_agent, &[])
            .with_context(|| format!("run {}: oomtrace's static build", index + 1))?;
        let peer = peer::measure(&binaries.hog, cgroup, PEER_BURST_KILLS)
            .with_context(|| format!("run {}: bpftrace", index + 1))?;
        let warm = match podman {
            Some(podman) => Some(
                containers::measure_warm(
                    podman,
                    &binaries.agent,
                    &options.agent_args(),
                    options.kills,
                    &(index + 1).to_string(),
                )
                .with_context(|| format!("run {}: oomtrace with podman", index + 1))?,
            ),
            None => None,
        };
        runs.push(Run {
            agent,
            rings,
            static_idle,
            peer,
            warm,
        });
    }
    Ok(Runs {
        runs,
        idle_cpu_every_run,
        latency_every_run,
        podman: match podman {
            Some(_) => Ok(()),
            None => Err("podman could not be started (see the bench's output)".to_owned()),
        },
        bursts: None,
        axis: Vec::new(),
        recorder_idle: None,
        cgroup_axis: Vec::new(),
    })
}

fn measure_agent(
    options: &Options,
    binaries: &Binaries,
    cgroup: &MemoryCgroup,
    plan: &Plan,
) -> anyhow::Result<AgentRun> {
    let mut agent = Watched::spawn(
        "oomtrace",
        Command::new(&binaries.agent)
            .args(["run", "--format", "json"])
            .args(options.agent_args()),
    )?;
    let started = agent.wait_for("agent_started line", ATTACH_TIMEOUT, |line| {
        json_kind(line).is_some_and(|(kind, _)| kind == "agent_started")
    })?;
    let attach_ms = started.read_at_ns.saturating_sub(agent.spawned_at_ns) as f64 / 1e6;
    let tier = json_kind(&started)
        .and_then(|(_, value)| value["capture"]["tier"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned());
    let idle = idle_after_startup(agent.pid())?;
    let idle_cpu_ms = if plan.idle_cpu {
        Some(idle_cpu(
            agent.pid(),
            Duration::from_secs(options.idle_seconds),
        )?)
    } else {
        None
    };
    let latency = if plan.latency {
        Some(measure_latency(
            &mut agent,
            binaries,
            cgroup,
            options.kills,
        )?)
    } else {
        None
    };
    let storm = signals::measure(agent.pid()).context("the signal storm")?;
    let flood = signals::measure_flood(agent.pid()).context("the SIGKILL flood")?;
    agent.stop()?;
    Ok(AgentRun {
        tier,
        attach_ms,
        idle,
        idle_cpu_ms,
        latency,
        storm,
        flood,
    })
}

/// The agent as a run starts it, then a SIGKILL flood at it.
fn measure_flood(options: &Options, agent_binary: &Path) -> anyhow::Result<signals::FloodRun> {
    let mut agent = Watched::spawn(
        "oomtrace",
        Command::new(agent_binary)
            .args(["run", "--format", "json"])
            .args(options.agent_args()),
    )?;
    agent.wait_for("agent_started line", ATTACH_TIMEOUT, |line| {
        json_kind(line).is_some_and(|(kind, _)| kind == "agent_started")
    })?;
    sys::sleep(STARTUP_SETTLES)?;
    let flood = signals::measure_flood(agent.pid()).context("the SIGKILL flood")?;
    agent.stop()?;
    Ok(flood)
}

/// The agent started with each ring-buffer size, its idle memory read once startup settled.
fn ring_footprints(binaries: &Binaries) -> anyhow::Result<Vec<RingFootprint>> {
    RING_SIZES
        .iter()
        .map(|&(size, _)| {
            let idle = idle_memory(&binaries.agent, &["--ringbuf-size", size])?;
            Ok(RingFootprint { size, idle })
        })
        .collect()
}

/// Idle memory of `oomtrace run --format json ARGS`, once startup settled.
fn idle_memory(agent_binary: &Path, args: &[&str]) -> anyhow::Result<Memory> {
    let mut agent = Watched::spawn(
        "oomtrace",
        Command::new(agent_binary)
            .args(["run", "--format", "json"])
            .args(args),
    )?;
    agent.wait_for("agent_started line", ATTACH_TIMEOUT, |line| {
        json_kind(line).is_some_and(|(kind, _)| kind == "agent_started")
    })?;
    let idle = idle_after_startup(agent.pid())?;
    agent.stop()?;
    Ok(idle)
}

/// The agent's memory once its startup has settled: the runtimes' watchers have connected or
/// listed, and the agent has given back what only starting needed (2 s after attach). VmHWM
/// holds the startup's peak.
fn idle_after_startup(pid: u32) -> anyhow::Result<Memory> {
    sys::sleep(STARTUP_SETTLES)?;
    sys::memory(pid)
}

/// CPU time the process uses over `duration` while nothing happens.
fn idle_cpu(pid: u32, duration: Duration) -> anyhow::Result<f64> {
    let before = sys::cpu_ms(pid)?;
    sys::sleep(duration)?;
    Ok(sys::cpu_ms(pid)? - before)
}

fn measure_latency(
    agent: &mut Watched,
    binaries: &Binaries,
    cgroup: &MemoryCgroup,
    kills: usize,
) -> anyhow::Result<LatencyRun> {
    // Counted from here on only: the kills, not the attach.
    let stats_enabled = StatsEnabled::enable()?;
    let (victims, kill_time) = oom_kill_many(cgroup, &binaries.hog, kills)?;
    let captured = collect_kill_lines(agent, &victims, agent_kill)?;
    let (programs, matched_by) = bpf_stats::agent_programs(agent.pid())?;
    drop(stats_enabled);
    Ok(LatencyRun {
        kills,
        latencies_ns: captured,
        kill_time,
        after: sys::memory(agent.pid())?,
        programs,
        matched_by,
    })
}

/// `count` OOM kills one after another; their victims' pids, and how long they all took.
pub fn oom_kill_many(
    cgroup: &MemoryCgroup,
    hog: &Path,
    count: usize,
) -> anyhow::Result<(Vec<u32>, Duration)> {
    let started = Instant::now();
    let victims = (0..count)
        .map(|_| cgroup.oom_kill_one(hog))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok((victims, started.elapsed()))
}

/// The latencies (read time minus capture time) of the kills of `victims` the tool wrote,
/// waiting up to OUTPUT_TIMEOUT for the last ones; missing kills are left out.
pub fn collect_kill_lines(
    tool: &mut Watched,
    victims: &[u32],
    parse: fn(&Line) -> Option<(u32, u64)>,
) -> anyhow::Result<Vec<u64>> {
    let mut pending: std::collections::HashSet<u32> = victims.iter().copied().collect();
    let mut latencies = Vec::new();
    while !pending.is_empty() {
        let found = tool.wait_for("line for every kill", OUTPUT_TIMEOUT, |line| {
            parse(line).is_some_and(|(pid, _)| pending.contains(&pid))
        });
        let Ok(line) = found else {
            // A missed kill is a figure (captured of killed), not an error.
            break;
        };
        if let Some((pid, ktime_ns)) = parse(&line) {
            pending.remove(&pid);
            latencies.push(line.read_at_ns.saturating_sub(ktime_ns));
        }
    }
    // An interrupt also ends the wait above: it is the bench's end, not a missed kill.
    sys::check_interrupted()?;
    Ok(latencies)
}

/// An `oom_kill` JSON line: the victim's pid and the kernel's capture time.
fn agent_kill(line: &Line) -> Option<(u32, u64)> {
    let (kind, value) = json_kind(line)?;
    if kind != "oom_kill" {
        return None;
    }
    let pid = value["victim"]["process"]["pid"].as_u64()?;
    Some((u32::try_from(pid).ok()?, value["ktime_ns"].as_u64()?))
}

fn json_kind(line: &Line) -> Option<(String, Value)> {
    if line.stream != Stream::Stdout {
        return None;
    }
    let value: Value = serde_json::from_str(&line.text).ok()?;
    Some((value["kind"].as_str()?.to_owned(), value))
}

fn write_results(markdown: &str, suffix: &str) -> anyhow::Result<PathBuf> {
    let dir = workspace_root().join("bench/results");
    std::fs::create_dir_all(&dir).with_context(|| format!("making {}", dir.display()))?;
    let path = dir.join(format!(
        "{}-{}{suffix}.md",
        sys::today_utc(),
        sys::kernel_release()?
    ));
    std::fs::write(&path, markdown).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
