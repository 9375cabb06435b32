//! What the memory timeline costs as the number of memory cgroups with a limit grows, and
//! whether every kill still gets its own cgroup's recording.
//!
//! At each count (0, 100, 500, 1,000 by default): that many memory cgroups, each with a limit of
//! 16 MiB and one idle process in it (a node's pods, a Docker host's containers). The agent
//! starts with its history and timeline on; it sits idle for a while (its CPU time, all threads,
//! and its VmRSS are read), then OOM kills come 1.2 s apart, each in another of those cgroups
//! (all equally small; at 0, in one cgroup of the bench's own). Per kill: kill-to-JSON, the
//! stages, and whether the record's timeline has the victim's own cgroup, sampled back to when
//! the agent started or the window's start.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use oomtrace::record::agent::TimelineInfo;
use oomtrace::record::{Body, Record};

use super::{
    axis::{self, kill_series},
    kills::{LIMIT_BYTES, MemoryCgroup},
    stats::percentile,
    sys,
    watched::{Line, Stream},
};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// A recording is counted as the kill's own when it starts at most this long after the agent
/// started (or the window began): the first sample comes at startup, then one a second.
const COVERAGE_SLACK_MS: i64 = 2_000;
const STARTUP_SETTLES: Duration = Duration::from_secs(3);

/// One count of the axis.
pub struct CgroupPoint {
    pub cgroups: usize,
    /// What the agent said of its recorder at startup.
    pub timeline: Option<TimelineInfo>,
    pub idle_seconds: u64,
    /// CPU time of the whole agent (every thread) while idle.
    pub idle_cpu_ms: f64,
    pub idle: sys::Memory,
    pub after_kills: sys::Memory,
    /// Once the agent gave a burst's memory back (5 s after its last event) and stood still.
    pub settled: sys::Memory,
    pub kills: usize,
    pub latencies_ns: Vec<u64>,
    pub stages_us: BTreeMap<&'static str, Vec<u64>>,
    /// Kills whose timeline has their own cgroup, sampled over the window it existed in.
    pub covered: usize,
    /// The first kill that was not, and why.
    pub uncovered_example: Option<String>,
    /// How long making the cgroups and their processes took.
    pub setup: Duration,
}

/// Memory cgroups with a small limit and an idle process each, for as long as this lives.
struct LimitedCgroups {
    parent: PathBuf,
    children: Vec<PathBuf>,
    idlers: Vec<libc::pid_t>,
}

impl LimitedCgroups {
    fn create(count: usize) -> anyhow::Result<Self> {
        let root = Path::new(CGROUP_ROOT);
        let name = format!("oomtrace-bench-cgroups-{}", std::process::id());
        let pure_v2 = fs::read_to_string(root.join("cgroup.controllers"))
            .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "memory"));
        let parent = if pure_v2 {
            root.join(&name)
        } else {
            root.join("memory").join(&name)
        };
        fs::create_dir(&parent).with_context(|| format!("making {}", parent.display()))?;
        let mut cgroups = LimitedCgroups {
            parent,
            children: Vec::with_capacity(count),
            idlers: Vec::with_capacity(count),
        };
        if pure_v2 {
            write(&root.join("cgroup.subtree_control"), "+memory")?;
            write(&cgroups.parent.join("cgroup.subtree_control"), "+memory")?;
        }
        let limit = LIMIT_BYTES.to_string();
        for index in 0..count {
            sys::check_interrupted()?;
            let dir = cgroups.parent.join(format!("c{index:04}"));
            fs::create_dir(&dir).with_context(|| format!("making {}", dir.display()))?;
            cgroups.children.push(dir.clone());
            if pure_v2 {
                write(&dir.join("memory.max"), &limit)?;
                if dir.join("memory.swap.max").exists() {
                    write(&dir.join("memory.swap.max"), "0")?;
                }
            } else {
                write(&dir.join("memory.limit_in_bytes"), &limit)?;
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    write(&dir.join("memory.memsw.limit_in_bytes"), &limit)?;
                }
            }
            let pid = spawn_idler()?;
            cgroups.idlers.push(pid);
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(cgroups)
    }
}

