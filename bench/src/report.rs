//! The results as Markdown: a header about the machine, the tables, how each figure was taken,
//! and what is not measured yet.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use super::{
    IDLE_BUDGET, LATENCY_BUDGET, Options, PEER_BURST_KILLS, Runs,
    bpf_stats::{MatchedBy, ProgramStats},
    stats::{Spread, percentile, ratio, show},
    sys,
    watched::Stream,
};

const KIB_PER_MIB: f64 = 1024.0;

/// Per program (name and type, as bpftool shows them): its run counts and ns per run, one
/// entry per run of the bench.
type ProgramRuns<'a> = BTreeMap<(&'a str, &'a str), (Vec<f64>, Vec<f64>)>;

/// Load averages around the bench: another job on the machine shows in the latencies.
pub struct Load {
    pub at_start: String,
    pub at_end: String,
}

pub fn markdown(
    options: &Options,
    runs: &Runs,
    load: &Load,
    elapsed: Duration,
) -> anyhow::Result<String> {
    let mut out = String::new();
    header(&mut out, options, runs, load, elapsed)?;
    side_by_side(&mut out, options, runs);
    latency(&mut out, runs);
    if let Some(bursts) = &runs.bursts {
        out.push_str(&bursts_markdown(bursts));
    }
    footprint(&mut out, runs);
    kernel_cost(&mut out, runs);
    signal_cost(&mut out, runs);
    how_measured(&mut out, options, runs);
    not_measured(&mut out, runs);
    out.push_str(&super::targets::markdown(&measured(runs, load)));
    out.push_str(&super::axis::markdown(
        &runs.axis,
        runs.recorder_idle.as_ref(),
        options.axis_gap(),
    ));
    out.push_str(&super::cgroup_axis::markdown(
        &runs.cgroup_axis,
        options.axis_gap(),
    ));
    Ok(out)
}

/// The header of a results file that holds only the process-count axis and the recorder.
pub fn axis_only_markdown(
    options: &Options,
    load: &Load,
    elapsed: Duration,
) -> anyhow::Result<String> {
    let machine = sys::machine()?;
    let counts: Vec<String> = options
        .process_counts
        .iter()
        .map(usize::to_string)
        .collect();
    let secs = elapsed.as_secs();
    Ok(format!(
        "# oomtrace benchmarks: the process-count and cgroup-count axes, the memory timeline\n\n\
         - machine: {} CPUs, MemTotal {}\n\
         - kernel: {}\n\
         - load average (1, 5, 15 min): {} at start, {} at end\n\
         - agent: release build\n\
         - date: {} (UTC)\n\
         - command: `cargo xtask bench --axis-only --process-counts {} --axis-kills {} \
         --axis-gap-ms {} --recorder-idle-seconds {} --cgroup-counts {} --cgroup-kills {} \
         --cgroup-idle-seconds {}`; bench time {}m{:02}s\n\n",
        machine.cpus,
        machine.mem_total,
        machine.kernel,
        load.at_start,
        load.at_end,
        sys::today_utc(),
        counts.join(","),
        options.axis_kills,
        options.axis_gap_ms,
        options.recorder_idle_seconds,
        options
            .cgroup_counts
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(","),
        options.cgroup_kills,
        options.cgroup_idle_seconds,
        secs / 60,
        secs % 60
    ))
}

fn header(
    out: &mut String,
    options: &Options,
    runs: &Runs,
    load: &Load,
    elapsed: Duration,
) -> anyhow::Result<()> {
    let machine = sys::machine()?;
    let tier = runs
        .runs
        .first()
        .map_or("unknown", |run| run.agent.tier.as_str());
    let secs = elapsed.as_secs();
    let _ = writeln!(out, "# oomtrace benchmarks\n");
    let _ = writeln!(
        out,
        "- machine: {} CPUs, MemTotal {}",
        machine.cpus, machine.mem_total
    );
    let _ = writeln!(out, "- kernel: {}", machine.kernel);
    let _ = writeln!(
        out,
        "- load average (1, 5, 15 min): {} at start, {} at end",
        load.at_start, load.at_end
    );
    let _ = writeln!(out, "- agent: release build, capture tier `{tier}`");
    let _ = writeln!(out, "- date: {} (UTC)", sys::today_utc());
    let burst_sizes: Vec<String> = options.burst_sizes.iter().map(usize::to_string).collect();
    let ringbuf = options
        .ringbuf_size
        .as_ref()
        .map_or(String::new(), |size| format!(" --ringbuf-size {size}"));
    let _ = writeln!(
        out,
        "- command: `cargo xtask bench --runs {} --idle-seconds {} --kills {} --burst-sizes {} --burst-runs {} --peer-burst-runs {}{ringbuf}`; bench time {}m{:02}s",
        options.runs,
        options.idle_seconds,
        options.kills,
        burst_sizes.join(","),
        options.burst_runs,
        options.peer_burst_runs,
        secs / 60,
        secs % 60
    );
    let _ = writeln!(
        out,
        "- agent ring buffer: {}",
        options.ringbuf_size.as_deref().map_or(
            "the agent's default (`--ringbuf-size 1M`)".to_owned(),
            |size| format!("`--ringbuf-size {size}`")
        )
    );
    let _ = writeln!(
        out,
        "\nEach figure: median (min–max) over the runs that measured it; a single value when one did.\n"
    );
    Ok(())
}

