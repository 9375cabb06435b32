//! Support for oomtrace's privileged integration tests.
//!
//! The tests cause real OOM kills in throw-away memory cgroups and compare what the agent
//! reports with what the kernel says: the cgroup directories' inodes and the kernel log's
//! "Killed process" line; the container tests do the same in podman containers and compare with
//! what podman says. Every helper that owns something (an agent, a cgroup, a process, a podman
//! service, a container) cleans it up on drop, also while a failing test unwinds, so nothing
//! stays attached or running. Helpers panic with context instead of returning errors: a test
//! cannot recover.

mod agent;
pub mod agent_container;
pub mod capabilities;
mod cgroup;
mod history;
mod hog;
pub mod http;
mod kmsg;
mod podman;
pub mod prometheus;

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use crate::agent::{Agent, Stopped};
pub use crate::cgroup::MemoryCgroup;
pub use crate::history::{HistoryFile, ReadOnlyDir, history_dir};
pub use crate::hog::Hog;
pub use crate::kmsg::{KilledProcess, Kmsg, parse_killed_process};
pub use crate::podman::{Container, ContainerSpec, HOG_IN_IMAGE, IMAGE, Podman};
pub use crate::prometheus::Prometheus;

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
/// `$OOMTRACE_STATIC_HOG` (`cargo xtask test` builds it and sets it), else where xtask builds it.
pub fn static_hog_binary() -> PathBuf {
    let binary = match std::env::var_os("OOMTRACE_STATIC_HOG") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/x86_64-unknown-linux-gnu/release/oomtrace-hog"),
    };
    assert!(
        binary.is_file(),
        "the static hog {} does not exist: run `cargo xtask test`, which builds it and sets \
         OOMTRACE_STATIC_HOG, or build it with `RUSTFLAGS='-C target-feature=+crt-static' cargo \
         build --release -p oomtrace-tests --bin oomtrace-hog --target x86_64-unknown-linux-gnu` \
         and point OOMTRACE_STATIC_HOG at it",
        binary.display()
    );
    binary
}

/// The value at a dotted `path` (e.g. `victim.process.pid`) of a JSON record; panics with the
/// whole record if it is missing.
pub fn field<'a>(record: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(record, |value, key| {
        value.get(key).unwrap_or_else(|| {
            panic!(
                "the record has no `{path}` (no `{key}`):\n{}",
                pretty(record)
            )
        })
    })
}

/// Panics with the whole record unless the value at `path` is `expected`.
pub fn expect_field(record: &Value, path: &str, expected: impl Into<Value>) {
    let expected = expected.into();
    let actual = field(record, path);
    assert!(
        *actual == expected,
        "`{path}` is {actual}, expected {expected}, in:\n{}",
        pretty(record)
    );
}

/// [`field`], which must be an unsigned integer.
pub fn field_u64(record: &Value, path: &str) -> u64 {
    field(record, path).as_u64().unwrap_or_else(|| {
        panic!(
            "`{path}` should be an unsigned integer in:\n{}",
            pretty(record)
        )
    })
}

/// [`field`], which must be a string.
pub fn field_str<'a>(record: &'a Value, path: &str) -> &'a str {
    field(record, path)
        .as_str()
        .unwrap_or_else(|| panic!("`{path}` should be a string in:\n{}", pretty(record)))
}

/// The value at a JSON `pointer` (e.g. `/victim/container/name`) for a test's printout, `-`
/// when absent.
pub fn shown(record: &Value, pointer: &str) -> String {
    record
        .pointer(pointer)
        .map_or("-".to_owned(), Value::to_string)
}

fn pretty(record: &Value) -> String {
    serde_json::to_string_pretty(record).unwrap_or_else(|_| record.to_string())
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
