//! Support for oomtrace's privileged integration tests.
//!
//! The tests cause real OOM kills in throw-away memory cgroups and compare what the agent
//! reports with what the kernel says: the cgroup directories' inodes and the kernel log's
//! "Killed process" line; the container tests do the same in podman containers and compare with
//! what podman says. Every helper that owns something (an agent, a cgroup, a process, a podman
//! service, a container) cleans it up on drop, also while a failing test unwinds, so nothing
//! stays attached or running. Helpers panic with context instead of returning errors: a test
//! cannot recover.
//!
//! The agent's output is read as its own types, [`oomtrace::record::Record`] (and the
//! history's [`oomtrace::history::query::Listed`]): a test matches on the record's `Body` and
//! reads struct fields, so a renamed field fails to compile rather than at run time as root.
//! Only the golden-file and schema-doc tests in `tracer` pin the JSON itself. A failure
//! message shows the whole record as JSON ([`pretty`]).

mod agent;
pub mod agent_container;
pub mod burst;
mod busy_node;
pub mod capabilities;
mod cgroup;
mod compose;
mod container_cli;
mod container_spec;
pub mod cri;
mod daemon;
mod docker;
mod history;
mod hog;
pub mod http;
mod image;
mod journald;
mod kernel;
mod kmsg;
mod podman;
pub mod prometheus;
mod service;
mod slice;
mod snapshot;
mod tmpfs;
pub mod tracefs;

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use oomtrace::record::OomKillRecord;
use serde::Serialize;

pub use crate::agent::{Agent, Stopped};
pub use crate::busy_node::BusyNode;
pub use crate::cgroup::{MemoryCgroup, memory_controller_is_v2};
pub use crate::compose::ComposeProject;
pub use crate::container_spec::ContainerSpec;
pub use crate::docker::{DockerContainer, Dockerd};
pub use crate::history::{HistoryFile, ReadOnlyDir, history_dir, victim_pid};
pub use crate::hog::{Hog, hog_binary};
pub use crate::image::HOG_IN_IMAGE;
pub use crate::journald::Journald;
pub use crate::kernel::{ExpectedCapture, Hook, KernelLook};
pub use crate::kmsg::{KernelReport, KilledProcess, Kmsg, parse_killed_process};
pub use crate::podman::{Container, IMAGE, Podman};
pub use crate::prometheus::Prometheus;
pub use crate::service::TransientService;
pub use crate::slice::SystemdSlice;
pub use crate::snapshot::assert_snapshot_holds_victim;
pub use crate::tmpfs::{
    ScratchTmpfs, assert_container_tmpfs, assert_tmpfs_leads, composition_of, mib, verdict_of,
    within_ten_percent,
};

/// How often helpers look again at something they wait for.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Panics unless the test runs as root: loading eBPF programs, making cgroups and reading
/// `/dev/kmsg` all need it, and skipping would let a misconfigured run pass silently.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "privileged tests must run as root (use `cargo xtask test`); euid is {euid}"
    );
}

/// Says why this test does not run here, on a line of its own that the suite's runners show
/// in their summary (`SKIPPED: reason`); the test then returns. Only for what this kernel or
/// machine truly lacks, never to hide a failure.
pub fn skip(reason: &str) {
    println!("SKIPPED: {reason}");
}

/// Whether this machine may run out of memory as a whole: a scenario that exhausts it (a
/// host-wide OOM) runs only where the runner says so with `OOMTRACE_DISPOSABLE_MACHINE=1`, as
/// the kernel matrix's guests do; on a developer's or CI's host it would take the machine down.
pub fn disposable_machine() -> bool {
    std::env::var_os("OOMTRACE_DISPOSABLE_MACHINE").is_some_and(|value| value == "1")
}

/// The agent under test: `$OOMTRACE_BIN`, else the workspace's release build.
pub fn agent_binary() -> PathBuf {
    let binary = match std::env::var_os("OOMTRACE_BIN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/oomtrace"),
    };
    assert!(
        binary.is_file(),
        "the agent binary {} does not exist: build it with `cargo build --release` or run `cargo xtask test`",
        binary.display()
    );
    binary
}