fn side_by_side(out: &mut String, options: &Options, runs: &Runs) {
    let agent_attach = Spread::of(runs.runs.iter().map(|run| run.agent.attach_ms));
    let peer_attach = Spread::of(runs.runs.iter().map(|run| run.peer.attach_ms));
    let peer_ready = Spread::of(runs.runs.iter().map(|run| run.peer.ready_ms));
    let mib = |kib: u64| kib as f64 / KIB_PER_MIB;
    let agent_rss = Spread::of(runs.runs.iter().map(|run| mib(run.agent.idle.rss_kib)));
    let peer_rss = Spread::of(runs.runs.iter().map(|run| mib(run.peer.idle.rss_kib)));
    let agent_hwm = Spread::of(runs.runs.iter().map(|run| mib(run.agent.idle.hwm_kib)));
    let peer_hwm = Spread::of(runs.runs.iter().map(|run| mib(run.peer.idle.hwm_kib)));
    let idle_cpu = Spread::of(runs.runs.iter().filter_map(|run| run.agent.idle_cpu_ms));
    let agent_p50 = Spread::of(latency_runs(runs).map(|latencies| micros(latencies, 50.0)));
    let peer_p50 = Spread::of(
        runs.runs
            .iter()
            .map(|run| micros(&run.peer.burst_latencies_ns, 50.0)),
    );
    let peer_captured: usize = runs
        .runs
        .iter()
        .map(|run| run.peer.burst_latencies_ns.len())
        .sum();
    let peer_kills: usize = runs.runs.iter().map(|run| run.peer.burst_kills).sum();
    let agent_captured: usize = latency_runs(runs).map(<[u64]>::len).sum();
    let agent_kills: usize = runs
        .runs
        .iter()
        .filter_map(|run| run.agent.latency.as_ref().map(|latency| latency.kills))
        .sum();

    let _ = writeln!(out, "## oomtrace and bpftrace side by side\n");
    let _ = writeln!(out, "| figure | oomtrace | bpftrace | oomtrace/bpftrace |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    row(out, "attach time (ms)", agent_attach, peer_attach, 1);
    let _ = writeln!(
        out,
        "| bpftrace spawn to its BEGIN output (ms) | | {} | {} |",
        show(peer_ready, 1),
        ratio(agent_attach, peer_ready)
    );
    row(out, "idle VmRSS (MiB)", agent_rss, peer_rss, 1);
    row(out, "idle VmHWM (MiB)", agent_hwm, peer_hwm, 1);
    let idle_runs = if runs.idle_cpu_every_run {
        "every run"
    } else {
        "first run only"
    };
    let _ = writeln!(
        out,
        "| idle CPU time over {} s, {idle_runs} (ms) | {} | not measured | |",
        options.idle_seconds,
        show(idle_cpu, 0)
    );
    row(out, "kill-to-output p50 (µs)", agent_p50, peer_p50, 0);
    let _ = writeln!(
        out,
        "| kills captured | {agent_captured} of {agent_kills} | {peer_captured} of {peer_kills} | |\n"
    );
}

fn row(
    out: &mut String,
    figure: &str,
    ours: Option<Spread>,
    theirs: Option<Spread>,
    decimals: usize,
) {
    let _ = writeln!(
        out,
        "| {figure} | {} | {} | {} |",
        show(ours, decimals),
        show(theirs, decimals),
        ratio(ours, theirs)
    );
}

fn latency(out: &mut String, runs: &Runs) {
    let measured: Vec<_> = runs
        .runs
        .iter()
        .filter_map(|run| run.agent.latency.as_ref())
        .collect();
    let warm: Vec<_> = runs
        .runs
        .iter()
        .filter_map(|run| run.warm.as_ref())
        .collect();
    let spread_of = |figure: &dyn Fn(&super::LatencyRun) -> f64| {
        Spread::of(measured.iter().map(|latency| figure(latency)))
    };
    let warm_of = |figure: &dyn Fn(&super::containers::WarmRun) -> f64| {
        Spread::of(warm.iter().map(|run| figure(run)))
    };
    let mib = |kib: u64| kib as f64 / KIB_PER_MIB;
    let _ = writeln!(
        out,
        "## Kill-to-output latency ({} run(s) off, {} run(s) on)\n",
        measured.len(),
        warm.len()
    );
    let _ = writeln!(
        out,
        "| figure | attribution off | attribution on (podman, warm cache) |"
    );
    let _ = writeln!(out, "| --- | --- | --- |");
    let rows: [(&str, Option<Spread>, Option<Spread>, usize); 5] = [
        (
            "p50 (µs)",
            spread_of(&|l| micros(&l.latencies_ns, 50.0)),
            warm_of(&|w| micros(&w.latencies_ns, 50.0)),
            0,
        ),
        (
            "p99 (µs)",
            spread_of(&|l| micros(&l.latencies_ns, 99.0)),
            warm_of(&|w| micros(&w.latencies_ns, 99.0)),
            0,
        ),
        (
            "max (µs)",
            spread_of(&|l| micros(&l.latencies_ns, 100.0)),
            warm_of(&|w| micros(&w.latencies_ns, 100.0)),
            0,
        ),
        (
            "agent VmRSS after the kills (MiB)",
            spread_of(&|l| mib(l.after.rss_kib)),
            warm_of(&|w| mib(w.after.rss_kib)),
            1,
        ),
        (
            "agent VmHWM after the kills (MiB)",
            spread_of(&|l| mib(l.after.hwm_kib)),
            warm_of(&|w| mib(w.after.hwm_kib)),
            1,
        ),
    ];
    for (figure, off, on, decimals) in rows {
        let _ = writeln!(
            out,
            "| {figure} | {} | {} |",
            show(off, decimals),
            show(on, decimals)
        );
    }
    let _ = writeln!(
        out,
        "| time per kill, hog start to its reaping (ms) | {} | |",
        show(
            spread_of(&|l| l.kill_time.as_secs_f64() * 1e3 / l.kills as f64),
            1
        )
    );
    let count = |figure: &dyn Fn(&super::containers::WarmRun) -> u64| -> u64 {
        warm.iter().map(|run| figure(run)).sum()
    };
    let off_captured: usize = measured.iter().map(|l| l.latencies_ns.len()).sum();
    let off_kills: usize = measured.iter().map(|l| l.kills).sum();
    let _ = writeln!(
        out,
        "| kills captured (on: of the container's memcg `oom_kill` count) | {off_captured} of \
         {off_kills} | {} of {} |",
        count(&|w| w.latencies_ns.len() as u64),
        count(&|w| w.happened)
    );
    let _ = writeln!(
        out,
        "| kills named from the cache (`attribution.source`) | | {} |",
        count(&|w| w.from_cache as u64)
    );
    let _ = writeln!(
        out,
        "| of the kills, the loop's shell rather than the hog | | {} |",
        count(&|w| w.shells as u64)
    );
    match &runs.podman {
        Ok(()) => {
            let _ = writeln!(
                out,
                "\nAttribution on: the container exists before the agent starts, and the kills \
                 begin once the agent has listed it (\"N containers known\" on its stderr), so \
                 every kill is named from the cache. Its loop of kills ends once the agent has \
                 reported {} of them; the kills captured are then compared with the kernel's \
                 own count for the container's memory cgroup. Now and then the loop's shell \
                 allocates while its last hog's memory is still charged and the OOM killer, \
                 finding that victim already reaped, kills the shell (it has \
                 `oom_score_adj` 1000, so PID 1 is spared and starts it again). Target p99 ≤ \
                 10 ms.\n",
                warm.first().map_or(0, |run| run.kills)
            );
        }
        Err(why) => {
            let _ = writeln!(out, "\nAttribution on: not measured: {why}.\n");
        }
    }
}

/// The bursts' table: per size, what the kernel killed, what the agent captured and dropped,
/// and what the kernel log kept.
pub fn bursts_markdown(bursts: &super::burst::Bursts) -> String {
    let mut out = String::new();
    let sizes: std::collections::BTreeSet<usize> = bursts.runs.iter().map(|run| run.size).collect();
    let tier = bursts
        .runs
        .iter()
        .find_map(|run| run.figures.tier.clone())
        .unwrap_or_else(|| "unknown".to_owned());
    let _ = writeln!(
        out,
        "## Burst loss: one `memory.oom.group` of N members killed at once (VM, linux {}, tier `{tier}`)\n",
        bursts.kernel
    );
    let _ = writeln!(
        out,
        "| N | boots | killed (SIGKILL) | memcg `oom_kill` count | reported by oomtrace as `oom_kill` | reached oomtrace (any victim record) | `ringbuf_dropped_total` | kernel log: `Killed process` lines of members | kernel log: `oom-kill:` lines | boot time (s) |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for size in sizes {
        let of_size: Vec<_> = bursts.runs.iter().filter(|run| run.size == size).collect();
        let spread = |figure: &dyn Fn(&super::burst::BurstRun) -> f64| {
            show(Spread::of(of_size.iter().map(|run| figure(run))), 0)
        };
        let _ = writeln!(
            out,
            "| {size} | {} of {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            of_size.len(),
            bursts.runs_per_size,
            spread(&|r| r.figures.killed as f64),
            spread(&|r| r
                .figures
                .memcg_oom_kills
                .map_or(f64::NAN, |kills| kills as f64)),
            spread(&|r| r.figures.captured as f64),
            spread(&|r| r.figures.recorded as f64),
            spread(&|r| r.figures.dropped as f64),
            spread(&|r| r.figures.kmsg_killed_lines as f64),
            spread(&|r| r.figures.kmsg_oom_kill_lines as f64),
            spread(&|r| r.boot_time.as_secs_f64()),
        );
    }
    for (size, why) in &bursts.failures {
        let _ = writeln!(out, "\nA boot with N = {size} failed: {why}");
    }
    let _ = writeln!(
        out,
        "\nEach boot: N − 1 members holding 1 MiB each, then one that grows past a limit a little \
         above what they hold; `memory.oom.group` makes the kernel kill all N in one invocation \
         of the OOM killer. \"reported as `oom_kill`\" counts distinct members with an `oom_kill` \
         record; \"reached oomtrace\" also counts those reported as `oom_mark_exiting` (the join \
         closes an incident whose end has not come after 2 s, `INCIDENT_TIMEOUT` in \
         tracer/src/incident/joiner.rs, and takes later victims of it for exiting tasks); drops are records the kernel could not reserve ring-buffer room for. The memcg count \
         is one more than N: the chosen victim is killed once on its own and once more with its \
         group. The kernel prints one `Killed process` line per victim but its header, task dump \
         and `oom-kill:` summary only under a rate limit, and everything goes through the \
         printk ring buffer (`dmesg` after the burst): what a kmsg reader can still find.\n"
    );
    peers_markdown(&mut out, bursts);
    out
}

/// The kprobe peers next to the agent in the VM, one table row per peer and N.
fn peers_markdown(out: &mut String, bursts: &super::burst::Bursts) {
    let Some(initrd) = &bursts.peer_initrd else {
        return;
    };
    let _ = writeln!(
        out,
        "\n### bcc's `oomkill` and bpftrace's `oomkill.bt` next to oomtrace (same VM, same burst)\n"
    );
    match initrd {
        Ok(bytes) => {
            let _ = writeln!(
                out,
                "Their initramfs: {} MB uncompressed (busybox, the agent, python3 and its standard \
                 library, bcc's module, bpftrace, the `ldd` closure of every ELF file with \
                 libLLVM-14 and libclang, and the kernel headers bcc compiles against).\n",
                bytes / 1_000_000
            );
        }
        Err(why) => {
            let _ = writeln!(out, "Their initramfs could not be written: {why}\n");
            return;
        }
    }
    let _ = writeln!(
        out,
        "| peer | N | boots | attach, spawn to ready line (s) | idle VmRSS (MiB) | `OOM kill` lines the peer printed | members it named | oomtrace in the same boot: `oom_kill` / reached | killed (SIGKILL) | boot time (s) |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let sizes: std::collections::BTreeSet<usize> =
        bursts.peers.iter().map(|run| run.size).collect();
    let mut not_started = Vec::new();
    for peer in super::burst::PEERS {
        for &size in &sizes {
            let of: Vec<_> = bursts
                .peers
                .iter()
                .filter(|run| run.peer == peer && run.size == size)
                .collect();
            if of.is_empty() {
                continue;
            }
            let started: Vec<_> = of
                .iter()
                .filter(|run| {
                    run.figures
                        .peer
                        .as_ref()
                        .is_some_and(|peer| peer.attach_secs.is_ok())
                })
                .collect();
            for run in &of {
                if let Some(figures) = &run.figures.peer
                    && let Err(why) = &figures.attach_secs
                {
                    not_started.push(format!("{} at N = {size}: {why}", peer_label(peer)));
                }
            }
            let spread = |figure: &dyn Fn(&super::burst::PeerBurstRun) -> f64, decimals| {
                show(Spread::of(started.iter().map(|run| figure(run))), decimals)
            };
            let _ = writeln!(
                out,
                "| {} | {size} | {} of {} started | {} | {} | {} | {} | {} / {} | {} | {} |",
                peer_label(peer),
                started.len(),
                bursts.peer_runs_per_size,
                spread(
                    &|run| peer_figure(run)
                        .and_then(|peer| peer.attach_secs.as_ref().ok().copied())
                        .unwrap_or(f64::NAN),
                    1
                ),
                spread(
                    &|run| peer_figure(run)
                        .and_then(|peer| parse_status(peer.status.as_deref()))
                        .map_or(f64::NAN, |memory| memory.rss_kib as f64 / KIB_PER_MIB),
                    1
                ),
                spread(
                    &|run| peer_figure(run).map_or(f64::NAN, |peer| peer.kill_lines as f64),
                    0
                ),
                spread(
                    &|run| peer_figure(run).map_or(f64::NAN, |peer| peer.members_reported as f64),
                    0
                ),
                spread(&|run| run.figures.captured as f64, 0),
                spread(&|run| run.figures.recorded as f64, 0),
                spread(&|run| run.figures.killed as f64, 0),
                show(
                    Spread::of(of.iter().map(|run| run.boot_time.as_secs_f64())),
                    0
                ),
            );
        }
    }
    for why in not_started {
        let _ = writeln!(out, "\nDid not start: {why}");
    }
    for (peer, size, why) in &bursts.peer_failures {
        let _ = writeln!(
            out,
            "\nA boot with {} at N = {size} failed: {why}",
            peer_label(peer)
        );
    }
    let _ = writeln!(
        out,
        "\nBoth peers hook `oom_kill_process` with a kprobe, which runs once per invocation of \
         the OOM killer: a `memory.oom.group` kill of N members is one invocation, and they \
         print one line for it, naming the chosen victim; the other members are killed inside \
         that call without passing the probe. Attach time is the guest's uptime (10 ms steps) \
         from spawning the peer to its ready line (`Tracing OOM kills...` of bcc after it has \
         compiled and attached its program; `Tracing oom_kill_process()...`, bpftrace's BEGIN \
         output), polled every 0.1 s, under software emulation: compare the peers with each \
         other, not with the host's figures. Idle memory \
         is in the footprint table below.\n"
    );
}

fn peer_figure(run: &super::burst::PeerBurstRun) -> Option<&oomtrace_tests::burst::PeerFigures> {
    run.figures.peer.as_ref()
}

/// One run's figures per program, added to those of the other runs.
fn add_program_runs<'a>(programs: &mut ProgramRuns<'a>, run: &'a [ProgramStats]) {
    for program in run {
        let entry = programs
            .entry((program.name.as_str(), program.kind.as_str()))
            .or_default();
        entry.0.push(program.run_cnt as f64);
        entry.1.extend(program.ns_per_run());
    }
}

/// `| program | type | run_cnt | run_time_ns / run_cnt |` rows, each a spread over the runs.
fn program_rows(out: &mut String, programs: &ProgramRuns<'_>) {
    for ((name, kind), (counts, ns_per_run)) in programs {
        let _ = writeln!(
            out,
            "| `{name}` | {kind} | {} | {} |",
            show(Spread::of(counts.iter().copied()), 0),
            show(Spread::of(ns_per_run.iter().copied()), 0)
        );
    }
}

fn kernel_cost(out: &mut String, runs: &Runs) {
    // Per program name: its type, run counts and ns per run over the latency runs.
    let mut programs = ProgramRuns::new();
    let mut matched_by = None;
    for latency in runs
        .runs
        .iter()
        .filter_map(|run| run.agent.latency.as_ref())
    {
        matched_by = Some(latency.matched_by);
        add_program_runs(&mut programs, &latency.programs);
    }
    let how = match matched_by {
        Some(MatchedBy::Pid) => "matched by the agent's pid in `bpftool -j prog show`",
        Some(MatchedBy::Name) => "matched by name: this bpftool reports no owner pids",
        None => "no latency run",
    };
    let _ = writeln!(
        out,
        "## Per-event kernel cost during the OOM kills ({how})\n"
    );
    let _ = writeln!(out, "| program | type | run_cnt | run_time_ns / run_cnt |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    program_rows(out, &programs);
    let _ = writeln!(out);
}

/// The SIGKILL filter under a storm of other signals: what its programs ran and cost.
fn signal_cost(out: &mut String, runs: &Runs) {
    let mut programs = ProgramRuns::new();
    for run in &runs.runs {
        add_program_runs(&mut programs, &run.agent.storm.programs);
    }
    let signals = runs.runs.first().map_or(0, |run| run.agent.storm.signals);
    let storm_ms = Spread::of(
        runs.runs
            .iter()
            .map(|run| run.agent.storm.elapsed.as_secs_f64() * 1e3),
    );
    let _ = writeln!(
        out,
        "## The SIGKILL filter under load: {signals} SIGCONTs per run ({} run(s))\n",
        runs.runs.len()
    );
    let _ = writeln!(
        out,
        "| program | type | run_cnt during the signals | run_time_ns / run_cnt |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    program_rows(out, &programs);
    let _ = writeln!(
        out,
        "\nA helper process (the bench's hidden `signal-storm`, a tight loop of kill(2)) sends the \
         signals to a `sleep`, taking {} ms; `kernel.bpf_stats_enabled=1` meanwhile, and the \
         counters are read before and after (`bpftool -j prog show`), so other signals on the \
         machine in that time count too (run_cnt above {signals}). Both programs run for every \
         signal and return at once for anything but SIGKILL: `signal_generate` (tracepoint) \
         reads `sig` from the tracepoint's record, `signal_generate_btf` (tp_btf; \
         `signal_generate_raw` where tp_btf is refused) takes it as the hook's first argument. \
         bpftool shows a program's full name where its BTF has one, else the kernel's first \
         15 characters.\n",
        show(storm_ms, 0)
    );
    let floods: Vec<super::signals::FloodRun> = runs
        .runs
        .iter()
        .map(|run| run.agent.flood.clone())
        .collect();
    out.push_str(&super::signals::flood_markdown(&floods));
}

/// Idle memory, split as /proc/<pid>/status does: the agent at each ring-buffer size, and
/// the peers on this machine and in the VM.
fn footprint(out: &mut String, runs: &Runs) {
    let mib = |kib: u64| kib as f64 / KIB_PER_MIB;
    let _ = writeln!(out, "## Idle footprint: where the resident memory goes\n");
    let _ = writeln!(
        out,
        "| process | VmRSS (MiB) | RssAnon | RssFile | RssShmem | VmHWM | Pss |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- |");
    let mut row = |label: &str, memories: &[super::sys::Memory]| {
        let of = |figure: &dyn Fn(&super::sys::Memory) -> u64| {
            show(Spread::of(memories.iter().map(|m| mib(figure(m)))), 1)
        };
        let pss = Spread::of(memories.iter().filter_map(|m| m.pss_kib).map(mib));
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {} | {} |",
            of(&|m| m.rss_kib),
            of(&|m| m.anon_kib),
            of(&|m| m.file_kib),
            of(&|m| m.shmem_kib),
            of(&|m| m.hwm_kib),
            show(pss, 1)
        );
    };
    let agent: Vec<_> = runs.runs.iter().map(|run| run.agent.idle).collect();
    row("oomtrace (as run above)", &agent);
    for (size, _) in super::RING_SIZES {
        row(
            &format!("oomtrace `--ringbuf-size {size}`"),
            &idle_at_ring_size(runs, size),
        );
    }
    let static_build: Vec<_> = runs.runs.iter().map(|run| run.static_idle).collect();
    row(
        "oomtrace, static build (as `deploy/Containerfile` ships it)",
        &static_build,
    );
    let peer: Vec<_> = runs.runs.iter().map(|run| run.peer.idle).collect();
    row("bpftrace, tracepoint one-liner", &peer);
    if let Some(bursts) = &runs.bursts {
        let vm_agent: Vec<_> = bursts
            .runs
            .iter()
            .filter_map(|run| parse_status(run.figures.agent_status.as_deref()))
            .collect();
        row("oomtrace in the VM (6.1), after attach", &vm_agent);
        let vm_agent_after: Vec<_> = bursts
            .runs
            .iter()
            .filter_map(|run| parse_status(run.figures.agent_status_after.as_deref()))
            .collect();
        row("oomtrace in the VM (6.1), after the burst", &vm_agent_after);
        for peer in super::burst::PEERS {
            let vm_peer: Vec<_> = bursts
                .peers
                .iter()
                .filter(|run| run.peer == peer)
                .filter_map(|run| parse_status(run.figures.peer.as_ref()?.status.as_deref()))
                .collect();
            row(&format!("{} in the VM", peer_label(peer)), &vm_peer);
        }
    }
    let _ = writeln!(
        out,
        "\nOn this machine the agent is read 3 s after its `agent_started` line, once its \
         startup has settled (2 s after attach it gives back the heap and the executable's \
         pages that only starting used; VmHWM keeps the startup's peak); in the VM, and for \
         the peers, right after the ready line. RssFile \
         holds file-backed pages and also the pages of a BPF ring buffer that the agent maps \
         (they are the kernel's, shared with it), RssAnon the agent's heap and stacks. The \
         ring-buffer rows start the agent once per size in every run. In the VM every file \
         is in the initramfs, which is memory: the pages of mapped executables and libraries \
         count as RssShmem there, not RssFile. Linux 6.1 folds a task's RSS changes into the \
         process's figures only now and then (per-task counters; exact per-CPU counters came \
         with 6.2), so a figure read right after attach may not show pages the agent mapped \
         just before: compare it with the one after the burst. Pss (from `smaps_rollup`, on \
         this machine only) divides each page by the number of times it is mapped: the ring's \
         data pages, mapped twice, count once, and shared libraries in part.\n"
    );
    let _ = writeln!(
        out,
        "Where the agent's idle RSS goes: {}\n",
        super::targets::ring_why(&ring_memories(runs))
    );
}

fn parse_status(status: Option<&str>) -> Option<super::sys::Memory> {
    super::sys::parse_memory(status?).ok()
}

pub fn peer_label(peer: &str) -> &'static str {
    match peer {
        "bcc" => "bcc `oomkill`",
        "bpftrace" => "bpftrace `oomkill.bt`",
        _ => "unknown peer",
    }
}

/// The agent's idle memory with `--ringbuf-size size`, one per run that measured it.
fn idle_at_ring_size(runs: &Runs, size: &str) -> Vec<super::sys::Memory> {
    runs.runs
        .iter()
        .flat_map(|run| run.rings.iter().filter(|ring| ring.size == size))
        .map(|ring| ring.idle)
        .collect()
}

/// The idle memory at each ring-buffer size over the runs.
fn ring_memories(runs: &Runs) -> Vec<super::targets::RingMemory> {
    let mib = |kib: u64| kib as f64 / KIB_PER_MIB;
    super::RING_SIZES
        .iter()
        .filter_map(|&(size, bytes)| {
            let at_size = idle_at_ring_size(runs, size);
            Some(super::targets::RingMemory {
                size,
                bytes,
                rss_mib: Spread::of(at_size.iter().map(|m| mib(m.rss_kib)))?,
                file_mib: Spread::of(at_size.iter().map(|m| mib(m.file_kib)))?,
                anon_mib: Spread::of(at_size.iter().map(|m| mib(m.anon_kib)))?,
            })
        })
        .collect()
}

/// The figures the targets are judged on.
fn measured(runs: &Runs, load: &Load) -> super::targets::Measured {
    use super::targets::{BurstLoss, Measured};
    let mib = |kib: u64| kib as f64 / KIB_PER_MIB;
    let warm_p99 = Spread::of(
        runs.runs
            .iter()
            .filter_map(|run| run.warm.as_ref())
            .map(|warm| micros(&warm.latencies_ns, 99.0)),
    );
    let off_p99 = Spread::of(latency_runs(runs).map(|latencies| micros(latencies, 99.0)));
    let largest_burst = runs.bursts.as_ref().and_then(|bursts| {
        let size = bursts.runs.iter().map(|run| run.size).max()?;
        let of_size: Vec<_> = bursts.runs.iter().filter(|run| run.size == size).collect();
        Some(BurstLoss {
            size,
            lost: Spread::of(
                of_size
                    .iter()
                    .map(|run| size.saturating_sub(run.figures.recorded) as f64),
            )?,
            dropped: Spread::of(of_size.iter().map(|run| run.figures.dropped as f64))?,
            reported_as_kill: Spread::of(of_size.iter().map(|run| run.figures.captured as f64))?,
        })
    });
    let rings = ring_memories(runs);
    Measured {
        attach_ms: Spread::of(runs.runs.iter().map(|run| run.agent.attach_ms)),
        startup_hwm_mib: Spread::of(runs.runs.iter().map(|run| mib(run.agent.idle.hwm_kib))),
        idle_rss_mib: Spread::of(runs.runs.iter().map(|run| mib(run.agent.idle.rss_kib))),
        static_idle_rss_mib: Spread::of(runs.runs.iter().map(|run| mib(run.static_idle.rss_kib))),
        warm_p99_us: warm_p99,
        off_p99_us: off_p99,
        idle_cpu_ms: Spread::of(runs.runs.iter().filter_map(|run| run.agent.idle_cpu_ms)),
        largest_burst,
        rings,
        load: format!("{} at start, {} at end", load.at_start, load.at_end),
    }
}

fn how_measured(out: &mut String, options: &Options, runs: &Runs) {
    let attach_stream = runs
        .runs
        .first()
        .map_or("?", |run| match run.peer.attach_stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        });
    let latency_runs = if runs.latency_every_run {
        format!("every run ({} kills each)", options.kills)
    } else {
        format!(
            "the first run only: repeating its kills would have taken more than {} s",
            LATENCY_BUDGET.as_secs()
        )
    };
    let idle = if runs.idle_cpu_every_run {
        "every run".to_owned()
    } else {
        format!(
            "the first run only (runs × idle seconds is over {} s)",
            IDLE_BUDGET.as_secs()
        )
    };
    let lines = [
        "- Attach time: CLOCK_MONOTONIC just before spawning `oomtrace run --format json` to the \
         moment a reader thread read its `agent_started` line."
            .to_owned(),
        "- Idle VmRSS/VmHWM and its RssAnon/RssFile/RssShmem parts: /proc/<pid>/status 3 s after attach, once startup settled; VmHWM is the startup's peak. Idle CPU: utime + stime from \
         /proc/<pid>/stat (clock-tick resolution, 10 ms) over the idle period, measured in "
            .to_owned()
            + &idle
            + ".",
        format!(
            "- Latency: `oomtrace-hog` OOM-killed one after another in a memory cgroup limited to \
             {} MiB without swap; each agent stdout line stamped with CLOCK_MONOTONIC when read; \
             latency = read time − `ktime_ns` (bpf_ktime_get_ns at capture). Measured in {latency_runs}.",
            super::kills::LIMIT_BYTES >> 20
        ),
        "- Kernel cost: `kernel.bpf_stats_enabled=1` during the kills only (old value restored), \
         then `bpftool -j prog show` before the agent stops. The signal programs there count \
         the kills' SIGKILLs and every other signal sent on the machine meanwhile. The SIGKILL \
         filter under load: the same counters read before and after 100,000 other signals, \
         with the agent idle otherwise."
            .to_owned(),
        format!(
            "- Peer, {}: a script on `tracepoint:oom:mark_victim` printing pid, comm, total_vm, \
             anon_rss, file_rss, shmem_rss, uid, pgtables, oom_score_adj (and `nsecs`), run with \
             `-B line`. Attach time is spawn to its \"Attaching N probes...\" line (on \
             {attach_stream}), which bpftrace prints before attaching; its BEGIN output comes after. \
             Each run ends with a burst of {PEER_BURST_KILLS} kills under bpftrace.",
            peer_version()
        ),
        "- bcc's `oomkill` and bpftrace's `oomkill.bt` hook `oom_kill_process` with a kprobe, \
         which a kernel without CONFIG_KPROBES cannot run: they are measured in the VM instead \
         (see the bursts)."
            .to_owned(),
    ];
    let _ = writeln!(out, "## How measured\n");
    for line in lines {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out);
}

