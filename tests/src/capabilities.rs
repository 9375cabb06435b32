//! Running the agent with only some capabilities, and reading which it holds.
//!
//! The agent runs as root with a cut-down bounding set, as `podman run --cap-drop=ALL
//! --cap-add=…`, Kubernetes' `capabilities: {drop: [ALL], add: […]}` and systemd's
//! `CapabilityBoundingSet=` run it: root's exec then grants exactly the bounding set.

use std::fs;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::{agent_binary, wait_timeout};

/// What the deployment grants (README "Deploy", deploy/), by `setpriv`'s names.
pub const DOCUMENTED: [&str; 4] = ["bpf", "perfmon", "sys_resource", "syslog"];

/// The capability's number, for the names the tests use.
pub fn number(name: &str) -> u32 {
    match name {
        "setpcap" => 8,
        "sys_admin" => 21,
        "sys_resource" => 24,
        "syslog" => 34,
        "perfmon" => 38,
        "bpf" => 39,
        other => panic!("the tests do not know capability {other}"),
    }
}

pub fn mask(names: &[&str]) -> u64 {
    names.iter().fold(0, |mask, name| mask | 1 << number(name))
}

/// A `setpriv` prefix that runs the rest of its command line as root with only some
/// capabilities.
pub struct OnlyCapabilities {
    /// Those asked for that this process could grant.
    pub granted: Vec<&'static str>,
}

impl OnlyCapabilities {
    /// `wanted`, less any this test process does not hold in its own bounding set (a machine
    /// may withhold some even from root): those are printed, and the test goes on without them.
    pub fn new(wanted: &[&'static str]) -> Self {
        let own = own_bounding_set();
        let (granted, withheld): (Vec<&str>, Vec<&str>) =
            wanted.iter().partition(|name| own & 1 << number(name) != 0);
        if !withheld.is_empty() {
            println!(
                "this machine withholds {} from root's bounding set: the agent runs without it",
                withheld.join(", ")
            );
        }
        Self { granted }
    }

    /// The bounding set granted.
    pub fn mask(&self) -> u64 {
        mask(&self.granted)
    }

    /// `setpriv --bounding-set=-all,+… --inh-caps=-all --ambient-caps=-all --`.
    pub fn wrapper(&self) -> Vec<String> {
        let plus: String = self
            .granted
            .iter()
            .map(|name| format!(",+{name}"))
            .collect();
        vec![
            "setpriv".to_owned(),
            format!("--bounding-set=-all{plus}"),
            "--inh-caps=-all".to_owned(),
            "--ambient-caps=-all".to_owned(),
            "--".to_owned(),
        ]
    }

    /// Runs `oomtrace run` with these capabilities and returns how it ended and its stderr;
    /// panics if it still runs after `timeout`.
    pub fn run_agent_to_exit(&self, timeout: Duration) -> (ExitStatus, String) {
        let wrapper = self.wrapper();
        let mut command = Command::new(&wrapper[0]);
        command
            .args(&wrapper[1..])
            .arg(agent_binary())
            .args(["run", "--format", "json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("starting {command:?}: {err}"));
        let Some(status) = wait_timeout(&mut child, timeout) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} still ran after {timeout:?}: it should have refused to start");
        };
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
        }
        (status, stderr)
    }
}

/// The capability sets of one thread, from `/proc/<pid>/task/<tid>/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
    pub bounding: u64,
    pub ambient: u64,
    pub no_new_privs: bool,
}

impl CapSets {
    pub fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let hex = |name: &str| u64::from_str_radix(field(name)?, 16).ok();
        Some(Self {
            effective: hex("CapEff")?,
            permitted: hex("CapPrm")?,
            inheritable: hex("CapInh")?,
            bounding: hex("CapBnd")?,
            ambient: hex("CapAmb")?,
            no_new_privs: field("NoNewPrivs")? == "1",
        })
    }
}

/// Every thread of process `pid` with its capability sets.
pub fn of_every_thread(pid: u32) -> Vec<(u32, CapSets)> {
    let dir = format!("/proc/{pid}/task");
    let mut threads: Vec<(u32, CapSets)> = fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("reading {dir}: {err}"))
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let tid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let status = fs::read_to_string(entry.path().join("status")).ok()?;
            Some((tid, CapSets::parse(&status)?))
        })
        .collect();
    threads.sort_by_key(|&(tid, _)| tid);
    assert!(!threads.is_empty(), "no thread of process {pid} in {dir}");
    threads
}

/// What the agent must keep after attach on this kernel: CAP_BPF where the kernel checks it
/// on every bpf() call (before 5.19, with `kernel.unprivileged_bpf_disabled` set; the agent keeps
/// reading a map), else nothing.
pub fn expected_after_attach() -> u64 {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut numbers = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    let unprivileged_bpf_disabled =
        fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
            .map_or(true, |value| value.trim() != "0");
    if version < (5, 19) && unprivileged_bpf_disabled {
        mask(&["bpf"])
    } else {
        0
    }
}

fn own_bounding_set() -> u64 {
    let status = fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    CapSets::parse(&status)
        .expect("capability sets in /proc/self/status")
        .bounding
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_set_of_a_status_file() {
        let status = "Name:\toomtrace\nCapInh:\t0000000000000000\nCapPrm:\t0000008000000000\n\
                      CapEff:\t0000008000000000\nCapBnd:\t000000c401000000\n\
                      CapAmb:\t0000000000000000\nNoNewPrivs:\t1\n";
        assert_eq!(
            CapSets::parse(status),
            Some(CapSets {
                effective: 1 << 39,
                permitted: 1 << 39,
                inheritable: 0,
                bounding: mask(&DOCUMENTED),
                ambient: 0,
                no_new_privs: true,
            })
        );
        assert_eq!(CapSets::parse("Name:\tx\n"), None);
    }
}