/// The hog linked statically, for the container tests' image, which has no libc:
/// `$OOMTRACE_STATIC_HOG` (`cargo xtask test` builds the whole suite statically and sets it),
/// else where xtask builds it.
pub fn static_hog_binary() -> PathBuf {
    let binary = match std::env::var_os("OOMTRACE_STATIC_HOG") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/x86_64-unknown-linux-gnu/debug/oomtrace-hog"),
    };
    assert!(
        binary.is_file(),
        "the static hog {} does not exist: run `cargo xtask test`, which builds it and sets \
         OOMTRACE_STATIC_HOG, or build it with `RUSTFLAGS='-C target-feature=+crt-static' cargo \
         build -p oomtrace-tests --bin oomtrace-hog --target x86_64-unknown-linux-gnu` and point \
         OOMTRACE_STATIC_HOG at it",
        binary.display()
    );
    binary
}

/// `value` as indented JSON, for failure messages: a record, a part of one, or a list of them.
pub fn pretty<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|err| format!("<not serializable: {err}>"))
}

/// A value for a test's printout, as JSON; `-` when absent.
pub fn or_dash<T: Serialize>(value: Option<T>) -> String {
    value.map_or("-".to_owned(), |value| {
        serde_json::to_string(&value).unwrap_or_default()
    })
}

/// Whether `kill` is of a process in the container with this full `id`: the kernel's cgroup
/// paths of a container's processes hold its id (`/docker/<id>`, `.../libpod-<id>`,
/// `docker-<id>.scope`); host pids are not known in advance.
pub fn is_kill_in_container(kill: &OomKillRecord, id: &str) -> bool {
    [&kill.victim.cgroup, &kill.victim.memcg]
        .into_iter()
        .flatten()
        .filter_map(|cgroup| cgroup.path.as_deref())
        .any(|path| path.contains(id))
}

/// The cgroup directories of process `pid`: its v1 memory cgroup and its cgroup2 cgroup, as
/// far as the host has them. Panics if the process is gone.
pub(crate) fn cgroup_dirs_of(pid: u32) -> Vec<PathBuf> {
    let path = format!("/proc/{pid}/cgroup");
    let cgroups = fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {path}: {err}"));
    let root = Path::new("/sys/fs/cgroup");
    // `0::/path` is cgroup2, at /sys/fs/cgroup/unified on a hybrid host; `N:memory:/path`
    // is the v1 memory controller.
    let hybrid = root.join("unified/cgroup.controllers").exists();
    cgroups
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
            let relative = path.trim_start_matches('/');
            match controllers {
                "" if hybrid => Some(root.join("unified").join(relative)),
                "" => Some(root.join(relative)),
                "memory" => Some(root.join("memory").join(relative)),
                _ => None,
            }
        })
        .collect()
}

fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    // SAFETY: kill has no memory-safety preconditions.
    match unsafe { libc::kill(pid, signal) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Waits for `child` up to `timeout`; `None` if it is still running.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL_INTERVAL),
            Ok(None) => return None,
            Err(err) => panic!("waiting for child {}: {err}", child.id()),
        }
    }
}

/// Runs a command to completion, its output captured; panics if it cannot start.
fn command_output(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("running {command:?}: {err}"))
}

/// Runs a command to completion; panics with its stderr unless it succeeds; its output.
fn run_checked(command: &mut Command) -> Output {
    let output = command_output(command);
    assert!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    output
}

/// `GET /_ping` on a Docker Engine API socket (Docker's or podman's): Ok once it answers 200.
pub(crate) fn ping(socket: &Path) -> io::Result<()> {
    let mut stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    // HTTP/1.0: the server closes the connection after its answer, which ends the read.
    stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: podman\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status_line = response.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1) {
        Some("200") => Ok(()),
        _ => Err(io::Error::other(format!(
            "unexpected answer to GET /_ping: {status_line:?}"
        ))),
    }
}