fn not_measured(out: &mut String, runs: &Runs) {
    let _ = writeln!(out, "## Not measured yet\n");
    if runs.bursts.is_none() {
        let _ = writeln!(
            out,
            "- The `memory.oom.group` bursts: left out by `--burst-runs 0`."
        );
    }
    if let Err(why) = &runs.podman {
        let _ = writeln!(out, "- Latency with container attribution on: {why}.");
    }
    if runs
        .bursts
        .as_ref()
        .is_none_or(|bursts| bursts.peer_runs_per_size == 0)
    {
        let _ = writeln!(
            out,
            "- bcc's `oomkill` and bpftrace's `oomkill.bt` in the VM: left out by `--peer-burst-runs 0`."
        );
    }
    let _ = writeln!(
        out,
        "- Idle CPU time of the peers; the kernel-side cost of the peers' programs.\n"
    );
}

/// The latencies of every run that measured them.
fn latency_runs(runs: &Runs) -> impl Iterator<Item = &[u64]> {
    runs.runs
        .iter()
        .filter_map(|run| run.agent.latency.as_ref())
        .map(|latency| latency.latencies_ns.as_slice())
}

/// A percentile of nanosecond latencies, in microseconds; NaN when none was captured.
fn micros(latencies_ns: &[u64], p: f64) -> f64 {
    percentile(latencies_ns, p).map_or(f64::NAN, |ns| ns as f64 / 1e3)
}

