//! The peer: a bpftrace one-liner on `tracepoint:oom:mark_victim` printing the fields oomtrace
//! reads from the same tracepoint. (bcc's `oomkill` and bpftrace's `oomkill.bt` hook
//! `oom_kill_process` with a kprobe, which a kernel without CONFIG_KPROBES cannot run.)

use std::{path::Path, process::Command};

use super::{
    ATTACH_TIMEOUT, collect_kill_lines,
    kills::MemoryCgroup,
    oom_kill_many, sys,
    watched::{Line, Stream, Watched},
};

/// `nsecs` is bpf_ktime_get_ns, as the agent's `ktime_ns`. BEGIN fires once every probe is
/// attached, so `bench: ready` marks the end of the attach; "Attaching N probes..." is printed
/// just before it.
const SCRIPT: &str = r#"
BEGIN { printf("bench: ready\n"); }
tracepoint:oom:mark_victim {
    printf("oom_kill ktime_ns=%llu pid=%d comm=%s total_vm=%lu anon_rss=%lu file_rss=%lu shmem_rss=%lu uid=%u pgtables=%lu oom_score_adj=%d\n",
        nsecs, args->pid, str(args->comm), args->total_vm, args->anon_rss, args->file_rss,
        args->shmem_rss, args->uid, args->pgtables, args->oom_score_adj);
}
"#;

pub struct PeerRun {
    /// Spawn to the "Attaching N probe(s)..." line.
    pub attach_ms: f64,
    pub attach_stream: Stream,
    /// Spawn to the BEGIN probe's output.
    pub ready_ms: f64,
    pub idle: sys::Memory,
    pub burst_kills: usize,
    pub burst_latencies_ns: Vec<u64>,
}

pub fn measure(hog: &Path, cgroup: &MemoryCgroup, burst_kills: usize) -> anyhow::Result<PeerRun> {
    // Line buffering: with a pipe for stdout, bpftrace would otherwise hold events back.
    let mut bpftrace = Watched::spawn(
        "bpftrace",
        Command::new("bpftrace").args(["-B", "line", "-e", SCRIPT]),
    )?;
    let attaching = bpftrace.wait_for("Attaching line", ATTACH_TIMEOUT, |line| {
        line.text.starts_with("Attaching ")
    })?;
    let ready = bpftrace.wait_for("BEGIN output", ATTACH_TIMEOUT, |line| {
        line.text == "bench: ready"
    })?;
    let idle = sys::memory(bpftrace.pid())?;
    let (victims, _) = oom_kill_many(cgroup, hog, burst_kills)?;
    let burst_latencies_ns = collect_kill_lines(&mut bpftrace, &victims, bpftrace_kill)?;
    bpftrace.stop()?;
    let since_spawn =
        |line: &Line| line.read_at_ns.saturating_sub(bpftrace.spawned_at_ns) as f64 / 1e6;
    Ok(PeerRun {
        attach_ms: since_spawn(&attaching),
        attach_stream: attaching.stream,
        ready_ms: since_spawn(&ready),
        idle,
        burst_kills,
        burst_latencies_ns,
    })
}

/// `oom_kill ktime_ns=N pid=P ...`: the victim's pid and the capture time.
fn bpftrace_kill(line: &Line) -> Option<(u32, u64)> {
    let fields = line.text.strip_prefix("oom_kill ")?;
    let value = |name: &str| {
        fields
            .split_whitespace()
            .find_map(|field| field.strip_prefix(name)?.strip_prefix('='))
    };
    Some((
        value("pid")?.parse().ok()?,
        value("ktime_ns")?.parse().ok()?,
    ))
}
