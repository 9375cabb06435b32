//! What one `memory.oom.group` burst left behind (`tests/oom_burst.rs`): the kernel's, the
//! agent's and the kernel log's view of it, as figures. The test prints them on one line
//! ([`FIGURES_PREFIX`]) before it asserts on them; `cargo xtask bench` boots the same test in a
//! guest with larger bursts and reads that line back ([`BurstFigures::from_output`]).
//!
//! For the bench the burst can also run next to a kprobe peer, bcc's `oomkill` or bpftrace's
//! `oomkill.bt` ([`Peer`]), when the guest's initramfs holds them (bench/src/guest_peers.rs).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{send_signal, wait_timeout};

/// The line the figures are printed on: this prefix, then the figures as JSON.
pub const FIGURES_PREFIX: &str = "oomtrace burst figures: ";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BurstFigures {
    pub members: usize,
    /// Members that ended by SIGKILL.
    pub killed: usize,
    /// The memory cgroup's own `oom_kill` count (memory.events).
    pub memcg_oom_kills: Option<u64>,
    /// Distinct members with an `oom_kill` record from the agent.
    pub captured: usize,
    /// Distinct members with any victim record (`oom_kill` or `oom_mark_exiting`): what reached
    /// the agent, however the join classified it.
    pub recorded: usize,
    /// Victims listed by the agent's `oom_incident` records (full tier), all incidents together.
    pub incident_victims: usize,
    pub incidents: usize,
    /// `ringbuf_dropped_total` of the agent's `agent_stopped` record.
    pub dropped: u64,
    /// Members with a `Killed process <pid> (` line in the kernel log, read after the burst.
    pub kmsg_killed_lines: usize,
    /// `oom-kill:` summary lines in the kernel log.
    pub kmsg_oom_kill_lines: usize,
    pub tier: Option<String>,
    /// The agent's memory lines of /proc/<pid>/status once attached.
    pub agent_status: Option<String>,
    /// The same once the burst is over, before the agent stops.
    pub agent_status_after: Option<String>,
    /// The kprobe peer that ran next to the agent, if one did.
    pub peer: Option<PeerFigures>,
}

/// bcc's `oomkill` or bpftrace's `oomkill.bt` next to the agent in the same boot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerFigures {
    pub name: String,
    /// Spawn to the line the peer prints once attached, in seconds; or why the peer did not
    /// get there, with the end of its stderr.
    pub attach_secs: Result<f64, String>,
    /// Its memory lines of /proc/<pid>/status once attached.
    pub status: Option<String>,
    /// `OOM kill of PID` lines it printed.
    pub kill_lines: usize,
    /// Distinct burst members among the pids those lines name.
    pub members_reported: usize,
}

impl BurstFigures {
    /// Prints the figures on their line.
    pub fn print(&self) {
        let json = serde_json::to_string(self).expect("burst figures as JSON");
        println!("{FIGURES_PREFIX}{json}");
    }

    /// The figures a test printed, from its output; `None` if it printed none.
    pub fn from_output(output: &str) -> Option<Result<Self, String>> {
        let line = output
            .lines()
            .find_map(|line| line.trim_end_matches('\r').split_once(FIGURES_PREFIX))?
            .1;
        Some(serde_json::from_str(line).map_err(|err| format!("burst figures {line:?}: {err}")))
    }
}

/// The memory lines of /proc/<pid>/status (VmRSS, VmHWM, RssAnon, RssFile, RssShmem).
pub fn memory_status(pid: u32) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let lines: Vec<&str> = status
        .lines()
        .filter(|line| {
            ["VmRSS:", "VmHWM:", "RssAnon:", "RssFile:", "RssShmem:"]
                .iter()
                .any(|key| line.starts_with(key))
        })
        .collect();
    Some(lines.join("\n") + "\n")
}

