//! `test` and `lint`, as CI runs them.

use crate::setup::{Apt, Env, install_test_tools, run};

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
    // the running kernel, then the same test binaries on other kernels in VMs.
    run(env.cargo().arg("test"))?;
    if unit {
        return Ok(());
    }
    // The container tests run podman, and put the static hog in an image with a static busybox.
    install_test_tools(&mut Apt::default())?;
    // Built once, statically, for this host and the guests alike; the agent is the release
    // build users run, as deploy/Containerfile ships it.
    let suite = crate::suite::build(env)?;
    crate::suite::run_on_host(&suite)?;
    // The same questions on other kernels, in the tiers they allow.
    if !no_vm {
        crate::vm::run_all(&suite)?;
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
