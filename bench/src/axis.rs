//! What a kill costs as the host's process count grows, and what the memory timeline costs while
//! nothing happens.
//!
//! The process-count axis: 0, 1,000 and 10,000 extra idle processes (forked by the bench, each
//! sleeping in `pause()`), and at each count OOM kills more than a second apart (so each takes a
//! snapshot of its own), the history and the timeline on. Per kill: kill-to-JSON latency, and
//! where the time went, stage by stage, from the agent's `oomtrace::stages` debug lines.
//!
//! The recorder's idle cost: the agent sits idle for minutes with the recorder on; its CPU time
//! (per thread) and resident memory are read before and after.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    ATTACH_TIMEOUT, OUTPUT_TIMEOUT, agent_kill, json_kind,
    kills::{MemoryCgroup, oom_kill_in},
    stats::percentile,
    sys,
    watched::{Line, Stream, Watched},
};

/// The agent's stages in pipeline order, as its debug lines name them.
const STAGES: [&str; 11] = [
    "wake",
    "handover",
    "decode",
    "join",
    "proc",
    "queue",
    "observe",
    "attribute",
    "explain",
    "write",
    "history",
];

/// One count of the axis.
pub struct AxisPoint {
    pub processes: usize,
    pub kills: usize,
    /// Kill-to-JSON, per kill written.
    pub latencies_ns: Vec<u64>,
    /// Per stage, microseconds per kill.
    pub stages_us: BTreeMap<&'static str, Vec<u64>>,
    /// `explanation.snapshot.took_us` per kill.
    pub snapshot_us: Vec<u64>,
    /// How long forking the idle processes took.
    pub spawn_time: Duration,
}

/// The idle agent with the recorder on.
pub struct RecorderIdle {
    pub seconds: u64,
    pub cpu_ms: f64,
    /// CPU time of the recorder's own thread.
    pub recorder_cpu_ms: Option<f64>,
    pub rss_start: sys::Memory,
    pub rss_end: sys::Memory,
    /// The recorder's startup line: what it watches, how it wakes, its bound.
    pub recorder_line: Option<String>,
}

/// Processes that do nothing, for as long as this lives.
struct Idlers {
    pids: Vec<libc::pid_t>,
}

impl Idlers {
    fn spawn(count: usize) -> anyhow::Result<Self> {
        let mut idlers = Idlers {
            pids: Vec::with_capacity(count),
        };
        for _ in 0..count {
            sys::check_interrupted()?;
            // SAFETY: the child only makes async-signal-safe system calls (prctl, pause, _exit),
            // as it must after fork in a process with threads.
            match unsafe { libc::fork() } {
                -1 => bail!(
                    "fork after {} idle processes: {}",
                    idlers.pids.len(),
                    std::io::Error::last_os_error()
                ),
                // SAFETY: prctl and pause only, async-signal-safe, as the fork above requires.
                0 => unsafe {
                    // Gone with the bench, however it ends.
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    loop {
                        libc::pause();
                    }
                },
                pid => idlers.pids.push(pid),
            }
        }
        Ok(idlers)
    }
}

