//! `vm`: the test suite on other kernels, each booted under qemu with software emulation.
//!
//! Every kernel in [`kernel::KERNELS`] is fetched as a Debian package and booted once, with an
//! initramfs holding busybox, a generated `/init` and the suite directory of the guest runner
//! ([`runner`]): the static agent and hog and the test binaries of [`GUEST_TESTS`], the very
//! binaries `cargo xtask test` runs on the host. `/init` runs them; the host reads each one's
//! exit status and output from the serial console. The scenarios are the tests in
//! `tests/tests/`: this harness holds no scenario logic of its own. Downloads, extractions and
//! console logs live under `target/vm/`.
//!
//! TCG, not KVM: `/dev/kvm` exists on the CI machines but hangs, and emulation is fast enough for
//! a boot to `/init` in a few seconds.

mod apt;
pub mod host;
mod initramfs;
mod kernel;
pub mod mirror;
pub mod qemu;
pub mod runner;

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    run::target_dir,
    setup::{Apt, Env},
    suite::{Suite, TestBinary},
};

pub use self::{apt::SuiteApt, initramfs::Extra, kernel::fetch_headers, qemu::MEMORY_MIB};
use self::{
    kernel::{Kernel, KernelPackage},
    qemu::Boot,
};

/// The test binaries the kernel matrix runs, in this order: the scenarios whose answers depend
/// on the kernel (its hooks, its tracepoint, cgroup v2). The container runtimes' tests need a
/// whole distribution, not an initramfs.
pub const GUEST_TESTS: &[&str] = &[
    "memcg_oom",
    "tracepoint_only",
    "oom_group",
    "oom_burst",
    "snapshot_per_kill",
    "timeline_lead_up",
    "tmpfs_fills_memcg",
    "timeline_many_cgroups",
    "timeline_bound",
    // Last: it exhausts the guest's memory.
    "host_oom",
];
/// What the matrix's tests are told about the guest: a busy node's cgroups, as many as its
/// memory holds with their processes.
const GUEST_ENV: &[(&str, &str)] = &[("OOMTRACE_MANY_CGROUPS", "50")];
/// Each test binary's time limit in the guest, unless a boot asks for longer.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How many lines of a failed test's output the summary shows (the console log has all).
const FAILURE_TAIL_LINES: usize = 80;

#[derive(clap::Args, Default)]
pub struct Options {
    /// Only the kernels whose name contains this, e.g. `6.1` (see `KERNELS` in xtask/src/vm/kernel.rs).
    #[arg(long, value_name = "PATTERN")]
    kernel: Option<String>,
    /// Only this test binary (a file of tests/tests/, e.g. `memcg_oom`), with a libtest filter
    /// after a colon for some of its tests (`memcg_oom:kprobes`); repeatable. Any test binary
    /// can run, also one not in the list of the matrix (or of the whole-system guest).
    #[arg(long, alias = "scenario", value_name = "NAME[:FILTER]")]
    test: Vec<String>,
    /// Keep every boot's console log under target/vm/runs, also of boots that pass.
    #[arg(long)]
    keep: bool,
    /// The whole-system guest instead of the kernel matrix: Debian 12 with systemd, Docker,
    /// Compose, containerd's CRI and podman on cgroup v2, booted from a disk image that is
    /// built once (target/vm/system), the agent deployed in it, the suite's tests run in it.
    #[arg(long, conflicts_with = "kernel")]
    system: bool,
    /// With --system: deploy the agent only this way, `unit` or `image` (by default, one boot
    /// for each).
    #[arg(long, value_name = "unit|image", requires = "system")]
    deployment: Option<String>,
    /// Run the tests this many times over in each boot, e.g. to count how often a flaky one
    /// fails.
    #[arg(long, value_name = "N", default_value_t = 1, conflicts_with = "system")]
    repeat: usize,
}

/// Every kernel with every test of the matrix, on a suite already built: for `cargo xtask test`.
pub fn run_all(suite: &Suite) -> anyhow::Result<()> {
    run_suite(suite, Options::default())
}

pub fn vm(env: &Env, options: Options) -> anyhow::Result<()> {
    if options.system {
        return system_guest(env, options);
    }
    let suite = crate::suite::build(env)?;
    run_suite(&suite, options)
}

