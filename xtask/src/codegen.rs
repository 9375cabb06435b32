//! `cargo xtask codegen`: runs the generator (src/bin/codegen.rs), which is built only with the
//! `codegen` feature, so that the proto compiler is not compiled for every other task.

use std::process::Command;

use crate::setup::{Env, run};

#[derive(clap::Args)]
pub struct Options {
    /// Only say whether the committed code is current; change nothing.
    #[arg(long)]
    check: bool,
}

pub fn codegen(options: Options) -> anyhow::Result<()> {
    let Options { check } = options;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    generator(&mut Command::new(cargo), check)
}

/// What `lint` runs: the committed code is what the protos generate.
pub fn check(env: &Env) -> anyhow::Result<()> {
    generator(&mut env.cargo(), true)
}

fn generator(cargo: &mut Command, check: bool) -> anyhow::Result<()> {
    cargo.args([
        "run",
        "--quiet",
        "--package",
        "xtask",
        "--features",
        "codegen",
        "--bin",
        "codegen",
    ]);
    if check {
        cargo.args(["--", "--check"]);
    }
    run(cargo)
}
