//! Command line.

use std::path::PathBuf;
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
    /// List the kills in the history, newest first (needs only read access to the file).
    History(HistoryArgs),
    /// One kill from the history in full: verdict, parties, memory snapshot, incident.
    Show(ShowArgs),
    /// Kills per container and per limit hit over a window, and restart loops.
    Stats(StatsArgs),
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

    /// Where every kill is stored (SQLite) before it is logged, for `oomtrace history`. The
    /// directory is created.
    #[arg(long = "history", value_name = "PATH", default_value = crate::history::DEFAULT_PATH)]
    pub history: PathBuf,

    /// Store nothing.
    #[arg(long, conflicts_with = "history")]
    pub no_history: bool,

    /// Kills older than this are deleted from the history, e.g. `30d`, `12h`.
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub history_retention: HumanDuration,

    /// The history keeps at most this many kills, the newest.
    #[arg(long, value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub history_max_rows: u64,
}

/// The history file a report reads.
#[derive(Debug, clap::Args)]
pub struct HistoryFile {
    /// The agent's `--history`.
    #[arg(long = "history", value_name = "PATH", default_value = crate::history::DEFAULT_PATH)]
    pub path: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub file: HistoryFile,

    /// Only kills since then: a duration ago (`2h`, `7d`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<TimeBound>,

    /// Only kills until then: a duration ago (`30m`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub until: Option<TimeBound>,

    /// Only kills in this container: its name, or the start of its id.
    #[arg(long, value_name = "NAME|ID")]
    pub container: Option<String>,

    /// Only kills in this Kubernetes pod (its name).
    #[arg(long, value_name = "NAME")]
    pub pod: Option<String>,

    /// Only kills in this Kubernetes namespace.
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,

    /// Only kills of processes with this command name (comm).
    #[arg(long, value_name = "COMM")]
    pub victim: Option<String>,

    /// Only kills set off by this container (its name) or command (comm).
    #[arg(long, value_name = "NAME")]
    pub trigger: Option<String>,

    /// Only kills where the host ran out of memory, or where a container's (a cgroup's) limit
    /// was hit.
    #[arg(long, value_enum)]
    pub domain: Option<DomainArg>,

    /// Only OOM kills, or only other SIGKILLs.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,

    /// At most this many, the newest.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: u32,

    /// `table` for people; `json` (an array) or `jsonl` (one per line): the stored records, as
    /// `oomtrace run --format json` wrote them, with a `history` object added.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The id from `oomtrace history`.
    pub id: i64,

    #[command(flatten)]
    pub file: HistoryFile,

    /// `text` for people, `json`: the stored record.
    #[arg(long, value_enum, default_value_t = ShowFormat::Text)]
    pub format: ShowFormat,
}

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    pub file: HistoryFile,

    /// The window: a duration ago (`24h`, `7d`) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN", default_value = "24h")]
    pub since: TimeBound,

    /// A container OOM-killed 3 times within this span is in a restart loop.
    #[arg(long, value_name = "DURATION", default_value = "6h")]
    pub restart_loop_window: HumanDuration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DomainArg {
    /// The host ran out of memory; no cgroup limit was hit.
    Host,
    /// A cgroup's limit was hit: a container's, a pod's, a unit's.
    #[value(alias = "cgroup")]
    Container,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    #[value(name = "oom_kill", alias = "oom")]
    OomKill,
    Sigkill,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
    Jsonl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    Text,
    Json,
}

/// A point in time as a query gives it: a duration before now (`2h`), or an RFC 3339 time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeBound {
    Ago(Duration),
    At(jiff::Timestamp),
}

impl TimeBound {
    /// Nanoseconds since the epoch.
    pub fn resolve(self, now: jiff::Timestamp) -> i64 {
        let ns = match self {
            TimeBound::Ago(ago) => now
                .as_nanosecond()
                .saturating_sub(i128::try_from(ago.as_nanos()).unwrap_or(i128::MAX)),
            TimeBound::At(at) => at.as_nanosecond(),
        };
        i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX })
    }
}

impl FromStr for TimeBound {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(HumanDuration(ago)) = text.parse() {
            return Ok(TimeBound::Ago(ago));
        }
        text.trim().parse().map(TimeBound::At).map_err(|_| {
            format!(
                "`{text}` is neither a duration like 2h or 7d nor an RFC 3339 time like \
                 2026-11-30T10:00:00Z"
            )
        })
    }
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
    fn time_bounds_are_durations_ago_or_rfc3339_times() {
        let now: jiff::Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let resolve = |text: &str| text.parse::<TimeBound>().map(|bound| bound.resolve(now));
        let at = |text: &str| text.parse::<jiff::Timestamp>().unwrap().as_nanosecond() as i64;
        assert_eq!(resolve("2h"), Ok(at("2026-11-30T10:00:00Z")));
        assert_eq!(resolve("1d"), Ok(at("2026-11-29T12:00:00Z")));
        assert_eq!(
            resolve("2026-11-30T09:30:00+01:00"),
            Ok(at("2026-11-30T08:30:00Z"))
        );
        let err = resolve("yesterday").unwrap_err();
        assert!(err.contains("neither a duration"), "{err}");
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
