//! `vm --system`: the whole-system guest. Where the kernel matrix boots bare kernels with an
//! initramfs, this boots Debian 12 from a disk, as users' Docker hosts and Kubernetes nodes run
//! it: systemd as PID 1 on cgroup v2, Docker Engine and Compose, containerd's CRI with the
//! systemd cgroup driver, podman. The agent is deployed in it as users deploy it (deploy/'s
//! systemd unit, or the container image of `cargo xtask image`), and the test binaries of the
//! `tests` crate run against it.
//!
//! - [`image`]: the disk image, built once from Debian's packages and cached by recipe.
//! - [`payload`]: what one boot runs, on a second disk: runner, plan, agent, tests.
//! - [`boot`]: qemu, an overlay per boot, the console and the report.
//!
//! The report is the initramfs guests' section protocol ([`super::scenario::Report`]), written
//! by `xtask/vm/system/run.sh` in the guest.

mod boot;
mod image;
mod payload;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use oomtrace::record::{Body, Record};

use super::{guest, host, scenario::Report};
use crate::{
    run::target_dir,
    setup::{Apt, Env, run},
};

/// How the agent runs in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Deployment {
    /// deploy/oomtrace.service, installed as its comments say.
    Unit,
    /// The container image (deploy/Containerfile), run by Docker as the README says.
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

    /// What `systemctl is-active` or `docker inspect` says of a running agent.
    fn running_state(self) -> &'static str {
        match self {
            Deployment::Unit => "active",
            Deployment::Image => "running",
        }
    }
}

/// The test binaries of tests/ that run in the guest: the runtimes users run, on the systemd
/// cgroup driver and cgroup v2.
const TESTS: &[&str] = &[
    "memcg_oom",
    "docker_oom",
    "docker_child",
    "compose_shared_limit",
    "cri_container_oom",
    "cri_pod_oom_group",
    "container_oom",
];
/// Each test binary's time limit in the guest: the Compose test takes about 6 minutes under
/// emulation (its own dockerd and image import, then three kills).
const TEST_TIMEOUT: Duration = Duration::from_secs(600);
/// The boot up to the runner, deploying the agent, and the shutdown (about 40 s under
/// emulation on two cores), with room for a busy machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

pub struct Options {
    pub deployment: Option<Deployment>,
    pub tests: Vec<String>,
    pub keep: bool,
}

pub fn run_system(env: &Env, options: Options) -> anyhow::Result<()> {
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

    let agent = guest::build_static_agent(env)?;
    let hog = guest::build_static_hog(env)?;
    let names: Vec<&str> = if tests.is_empty() {
        TESTS.to_vec()
    } else {
        tests.iter().map(String::as_str).collect()
    };
    let test_build = payload::build_tests(env, &names)?;
    let deployments = match deployment {
        Some(deployment) => vec![deployment],
        None => Deployment::ALL.to_vec(),
    };
    let image_tag = crate::image::tag();
    let image_archive = system_dir.join("oomtrace-image.tar");
    if deployments.contains(&Deployment::Image) {
        crate::image::build(&agent, &image_tag)?;
        save_image(&image_tag, &image_archive)?;
    }
    println!(
        "vm: system guest ready to boot in {} s (image, binaries, {} test binaries)",
        started.elapsed().as_secs(),
        test_build.tests.len()
    );

    let mut failed = Vec::new();
    for deployment in deployments {
        let run_dir = system_dir.join("runs").join(deployment.name());
        let contents = payload::Contents {
            deployment,
            agent: &agent,
            hog: &hog,
            image_archive: (deployment == Deployment::Image).then_some(image_archive.as_path()),
            image_tag: &image_tag,
            tests: &test_build,
            test_timeout_secs: TEST_TIMEOUT.as_secs(),
        };
        let result = payload::write(&contents, &run_dir).and_then(|payload_disk| {
            let boot = boot::Boot {
                image: &image,
                payload: &payload_disk,
                run_dir: &run_dir,
                timeout: BOOT_TIMEOUT + TEST_TIMEOUT * u32::try_from(names.len())?,
            };
            let output = boot.run()?;
            let report = Report::parse(&output.report)?;
            match check(&report, deployment, &image.kernel_version) {
                Ok(()) => Ok((report, output)),
                Err(err) => bail!(
                    "{err:#}\n{}\n(the console: {})",
                    report.dump(),
                    output.console_path.display()
                ),
            }
        });
        match result {
            Ok((report, output)) => {
                println!(
                    "vm: system guest, agent as {}: ok ({} s; {})",
                    deployment.name(),
                    output.took.as_secs(),
                    timings(&report)
                );
                if !keep {
                    let _ = std::fs::remove_dir_all(&run_dir);
                }
            }
            Err(err) => {
                println!(
                    "vm: system guest, agent as {}: FAILED (logs in {})",
                    deployment.name(),
                    run_dir.display()
                );
                eprintln!("vm: {err:#}");
                failed.push(deployment.name());
            }
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
/// be, and the agent runs in it as deployed.
fn check(report: &Report, deployment: Deployment, kernel_version: &str) -> anyhow::Result<()> {
    report.check_common(kernel_version)?;
    let cgroup_fs: String = report.fact("cgroup_fs")?;
    ensure!(
        cgroup_fs == "cgroup2fs",
        "/sys/fs/cgroup is {cgroup_fs}, not cgroup v2"
    );
    for unit in ["docker.service", "containerd.service", "podman.socket"] {
        let state: String = report.fact(&format!("unit.{unit}"))?;
        ensure!(state == "active", "{unit} is {state}");
    }
    let state: String = report.fact("agent_state")?;
    ensure!(
        state == deployment.running_state(),
        "the agent ({}) is {state} at the end",
        deployment.name()
    );
    let log = report.section("agent-log")?;
    match deployment {
        // The unit logs as a person reads it: the line that says it attached.
        Deployment::Unit => ensure!(
            log.contains("attached; capture tier"),
            "the unit's journal does not say the agent attached"
        ),
        // The image writes JSON Lines: its agent_started record.
        Deployment::Image => {
            let started = log
                .lines()
                .filter(|line| line.starts_with('{'))
                .filter_map(|line| serde_json::from_str::<Record>(line).ok())
                .any(|record| matches!(record.body, Body::AgentStarted(_)));
            ensure!(started, "the container's log has no agent_started record");
        }
    }
    Ok(())
}

/// From the guest's clock: the boot up to the runner, the agent's deployment, the tests.
fn timings(report: &Report) -> String {
    let fact = |key: &str| report.fact::<f64>(key).ok();
    let span = |from: Option<f64>, to: Option<f64>| match (from, to) {
        (Some(from), Some(to)) => format!("{:.1} s", to - from),
        _ => "? s".to_owned(),
    };
    let init = fact("uptime_at_init");
    let ready = fact("agent_ready_at");
    format!(
        "runner started {} after boot, agent ready {} later, tests {}",
        span(Some(0.0), init),
        span(init, ready),
        span(ready, fact("uptime_at_end"))
    )
}
