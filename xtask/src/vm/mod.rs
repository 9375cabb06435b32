//! `vm`: the agent on other kernels, each booted under qemu with software emulation.
//!
//! Every kernel in [`kernel::KERNELS`] is fetched as a Debian package, every scenario in
//! [`scenario::SCENARIOS`] runs in a fresh boot of it, and the scenario's check judges what the
//! guest printed. One initramfs serves all boots: busybox, the statically linked agent and
//! memory hog, a generated `/init` and every scenario script; the kernel command line names the
//! scenario to run. Downloads, extractions and console logs live under `target/vm/`.
//!
//! TCG, not KVM: `/dev/kvm` exists on the CI machines but hangs, and emulation is fast enough for
//! a boot to `/init` in a few seconds.

mod guest;
mod host;
mod initramfs;
mod kernel;
mod mirror;
mod peers;
mod qemu;
pub mod scenario;
mod suite;
mod system;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    run::target_dir,
    setup::{Apt, Env},
};

pub use self::guest::{build_static_agent, build_static_hog};
use self::{
    kernel::{Kernel, KernelPackage},
    qemu::Boot,
    scenario::Scenario,
    suite::SuiteApt,
};

#[derive(clap::Args, Default)]
pub struct Options {
    /// Only the kernels whose name contains this, e.g. `6.1` (see `KERNELS` in xtask/src/vm/kernel.rs).
    #[arg(long, value_name = "PATTERN")]
    kernel: Option<String>,
    /// Only this scenario, e.g. `memcg-oom`.
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// Keep every run's console log under target/vm/runs, also of runs that pass.
    #[arg(long)]
    keep: bool,
    /// The whole-system guest instead of the kernel matrix: Debian 12 with systemd, Docker,
    /// Compose, containerd's CRI and podman on cgroup v2, booted from a disk image that is
    /// built once (target/vm/system), the agent deployed in it, the test binaries run in it.
    #[arg(long, conflicts_with_all = ["kernel", "scenario"])]
    system: bool,
    /// With --system: deploy the agent only this way (by default, one boot for each).
    #[arg(long, value_enum, requires = "system")]
    deployment: Option<system::Deployment>,
    /// With --system: run only this test binary of tests/ (repeatable).
    #[arg(long = "test", value_name = "NAME", requires = "system")]
    tests: Vec<String>,
}

/// Every kernel with every scenario: for `cargo xtask test`.
pub fn run_all(env: &Env) -> anyhow::Result<()> {
    vm(env, Options::default())
}

pub fn vm(env: &Env, options: Options) -> anyhow::Result<()> {
    let Options {
        kernel: kernel_filter,
        scenario: scenario_filter,
        keep,
        system,
        deployment,
        tests,
    } = options;
    if system {
        return system::run_system(
            env,
            system::Options {
                deployment,
                tests,
                keep,
            },
        );
    }
    let packages = kernel::select(kernel_filter.as_deref())?;
    let scenarios = scenario::select(scenario_filter.as_deref())?;
    let work_dir = target_dir().join("vm");
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;

    let started = Instant::now();
    let mut apt = Apt::default();
    host::install_tools(&mut apt)?;
    let kernels = fetch_kernels(&packages, &work_dir)?;
    let binaries = guest::build_binaries(env)?;
    let initrd = initramfs::write(&binaries, scenario::SCENARIOS, &work_dir)?;
    println!(
        "vm: ready to boot in {} s (tools, kernels, binaries, initramfs)",
        started.elapsed().as_secs()
    );

    let mut results = Vec::new();
    for kernel in &kernels {
        for scenario in &scenarios {
            let run_dir = work_dir
                .join("runs")
                .join(&kernel.version)
                .join(scenario.name);
            let result = run_scenario(kernel, scenario, &initrd, &run_dir, keep);
            results.push(RunResult {
                kernel: kernel.version.clone(),
                scenario: scenario.name,
                result,
            });
        }
    }
    summarize(&results, started.elapsed())
}