/// The victim pids in bcc's or bpftrace's `oomkill` lines (`... OOM kill of PID 123 ("x") ...`).
pub fn peer_victims(output: &str) -> Vec<u32> {
    output
        .lines()
        .filter_map(|line| {
            let rest = line.split_once("OOM kill of PID ")?.1;
            rest.split_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// bcc compiles its program with clang first, which under emulation takes minutes.
const PEER_START_TIMEOUT: Duration = Duration::from_secs(900);

/// A kprobe peer running next to the agent.
pub struct Peer {
    name: String,
    child: Child,
    out: PathBuf,
    log: PathBuf,
    attach_secs: f64,
    status: Option<String>,
}

impl Peer {
    /// Starts peer `name` (`bcc` or `bpftrace`) and waits for the line it prints once its
    /// probe is attached. A peer that cannot start is a figure, not a failure: its
    /// [`PeerFigures`] say why.
    pub fn start(name: &str) -> Result<Self, PeerFigures> {
        let failed = |why: String| PeerFigures {
            name: name.to_owned(),
            attach_secs: Err(why),
            status: None,
            kill_lines: 0,
            members_reported: 0,
        };
        // Both tools look for tracing files under debugfs as well.
        let _ = Command::new("mount")
            .args(["-t", "debugfs", "debugfs", "/sys/kernel/debug"])
            .stderr(Stdio::null())
            .status();
        let (mut command, ready) = match name {
            "bcc" => {
                let mut command = Command::new("python3");
                command
                    .arg("/usr/sbin/oomkill-bpfcc")
                    .env("PYTHONUNBUFFERED", "1");
                (command, "Tracing OOM kills")
            }
            "bpftrace" => {
                let mut command = Command::new("bpftrace");
                command.args(["-B", "line", "/usr/sbin/oomkill.bt"]);
                (command, "Tracing oom_kill_process")
            }
            other => return Err(failed(format!("unknown peer {other}"))),
        };
        let dir = std::env::temp_dir();
        let (out, log) = (dir.join("peer-out"), dir.join("peer-log"));
        let create = |path: &PathBuf| {
            fs::File::create(path)
                .unwrap_or_else(|err| panic!("creating {}: {err}", path.display()))
        };
        let spawned = Instant::now();
        let child = command
            .stdin(Stdio::null())
            .stdout(create(&out))
            .stderr(create(&log))
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(err) => return Err(failed(format!("cannot start: {err}"))),
        };
        loop {
            if fs::read_to_string(&out).is_ok_and(|text| text.contains(ready)) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(failed(format!("exited ({status}): {}", log_tail(&log))));
            }
            if spawned.elapsed() > PEER_START_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!("timeout: {}", log_tail(&log))));
            }
            thread::sleep(Duration::from_millis(100));
        }
        let attach_secs = spawned.elapsed().as_secs_f64();
        let status = memory_status(child.id());
        Ok(Self {
            name: name.to_owned(),
            child,
            out,
            log,
            attach_secs,
            status,
        })
    }

    /// Lets the peer print the last kill, ends it, and counts what it reported of `members`.
    pub fn stop(mut self, members: &[u32]) -> PeerFigures {
        thread::sleep(Duration::from_secs(1));
        let _ = send_signal(self.child.id(), libc::SIGTERM);
        if wait_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let victims = peer_victims(&fs::read_to_string(&self.out).unwrap_or_default());
        let mut reported: Vec<u32> = victims
            .iter()
            .copied()
            .filter(|pid| members.contains(pid))
            .collect();
        reported.sort_unstable();
        reported.dedup();
        let _ = fs::remove_file(&self.log);
        PeerFigures {
            name: self.name.clone(),
            attach_secs: Ok(self.attach_secs),
            status: self.status.take(),
            kill_lines: victims.len(),
            members_reported: reported.len(),
        }
    }
}

/// The last three lines of a peer's stderr, for why it did not start.
fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_victims_come_from_bcc_and_bpftrace_lines() {
        let output = "Tracing OOM kills... Ctrl-C to stop.
10:01:02 Triggered by PID 812 (\"oomtrace-hog\"), OOM kill of PID 345 (\"oomtrace-hog\"), 2097152 pages, loadavg: 0.10 0.05 0.01 1/90 812
10:01:02 Triggered by PID 812 (\"oomtrace-hog\"), OOM kill of PID 346 (\"oomtrace-hog\"), 2097152 pages, loadavg: 3.11 0.87 0.30 2/1093 1201
";
        assert_eq!(peer_victims(output), [345, 346]);
    }

    #[test]
    fn figures_come_back_from_the_line_they_were_printed_on() {
        let figures = BurstFigures {
            members: 100,
            killed: 100,
            tier: Some("full".to_owned()),
            peer: Some(PeerFigures {
                name: "bcc".to_owned(),
                attach_secs: Err("exited: no clang".to_owned()),
                status: None,
                kill_lines: 0,
                members_reported: 0,
            }),
            ..BurstFigures::default()
        };
        let json = serde_json::to_string(&figures).unwrap();
        let output = format!("running 1 test\r\n{FIGURES_PREFIX}{json}\r\ntest ok\r\n");
        assert_eq!(BurstFigures::from_output(&output), Some(Ok(figures)));
        assert_eq!(BurstFigures::from_output("test ok"), None);
    }
}
