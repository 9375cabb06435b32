//! Developer tasks. `cargo xtask run` and `cargo xtask test` install what is missing first, so a
//! fresh machine needs nothing but these two commands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::{codegen, deploy, fuzz, image, prometheus, run, setup, test, vm};

#[derive(Parser)]
#[command(about = "oomtrace developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing (idempotent): the eBPF toolchain (Rust library sources and
    /// bpf-linker), podman, a static busybox and Prometheus for the privileged tests, and the
    /// validators of deploy/ (kubernetes-validate, systemd-analyze, promtool).
    Setup,
    /// Build the agent (with its embedded eBPF object) in release mode.
    Build,
    /// Build and run the tracer; arguments after `--` go to `oomtrace run`.
    Run(run::Options),
    /// Unit tests, then the privileged integration tests against the running kernel.
    Test(test::Options),
    /// rustfmt and clippy, as CI checks them, and deploy/ against the Kubernetes schemas,
    /// systemd-analyze and promtool (the alerting rules' unit tests, the Grafana dashboard).
    Lint,
    /// Rewrite the files generated from others: the PrometheusRule from
    /// deploy/prometheus/oomtrace-rules.yaml.
    Generate,
    /// The container image (deploy/Containerfile) with the static agent:
    /// `localhost/oomtrace:<version>`.
    Image,
    /// The agent on other kernels: boots each under qemu (software emulation) and runs
    /// OOM scenarios in it.
    Vm(vm::Options),
    /// Attach time, idle footprint, kill-to-output latency and per-event kernel cost of the
    /// release agent, next to a bpftrace one-liner; writes bench/results/<date>-<kernel>.md.
    /// Runs the bench crate (`bench/`); its options follow: `cargo xtask bench --help`.
    #[command(disable_help_flag = true)]
    Bench(BenchArgs),
    /// Every fuzz target in fuzz/ for a while (30 s each by default), installing cargo-fuzz
    /// when it is missing.
    Fuzz(fuzz::Options),
    /// Regenerate the Rust code of the vendored protocol buffers (tracer/proto: the CRI and
    /// containerd's events) with a pure-Rust proto compiler; `--check` says whether it is
    /// current, as `lint` does.
    Codegen(codegen::Options),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Passed to the bench as they are.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

fn main() -> ExitCode {
    let Cli { task } = Cli::parse();
    let result = match task {
        // Every task sets up first: it only installs what is missing.
        Task::Setup => setup::setup().and_then(|_| {
            let mut apt = setup::Apt::default();
            setup::install_test_tools(&mut apt)?;
            deploy::install_validator(&mut apt).map(drop)
        }),
        Task::Build => setup::setup().and_then(|env| run::build(&env)),
        // stdout is the agent's alone: everything before it goes to stderr.
        Task::Run(options) => run::StdoutReserved::hold()
            .map_err(anyhow::Error::from)
            .and_then(|stdout| setup::setup().and_then(|env| run::run(&env, options, stdout))),
        Task::Test(options) => setup::setup().and_then(|env| test::test(&env, options)),
        Task::Lint => setup::setup().and_then(|env| test::lint(&env)),
        Task::Generate => prometheus::generate(),
        Task::Image => setup::setup().and_then(|env| image::image(&env)),
        Task::Vm(options) => setup::setup().and_then(|env| vm::vm(&env, options)),
        Task::Bench(BenchArgs { args }) => setup::setup().and_then(|env| {
            setup::run(
                env.cargo()
                    .args(["run", "--quiet", "--package", "oomtrace-bench", "--"])
                    .args(args),
            )
        }),
        Task::Fuzz(options) => setup::setup().and_then(|env| fuzz::fuzz(&env, options)),
        // No eBPF toolchain needed: the generator is plain Rust.
        Task::Codegen(options) => codegen::codegen(options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
