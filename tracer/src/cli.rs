//! Command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::capture::{FunctionHook, Tier};
pub use crate::units::{HumanDuration, RingBufSize, TimeBound};

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
    /// Say what this host gives oomtrace and what follows, attaching nothing: the capture tier
    /// `run` with the same options would get and why, tracefs, BTF, the kernel log, cgroups,
    /// the runtimes, the history. Exits 0 when `run` would trace, 1 when it would not.
    Check(RunArgs),
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

    /// Where kills, SIGKILLs and pressure warnings are logged. `journald`: as structured
    /// entries in the host's journal (`journalctl OOMTRACE_CONTAINER=web`, `journalctl -x`
    /// explains them); `stderr`: as log lines; `auto`: the journal when stderr is one (a
    /// systemd service), else stderr. The agent's other log lines go to stderr either way.
    #[arg(long, value_enum, default_value_t = LogTarget::Auto)]
    pub log_target: LogTarget,

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

    /// A CRI socket (containerd's or CRI-O's) to name Kubernetes pods and containers by. Repeat
    /// for several. When none is given: /run/containerd/containerd.sock and
    /// /run/crio/crio.sock. Like a Docker socket, it grants control of the runtime.
    #[arg(long = "cri-socket", value_name = "PATH")]
    pub cri_sockets: Vec<String>,

    /// Where the kubelet's `pods` and `containers` log directories are: their names name pods
    /// and containers where no CRI socket is reachable (read-only; inotify, no polling).
    /// When none is given: /var/log.
    #[arg(long, value_name = "DIR")]
    pub kubelet_log_dir: Option<PathBuf>,

    /// Do not read the kubelet's log directories.
    #[arg(long, conflicts_with = "kubelet_log_dir")]
    pub no_kubelet_logs: bool,

    /// A runtime's state directory to name containers by without its API, read-only: Docker's
    /// data root or podman's storage root. Repeat for several. When none is given:
    /// /var/lib/docker and /var/lib/containers/storage. A socket's answer wins where there is
    /// one; the state names containers when no socket is reachable.
    #[arg(long = "runtime-state", value_name = "DIR")]
    pub runtime_state: Vec<PathBuf>,

    /// Name containers from the runtimes' state directories only, and ask no runtime socket
    /// (Docker API or CRI): a runtime's socket is root on the host, its state directories
    /// mounted read-only are not.
    #[arg(long, conflicts_with_all = ["runtime_sockets", "cri_sockets"])]
    pub runtime_state_only: bool,

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

    /// The kernel-to-agent ring buffer, e.g. `1M`, `4M` or bytes: a power of two, at least a
    /// page. It holds only what the agent's reading thread has not copied out yet: a victim
    /// takes about 3.3 KiB, its SIGKILL as much again. With the default, a `memory.oom.group`
    /// kill of 1,000 processes lost nothing in the bench; what does not fit is dropped and
    /// counted as `ringbuf_dropped_total`. The agent's VmRSS counts the ring twice: the kernel
    /// maps its pages into the agent twice, so that a record can wrap around the end.
    #[arg(long, value_name = "SIZE", default_value = "1M")]
    pub ringbuf_size: RingBufSize,

    /// Where every kill is stored (SQLite) before it is logged, for `oomtrace history`. The
    /// directory is created.
    #[arg(long = "history", value_name = "PATH", default_value = crate::history::DEFAULT_PATH)]
    pub history: PathBuf,

    /// Store nothing.
    #[arg(long, conflicts_with = "history")]
    pub no_history: bool,

    /// The history file (and its `-wal` and `-shm`) is created mode 0640 and given to this
    /// group (a name or a number), so that its members can run `oomtrace history` without root.
    /// Without it, the file is mode 0600, root's alone.
    #[arg(long, value_name = "GROUP", value_parser = group_id, conflicts_with = "no_history")]
    pub history_group: Option<u32>,

    /// Kills older than this are deleted from the history, e.g. `30d`, `12h`.
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub history_retention: HumanDuration,

    /// The history keeps at most this many kills, the newest. SIGKILLs from other senders get a
    /// tenth of them, OOM kills the rest: a flood of SIGKILLs (any user can send them) never
    /// evicts an OOM kill.
    #[arg(long, value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub history_max_rows: u64,

    /// How long before each kill the memory timeline goes back (`explanation.timeline`): usage
    /// of the domain's biggest cgroups, its pressure stalls and limit events, sampled every
    /// second and ten times a second once memory runs short. `0` turns the recorder off.
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub timeline: crate::observe::timeline::Window,

    /// The most cgroups the memory timeline samples: every cgroup with a memory limit (the
    /// fullest first) with its biggest members, and the host's biggest entries. Its memory
    /// grows linearly up to this; a kill in a cgroup past it says so in its timeline.
    #[arg(long, value_name = "N", default_value_t = crate::observe::timeline::DEFAULT_MAX_CGROUPS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub timeline_max_cgroups: usize,

    /// Write a `memory_pressure` record (log line and JSON) when a cgroup with a memory limit
    /// (a container, a pod, a Compose parent) comes near it, before any kill: its working set
    /// at `--warn-usage` of the limit, or (cgroup v2) its tasks stalled on memory
    /// `--warn-stall` of the last second. It names the owner, how fast it grows and its
    /// fastest-growing member; once per approach, at most every 30 s per cgroup. Needs the
    /// memory timeline (`--timeline` not 0), which already samples those cgroups.
    #[arg(long)]
    pub warn_pressure: bool,

    /// With `--warn-pressure`: the share of its limit a cgroup's working set (usage less
    /// inactive file pages) reaches to be warned of.
    #[arg(
        long,
        value_name = "PERCENT",
        default_value = "90%",
        requires = "warn_pressure"
    )]
    pub warn_usage: crate::observe::timeline::warning::Percent,

    /// With `--warn-pressure`: the share of the last second during which some task in the
    /// cgroup stalled on memory (`memory.pressure`, cgroup v2) that warns.
    #[arg(
        long,
        value_name = "PERCENT",
        default_value = "10%",
        requires = "warn_pressure"
    )]
    pub warn_stall: crate::observe::timeline::warning::Percent,

    /// Serve Prometheus metrics at `http://ADDR/metrics`, e.g. `127.0.0.1:9464` (loopback:
    /// only this host can scrape). Off by default. Only this address is bound; `0.0.0.0:9464`
    /// exposes the counters to every network the host is on.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl RunArgs {
    /// The runtimes to name containers by, as these options ask for them.
    pub fn attribution(&self) -> crate::attribute::AttributionOptions {
        use crate::attribute::KubeletLogRoot;
        crate::attribute::AttributionOptions {
            sockets: self.runtime_sockets.clone(),
            cri_sockets: self.cri_sockets.clone(),
            kubelet_logs: match (self.no_kubelet_logs, &self.kubelet_log_dir) {
                (true, _) => KubeletLogRoot::Off,
                (false, Some(root)) => KubeletLogRoot::Named(root.clone()),
                (false, None) => KubeletLogRoot::Default,
            },
            state_dirs: self.runtime_state.clone(),
            state_only: self.runtime_state_only,
            tombstone_ttl: self.tombstone_ttl.into(),
        }
    }
}

