//! The host's journal, for the journal tests: Debian's systemd-journald, run without systemd as
//! PID 1, started when nothing serves the journal's socket and stopped with the test; and
//! `journalctl`, as an operator asks it.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::Daemon;
use crate::{command_output, run_checked};

const JOURNALD: &str = "/lib/systemd/systemd-journald";
const RUNTIME_DIR: &str = "/run/systemd/journal";
const SOCKET: &str = "/run/systemd/journal/socket";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Where journalctl finds its catalog database, under a root.
const CATALOG_DB_DIR: &str = "var/lib/systemd";

/// One journal entry: its fields as text (journalctl's JSON gives other shapes only for binary
/// or repeated fields, which oomtrace does not send).
pub type Entry = BTreeMap<String, String>;

/// The journal, answering on its socket.
pub struct Journald {
    /// The journald this test started, if it had to.
    daemon: Option<Daemon>,
    /// Whether the runtime directory was made for it, to be removed after.
    made_runtime_dir: bool,
    log_path: PathBuf,
}

impl Journald {
    /// The running journal, or one started now; returns once it takes entries.
    pub fn start() -> Self {
        let log_path =
            std::env::temp_dir().join(format!("oomtrace-test-journald-{}.log", std::process::id()));
        if answers() {
            println!("journald already serves {SOCKET}: the test uses it and leaves it running");
            return Journald {
                daemon: None,
                made_runtime_dir: false,
                log_path,
            };
        }
        assert!(
            Path::new(JOURNALD).exists(),
            "{JOURNALD} is missing: install Debian's `systemd` package"
        );
        let made_runtime_dir = !Path::new(RUNTIME_DIR).exists();
        fs::create_dir_all(RUNTIME_DIR)
            .unwrap_or_else(|err| panic!("creating {RUNTIME_DIR}: {err}"));
        let mut journald = Journald {
            daemon: Some(Daemon::spawn(
                "systemd-journald",
                Command::new(JOURNALD),
                log_path.clone(),
            )),
            made_runtime_dir,
            log_path,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !answers() {
            if let Some(status) = journald.daemon.as_mut().and_then(Daemon::exit_status) {
                panic!(
                    "systemd-journald exited with {status} before answering on {SOCKET}; its \
                     log:\n{}",
                    journald.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "systemd-journald did not answer on {SOCKET} within {START_TIMEOUT:?}; its \
                 log:\n{}",
                journald.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
        journald
    }

    /// `journalctl MATCHES -o json`: the entries that match every `FIELD=value`.
    pub fn entries(&self, matches: &[String]) -> Vec<Entry> {
        let output = run_checked(
            Command::new("journalctl")
                .args(["--no-pager", "--output", "json"])
                .args(matches),
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                let value: Value = serde_json::from_str(line)
                    .unwrap_or_else(|err| panic!("journalctl printed {line:?}: {err}"));
                let Value::Object(fields) = value else {
                    panic!("journalctl printed a non-object: {line}");
                };
                fields
                    .into_iter()
                    .map(|(name, value)| {
                        let text = match value {
                            Value::String(text) => text,
                            other => other.to_string(),
                        };
                        (name, text)
                    })
                    .collect()
            })
            .collect()
    }

    /// The entries matching `matches` once there are `count`, or what there is after `timeout`.
    pub fn wait_for_entries(
        &self,
        matches: &[String],
        count: usize,
        timeout: Duration,
    ) -> Vec<Entry> {
        let deadline = Instant::now() + timeout;
        loop {
            let entries = self.entries(matches);
            if entries.len() >= count || Instant::now() >= deadline {
                return entries;
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// `journalctl -x MATCHES` with `catalog` installed, as an operator sees it: the catalog is
    /// compiled into a database of its own (with the system's catalogs) and shown to journalctl
    /// in a private mount namespace, so the host's database is left as it was.
    pub fn explained(&self, matches: &[String], catalog: &Path) -> String {
        let root =
            std::env::temp_dir().join(format!("oomtrace-test-catalog-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let sources = root.join("usr/lib/systemd/catalog");
        fs::create_dir_all(&sources).unwrap_or_else(|err| panic!("creating {sources:?}: {err}"));
        fs::create_dir_all(root.join(CATALOG_DB_DIR).join("catalog"))
            .unwrap_or_else(|err| panic!("creating the catalog's directory: {err}"));
        let system = Path::new("/usr/lib/systemd/catalog/systemd.catalog");
        if system.exists() {
            fs::copy(system, sources.join("systemd.catalog"))
                .unwrap_or_else(|err| panic!("copying {}: {err}", system.display()));
        }
        fs::copy(catalog, sources.join("oomtrace.catalog"))
            .unwrap_or_else(|err| panic!("copying {}: {err}", catalog.display()));
        let updated = command_output(
            Command::new("journalctl")
                .arg(format!("--root={}", root.display()))
                .arg("--update-catalog"),
        );
        assert!(
            updated.status.success(),
            "journalctl --update-catalog with {} failed: {}",
            catalog.display(),
            String::from_utf8_lossy(&updated.stderr).trim()
        );
        let host_dir = Path::new("/").join(CATALOG_DB_DIR);
        assert!(
            host_dir.is_dir(),
            "{} is missing: install Debian's `systemd` package",
            host_dir.display()
        );
        let shown = command_output(
            Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(
                    "mount --bind \"$1\" \"$2\" && shift 2 && exec journalctl -x --no-pager \"$@\"",
                )
                .arg("sh")
                .arg(root.join(CATALOG_DB_DIR))
                .arg(&host_dir)
                .args(matches),
        );
        let _ = fs::remove_dir_all(&root);
        assert!(
            shown.status.success(),
            "journalctl -x {matches:?} failed ({}): {}",
            shown.status,
            String::from_utf8_lossy(&shown.stderr).trim()
        );
        String::from_utf8_lossy(&shown.stdout).into_owned()
    }

    /// `journalctl -x MATCHES` with the catalogs installed on this host, as an operator of a
    /// deployed agent sees it.
    pub fn explained_as_installed(&self, matches: &[String]) -> String {
        let shown = run_checked(
            Command::new("journalctl")
                .args(["-x", "--no-pager"])
                .args(matches),
        );
        String::from_utf8_lossy(&shown.stdout).into_owned()
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Journald {
    /// Stops only the journald this test started, and removes only the directory it made.
    fn drop(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.stop(STOP_TIMEOUT);
            let _ = fs::remove_file(&self.log_path);
        }
        if self.made_runtime_dir {
            let _ = fs::remove_dir_all(RUNTIME_DIR);
        }
    }
}

/// Whether something takes datagrams on the journal's socket.
fn answers() -> bool {
    UnixDatagram::unbound().is_ok_and(|socket| socket.connect(SOCKET).is_ok())
}