impl Drop for Idlers {
    fn drop(&mut self) {
        for &pid in &self.pids {
            // SAFETY: kill and waitpid on our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        for &pid in &self.pids {
            // SAFETY: as above.
            unsafe {
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// The axis: at each count, `kills` OOM kills `gap` apart.
pub fn measure(
    agent: &Path,
    hog: &Path,
    counts: &[usize],
    kills: usize,
    gap: Duration,
) -> anyhow::Result<Vec<AxisPoint>> {
    let cgroup = MemoryCgroup::create()?;
    let history = history_dir()?;
    let mut points = Vec::new();
    for &processes in counts {
        println!("xtask bench: {kills} kills with {processes} idle processes on the host");
        let started = Instant::now();
        let idlers = Idlers::spawn(processes)?;
        let spawn_time = started.elapsed();
        let point = kills_with(agent, hog, &cgroup, &history, kills, gap)
            .with_context(|| format!("the kills with {processes} idle processes"))?;
        drop(idlers);
        points.push(AxisPoint {
            processes,
            spawn_time,
            ..point
        });
    }
    let _ = std::fs::remove_dir_all(&history);
    Ok(points)
}

pub fn history_dir() -> anyhow::Result<PathBuf> {
    let dir = xtask::run::target_dir().join(format!("bench-axis-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("making {}", dir.display()))?;
    Ok(dir)
}

/// The agent with `--format json ARGS` and its stage lines, and its `agent_started` line.
pub fn spawn_agent(agent: &Path, args: &[&str]) -> anyhow::Result<(Watched, Line)> {
    let mut watched = Watched::spawn(
        "oomtrace",
        Command::new(agent)
            .args(["run", "--format", "json"])
            .args(args)
            .env("RUST_LOG", "info,oomtrace::stages=debug"),
    )?;
    let started = watched.wait_for("agent_started line", ATTACH_TIMEOUT, |line| {
        json_kind(line).is_some_and(|(kind, _)| kind == "agent_started")
    })?;
    Ok((watched, started))
}

fn kills_with(
    agent: &Path,
    hog: &Path,
    cgroup: &MemoryCgroup,
    history: &Path,
    kills: usize,
    gap: Duration,
) -> anyhow::Result<AxisPoint> {
    let history_file = history.join("oomtrace.db");
    let history_arg = history_file.to_string_lossy();
    let (mut watched, _) = spawn_agent(agent, &["--history", &history_arg])?;
    let series = kill_series(
        &mut watched,
        hog,
        &[cgroup.dir().to_owned()],
        kills,
        gap,
        |_, _| {},
    )?;
    watched.stop()?;
    Ok(AxisPoint {
        processes: 0,
        kills,
        latencies_ns: series.latencies_ns,
        stages_us: series.stages_us,
        snapshot_us: series.snapshot_us,
        spawn_time: Duration::ZERO,
    })
}

/// What a series of kills measured.
#[derive(Default)]
pub struct KillSeries {
    /// Kill-to-JSON, per kill written.
    pub latencies_ns: Vec<u64>,
    /// Per stage, microseconds per kill.
    pub stages_us: BTreeMap<&'static str, Vec<u64>>,
    /// `explanation.snapshot.took_us` per kill.
    pub snapshot_us: Vec<u64>,
}

/// `kills` OOM kills `gap` apart by the running `agent`, the n-th in the memory cgroup
/// `dirs[n % dirs.len()]`; `each` is shown every kill's victim pid and JSON line.
pub fn kill_series(
    watched: &mut Watched,
    hog: &Path,
    dirs: &[PathBuf],
    kills: usize,
    gap: Duration,
    mut each: impl FnMut(u32, &Line),
) -> anyhow::Result<KillSeries> {
    let mut series = KillSeries::default();
    for (index, dir) in dirs.iter().cycle().take(kills).enumerate() {
        if index % 50 == 49 {
            println!("xtask bench:   {} of {kills} kills", index + 1);
        }
        let due = Instant::now() + gap;
        let victim = oom_kill_in(dir, hog)?;
        let mut stage_lines = Vec::new();
        let found = watched.wait_for("the kill's JSON line", OUTPUT_TIMEOUT, |line| {
            if line.stream == Stream::Stderr {
                stage_lines.push(line.text.clone());
                return false;
            }
            agent_kill(line).is_some_and(|(pid, _)| pid == victim)
        });
        if let Ok(line) = found {
            record_kill(&mut series, &line);
            each(victim, &line);
        }
        // The kill's stage line follows its JSON line, on the other pipe: it may have been read
        // already, while the bench waited for the JSON line.
        let stage_text = match stage_line_of(&stage_lines, victim) {
            Some(text) => Some(text.to_owned()),
            None => watched
                .wait_for("the kill's stage line", OUTPUT_TIMEOUT, |line| {
                    stage_of(&line.text).is_some_and(|(pid, _)| pid == victim)
                })
                .ok()
                .map(|line| line.text),
        };
        if let Some((_, spans)) = stage_text.as_deref().and_then(stage_of) {
            for (name, us) in spans {
                series.stages_us.entry(name).or_default().push(us);
            }
        }
        sys::sleep(due.saturating_duration_since(Instant::now()))?;
    }
    Ok(series)
}

fn record_kill(series: &mut KillSeries, line: &Line) {
    let Some((_, ktime_ns)) = agent_kill(line) else {
        return;
    };
    series
        .latencies_ns
        .push(line.read_at_ns.saturating_sub(ktime_ns));
    if let Some((_, value)) = json_kind(line)
        && let Some(took) = value
            .pointer("/explanation/snapshot/took_us")
            .and_then(serde_json::Value::as_u64)
    {
        series.snapshot_us.push(took);
    }
}

/// The stage line of the kill of `victim` among `lines`.
fn stage_line_of(lines: &[String], victim: u32) -> Option<&str> {
    lines
        .iter()
        .map(String::as_str)
        .find(|text| stage_of(text).is_some_and(|(pid, _)| pid == victim))
}

/// `… oom_kill of pid 123: wake=800us handover=12us decode=3us … total=1662us`: the pid and each stage.
fn stage_of(text: &str) -> Option<(u32, Vec<(&'static str, u64)>)> {
    let rest = text.split_once("oom_kill of pid ")?.1;
    let (pid, spans) = rest.split_once(':')?;
    let spans = spans
        .split_whitespace()
        .filter_map(|span| {
            let (name, value) = span.split_once('=')?;
            let name = *STAGES.iter().find(|stage| **stage == name)?;
            Some((name, value.strip_suffix("us")?.parse().ok()?))
        })
        .collect();
    Some((pid.trim().parse().ok()?, spans))
}

/// The agent idle for `seconds` with the recorder on (the default `--timeline 60s`).
pub fn recorder_idle(agent: &Path, seconds: u64) -> anyhow::Result<RecorderIdle> {
    let history = history_dir()?;
    let history_arg = history.join("oomtrace.db").to_string_lossy().into_owned();
    let mut watched = Watched::spawn(
        "oomtrace",
        Command::new(agent).args(["run", "--format", "json", "--history", &history_arg]),
    )?;
    let mut recorder_line = None;
    watched.wait_for("agent_started line", ATTACH_TIMEOUT, |line| {
        if line.text.contains("memory timeline:") {
            recorder_line = line
                .text
                .split_once("memory timeline:")
                .map(|(_, rest)| format!("memory timeline:{rest}"));
        }
        json_kind(line).is_some_and(|(kind, _)| kind == "agent_started")
    })?;
    let pid = watched.pid();
    let rss_start = sys::memory(pid)?;
    let cpu_before = sys::cpu_ms(pid)?;
    let recorder_before = thread_cpu_ms(pid, "oomtrace-timeli");
    sys::sleep(Duration::from_secs(seconds))?;
    let cpu_ms = sys::cpu_ms(pid)? - cpu_before;
    let recorder_cpu_ms = recorder_before
        .zip(thread_cpu_ms(pid, "oomtrace-timeli"))
        .map(|(before, after)| after - before);
    let rss_end = sys::memory(pid)?;
    watched.stop()?;
    let _ = std::fs::remove_dir_all(&history);
    Ok(RecorderIdle {
        seconds,
        cpu_ms,
        recorder_cpu_ms,
        rss_start,
        rss_end,
        recorder_line,
    })
}

/// CPU time of the thread named `comm` (as the kernel cuts it, 15 bytes) of `pid`.
fn thread_cpu_ms(pid: u32, comm: &str) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if name.trim_end() == comm {
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            return sys::stat_cpu_ms(&stat);
        }
    }
    None
}

/// Where the kernel prints, when the OOM killer's `Killed process` line (level 3) goes to a
/// console: the killing CPU writes it there itself, right after queueing the wakeup of the
/// agent's ring-buffer reader, which shows in `wake`.
fn kernel_console() -> Option<String> {
    let consoles: Vec<String> = std::fs::read_to_string("/proc/consoles")
        .ok()?
        .lines()
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect();
    let level: u32 = std::fs::read_to_string("/proc/sys/kernel/printk")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    (!consoles.is_empty() && level > 3).then(|| {
        format!(
            "The kernel's console here is {} at console loglevel {level}: the OOM killer's \
             `Killed process` line (level 3) is written to it by the killing CPU, which is busy \
             printing while the agent's threads wait to be woken there (a console write of a \
             line that long costs milliseconds on a slow serial console).",
            consoles.join(", ")
        )
    })
}

/// The axis's and the recorder's tables, with how they were measured and the targets.
pub fn markdown(points: &[AxisPoint], idle: Option<&RecorderIdle>, gap: Duration) -> String {
    let mut out = String::new();
    let us = |ns: Option<u64>| ns.map_or("—".to_owned(), |ns| format!("{}", ns / 1000));
    if !points.is_empty() {
        let _ = writeln!(
            out,
            "## Kill-to-JSON against the host's process count\n\n\
             | idle processes on the host | kills captured | p50 (µs) | p99 (µs) | max (µs) | \
             snapshot p50 / max (µs, `took_us`) | forking them (s) |\n\
             | --- | --- | --- | --- | --- | --- | --- |"
        );
        for point in points {
            let lat = &point.latencies_ns;
            let snap = &point.snapshot_us;
            let _ = writeln!(
                out,
                "| {} | {} of {} | {} | {} | {} | {} / {} | {:.1} |",
                point.processes,
                lat.len(),
                point.kills,
                us(percentile(lat, 50.0)),
                us(percentile(lat, 99.0)),
                us(lat.iter().max().copied()),
                percentile(snap, 50.0).map_or("—".to_owned(), |v| v.to_string()),
                snap.iter().max().map_or("—".to_owned(), |v| v.to_string()),
                point.spawn_time.as_secs_f64(),
            );
        }
        let _ = writeln!(
            out,
            "\nEach kill: a hog in the bench's memory cgroup (16 MiB, no swap) outgrows it; kills \
             {} ms apart, so each is its own invocation with its own snapshot; the agent's \
             default history (SQLite, in a file of the bench's own) and memory timeline on. The \
             idle processes are children of the bench sleeping in `pause()`, in the bench's \
             cgroup; a snapshot reads processes from the `cgroup.procs` of the kill's domain, so \
             their number should not show.\n",
            gap.as_millis()
        );
        let columns: Vec<(String, &BTreeMap<&'static str, Vec<u64>>)> = points
            .iter()
            .map(|point| (format!("{} processes", point.processes), &point.stages_us))
            .collect();
        out.push_str(&stage_table(&columns));
        let _ = writeln!(
            out,
            "\nFrom the agent's `oomtrace::stages` debug line per kill, each span from the end of \
             the one before: `wake` from the kernel's capture time (`ktime_ns`) until the \
             ring-buffer thread, woken by the kernel, copies the record out; `handover` that \
             thread's hand-over to the capture side, which decodes it; `proc` the `/proc` read of a victim's pid namespace; `queue` the hand-over \
             to the output side; `observe` the snapshot and timeline (read on a blocking \
             thread); `write` the log line and the JSON line; `history` the hand-over of the row \
             to the history's thread, after the JSON line and not part of kill-to-JSON (before \
             2026-12-07 it came before `write` and waited for the SQLite commit). The JSON line \
             is read by the bench a little after `write` ends.\n"
        );
        if let Some(console) = kernel_console() {
            let _ = writeln!(out, "{console}\n");
        }
    }
    if let Some(idle) = idle {
        let core_share = idle.cpu_ms / (idle.seconds as f64 * 1000.0) * 100.0;
        let _ = writeln!(
            out,
            "## The memory timeline's idle cost\n\n\
             | figure | value |\n| --- | --- |\n\
             | agent CPU time over {} s idle, recorder on (ms) | {:.0} ({:.3} % of one core) |\n\
             | of which the recorder's thread (ms) | {} |\n\
             | agent VmRSS at start → after (MiB) | {:.1} → {:.1} |\n",
            idle.seconds,
            idle.cpu_ms,
            core_share,
            idle.recorder_cpu_ms
                .map_or("—".to_owned(), |ms| format!("{ms:.0}")),
            idle.rss_start.rss_kib as f64 / 1024.0,
            idle.rss_end.rss_kib as f64 / 1024.0,
        );
        if let Some(line) = &idle.recorder_line {
            let _ = writeln!(out, "The recorder said at startup: `{line}`\n");
        }
    }
    out.push_str(&targets(points, idle));
    out
}

/// Where a kill's time goes, one column per point of an axis: p50 / p99 per stage.
pub fn stage_table(columns: &[(String, &BTreeMap<&'static str, Vec<u64>>)]) -> String {
    let mut out =
        String::from("### Where a kill's time goes (µs, p50 / p99 per stage)\n\n| stage |");
    for (name, _) in columns {
        let _ = write!(out, " {name} |");
    }
    out.push_str("\n| --- |");
    for _ in columns {
        out.push_str(" --- |");
    }
    out.push('\n');
    for stage in STAGES {
        let _ = write!(out, "| {stage} |");
        for (_, stages) in columns {
            let spans = stages.get(stage).map_or(&[][..], Vec::as_slice);
            let cell = match (percentile(spans, 50.0), percentile(spans, 99.0)) {
                (Some(p50), Some(p99)) => format!("{p50} / {p99}"),
                _ => "—".to_owned(),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out
}

fn targets(points: &[AxisPoint], idle: Option<&RecorderIdle>) -> String {
    let mut out =
        String::from("## Targets (issue 15)\n\n| target | measured | met |\n| --- | --- | --- |\n");
    let judge = |met: bool| if met { "yes" } else { "no" };
    for point in points {
        let p99 = percentile(&point.latencies_ns, 99.0);
        let p50 = percentile(&point.latencies_ns, 50.0);
        if let (Some(p99), Some(p50)) = (p99, p50) {
            let _ = writeln!(
                out,
                "| kill-to-JSON p99 ≤ 5 ms, {} processes | {:.2} ms | {} |",
                point.processes,
                p99 as f64 / 1e6,
                judge(p99 <= 5_000_000)
            );
            let _ = writeln!(
                out,
                "| kill-to-JSON p50 ≤ 1.5 ms, {} processes | {:.2} ms | {} |",
                point.processes,
                p50 as f64 / 1e6,
                judge(p50 <= 1_500_000)
            );
        }
    }
    if let Some(idle) = idle {
        let share = idle.cpu_ms / (idle.seconds as f64 * 1000.0) * 100.0;
        let _ = writeln!(
            out,
            "| idle CPU ≤ 0.1 % of one core, recorder on, {} s | {share:.3} % | {} |",
            idle.seconds,
            judge(share <= 0.1)
        );
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_lines_are_read_back() {
        let line = "[2026-12-05T08:27:47Z DEBUG oomtrace::stages] oom_kill of pid 6406: \
                    wake=3845us handover=12us decode=1us join=1us queue=5us observe=211us attribute=26us \
                    explain=17us history=234us write=44us total=4399us";
        let (pid, spans) = stage_of(line).unwrap();
        assert_eq!(pid, 6406);
        assert_eq!(spans.first(), Some(&("wake", 3845)));
        assert_eq!(spans.last(), Some(&("write", 44)));
        // `total` is no stage.
        assert_eq!(spans.len(), 10);
        assert_eq!(stage_of("something else"), None);
    }

    #[test]
    fn a_stage_line_read_before_the_json_line_is_the_kills() {
        let lines = [
            "[… INFO  oomtrace::sink::text] oom_kill …".to_owned(),
            "[… DEBUG oomtrace::stages] oom_kill of pid 7: wake=1us total=1us".to_owned(),
            "[… DEBUG oomtrace::stages] oom_kill of pid 8: wake=2us total=2us".to_owned(),
        ];
        assert_eq!(stage_of(stage_line_of(&lines, 8).unwrap()).unwrap().0, 8);
        // Another kill's line is not taken for this one.
        assert_eq!(stage_line_of(&lines, 9), None);
    }
}