/// The history file a report reads.
#[derive(Debug, clap::Args)]
pub struct HistoryFile {
    /// The agent's `--history`.
    #[arg(long = "history", value_name = "PATH", default_value = crate::history::DEFAULT_PATH)]
    pub path: PathBuf,
}

/// A group's id, from its name (the system's group database) or its number.
fn group_id(text: &str) -> Result<u32, String> {
    if let Ok(gid) = text.parse::<u32>() {
        return Ok(gid);
    }
    let name = std::ffi::CString::new(text).map_err(|_| "a group name has no NUL".to_owned())?;
    let mut group = std::mem::MaybeUninit::<libc::group>::uninit();
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    let mut found = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives it and is not read after.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            group.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &raw mut found,
        )
    };
    if rc != 0 {
        return Err(format!(
            "looking the group up: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    if found.is_null() {
        return Err("no such group".to_owned());
    }
    // SAFETY: getgrnam_r filled `group` and pointed `found` at it.
    Ok(unsafe { group.assume_init() }.gr_gid)
}

/// A filter's value: an empty one would match every kill, which is never what was meant.
fn not_empty(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("an empty name matches every kill; leave the option out to list them all".to_owned())
    } else {
        Ok(text.to_owned())
    }
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
    #[arg(long, value_name = "NAME|ID", value_parser = not_empty)]
    pub container: Option<String>,

    /// Only kills in this Kubernetes pod (its name).
    #[arg(long, value_name = "NAME", value_parser = not_empty)]
    pub pod: Option<String>,

    /// Only kills in this Kubernetes namespace.
    #[arg(long, value_name = "NAME", value_parser = not_empty)]
    pub namespace: Option<String>,

    /// Only kills of processes with this command name (comm).
    #[arg(long, value_name = "COMM", value_parser = not_empty)]
    pub victim: Option<String>,

    /// Only kills set off by this container (its name) or command (comm).
    #[arg(long, value_name = "NAME", value_parser = not_empty)]
    pub trigger: Option<String>,

    /// Only kills in a container of this Compose service (`db` of `shop_db_1`).
    #[arg(long, value_name = "NAME", value_parser = not_empty)]
    pub service: Option<String>,

    /// Only kills in a container of this Compose project.
    #[arg(long, value_name = "NAME", value_parser = not_empty)]
    pub project: Option<String>,

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogTarget {
    Auto,
    Stderr,
    Journald,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn an_empty_filter_is_an_error_not_every_kill() {
        for option in [
            "--container",
            "--pod",
            "--namespace",
            "--victim",
            "--trigger",
            "--service",
            "--project",
        ] {
            for empty in ["", "  "] {
                let err = Cli::try_parse_from(["oomtrace", "history", option, empty])
                    .expect_err("refused");
                assert!(
                    err.to_string().contains("matches every kill"),
                    "{option}: {err}"
                );
            }
            assert!(Cli::try_parse_from(["oomtrace", "history", option, "web"]).is_ok());
        }
    }

    #[test]
    fn a_far_rfc3339_time_is_a_bound() {
        let cli = Cli::try_parse_from(["oomtrace", "history", "--until", "9999-12-31T23:59:59Z"])
            .expect("a valid RFC 3339 time");
        let Command::History(args) = cli.command else {
            panic!("history");
        };
        assert!(args.until.is_some());
    }

    #[test]
    fn the_history_group_is_a_name_or_a_number() {
        let group = |args: &[&str]| match Cli::try_parse_from(args).map(|cli| cli.command) {
            Ok(Command::Run(run)) => Ok(run.history_group),
            Ok(_) => panic!("not run"),
            Err(err) => Err(err.to_string()),
        };
        assert_eq!(group(&["oomtrace", "run"]), Ok(None));
        assert_eq!(
            group(&["oomtrace", "run", "--history-group", "root"]),
            Ok(Some(0))
        );
        assert_eq!(
            group(&["oomtrace", "run", "--history-group", "4242"]),
            Ok(Some(4242))
        );
        let err = group(&[
            "oomtrace",
            "run",
            "--history-group",
            "no-such-group-oomtrace",
        ])
        .expect_err("an unknown group");
        assert!(err.contains("no such group"), "{err}");
        assert!(group(&["oomtrace", "run", "--no-history", "--history-group", "root"]).is_err());
    }
}
