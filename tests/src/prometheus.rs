//! A real Prometheus, Debian's, started by a test: on a free loopback port, with a
//! configuration and data directory of its own under the target directory, scraping one
//! agent's metrics endpoint and evaluating rule files every second. Dropping it stops the
//! server, also while a failing test unwinds; its directory is removed after a passing test
//! and kept (with the server's log) after a failing one.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::daemon::Daemon;
use crate::http::{free_loopback_port, http_get, query_value};

const BINARY: &str = "/usr/bin/prometheus";
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the waits ask the API again: a fraction of the 1 s scrape and evaluation.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

pub struct Prometheus {
    server: Daemon,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (job `oomtrace`) and evaluating `rule_files`, every
    /// second; returns once it is ready to answer queries.
    pub fn start(target: SocketAddr, rule_files: &[PathBuf]) -> Self {
        assert!(
            Path::new(BINARY).is_file(),
            "{BINARY} is missing: Debian's prometheus package provides it \
             (`cargo xtask setup` installs it)"
        );
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
            PathBuf::from,
        );
        let dir = target_dir.join(format!(
            "oomtrace-test-prometheus-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // Left over from an earlier run with the same pid: start clean.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("data"))
            .unwrap_or_else(|err| panic!("creating {}: {err}", dir.display()));
        let rule_files: Vec<String> = rule_files
            .iter()
            .map(|file| {
                let file = file
                    .canonicalize()
                    .unwrap_or_else(|err| panic!("rule file {}: {err}", file.display()));
                serde_json::to_string(&file).expect("a path as a JSON (and YAML) string")
            })
            .collect();
        // JSON strings are YAML strings: no quoting to get wrong.
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files: [{}]\n\
             scrape_configs:\n  - job_name: oomtrace\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rule_files.join(", ")
        );
        let config_file = dir.join("prometheus.yml");
        fs::write(&config_file, config)
            .unwrap_or_else(|err| panic!("writing {}: {err}", config_file.display()));

        let addr = free_loopback_port();
        let mut command = Command::new(BINARY);
        command
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"));
        let server = Daemon::spawn("prometheus", command, dir.join("prometheus.log"));
        // From here on Drop stops it, also if it never becomes ready.
        let mut prometheus = Prometheus { server, addr, dir };
        prometheus.wait_ready();
        prometheus
    }

    /// Where its web UI and API answer.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's own log so far.
    pub fn log(&self) -> String {
        self.server.log()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.server.exit_status() {
                panic!(
                    "prometheus exited ({status}) before it was ready:\n{}",
                    self.log()
                );
            }
            if std::net::TcpStream::connect(self.addr).is_ok()
                && http_get(self.addr, "/-/ready").0.contains(" 200 ")
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus was not ready within {READY_TIMEOUT:?}:\n{}",
                self.log()
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// `GET /api/v1/<path>`'s `data`, which must have succeeded.
    fn api<T: DeserializeOwned>(&self, path: &str) -> T {
        let (status, body) = http_get(self.addr, &format!("/api/v1/{path}"));
        let response: ApiResponse<T> = serde_json::from_str(&body).unwrap_or_else(|err| {
            panic!("{path}: {status}, not an answer of Prometheus's API ({err}): {body}")
        });
        match response {
            ApiResponse {
                status: ApiStatus::Success,
                data: Some(data),
            } => data,
            _ => panic!("{path}: {status}: {body}"),
        }
    }

    /// An instant query's result: one sample per series. The query must give a vector.
    pub fn query(&self, promql: &str) -> Vec<Sample> {
        let data: QueryData = self.api(&format!("query?query={}", query_value(promql)));
        data.result
    }

    /// The alerts pending or firing now.
    pub fn alerts(&self) -> Vec<Alert> {
        let data: AlertsData = self.api("alerts");
        data.alerts
    }

    /// Asks `check` again and again until it returns something or `timeout` passes.
    pub fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = check(self) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {timeout:?}; alerts now: {:#?}\nprometheus's log:\n{}",
                self.alerts(),
                self.log()
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits until the scrape target is up.
    pub fn wait_for_target_up(&self, timeout: Duration) {
        self.wait_for("the agent scraped (up == 1)", timeout, |prometheus| {
            let up = prometheus.query("up{job=\"oomtrace\"} == 1");
            (!up.is_empty()).then_some(())
        });
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.server.stop(STOP_TIMEOUT);
        if thread::panicking() {
            eprintln!(
                "prometheus's configuration, data and log are kept in {}",
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// The value of an instant query's sample, as a number.
pub fn sample_value(sample: &Sample) -> f64 {
    let (_, value) = &sample.value;
    value
        .parse()
        .unwrap_or_else(|err| panic!("the sample's value is no number ({err}): {sample:?}"))
}

/// What Prometheus's HTTP API answers (<https://prometheus.io/docs/prometheus/latest/querying/api/>).
#[derive(Debug, Deserialize)]
struct ApiResponse<T> {
    status: ApiStatus,
    data: Option<T>,
}

#[derive(Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ApiStatus {
    Success,
    Error,
}

#[derive(Debug, Deserialize)]
struct QueryData {
    result: Vec<Sample>,
}

/// One series of an instant query's vector.
#[derive(Clone, Debug, Deserialize)]
pub struct Sample {
    pub metric: BTreeMap<String, String>,
    /// The evaluation time (Unix seconds) and the value, which Prometheus gives as a string.
    pub value: (f64, String),
}

#[derive(Debug, Deserialize)]
struct AlertsData {
    alerts: Vec<Alert>,
}

/// An alert pending or firing.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
    pub active_at: Option<String>,
}
