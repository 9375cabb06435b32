//! Burst loss: one `memory.oom.group` cgroup of N members OOM-killed at once, in the Debian 6.1
//! VM (a v2 memory controller is needed; see xtask/src/vm). Each boot runs the suite's
//! `oom_burst` test (tests/tests/oom_burst.rs) with `OOMTRACE_BURST_MEMBERS=N` and reads back
//! the figures it prints: what the agent captured and dropped, and which of the kernel's own
//! `Killed process` lines the kernel log still holds afterwards.
//!
//! Then the same bursts with a kprobe peer next to the agent (`OOMTRACE_BURST_PEER`), each in
//! its own boot of a larger initramfs (bench/src/guest_peers.rs): bcc's `oomkill` and bpftrace's
//! `oomkill.bt`, whose kprobe on `oom_kill_process` this VM's kernel has and the bench
//! machine's may not.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use oomtrace_tests::burst::BurstFigures;
use xtask::{
    setup::Env,
    vm::{Guest, GuestRun},
};

/// The test that makes the burst.
const TEST: &str = "oom_burst";
/// The kernel family the burst boots (`KERNELS` in xtask/src/vm/kernel.rs).
const KERNEL: &str = "6.1";
/// Guest memory: what the VM harness gives every boot, plus 2 MiB a member (each holds 1 MiB,
/// and about 0.2 MiB more in page tables and stacks).
const BASE_MEMORY_MIB: u32 = xtask::vm::MEMORY_MIB;
const MEMORY_MIB_PER_MEMBER: u32 = 2;
/// More guest memory for the peers' boots: their initramfs (about 400 MB) is held twice while
/// the kernel unpacks it, and the peers load libLLVM and libclang.
const PEER_EXTRA_MEMORY_MIB: u32 = 1536;
/// bcc compiles its program with clang at start, which under emulation takes minutes.
const PEER_EXTRA_TIMEOUT: Duration = Duration::from_secs(900);
/// The kprobe peers, as the test's `OOMTRACE_BURST_PEER` names them.
pub const PEERS: [&str; 2] = ["bcc", "bpftrace"];

pub struct BurstRun {
    pub size: usize,
    pub figures: BurstFigures,
    pub boot_time: Duration,
}

