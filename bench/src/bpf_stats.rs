//! Per-program kernel cost: `kernel.bpf_stats_enabled` and `bpftool prog show`.

use std::{fs, process::Command};

use anyhow::{Context as _, bail};
use serde_json::Value;

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
/// The agent's program names as bpftool shows them: the full name from the program's BTF, or
/// the kernel's first 15 characters (`oom_kill_proces`), where `signal_generate` and
/// `signal_generate_btf` look alike and only their types tell them apart.
const AGENT_PROGRAM_PREFIXES: [&str; 3] = ["mark_victim", "oom_kill_proce", "signal_generate"];
const SIGNAL_PROGRAM_PREFIX: &str = "signal_generate";

/// `sysctl -w kernel.bpf_stats_enabled=1` while alive; the old value is restored on drop.
/// Counting costs two clock reads per program run, so it stays off outside the measurement.
pub struct StatsEnabled {
    old: String,
}

impl StatsEnabled {
    pub fn enable() -> anyhow::Result<Self> {
        let old = fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("reading {STATS_SYSCTL}"))?
            .trim()
            .to_owned();
        fs::write(STATS_SYSCTL, "1").with_context(|| format!("writing 1 to {STATS_SYSCTL}"))?;
        Ok(Self { old })
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        if let Err(err) = fs::write(STATS_SYSCTL, &self.old) {
            eprintln!(
                "xtask bench: restoring {STATS_SYSCTL} to {}: {err}",
                self.old
            );
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProgramStats {
    pub id: u64,
    pub name: String,
    pub kind: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

/// How the agent's programs were told apart from the others loaded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MatchedBy {
    Pid,
    Name,
}

/// The agent's programs (by its pid where bpftool reports owners, else by name).
pub fn agent_programs(agent_pid: u32) -> anyhow::Result<(Vec<ProgramStats>, MatchedBy)> {
    let output = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("starting bpftool -j prog show")?;
    if !output.status.success() {
        bail!(
            "bpftool -j prog show failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    parse_programs(&output.stdout, agent_pid).context("parsing bpftool -j prog show")
}

/// The agent's programs in `bpftool -j prog show` output.
pub fn parse_programs(
    json: &[u8],
    agent_pid: u32,
) -> anyhow::Result<(Vec<ProgramStats>, MatchedBy)> {
    let programs: Vec<Value> = serde_json::from_slice(json)?;
    let reports_owners = programs.iter().any(|program| program.get("pids").is_some());
    let matched_by = if reports_owners {
        MatchedBy::Pid
    } else {
        MatchedBy::Name
    };
    let stats = programs
        .iter()
        .filter(|program| match matched_by {
            MatchedBy::Pid => owned_by(program, agent_pid),
            MatchedBy::Name => has_agent_name(program),
        })
        .map(program_stats)
        .collect();
    Ok((stats, matched_by))
}

/// What each program of `after` ran since `before` (matched by id; a program new in `after`
/// counts from zero). The counters only grow while `kernel.bpf_stats_enabled` is 1.
pub fn delta(before: &[ProgramStats], after: &[ProgramStats]) -> Vec<ProgramStats> {
    after
        .iter()
        .map(|program| {
            let earlier = before.iter().find(|old| old.id == program.id);
            ProgramStats {
                run_cnt: program
                    .run_cnt
                    .saturating_sub(earlier.map_or(0, |old| old.run_cnt)),
                run_time_ns: program
                    .run_time_ns
                    .saturating_sub(earlier.map_or(0, |old| old.run_time_ns)),
                ..program.clone()
            }
        })
        .collect()
}

impl ProgramStats {
    /// One of the SIGKILL filter's programs, which run for every signal on the host.
    pub fn is_signal_program(&self) -> bool {
        self.name.starts_with(SIGNAL_PROGRAM_PREFIX)
    }

    /// Nanoseconds per run; None when it did not run.
    pub fn ns_per_run(&self) -> Option<f64> {
        (self.run_cnt > 0).then(|| self.run_time_ns as f64 / self.run_cnt as f64)
    }
}

fn owned_by(program: &Value, pid: u32) -> bool {
    program["pids"].as_array().is_some_and(|owners| {
        owners
            .iter()
            .any(|owner| owner["pid"].as_u64() == Some(u64::from(pid)))
    })
}

fn has_agent_name(program: &Value) -> bool {
    program["name"].as_str().is_some_and(|name| {
        AGENT_PROGRAM_PREFIXES
            .iter()
            .any(|prefix| name.starts_with(prefix))
    })
}

fn program_stats(program: &Value) -> ProgramStats {
    ProgramStats {
        id: program["id"].as_u64().unwrap_or(0),
        name: program["name"].as_str().unwrap_or("?").to_owned(),
        kind: program["type"].as_str().unwrap_or("?").to_owned(),
        // bpftool leaves both out while a program has not run with stats on.
        run_cnt: program["run_cnt"].as_u64().unwrap_or(0),
        run_time_ns: program["run_time_ns"].as_u64().unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bpftool -j prog show` (7.1) with stats on, trimmed: no owner pids here.
    const PROGRAMS: &str = r#"[
        {"id":12,"type":"cgroup_skb","name":"sd_fw_egress","tag":"6deef7357e7b4530","gpl_compatible":true},
        {"id":301,"type":"tracepoint","name":"mark_victim","run_time_ns":2103000,"run_cnt":200},
        {"id":302,"type":"tracing","name":"mark_victim_btf","run_time_ns":640000,"run_cnt":200},
        {"id":303,"type":"tracepoint","name":"signal_generate","run_time_ns":9000000,"run_cnt":100230},
        {"id":304,"type":"tracing","name":"signal_generate","run_time_ns":3000000,"run_cnt":100230},
        {"id":305,"type":"kprobe","name":"oom_kill_proces"}
    ]"#;

    #[test]
    fn agent_programs_by_name_when_bpftool_names_no_owners() {
        let (programs, matched_by) = parse_programs(PROGRAMS.as_bytes(), 4242).unwrap();
        assert_eq!(matched_by, MatchedBy::Name);
        let ids: Vec<u64> = programs.iter().map(|program| program.id).collect();
        assert_eq!(ids, [301, 302, 303, 304, 305]);
        // Not run with stats on: no counters in the output, zero here.
        assert_eq!(programs[4].run_cnt, 0);
        assert_eq!(programs[4].ns_per_run(), None);
        assert!(programs[2].is_signal_program() && programs[3].is_signal_program());
        assert!(!programs[0].is_signal_program());
    }

    #[test]
    fn agent_programs_by_owner_pid_when_bpftool_names_them() {
        let json = r#"[
            {"id":1,"type":"tracepoint","name":"mark_victim","run_cnt":3,"run_time_ns":30,
             "pids":[{"pid":99,"comm":"oomtrace"}]},
            {"id":2,"type":"tracepoint","name":"mark_victim","run_cnt":5,"run_time_ns":50,
             "pids":[{"pid":100,"comm":"oomtrace"}]}
        ]"#;
        let (programs, matched_by) = parse_programs(json.as_bytes(), 100).unwrap();
        assert_eq!(matched_by, MatchedBy::Pid);
        assert_eq!(programs.len(), 1);
        assert_eq!(programs[0].id, 2);
        assert_eq!(programs[0].ns_per_run(), Some(10.0));
    }

    #[test]
    fn delta_subtracts_by_id_and_counts_new_programs_from_zero() {
        let (after, _) = parse_programs(PROGRAMS.as_bytes(), 1).unwrap();
        let mut before = after.clone();
        before.retain(|program| program.id != 304);
        before[2].run_cnt = 230;
        before[2].run_time_ns = 1_000_000;
        let delta = delta(&before, &after);
        let storm = delta.iter().find(|program| program.id == 303).unwrap();
        assert_eq!((storm.run_cnt, storm.run_time_ns), (100_000, 8_000_000));
        assert_eq!(storm.ns_per_run(), Some(80.0));
        let new = delta.iter().find(|program| program.id == 304).unwrap();
        assert_eq!(new.run_cnt, 100_230);
        let unchanged = delta.iter().find(|program| program.id == 301).unwrap();
        assert_eq!(unchanged.run_cnt, 0);
    }
}