/// `--system`: the whole-system guest, a crate of its own (`system-guest/`), run with the
/// options that concern it.
fn system_guest(env: &Env, options: Options) -> anyhow::Result<()> {
    let Options {
        kernel: _,
        test: tests,
        keep,
        system: _,
        deployment,
        repeat: _,
    } = options;
    let mut cargo = env.cargo();
    cargo.args(["run", "--quiet", "--package", "oomtrace-system-guest", "--"]);
    if let Some(deployment) = deployment {
        cargo.args(["--deployment", &deployment]);
    }
    for test in tests {
        cargo.args(["--test", &test]);
    }
    if keep {
        cargo.arg("--keep");
    }
    crate::setup::run(&mut cargo)
}

fn run_suite(suite: &Suite, options: Options) -> anyhow::Result<()> {
    let Options {
        kernel: kernel_filter,
        test: tests,
        keep,
        system,
        deployment: _,
        repeat,
    } = options;
    if system {
        anyhow::bail!("the whole-system guest runs from `cargo xtask vm --system`");
    }
    let started = Instant::now();
    let packages = kernel::select(kernel_filter.as_deref())?;
    let once: Vec<String> = if tests.is_empty() {
        GUEST_TESTS.iter().map(|&name| name.to_owned()).collect()
    } else {
        tests
    };
    let binaries = binaries_of(suite, &once)?;
    let tests: Vec<String> = std::iter::repeat_n(&once, repeat.max(1))
        .flatten()
        .cloned()
        .collect();
    let work_dir = work_dir()?;
    host::install_tools(&mut Apt::default())?;
    let kernels = fetch_kernels(&packages, &work_dir)?;
    let initrd = initramfs::write(suite, &binaries, &[], &work_dir.join("initramfs.cpio"))?;
    println!(
        "vm: ready to boot in {} s (tools, kernels, initramfs)",
        started.elapsed().as_secs()
    );

    let env = guest_env();
    let mut results = Vec::new();
    for kernel in &kernels {
        let run_dir = work_dir.join("runs").join(&kernel.version);
        let boot = GuestRun {
            tests: &tests,
            env: &env,
            memory_mib: qemu::MEMORY_MIB,
            timeout: TEST_TIMEOUT,
        };
        let report = boot_once(kernel, &initrd, &boot, &run_dir);
        let failed = report.as_ref().map_or(true, |report| {
            !report.done || report.runs.iter().any(|run| !run.passed())
        });
        if !keep && !failed {
            remove_run_dir(&run_dir);
        }
        results.push((kernel, report));
    }
    summarize(&results, &tests, started.elapsed())
}

/// [`GUEST_ENV`], and the caller's `RUST_LOG` for the agents the tests start (e.g.
/// `RUST_LOG=oomtrace::observe::timeline=trace cargo xtask vm …`): the host's environment does
/// not reach the guest otherwise.
fn guest_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = GUEST_ENV
        .iter()
        .map(|&(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    match std::env::var("RUST_LOG") {
        Ok(filter)
            if !filter.is_empty()
                && filter
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_:=,.-".contains(c)) =>
        {
            env.push(("RUST_LOG".to_owned(), filter));
        }
        Ok(filter) => eprintln!(
            "vm: RUST_LOG={filter:?} stays on the host: only letters, digits and `_:=,.-` travel \
             on the guest's kernel command line"
        ),
        Err(_) => {}
    }
    env
}

/// The test binaries for `tests` (`NAME` or `NAME:FILTER`).
pub fn binaries_of<'a>(suite: &'a Suite, tests: &[String]) -> anyhow::Result<Vec<&'a TestBinary>> {
    let names: Vec<&str> = tests
        .iter()
        .map(|test| test.split(':').next().unwrap_or(test))
        .collect();
    let mut binaries = suite.select(&names)?;
    binaries.dedup_by(|a, b| a.name == b.name);
    Ok(binaries)
}