pub struct Bursts {
    pub kernel: String,
    pub runs: Vec<BurstRun>,
    /// Runs wanted per size.
    pub runs_per_size: usize,
    /// Boots that failed, with why: a figure, not an error.
    pub failures: Vec<(usize, String)>,
    /// Boots with a kprobe peer next to the agent.
    pub peers: Vec<PeerBurstRun>,
    pub peer_runs_per_size: usize,
    /// Peer boots that failed, with the peer and why.
    pub peer_failures: Vec<(&'static str, usize, String)>,
    /// The size of the peers' initramfs, or why it could not be written.
    pub peer_initrd: Option<Result<u64, String>>,
}

pub struct PeerBurstRun {
    pub peer: &'static str,
    pub size: usize,
    pub figures: BurstFigures,
    pub boot_time: Duration,
}

pub fn measure(
    env: &Env,
    sizes: &[usize],
    runs_per_size: usize,
    peer_runs_per_size: usize,
    agent_args: &[String],
) -> anyhow::Result<Bursts> {
    let mut guest =
        Guest::prepare(env, KERNEL, &[TEST]).context("preparing the VM for the bursts")?;
    let tests = [TEST.to_owned()];
    let mut extra_args = Vec::new();
    if !agent_args.is_empty() {
        // The test splits them at the commas.
        extra_args.push(("OOMTRACE_BURST_AGENT_ARGS".to_owned(), agent_args.join(",")));
    }
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for &size in sizes {
        let args = burst_args(&extra_args, size, None);
        let run = guest_run(&tests, &args, size, false);
        for index in 0..runs_per_size {
            super::sys::check_interrupted()?;
            println!(
                "xtask bench: burst of {size} in the VM, run {} of {runs_per_size}",
                index + 1
            );
            let started = Instant::now();
            match boot(&guest, &run, false, &format!("{size}-{}", index + 1)) {
                Ok(figures) => runs.push(BurstRun {
                    size,
                    figures,
                    boot_time: started.elapsed(),
                }),
                Err(why) => failures.push((size, why)),
            }
        }
    }
    let mut peers = Vec::new();
    let mut peer_failures = Vec::new();
    let mut peer_initrd = None;
    if peer_runs_per_size > 0 {
        let started = Instant::now();
        let version = guest.kernel_version().to_owned();
        let (suite_apt, work_dir) = guest.suite_apt();
        let work_dir = work_dir.to_owned();
        let written = crate::guest_peers::extras(
            &mut xtask::setup::Apt::default(),
            suite_apt,
            &version,
            &work_dir,
        )
        .and_then(|extras| guest.add_peers(&extras))
        .map_err(|err| format!("{err:#}"));
        println!(
            "xtask bench: the peers' initramfs: {} ({} s)",
            match &written {
                Ok(bytes) => format!("{} MB", bytes / 1_000_000),
                Err(why) => format!("failed: {why}"),
            },
            started.elapsed().as_secs()
        );
        let ready = written.is_ok();
        peer_initrd = Some(written);
        for peer in PEERS.into_iter().filter(|_| ready) {
            for &size in sizes {
                let args = burst_args(&extra_args, size, Some(peer));
                let run = guest_run(&tests, &args, size, true);
                for index in 0..peer_runs_per_size {
                    super::sys::check_interrupted()?;
                    println!(
                        "xtask bench: burst of {size} in the VM with {peer}, run {} of {peer_runs_per_size}",
                        index + 1
                    );
                    let started = Instant::now();
                    match boot(&guest, &run, true, &format!("{peer}-{size}-{}", index + 1)) {
                        Ok(figures) => peers.push(PeerBurstRun {
                            peer,
                            size,
                            figures,
                            boot_time: started.elapsed(),
                        }),
                        Err(why) => peer_failures.push((peer, size, why)),
                    }
                }
            }
        }
    }
    Ok(Bursts {
        kernel: guest.kernel_version().to_owned(),
        runs,
        runs_per_size,
        failures,
        peers,
        peer_runs_per_size,
        peer_failures,
        peer_initrd,
    })
}

fn burst_args(
    extra_args: &[(String, String)],
    size: usize,
    peer: Option<&str>,
) -> Vec<(String, String)> {
    let mut args = extra_args.to_vec();
    args.push(("OOMTRACE_BURST_MEMBERS".to_owned(), size.to_string()));
    if let Some(peer) = peer {
        args.push(("OOMTRACE_BURST_PEER".to_owned(), peer.to_owned()));
    }
    args
}

fn guest_run<'a>(
    tests: &'a [String],
    env: &'a [(String, String)],
    size: usize,
    with_peers: bool,
) -> GuestRun<'a> {
    let members = u32::try_from(size).unwrap_or(u32::MAX);
    let mut memory_mib =
        BASE_MEMORY_MIB.saturating_add(members.saturating_mul(MEMORY_MIB_PER_MEMBER));
    // Under emulation a member takes a few tens of milliseconds to start.
    let mut timeout = Duration::from_secs(120) + Duration::from_millis(300).saturating_mul(members);
    if with_peers {
        memory_mib += PEER_EXTRA_MEMORY_MIB;
        timeout += PEER_EXTRA_TIMEOUT;
    }
    GuestRun {
        tests,
        env,
        memory_mib,
        timeout,
    }
}

/// One boot's figures, or why there are none (a figure too, not an error).
fn boot(
    guest: &Guest,
    run: &GuestRun,
    with_peers: bool,
    label: &str,
) -> Result<BurstFigures, String> {
    let started = Instant::now();
    let result = guest
        .boot(run, with_peers, label)
        .and_then(|report| figures(&report));
    match result {
        Ok(figures) => {
            let peer =
                figures
                    .peer
                    .as_ref()
                    .map_or(String::new(), |peer| match &peer.attach_secs {
                        Ok(secs) => format!(
                            "; {} attached in {secs:.1} s and reported {} kill(s)",
                            peer.name, peer.kill_lines
                        ),
                        Err(why) => format!("; {} did not start: {why}", peer.name),
                    });
            println!(
                "xtask bench: {label}: {} killed, {} reported as kills, {} reached the agent, {} dropped, {} `Killed process` lines in the kernel log{peer} ({} s)",
                figures.killed,
                figures.captured,
                figures.recorded,
                figures.dropped,
                figures.kmsg_killed_lines,
                started.elapsed().as_secs()
            );
            Ok(figures)
        }
        Err(err) => {
            eprintln!("xtask bench: burst {label} failed: {err:#}");
            Err(format!("{err:#}").lines().next().unwrap_or("").to_owned())
        }
    }
}

/// The figures the test printed, whether its assertions held or not: a burst that lost kills
/// is a figure.
fn figures(report: &xtask::vm::runner::Report) -> anyhow::Result<BurstFigures> {
    let run = report
        .runs
        .iter()
        .find(|run| run.name == TEST)
        .context("the guest did not run the burst")?;
    match BurstFigures::from_output(&run.output) {
        Some(figures) => figures.map_err(anyhow::Error::msg),
        None => anyhow::bail!(
            "the burst printed no figures ({}):\n{}",
            run.failure().unwrap_or_default(),
            run.output_tail(20)
        ),
    }
}
