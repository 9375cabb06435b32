//! Command line.

use clap::{Parser, Subcommand, ValueEnum};

use crate::capture::{FunctionHook, Tier};
pub use crate::units::{HumanDuration, RingBufSize};

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

    /// A Docker Engine API socket (Docker's or podman's) to name containers by. Repeat for
    /// several. When none is given: /var/run/docker.sock and /run/podman/podman.sock.
    #[arg(long = "runtime-socket", value_name = "PATH")]
    pub runtime_sockets: Vec<String>,

    /// How long a removed container's name is kept for kills reported late, e.g. `24h`, `90m`.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub tombstone_ttl: HumanDuration,

    /// A container OOM-killed 3 times within this window is flagged as a restart loop; the
    /// same window counts host-wide OOMs set off by one trigger.
    #[arg(long, value_name = "DURATION", default_value = "6h")]
    pub restart_loop_window: HumanDuration,

    /// The agent's own `oom_score_adj`: -1000, the default, means the OOM killer never picks
    /// the agent itself.
    #[arg(long, value_name = "ADJ", default_value_t = -1000, allow_negative_numbers = true,
          value_parser = clap::value_parser!(i16).range(-1000..=1000))]
    pub oom_score_adj: i16,

    /// The kernel-to-agent ring buffer, e.g. `4M`, `512K` or bytes: a power of two, at least a
    /// page. One victim takes about 3.3 KiB of it, so the default holds a `memory.oom.group`
    /// kill of about 1,200 processes before the agent reads any; more is dropped and counted as
    /// `ringbuf_dropped_total`. Pages of it the kernel has written stay in the agent's RSS.
    #[arg(long, value_name = "SIZE", default_value = "4M")]
    pub ringbuf_size: RingBufSize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}
