//! Command line.

use clap::{Parser, Subcommand, ValueEnum};

use crate::capture::{FunctionHook, Tier};

#[derive(Debug, Parser)]
#[command(
    name = "oomtrace",
    version,
    about = "Explains OOM kills: which process died, in which cgroup, and which task triggered it",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace OOM kills live until SIGINT or SIGTERM (needs root or CAP_BPF + CAP_PERFMON).
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// `text`: one log line per kill on stderr. `json`: also one JSON object per line on stdout
    /// (schema: docs/json-schema.md).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,

    /// Capture no more than this tier, even where the kernel allows more (to compare tiers, or
    /// to avoid a program that misbehaves on some kernel).
    #[arg(long, value_enum, default_value_t = Tier::Full)]
    pub max_tier: Tier,

    /// How to hook `oom_kill_process` in the full tier: `auto` tries fentry, then kprobe.
    #[arg(long, value_enum, default_value_t = FunctionHook::Auto)]
    pub function_hook: FunctionHook,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}