impl Drop for LimitedCgroups {
    fn drop(&mut self) {
        for &pid in &self.idlers {
            // SAFETY: kill and waitpid on our own children.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
        for dir in self.children.iter().chain(std::iter::once(&self.parent)) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while let Err(err) = fs::remove_dir(dir) {
                if Instant::now() >= deadline {
                    eprintln!("xtask bench: removing {}: {err}", dir.display());
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A child of the bench that sleeps in `pause()` until killed, and dies with the bench.
fn spawn_idler() -> anyhow::Result<libc::pid_t> {
    // SAFETY: the child only makes async-signal-safe system calls (prctl, pause), as it must
    // after fork in a process with threads.
    match unsafe { libc::fork() } {
        -1 => bail!("fork: {}", std::io::Error::last_os_error()),
        // SAFETY: prctl and pause only, async-signal-safe, as the fork above requires.
        0 => unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            loop {
                libc::pause();
            }
        },
        pid => Ok(pid),
    }
}

fn write(path: &Path, value: &str) -> anyhow::Result<()> {
    fs::write(path, value).with_context(|| format!("writing {value:?} to {}", path.display()))
}

/// The axis: at each count, the agent idle for `idle`, then `kills` OOM kills `gap` apart.
pub fn measure(
    agent: &Path,
    hog: &Path,
    counts: &[usize],
    kills: usize,
    idle: Duration,
    gap: Duration,
) -> anyhow::Result<Vec<CgroupPoint>> {
    let mut points = Vec::new();
    for &count in counts {
        println!(
            "xtask bench: {count} limited cgroups, the agent idle for {} s, then {kills} kills",
            idle.as_secs()
        );
        let started = Instant::now();
        let cgroups = LimitedCgroups::create(count)?;
        // With none, the kills go to a cgroup of the bench's own.
        let own = match count {
            0 => Some(MemoryCgroup::create()?),
            _ => None,
        };
        let dirs: Vec<PathBuf> = match &own {
            Some(cgroup) => vec![cgroup.dir().to_owned()],
            None => cgroups.children.clone(),
        };
        let setup = started.elapsed();
        let point = measure_point(agent, hog, &dirs, kills, idle, gap)
            .with_context(|| format!("{count} limited cgroups"))?;
        drop(own);
        drop(cgroups);
        points.push(CgroupPoint {
            cgroups: count,
            setup,
            ..point
        });
    }
    Ok(points)
}

fn measure_point(
    agent: &Path,
    hog: &Path,
    dirs: &[PathBuf],
    kills: usize,
    idle: Duration,
    gap: Duration,
) -> anyhow::Result<CgroupPoint> {
    let history = axis::history_dir()?;
    let history_arg = history.join("oomtrace.db").to_string_lossy().into_owned();
    let (mut watched, started_line) = axis::spawn_agent(agent, &["--history", &history_arg])?;
    let (started_ns, timeline) =
        started(&started_line).context("the agent_started line is no agent_started record")?;
    sys::sleep(STARTUP_SETTLES)?;
    let pid = watched.pid();
    let cpu_before = sys::cpu_ms(pid)?;
    sys::sleep(idle)?;
    let idle_cpu_ms = sys::cpu_ms(pid)? - cpu_before;
    let idle_memory = sys::memory(pid)?;
    let window_ms = timeline
        .as_ref()
        .map_or(60_000, |info| info.window_s as i64 * 1000);
    let mut covered = 0;
    let mut uncovered_example = None;
    let series = kill_series(
        &mut watched,
        hog,
        dirs,
        kills,
        gap,
        |victim, line| match own_recording(line, started_ns, window_ms) {
            Ok(()) => covered += 1,
            Err(why) => {
                uncovered_example.get_or_insert(format!("the kill of pid {victim}: {why}"));
            }
        },
    )?;
    let after_kills = sys::memory(pid)?;
    // The agent gives a burst's memory back 5 s after its last event; then as idle.
    std::thread::sleep(Duration::from_secs(6));
    let settled = sys::memory_standing_still(pid)?;
    watched.stop()?;
    let _ = fs::remove_dir_all(&history);
    Ok(CgroupPoint {
        cgroups: 0,
        timeline,
        idle_seconds: idle.as_secs(),
        idle_cpu_ms,
        idle: idle_memory,
        after_kills,
        settled,
        kills,
        latencies_ns: series.latencies_ns,
        stages_us: series.stages_us,
        covered,
        uncovered_example,
        setup: Duration::ZERO,
    })
}

/// An `agent_started` line: when it was read, and what the recorder covers.
fn started(line: &Line) -> Option<(u64, Option<TimelineInfo>)> {
    match &record(line)?.body {
        Body::AgentStarted(started) => Some((line.read_at_ns, started.timeline.clone())),
        _ => None,
    }
}

fn record(line: &Line) -> Option<Record> {
    if line.stream != Stream::Stdout {
        return None;
    }
    serde_json::from_str(&line.text).ok()
}

/// Whether a kill's record has its own cgroup's recording over the window it existed in: the
/// victim's memory cgroup among the timeline's cgroups, its first sample from no later than
/// the agent's start (or the window's) and a little.
fn own_recording(line: &Line, started_ns: u64, window_ms: i64) -> Result<(), String> {
    let Some(Record {
        body: Body::OomKill(kill),
        ..
    }) = record(line)
    else {
        return Err("its line is no oom_kill record".to_owned());
    };
    let own = kill
        .victim
        .memcg
        .as_ref()
        .and_then(|memcg| memcg.path.clone())
        .ok_or("no memory cgroup for the victim")?;
    let timeline = kill
        .explanation
        .as_ref()
        .and_then(|explanation| explanation.timeline.as_ref())
        .ok_or("no timeline")?;
    let Some(entry) = timeline
        .cgroups
        .iter()
        .find(|cgroup| cgroup.cgroup.path == own)
    else {
        return Err(format!(
            "no entry for its cgroup {own} (not covered: {:?})",
            timeline.not_covered
        ));
    };
    let first = entry
        .samples
        .first()
        .ok_or_else(|| format!("no samples of {own}"))?;
    let existed_ms = (kill.ktime_ns.saturating_sub(started_ns) / 1_000_000) as i64;
    let expected_ms = -existed_ms.min(window_ms) + COVERAGE_SLACK_MS;
    if first.offset_ms > expected_ms {
        return Err(format!(
            "{own}'s first sample is at {} ms, {existed_ms} ms after the agent started",
            first.offset_ms
        ));
    }
    Ok(())
}

/// The axis's table, its stages and its targets.
pub fn markdown(points: &[CgroupPoint], gap: Duration) -> String {
    let mut out = String::new();
    if points.is_empty() {
        return out;
    }
    let us = |ns: Option<u64>| ns.map_or("—".to_owned(), |ns| format!("{}", ns / 1000));
    let _ = writeln!(
        out,
        "## The memory timeline against the number of limited cgroups\n\n\
         | limited cgroups | sampled (limits / cgroups, as the agent said) | idle CPU, all threads (% of one core) | VmRSS idle → after the kills → settled (MiB) | kills with their own cgroup's recording | kill-to-JSON p50 (µs) | p99 (µs) | max (µs) |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for point in points {
        let lat = &point.latencies_ns;
        let sampled = point.timeline.as_ref().map_or("—".to_owned(), |info| {
            format!(
                "{} of {} / {}{}",
                info.limits_sampled,
                info.limits,
                info.cgroups_sampled,
                if info.not_covered > 0 {
                    format!(" ({} not covered)", info.not_covered)
                } else {
                    String::new()
                }
            )
        });
        let _ = writeln!(
            out,
            "| {} | {sampled} | {:.3} ({:.0} ms in {} s) | {:.1} → {:.1} → {:.1} | {} of {} ({} written) | {} | {} | {} |",
            point.cgroups,
            core_share(point),
            point.idle_cpu_ms,
            point.idle_seconds,
            point.idle.rss_kib as f64 / 1024.0,
            point.after_kills.rss_kib as f64 / 1024.0,
            point.settled.rss_kib as f64 / 1024.0,
            point.covered,
            point.kills,
            lat.len(),
            us(percentile(lat, 50.0)),
            us(percentile(lat, 99.0)),
            us(lat.iter().max().copied()),
        );
    }
    let _ = writeln!(
        out,
        "\nEach count: that many memory cgroups with a limit of {} MiB and one idle process each \
         (a child of the bench in `pause()`), made before the agent starts; the agent's history \
         (SQLite) and memory timeline on. Idle: {} s after startup settled, CPU time of every \
         thread (`/proc/PID/stat`). Then kills {} ms apart, each in the next of those cgroups (at \
         0, in a cgroup of the bench's own); a kill counts as having its own cgroup's recording \
         when its timeline has the victim's cgroup with a first sample from within {} s of when \
         the agent started (or of the window's start). VmRSS settled: from 6 s after the last \
         kill (the agent gives a burst's memory back 5 s after its last event), once it read the \
         same three seconds in a row.\n",
        LIMIT_BYTES >> 20,
        points[0].idle_seconds,
        gap.as_millis(),
        COVERAGE_SLACK_MS / 1000,
    );
    for point in points {
        if let Some(example) = &point.uncovered_example {
            let _ = writeln!(out, "- {} cgroups: {example}", point.cgroups);
        }
    }
    let columns: Vec<(String, &BTreeMap<&'static str, Vec<u64>>)> = points
        .iter()
        .map(|point| (format!("{} cgroups", point.cgroups), &point.stages_us))
        .collect();
    out.push_str(&axis::stage_table(&columns));
    out.push('\n');
    out.push_str(&targets(points));
    out
}

fn core_share(point: &CgroupPoint) -> f64 {
    point.idle_cpu_ms / (point.idle_seconds.max(1) as f64 * 1000.0) * 100.0
}

fn targets(points: &[CgroupPoint]) -> String {
    let mut out = String::from(
        "### Targets (issue 24)\n\n| target | measured | met |\n| --- | --- | --- |\n",
    );
    let judge = |met: bool| if met { "yes" } else { "no" };
    for point in points {
        let every_kill = point.covered == point.kills;
        let _ = writeln!(
            out,
            "| {} cgroups: every kill has its own cgroup's recording | {} of {} | {} |",
            point.cgroups,
            point.covered,
            point.kills,
            judge(every_kill)
        );
        if point.cgroups != 500 {
            continue;
        }
        let share = core_share(point);
        let _ = writeln!(
            out,
            "| 500 cgroups: idle CPU ≤ 0.2 % of one core | {share:.3} % | {} |",
            judge(share <= 0.2)
        );
        // The footprint a host lives with: idle, and again once a burst's memory was given
        // back. Right after the kills the agent still holds the code and buffers they used
        // (printed in the table above, not judged here).
        let rss_mib = point.idle.rss_kib.max(point.settled.rss_kib) as f64 / 1024.0;
        let _ = writeln!(
            out,
            "| 500 cgroups: VmRSS ≤ 10 MiB (idle, and settled after the kills) | {rss_mib:.1} MiB (right after the kills {:.1}) | {} |",
            point.after_kills.rss_kib as f64 / 1024.0,
            judge(rss_mib <= 10.0)
        );
        if let Some(p99) = percentile(&point.latencies_ns, 99.0) {
            let _ = writeln!(
                out,
                "| 500 cgroups: kill-to-JSON p99 ≤ 5 ms | {:.2} ms | {} |",
                p99 as f64 / 1e6,
                judge(p99 <= 5_000_000)
            );
        }
    }
    out
}