fn peer_version() -> String {
    std::process::Command::new("bpftrace")
        .arg("--version")
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::burst::{Bursts, PeerBurstRun};
    use oomtrace_tests::burst::{BurstFigures, PeerFigures};

    const STATUS: &str = "VmHWM:\t  112888 kB\nVmRSS:\t  112640 kB\nRssAnon:\t   42576 kB\nRssFile:\t       8 kB\nRssShmem:\t   70056 kB\n";

    fn figures(size: usize, peer: PeerFigures) -> BurstFigures {
        let started = peer.attach_secs.is_ok();
        let n = if started { size } else { 0 };
        BurstFigures {
            members: n,
            killed: n,
            memcg_oom_kills: started.then_some(size as u64 + 1),
            captured: n,
            recorded: n,
            incident_victims: n,
            incidents: usize::from(started),
            dropped: 0,
            kmsg_killed_lines: n,
            kmsg_oom_kill_lines: 1,
            tier: Some("full".to_owned()),
            agent_status: None,
            agent_status_after: None,
            peer: Some(peer),
        }
    }

    #[test]
    fn the_peers_table_has_a_row_per_peer_and_size_and_says_why_one_did_not_start() {
        let bpftrace = PeerBurstRun {
            peer: "bpftrace",
            size: 100,
            figures: figures(
                100,
                PeerFigures {
                    name: "bpftrace".to_owned(),
                    attach_secs: Ok(3.4),
                    status: Some(STATUS.to_owned()),
                    kill_lines: 1,
                    members_reported: 1,
                },
            ),
            boot_time: Duration::from_secs(29),
        };
        let bcc = PeerBurstRun {
            peer: "bcc",
            size: 100,
            figures: figures(
                100,
                PeerFigures {
                    name: "bcc".to_owned(),
                    attach_secs: Err("exited: OSError: librt.so.1: cannot open".to_owned()),
                    status: None,
                    kill_lines: 0,
                    members_reported: 0,
                },
            ),
            boot_time: Duration::from_secs(14),
        };
        let bursts = Bursts {
            kernel: "6.1.0-57-cloud-amd64".to_owned(),
            runs: Vec::new(),
            runs_per_size: 0,
            failures: Vec::new(),
            peers: vec![bpftrace, bcc],
            peer_runs_per_size: 1,
            peer_failures: vec![("bcc", 500, "the guest did not power off".to_owned())],
            peer_initrd: Some(Ok(368_000_000)),
        };
        let mut out = String::new();
        peers_markdown(&mut out, &bursts);
        assert!(out.contains("Their initramfs: 368 MB uncompressed"));
        // Every row has as many cells as the header.
        let cells = |line: &str| line.matches('|').count();
        let table: Vec<&str> = out.lines().filter(|line| line.starts_with('|')).collect();
        assert_eq!(table.len(), 4);
        assert!(
            table.iter().all(|line| cells(line) == cells(table[0])),
            "{out}"
        );
        assert!(
            out.contains(
                "| bcc `oomkill` | 100 | 0 of 1 started | — | — | — | — | — / — | — | 14 |"
            ),
            "{out}"
        );
        assert!(out.contains(
            "| bpftrace `oomkill.bt` | 100 | 1 of 1 started | 3.4 | 110.0 | 1 | 1 | 100 / 100 | 100 | 29 |"
        ), "{out}");
        assert!(out.contains(
            "Did not start: bcc `oomkill` at N = 100: exited: OSError: librt.so.1: cannot open"
        ));
        assert!(
            out.contains(
                "A boot with bcc `oomkill` at N = 500 failed: the guest did not power off"
            )
        );
    }
}
