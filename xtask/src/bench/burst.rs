//! Burst loss: one `memory.oom.group` cgroup of N members OOM-killed at once, in the Debian 6.1
//! VM (a v2 memory controller is needed; see xtask/src/vm). Each boot runs the `oom-burst` VM
//! scenario with `oomtrace.burst=N` and reports what the agent captured and dropped, and which
//! of the kernel's own `Killed process` lines the kernel log still holds afterwards.

use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::{
    setup::Env,
    vm::{Guest, GuestRun, scenario::oom_burst},
};

/// The kernel family the burst boots (`KERNELS` in xtask/src/vm/kernel.rs).
const KERNEL: &str = "6.1";
/// Guest memory: what the VM harness gives every scenario, plus 2 MiB a member (each holds
/// 1 MiB, and about 0.2 MiB more in page tables, stacks and its share of its shell's fork).
const BASE_MEMORY_MIB: u32 = 512;
const MEMORY_MIB_PER_MEMBER: u32 = 2;

pub struct BurstRun {
    pub size: usize,
    pub figures: oom_burst::BurstFigures,
    pub boot_time: Duration,
}

pub struct Bursts {
    pub kernel: String,
    pub runs: Vec<BurstRun>,
    /// Runs wanted per size.
    pub runs_per_size: usize,
    /// Boots that failed, with why: a figure, not an error.
    pub failures: Vec<(usize, String)>,
}

pub fn measure(
    env: &Env,
    sizes: &[usize],
    runs_per_size: usize,
    agent_args: &[String],
) -> anyhow::Result<Bursts> {
    let guest = Guest::prepare(env, KERNEL).context("preparing the VM for the bursts")?;
    let mut extra_args = Vec::new();
    if !agent_args.is_empty() {
        // The scenario turns the commas back into spaces.
        extra_args.push(format!("oomtrace.agent_args={}", agent_args.join(",")));
    }
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for &size in sizes {
        let members = u32::try_from(size).unwrap_or(u32::MAX);
        let mut args = extra_args.clone();
        args.push(format!("oomtrace.burst={size}"));
        let run = GuestRun {
            scenario: oom_burst::SCENARIO.name,
            extra_args: &args,
            memory_mib: BASE_MEMORY_MIB
                .saturating_add(members.saturating_mul(MEMORY_MIB_PER_MEMBER)),
            // Under emulation a member takes a few tens of milliseconds to start.
            timeout: Duration::from_secs(120) + Duration::from_millis(300).saturating_mul(members),
        };
        for index in 0..runs_per_size {
            super::sys::check_interrupted()?;
            println!(
                "xtask bench: burst of {size} in the VM, run {} of {runs_per_size}",
                index + 1
            );
            let started = Instant::now();
            let result = guest
                .boot(&run, &format!("{size}-{}", index + 1))
                .and_then(|report| oom_burst::figures(&report));
            match result {
                Ok(figures) => {
                    println!(
                        "xtask bench: burst of {size}: {} killed, {} reported as kills, {} reached the agent, {} dropped, {} `Killed process` lines in the kernel log ({} s)",
                        figures.killed,
                        figures.captured,
                        figures.recorded,
                        figures.dropped,
                        figures.kmsg_killed_lines,
                        started.elapsed().as_secs()
                    );
                    runs.push(BurstRun {
                        size,
                        figures,
                        boot_time: started.elapsed(),
                    });
                }
                Err(err) => {
                    eprintln!("xtask bench: burst of {size} failed: {err:#}");
                    failures.push((
                        size,
                        format!("{err:#}").lines().next().unwrap_or("").to_owned(),
                    ));
                }
            }
        }
    }
    Ok(Bursts {
        kernel: guest.kernel_version().to_owned(),
        runs,
        runs_per_size,
        failures,
    })
}
