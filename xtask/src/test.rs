//! `test` and `lint`, as CI runs them.

use crate::run::{agent_binary, build};
use crate::setup::{Apt, Env, install_test_tools, is_root, run};

#[derive(clap::Args)]
pub struct Options {
    /// Only the unit tests, which need neither root nor a particular kernel.
    #[arg(long)]
    unit: bool,
    /// Leave out the kernel matrix (`cargo xtask vm`), which boots other kernels under qemu.
    #[arg(long)]
    no_vm: bool,
}

pub fn test(env: &Env, options: Options) -> anyhow::Result<()> {
    let Options { unit, no_vm } = options;
    // Unit tests of the default members: agent, records, xtask. Then the privileged tests on
    // the running kernel, then the kernel matrix in VMs.
    run(env.cargo().arg("test"))?;
    if unit {
        return Ok(());
    }
    // The privileged tests drive the release agent the way a user runs it.
    build(env)?;
    // The container tests run podman, and put a static hog in an image with a static busybox.
    install_test_tools(&mut Apt::default())?;
    let static_hog = crate::vm::build_static_hog(env)?;
    // The sidecar test builds the image (deploy/Containerfile) around the static agent.
    let static_agent = crate::vm::build_static_agent(env)?;
    let mut integration = env.cargo();
    integration
        .args(["test", "--package", "oomtrace-tests"])
        .env("OOMTRACE_BIN", agent_binary())
        .env("OOMTRACE_STATIC_BIN", static_agent)
        .env("OOMTRACE_STATIC_HOG", static_hog)
        // The agents' history files, and the history commands' (`$OOMTRACE_BIN history`).
        .env(
            "OOMTRACE_HISTORY_DIR",
            crate::run::target_dir().join("oomtrace-test-history"),
        );
    if !is_root() {
        integration.args(["--config", "target.'cfg(all())'.runner='sudo -E'"]);
    }
    // What each scenario prints (e.g. podman's own OOMKilled next to oomtrace's answer) is
    // part of the record of the run, passing or not.
    integration.args(["--", "--show-output"]);
    run(&mut integration)?;
    // The same questions on other kernels, in the tiers they allow.
    if !no_vm {
        crate::vm::run_all(env)?;
    }
    Ok(())
}

pub fn lint(env: &Env) -> anyhow::Result<()> {
    run(env.cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(env.cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "tracer-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The programs' bin cannot link for the host (no unwinding without std); its test build
    // compiles the same code, which is what clippy needs.
    run(env.cargo().args([
        "clippy",
        "--package",
        "tracer-ebpf",
        "--tests",
        "--",
        "-D",
        "warnings",
    ]))?;
    crate::codegen::check(env)?;
    crate::deploy::check()?;
    crate::prometheus::check()
}