fn work_dir() -> anyhow::Result<PathBuf> {
    let work_dir = target_dir().join("vm");
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    Ok(work_dir)
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

/// What one boot runs.
pub struct GuestRun<'a> {
    /// Test binaries, each `NAME` or `NAME:FILTER`, in order.
    pub tests: &'a [String],
    /// More environment for the tests, e.g. the burst's `OOMTRACE_BURST_MEMBERS`. Keys and
    /// values without spaces: they travel on the kernel command line.
    pub env: &'a [(String, String)],
    pub memory_mib: u32,
    /// Each test binary's time limit.
    pub timeout: Duration,
}

impl GuestRun<'_> {
    fn kernel_args(&self) -> Vec<String> {
        let mut args = vec![
            format!("oomtrace.tests={}", self.tests.join(",")),
            format!("oomtrace.timeout={}", self.timeout.as_secs()),
        ];
        args.extend(
            self.env
                .iter()
                .map(|(key, value)| format!("oomtrace.env.{key}={value}")),
        );
        args
    }
}

/// One boot: what the runner reported, checked to come from the kernel meant. Says how each
/// test went as it reports.
fn boot_once(
    kernel: &Kernel,
    initrd: &Path,
    run: &GuestRun,
    run_dir: &Path,
) -> anyhow::Result<runner::Report> {
    let started = Instant::now();
    let args = run.kernel_args();
    let count = u32::try_from(run.tests.len()).unwrap_or(u32::MAX);
    let boot = Boot {
        kernel: &kernel.vmlinuz,
        initrd,
        run_dir,
        memory_mib: run.memory_mib,
        timeout: run.timeout.saturating_mul(count),
        args: &args,
    };
    let console = boot.run().with_context(|| {
        format!(
            "linux {}: console log in {}",
            kernel.version,
            run_dir.display()
        )
    })?;
    let report = runner::parse(&console.text);
    if report.kernel.as_deref() != Some(kernel.version.as_str()) {
        bail!(
            "the guest runs kernel {:?}, not {} (console log in {})",
            report.kernel,
            kernel.version,
            run_dir.display()
        );
    }
    for test in &report.runs {
        match test.failure() {
            None => println!(
                "vm: linux {} {}: ok ({})",
                kernel.version,
                test.name,
                seconds(test.seconds)
            ),
            Some(why) => {
                println!(
                    "vm: linux {} {}: FAILED, {why} ({})",
                    kernel.version,
                    test.name,
                    seconds(test.seconds)
                );
                eprintln!(
                    "--- the last {FAILURE_TAIL_LINES} lines of {} on linux {} (all in {}) ---\n{}",
                    test.name,
                    kernel.version,
                    run_dir.join("console.log").display(),
                    test.output_tail(FAILURE_TAIL_LINES)
                );
            }
        }
    }
    println!(
        "vm: linux {}: {} s (/init after {})",
        kernel.version,
        started.elapsed().as_secs(),
        seconds(console.init_after.map(|after| after.as_secs_f64()))
    );
    Ok(report)
}

fn seconds(seconds: Option<f64>) -> String {
    match seconds {
        Some(seconds) => format!("{seconds:.1} s"),
        None => "? s".to_owned(),
    }
}

/// A passing boot's log is noise; failing to remove it is not worth failing the run for.
fn remove_run_dir(run_dir: &Path) {
    if let Err(err) = std::fs::remove_dir_all(run_dir) {
        eprintln!("vm: warning: removing {}: {err}", run_dir.display());
    }
}