fn fetch_kernels(packages: &[&KernelPackage], work_dir: &Path) -> anyhow::Result<Vec<Kernel>> {
    packages
        .iter()
        .map(|package| fetch_kernel(package, work_dir).map(|(kernel, _)| kernel))
        .collect()
}

/// The newest kernel of `package`'s family, through its suite's own package lists.
fn fetch_kernel(package: &KernelPackage, work_dir: &Path) -> anyhow::Result<(Kernel, SuiteApt)> {
    let started = Instant::now();
    let mut apt = SuiteApt::new(package.suites, &work_dir.join("apt"))?;
    let kernel = kernel::fetch(&mut apt, package, &work_dir.join("kernels"))?;
    println!(
        "vm: kernel {} from {} (Debian {}, {} s)",
        kernel.version,
        kernel.package,
        apt.suites(),
        started.elapsed().as_secs()
    );
    Ok((kernel, apt))
}

struct RunResult {
    kernel: String,
    scenario: &'static str,
    result: anyhow::Result<Passed>,
}

struct Passed {
    tier: String,
    took: Duration,
}

/// One boot: run the scenario, parse what the guest printed, let the scenario judge it.
fn run_scenario(
    kernel: &Kernel,
    scenario: &Scenario,
    initrd: &Path,
    run_dir: &Path,
    keep: bool,
) -> anyhow::Result<Passed> {
    let started = Instant::now();
    let boot = Boot {
        kernel: &kernel.vmlinuz,
        initrd,
        scenario: scenario.name,
        run_dir,
        memory_mib: qemu::MEMORY_MIB,
        timeout: qemu::SCENARIO_TIMEOUT,
        extra_args: &[],
    };
    let result = boot.run().and_then(|console| {
        let report = scenario::Report::parse(&console.text)?;
        let checked = report
            .check_common(&kernel.version)
            .and_then(|()| (scenario.check)(&report));
        match checked {
            Ok(()) => Ok((report, console)),
            Err(err) => bail!("{err:#}\n{}", report.dump()),
        }
    });
    let took = started.elapsed();
    let (report, console) = match result {
        Ok(ok) => ok,
        Err(err) => {
            println!(
                "vm: linux {} scenario {}: FAILED after {} s (console log in {})",
                kernel.version,
                scenario.name,
                took.as_secs(),
                run_dir.display()
            );
            eprintln!("vm: {err:#}");
            return Err(err);
        }
    };
    let tier = report.tier().unwrap_or_else(|| "none".to_owned());
    println!(
        "vm: linux {} scenario {} tier {tier}: ok ({} s; /init after {}, scenario {})",
        kernel.version,
        scenario.name,
        took.as_secs(),
        seconds(console.init_after),
        seconds(report.scenario_time()),
    );
    if !keep {
        remove_run_dir(run_dir);
    }
    Ok(Passed { tier, took })
}

fn seconds(duration: Option<Duration>) -> String {
    match duration {
        Some(duration) => format!("{:.1} s", duration.as_secs_f64()),
        None => "? s".to_owned(),
    }
}

/// A passing run's log is noise; failing to remove it is not worth failing the run for.
fn remove_run_dir(run_dir: &Path) {
    if let Err(err) = std::fs::remove_dir_all(run_dir) {
        eprintln!("vm: warning: removing {}: {err}", run_dir.display());
    }
}

