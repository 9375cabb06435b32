//! `cargo xtask vm --system`: the whole-system guest. Where the kernel matrix boots bare kernels with an
//! initramfs, this boots Debian 12 from a disk, as users' Docker hosts and Kubernetes nodes run
//! it: systemd as PID 1 on cgroup v2, Docker Engine and Compose, containerd's CRI with the
//! systemd cgroup driver, podman. The agent is deployed in it as users deploy it (deploy/'s
//! systemd unit, or the container image of `cargo xtask image`); then the suite's runner
//! ([`xtask::vm::runner`]) runs the suite's test binaries in it, as in every guest. No scenario
//! lives here: only the system, the deployment and the boot.
//!
//! - [`image`]: the disk image, built once from Debian's packages and cached by recipe.
//! - [`payload`]: what one boot runs, on a second disk: the suite directory, deploy/, a plan.
//! - [`boot`]: qemu, an overlay per boot, the console and the report.
//! - [`facts`]: what the guest says of itself besides the tests (system-guest/guest/run.sh).

mod boot;
mod facts;
mod image;
mod payload;

use std::{
    path::Path,
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use self::facts::Facts;
use xtask::{
    run::target_dir,
    setup::{Apt, run},
    suite::Suite,
    vm::{binaries_of, host, runner},
};

/// How the agent runs in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Deployment {
    /// deploy/oomtrace.service, installed as its comments say.
    Unit,
    /// The container image (deploy/Containerfile), run by Docker as docs/deploy.md says.
    Image,
}

impl Deployment {
    const ALL: [Deployment; 2] = [Deployment::Unit, Deployment::Image];

    fn name(self) -> &'static str {
        match self {
            Deployment::Unit => "unit",
            Deployment::Image => "image",
        }
    }

    /// The test binaries a boot runs unless told which.
    fn default_tests(self) -> &'static [&'static str] {
        match self {
            Deployment::Unit => TESTS,
            Deployment::Image => IMAGE_TESTS,
        }
    }

    /// What `systemctl is-active` or `docker inspect` says of a running agent.
    fn running_state(self) -> &'static str {
        match self {
            Deployment::Unit => "active",
            Deployment::Image => "running",
        }
    }
}

/// The test binaries of tests/ that run in the guest with the agent as the unit: the runtimes
/// users run, on the systemd cgroup driver and cgroup v2.
const TESTS: &[&str] = &[
    // The deployed agent's own output (the unit's journal entries, or the image's records):
    // first, while it is short.
    "deployed_agent",
    "memcg_oom",
    "docker_oom",
    "docker_child",
    "compose_shared_limit",
    "cri_container_oom",
    "cri_pod_oom_group",
    "container_oom",
    // `--warn-pressure` on cgroup v2: a cgroup's memory.pressure, a podman container by name.
    "pressure_warning",
    "pressure_warning_container",
];
/// With the agent as the image, by default: its own output, and the runtime it runs under.
/// The scenarios' names are checked in the unit's boot; this boot checks the image as users
/// run it, and costs a fraction of the other.
const IMAGE_TESTS: &[&str] = &["deployed_agent", "docker_oom"];
/// Each test binary's time limit in the guest: the Compose test took 5 to 6 minutes under
/// emulation before it failed (its own dockerd and image import, the project up, three kills).
const TEST_TIMEOUT: Duration = Duration::from_secs(900);
/// The boot up to the runner, deploying the agent, and the shutdown (about 40 s under
/// emulation on two cores), with room for a busy machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// How many lines of a failed test's output the summary shows (the report has all).
const FAILURE_TAIL_LINES: usize = 80;