fn summarize(
    results: &[(&Kernel, anyhow::Result<runner::Report>)],
    tests: &[String],
    took: Duration,
) -> anyhow::Result<()> {
    println!("vm: summary ({} s in all):", took.as_secs());
    let mut failed = Vec::new();
    let mut count = 0;
    for (kernel, report) in results {
        let version = &kernel.version;
        let report = match report {
            Ok(report) => report,
            Err(err) => {
                println!("vm:   FAILED linux {version}: the boot failed: {err:#}");
                failed.push(format!("{version} (boot)"));
                continue;
            }
        };
        for (index, test) in tests.iter().enumerate() {
            count += 1;
            let name = test.split(':').next().unwrap_or(test);
            // The same test may run more than once in a boot (`--repeat`): its nth run.
            let nth = tests[..index]
                .iter()
                .filter(|earlier| earlier.split(':').next() == Some(name))
                .count();
            match report.runs.iter().filter(|run| run.name == name).nth(nth) {
                Some(run) if run.passed() => {
                    let skipped = run.skipped();
                    let skipped = if skipped.is_empty() {
                        String::new()
                    } else {
                        format!("; skipped: {}", skipped.join("; "))
                    };
                    println!(
                        "vm:   ok     linux {version} {test} ({}{skipped})",
                        seconds(run.seconds)
                    );
                }
                Some(run) => {
                    println!(
                        "vm:   FAILED linux {version} {test}: {}",
                        run.failure().unwrap_or_default()
                    );
                    failed.push(format!("{version}/{test}"));
                }
                None => {
                    println!("vm:   FAILED linux {version} {test}: did not run");
                    failed.push(format!("{version}/{test}"));
                }
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {count} test runs in VMs failed: {}",
            failed.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// One kernel and an initramfs with some test binaries, ready for boots with parameters of
/// the caller's choice: for `cargo xtask bench`.
pub struct Guest {
    kernel: Kernel,
    /// The kernel's suite, for its headers.
    suite_apt: SuiteApt,
    suite: Suite,
    tests: Vec<String>,
    initrd: PathBuf,
    /// The initramfs with the kprobe peers as well, once [`Guest::add_peers`] wrote it.
    peers_initrd: Option<PathBuf>,
    work_dir: PathBuf,
    runs_dir: PathBuf,
}

impl Guest {
    /// The first kernel whose name contains `kernel_filter`, and the suite with the test
    /// binaries `tests`.
    pub fn prepare(env: &Env, kernel_filter: &str, tests: &[&str]) -> anyhow::Result<Self> {
        let packages = kernel::select(Some(kernel_filter))?;
        let package = packages
            .first()
            .with_context(|| format!("no kernel matches {kernel_filter:?}"))?;
        let work_dir = work_dir()?;
        host::install_tools(&mut Apt::default())?;
        let (kernel, suite_apt) = fetch_kernel(package, &work_dir)?;
        let suite = crate::suite::build(env)?;
        let tests: Vec<String> = tests.iter().map(|&test| test.to_owned()).collect();
        let initrd = initramfs::write(
            &suite,
            &binaries_of(&suite, &tests)?,
            &[],
            &work_dir.join("initramfs-bench.cpio"),
        )?;
        Ok(Self {
            kernel,
            suite_apt,
            suite,
            tests,
            initrd,
            peers_initrd: None,
            runs_dir: work_dir.join("runs").join("bench"),
            work_dir,
        })
    }

    /// Writes the initramfs for boots `with_peers`: the standard one plus `extras` (the bench's
    /// peers and all they load); returns its size in bytes.
    pub fn add_peers(&mut self, extras: &[Extra]) -> anyhow::Result<u64> {
        let path = initramfs::write(
            &self.suite,
            &binaries_of(&self.suite, &self.tests)?,
            extras,
            &self.work_dir.join("initramfs-peers.cpio"),
        )?;
        let size = std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        self.peers_initrd = Some(path);
        Ok(size)
    }

    /// The guest kernel's Debian suite (its headers come from there), and where the guest's
    /// downloads are kept.
    pub fn suite_apt(&mut self) -> (&mut SuiteApt, &Path) {
        (&mut self.suite_apt, &self.work_dir)
    }

    pub fn kernel_version(&self) -> &str {
        &self.kernel.version
    }

    /// Boots once, `with_peers` or not; what the runner reported, whether the tests passed or
    /// not. The console log stays in `target/vm/runs/bench/<label>`, replaced by the next boot
    /// of the same label.
    pub fn boot(
        &self,
        run: &GuestRun,
        with_peers: bool,
        label: &str,
    ) -> anyhow::Result<runner::Report> {
        let run_dir = self.runs_dir.join(label);
        let initrd = if with_peers {
            self.peers_initrd
                .as_ref()
                .context("a boot with the peers before their initramfs was written")?
        } else {
            &self.initrd
        };
        boot_once(&self.kernel, initrd, run, &run_dir)
    }
}