fn summarize(results: &[RunResult], took: Duration) -> anyhow::Result<()> {
    println!("vm: summary ({} s in all):", took.as_secs());
    let mut failed = Vec::new();
    for RunResult {
        kernel,
        scenario,
        result,
    } in results
    {
        match result {
            Ok(Passed { tier, took }) => println!(
                "vm:   ok     linux {kernel} {scenario} (tier {tier}, {} s)",
                took.as_secs()
            ),
            Err(_) => {
                println!("vm:   FAILED linux {kernel} {scenario}");
                failed.push(format!("{kernel}/{scenario}"));
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} VM runs failed: {}",
            failed.len(),
            results.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// One kernel, the guest binaries and the initramfs, ready for boots of one scenario with
/// parameters of the caller's choice: for `cargo xtask bench`.
pub struct Guest {
    kernel: Kernel,
    /// The kernel's suite, for its headers.
    suite_apt: SuiteApt,
    binaries: guest::Binaries,
    initrd: PathBuf,
    /// The initramfs with the kprobe peers as well, once [`Guest::add_peers`] wrote it.
    peers_initrd: Option<PathBuf>,
    work_dir: PathBuf,
    runs_dir: PathBuf,
}

/// What one boot of a [`Guest`] should do.
pub struct GuestRun<'a> {
    pub scenario: &'a str,
    /// `oomtrace.KEY=VALUE` words for the kernel command line.
    pub extra_args: &'a [String],
    pub memory_mib: u32,
    pub timeout: Duration,
    /// Boot the initramfs that also holds bcc's `oomkill` and bpftrace's `oomkill.bt`.
    pub with_peers: bool,
}

impl Guest {
    /// The first kernel whose name contains `kernel_filter`.
    pub fn prepare(env: &Env, kernel_filter: &str) -> anyhow::Result<Self> {
        let packages = kernel::select(Some(kernel_filter))?;
        let package = packages
            .first()
            .with_context(|| format!("no kernel matches {kernel_filter:?}"))?;
        let work_dir = target_dir().join("vm");
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("creating {}", work_dir.display()))?;
        host::install_tools(&mut Apt::default())?;
        let (kernel, suite_apt) = fetch_kernel(package, &work_dir)?;
        let binaries = guest::build_binaries(env)?;
        let initrd = initramfs::write(&binaries, scenario::SCENARIOS, &work_dir)?;
        Ok(Self {
            kernel,
            suite_apt,
            binaries,
            initrd,
            peers_initrd: None,
            runs_dir: work_dir.join("runs").join("bench"),
            work_dir,
        })
    }

    /// Writes the initramfs for boots `with_peers`: the standard one plus the peers and all
    /// they load (xtask/src/vm/peers.rs); returns its size in bytes.
    pub fn add_peers(&mut self) -> anyhow::Result<u64> {
        let extras = peers::extras(
            &mut Apt::default(),
            &mut self.suite_apt,
            &self.kernel.version,
            &self.work_dir,
        )?;
        let path = initramfs::write_with_extras(
            &self.binaries,
            scenario::SCENARIOS,
            &extras,
            &self.work_dir.join("initramfs-peers.cpio"),
        )?;
        let size = std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        self.peers_initrd = Some(path);
        Ok(size)
    }

    pub fn kernel_version(&self) -> &str {
        &self.kernel.version
    }

    /// Boots once; the report of a scenario that ran to its end, checked only for that. The
    /// console log stays in `target/vm/runs/bench/<scenario>-<label>`, replaced by the next
    /// boot of the same label.
    pub fn boot(&self, run: &GuestRun, label: &str) -> anyhow::Result<scenario::Report> {
        let run_dir = self.runs_dir.join(format!("{}-{label}", run.scenario));
        let initrd = if run.with_peers {
            self.peers_initrd
                .as_ref()
                .context("a boot with the peers before their initramfs was written")?
        } else {
            &self.initrd
        };
        let boot = Boot {
            kernel: &self.kernel.vmlinuz,
            initrd,
            scenario: run.scenario,
            run_dir: &run_dir,
            memory_mib: run.memory_mib,
            timeout: run.timeout,
            extra_args: run.extra_args,
        };
        let console = boot
            .run()
            .with_context(|| format!("console log in {}", run_dir.display()))?;
        let report = scenario::Report::parse(&console.text)?;
        report
            .check_common(&self.kernel.version)
            .with_context(|| format!("{}\n{}", run_dir.display(), report.dump()))?;
        Ok(report)
    }
}