/// `cargo xtask vm --system`'s options, which it passes on.
#[derive(clap::Parser)]
struct Options {
    /// Deploy the agent only this way (by default, one boot for each).
    #[arg(long, value_enum)]
    deployment: Option<Deployment>,
    /// Only this test binary (`NAME[:FILTER]`), repeatable; none: the deployment's list.
    #[arg(long = "test", value_name = "NAME[:FILTER]")]
    tests: Vec<String>,
    /// Keep every boot's logs, also of boots that pass.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let options = <Options as clap::Parser>::parse();
    let result = xtask::setup::setup()
        .and_then(|env| xtask::suite::build(&env))
        .and_then(|suite| run_system(&suite, options));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("vm: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_system(suite: &Suite, options: Options) -> anyhow::Result<()> {
    let Options {
        deployment,
        tests,
        keep,
    } = options;
    let started = Instant::now();
    let system_dir = target_dir().join("vm").join("system");
    std::fs::create_dir_all(&system_dir)
        .with_context(|| format!("creating {}", system_dir.display()))?;
    host::install_tools(&mut Apt::default())?;
    let image = image::prepare(&system_dir)?;

    let deployments = match deployment {
        Some(deployment) => vec![deployment],
        None => Deployment::ALL.to_vec(),
    };
    // What each boot runs: the tests asked for, else its deployment's own list.
    let plans: Vec<(Deployment, Vec<String>)> = deployments
        .iter()
        .map(|&deployment| {
            let tests = if tests.is_empty() {
                deployment
                    .default_tests()
                    .iter()
                    .map(|&name| name.to_owned())
                    .collect()
            } else {
                tests.clone()
            };
            (deployment, tests)
        })
        .collect();
    let mut all_tests: Vec<String> = plans.iter().flat_map(|(_, tests)| tests.clone()).collect();
    all_tests.sort();
    all_tests.dedup();
    let binaries = binaries_of(suite, &all_tests)?;
    let image_tag = xtask::image::tag();
    let image_archive = system_dir.join("oomtrace-image.tar");
    if deployments.contains(&Deployment::Image) {
        xtask::image::build(&suite.agent, &image_tag)?;
        save_image(&image_tag, &image_archive)?;
    }
    println!(
        "vm: system guest ready to boot in {} s (image, {} test binaries)",
        started.elapsed().as_secs(),
        binaries.len()
    );

    let mut failed = Vec::new();
    for (deployment, tests) in plans {
        let binaries = binaries_of(suite, &tests)?;
        let run_dir = system_dir.join("runs").join(deployment.name());
        let contents = payload::Contents {
            deployment,
            suite,
            binaries: &binaries,
            tests: &tests,
            test_timeout_secs: TEST_TIMEOUT.as_secs(),
            image_archive: (deployment == Deployment::Image).then_some(image_archive.as_path()),
            image_tag: &image_tag,
        };
        let count = u32::try_from(tests.len()).unwrap_or(u32::MAX);
        let result = payload::write(&contents, &run_dir).and_then(|payload_disk| {
            boot::Boot {
                image: &image,
                payload: &payload_disk,
                run_dir: &run_dir,
                timeout: BOOT_TIMEOUT + TEST_TIMEOUT.saturating_mul(count),
            }
            .run()
        });
        let label = format!("system guest, agent as {}", deployment.name());
        let ok = match result {
            Ok(output) => judge(&output, deployment, &image.kernel_version, &tests, &label),
            Err(err) => {
                println!("vm: {label}: FAILED, the boot failed: {err:#}");
                false
            }
        };
        if ok && !keep {
            let _ = std::fs::remove_dir_all(&run_dir);
        } else {
            println!("vm: {label}: the boot's logs are in {}", run_dir.display());
        }
        if !ok {
            failed.push(deployment.name());
        }
    }
    println!("vm: system guest: {} s in all", started.elapsed().as_secs());
    if !failed.is_empty() {
        bail!(
            "the system guest failed with the agent as {}",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Says how each test went and whether the system was what it claims; true if all is well.
fn judge(
    output: &boot::Output,
    deployment: Deployment,
    kernel_version: &str,
    tests: &[String],
    label: &str,
) -> bool {
    let report = runner::parse(&output.report);
    let facts = Facts::parse(&output.report);
    let mut ok = true;
    if let Some(why) = &output.incomplete {
        println!("vm: {label}: FAILED, {why}");
        ok = false;
    }
    if let Err(err) = check_system(&report, &facts, deployment, kernel_version) {
        println!("vm: {label}: FAILED, {err:#}");
        ok = false;
    }
    for test in tests {
        let name = test.split(':').next().unwrap_or(test);
        let Some(run) = report.runs.iter().find(|run| run.name == name) else {
            println!("vm: {label} {test}: FAILED, did not run");
            ok = false;
            continue;
        };
        let took = run
            .seconds
            .map_or_else(|| "? s".to_owned(), |seconds| format!("{seconds:.0} s"));
        match run.failure() {
            None => {
                let skipped = run.skipped();
                let skipped = if skipped.is_empty() {
                    String::new()
                } else {
                    format!("; skipped: {}", skipped.join("; "))
                };
                println!("vm: {label} {test}: ok ({took}{skipped})");
            }
            Some(why) => {
                println!("vm: {label} {test}: FAILED, {why} ({took})");
                eprintln!(
                    "--- the last {FAILURE_TAIL_LINES} lines of {test} ---\n{}",
                    run.output_tail(FAILURE_TAIL_LINES)
                );
                ok = false;
            }
        }
    }
    println!(
        "vm: {label}: {} ({} s; {})",
        if ok { "ok" } else { "FAILED" },
        output.took.as_secs(),
        facts.timings()
    );
    ok
}

/// `docker save` format, which `docker load` in the guest reads.
fn save_image(tag: &str, archive: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(archive);
    run(Command::new("podman")
        .args(["save", "--quiet", "--format", "docker-archive", "--output"])
        .arg(archive)
        .arg(tag))
    .with_context(|| format!("saving the image {tag}"))
}

/// What a boot must show besides the tests' own verdicts: the guest is the system it claims to
/// be, and the agent ran in it as deployed, from before the tests to after them.
fn check_system(
    report: &runner::Report,
    facts: &Facts,
    deployment: Deployment,
    kernel_version: &str,
) -> anyhow::Result<()> {
    ensure!(
        report.kernel.as_deref() == Some(kernel_version),
        "the guest runs kernel {:?}, not the image's {kernel_version}",
        report.kernel
    );
    facts.expect("cgroup_fs", "cgroup2fs")?;
    for unit in ["docker.service", "containerd.service", "podman.socket"] {
        facts.expect(&format!("unit.{unit}"), "active")?;
    }
    facts.expect("deploy_status", "0")?;
    // The unit logs as a person reads it ("attached; capture tier …"), the image JSON Lines
    // (its agent_started record): the script looked for either.
    facts.expect("agent_ready", "yes")?;
    facts.expect("agent_state", deployment.running_state())?;
    ensure!(report.done, "the suite's runner did not finish");
    Ok(())
}
