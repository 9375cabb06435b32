//! Command line.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

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

    /// Serve Prometheus metrics at `http://ADDR/metrics`, e.g. `127.0.0.1:9464` (loopback:
    /// only this host can scrape). Off by default. Only this address is bound; `0.0.0.0:9464`
    /// exposes the counters to every network the host is on.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// A ring buffer size: a power of two of at least one page (4 KiB), at most 1 GiB, in bytes
/// or with a `K`, `M` or `G` suffix (binary multiples).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingBufSize(pub u32);

impl FromStr for RingBufSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const PAGE: u64 = 4096;
        const MAX: u64 = 1 << 30;
        let trimmed = text.trim();
        let (digits, shift) = match trimmed.char_indices().last() {
            Some((at, 'K' | 'k')) => (&trimmed[..at], 10),
            Some((at, 'M' | 'm')) => (&trimmed[..at], 20),
            Some((at, 'G' | 'g')) => (&trimmed[..at], 30),
            _ => (trimmed, 0),
        };
        let invalid =
            || format!("`{text}` is not a power of two from 4K to 1G, like 1M, 4M or 262144");
        let number: u64 = digits.parse().map_err(|_| invalid())?;
        let bytes = number.checked_shl(shift).ok_or_else(invalid)?;
        if !bytes.is_power_of_two() || !(PAGE..=MAX).contains(&bytes) || bytes >> shift != number {
            return Err(invalid());
        }
        u32::try_from(bytes).map(Self).map_err(|_| invalid())
    }
}

/// A duration as people write it: `90s`, `15m`, `24h`, `7d`, or a sum like `1h30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl From<HumanDuration> for Duration {
    fn from(duration: HumanDuration) -> Self {
        duration.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("`{text}` is not a duration like 90s, 15m, 24h, 7d or 1h30m");
        let mut total = Duration::ZERO;
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(invalid());
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit_end = rest[digits..]
                .find(|c: char| c.is_ascii_digit())
                .map_or(rest.len(), |end| digits + end);
            let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
            let unit_secs = match &rest[digits..unit_end] {
                "s" => 1,
                "m" => 60,
                "h" => 60 * 60,
                "d" => 24 * 60 * 60,
                _ => return Err(invalid()),
            };
            let part = number.checked_mul(unit_secs).ok_or_else(invalid)?;
            total = total
                .checked_add(Duration::from_secs(part))
                .ok_or_else(invalid)?;
            rest = &rest[unit_end..];
        }
        Ok(HumanDuration(total))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_buffer_sizes_are_powers_of_two_of_a_page_or_more() {
        let bytes = |text: &str| text.parse::<RingBufSize>().map(|size| size.0);
        assert_eq!(bytes("4M"), Ok(4 << 20));
        assert_eq!(bytes("1m"), Ok(1 << 20));
        assert_eq!(bytes("512K"), Ok(512 << 10));
        assert_eq!(bytes("1G"), Ok(1 << 30));
        assert_eq!(bytes("262144"), Ok(262_144));
        for bad in [
            "",
            "M",
            "3M",
            "2K",
            "2G",
            "1000000",
            "-4M",
            "4MB",
            "99999999999999999999M",
        ] {
            assert!(bytes(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let secs = |text: &str| text.parse::<HumanDuration>().map(|d| d.0.as_secs());
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("15m"), Ok(900));
        assert_eq!(secs("24h"), Ok(86_400));
        assert_eq!(secs("7d"), Ok(604_800));
        assert_eq!(secs("1h30m"), Ok(5_400));
        assert_eq!(secs("0s"), Ok(0));
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        for bad in [
            "",
            "h",
            "10",
            "10x",
            "-5m",
            "1.5h",
            "99999999999999999999d",
            "5m junk",
        ] {
            let err = bad.parse::<HumanDuration>().unwrap_err();
            assert!(err.contains("is not a duration"), "{bad}: {err}");
        }
    }
}
