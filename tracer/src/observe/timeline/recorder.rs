//! The recorder's thread: it sleeps in `epoll_wait` on the kernel's wake-ups (pressure
//! triggers, usage thresholds, limit events, new cgroups and limits) with the next sample's
//! time as the timeout, and never polls in a loop. It reads its files on its own, and takes the
//! recording's lock only to add what it read, so a kill's question waits microseconds.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::recording::{Recording, Request, max_bytes_per_cgroup};
use super::sampler::{
    Coverage, FAST_HOLD, FAST_INTERVAL, GROWTH_FRACTION, GROWTH_UNLIMITED, HOST_PRESSURE,
    SLOW_INTERVAL, STEADY_INTERVAL, Sampler, THRESHOLDS_PERCENT,
};
use super::tree::CgroupId;
use super::warning::{self, DomainReading, Grower, PressureWarning, Thresholds, Warner};
use super::{Timeline, files, psi};
use crate::clock::monotonic_ns;
use crate::observe::cgroupfs::{CgroupVersion, MemoryHierarchy};
use crate::observe::snapshot::Scope;

/// More wake-ups than this in a second mean a descriptor misbehaves: the thread then waits a
/// fast interval between waits rather than spin.
const MAX_WAKEUPS_PER_SECOND: u32 = 100;

/// What only a process with all its privileges may open: the host's pressure trigger (kernels
/// before 6.5 want CAP_SYS_RESOURCE for any trigger).
pub(crate) struct Prepared {
    host_trigger: io::Result<File>,
}

impl Prepared {
    /// Call it before the capabilities are dropped.
    pub(crate) fn new() -> Self {
        Prepared {
            host_trigger: psi::trigger(Path::new(HOST_PRESSURE)),
        }
    }
}

/// `--warn-pressure`: when to warn, and where the warnings go.
pub(crate) struct Warnings {
    pub thresholds: Thresholds,
    pub sender: tokio::sync::mpsc::Sender<PressureWarning>,
}

struct WarningsState {
    warner: Warner,
    sender: tokio::sync::mpsc::Sender<PressureWarning>,
    /// Warnings the agent had no room for.
    dropped: u64,
}

/// The recorder; stops its thread when dropped.
pub(crate) struct Recorder {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    window: Duration,
}

struct Shared {
    recording: Mutex<Recording>,
    /// How it runs, as of the last plan.
    coverage: Mutex<Coverage>,
    /// Wakes the thread: a kill's request, or stopping.
    wake: File,
    stop: AtomicBool,
}

impl Recorder {
    /// Walks the hierarchy once, samples it once, says how the recorder runs, and starts its
    /// thread. At most `max_cgroups` cgroups are sampled.
    pub(crate) fn start(
        prepared: Prepared,
        memory: MemoryHierarchy,
        window: Duration,
        max_cgroups: usize,
        warnings: Option<Warnings>,
    ) -> io::Result<Recorder> {
        raise_descriptor_limit();
        let now_ns = monotonic_ns();
        let mut sampler = Sampler::new(memory, max_cgroups, prepared.host_trigger, now_ns)?;
        let mut recording = Recording::new(
            window,
            Path::new(HOST_PRESSURE).exists(),
            sampler.max_retired(),
        );
        let edits = sampler.replan(now_ns);
        recording.apply(edits, now_ns);
        let reading = sampler.sample(now_ns);
        recording.push(&reading);
        let coverage = sampler.coverage();
        log::info!("{}", describe(&coverage, window, recording.heap_bytes()));
        let mut warnings = warnings.map(|Warnings { thresholds, sender }| WarningsState {
            warner: Warner::new(thresholds),
            sender,
            dropped: 0,
        });
        if let Some(warnings) = &mut warnings {
            warn(
                warnings,
                &recording,
                &reading.domains,
                &sampler.memory,
                now_ns,
            );
        }
        let shared = Arc::new(Shared {
            recording: Mutex::new(recording),
            coverage: Mutex::new(coverage),
            wake: sampler.wake.try_clone()?,
            stop: AtomicBool::new(false),
        });
        let thread = std::thread::Builder::new()
            .name("oomtrace-timeline".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(&shared, sampler, warnings)
            })?;
        Ok(Recorder {
            shared,
            thread: Some(thread),
            window,
        })
    }

    /// The recording of `scope`'s domain up to a kill captured at `kill_ns`. The kill also
    /// makes the domain's sampling fast for a while (a restart loop kills again soon), and a
    /// domain not sampled yet is looked for.
    pub(crate) fn timeline(&self, scope: &Scope, kill_ns: u64) -> Timeline {
        let mut recording = self.shared.lock();
        let timeline = recording.timeline(scope, kill_ns);
        recording.requests.push(match scope {
            Scope::Cgroup(path) => Request::Fast(path.clone()),
            Scope::Host => Request::HostFast,
        });
        drop(recording);
        files::signal(&self.shared.wake);
        timeline
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// How the recorder runs on this host now: what it covers and what wakes it.
    pub(crate) fn coverage(&self) -> Coverage {
        self.shared
            .coverage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        files::signal(&self.shared.wake);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("the memory timeline's thread panicked");
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Recording> {
        // A panic while sampling leaves plain data behind: go on with it.
        self.recording
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn run(shared: &Shared, mut sampler: Sampler, mut warnings: Option<WarningsState>) {
    let mut ready = Vec::new();
    let mut wakeups = (monotonic_ns(), 0u32);
    loop {
        let timeout_ns = sampler
            .schedule
            .next_due_ns()
            .saturating_sub(monotonic_ns());
        let timeout_ms = timeout_ns.div_ceil(1_000_000).min(60_000) as i32;
        ready.clear();
        if let Err(err) = sampler.epoll.wait(&mut ready, timeout_ms) {
            log::error!("memory timeline: epoll_wait failed, recording stops: {err}");
            return;
        }
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let now_ns = monotonic_ns();
        if too_many_wakeups(&mut wakeups, now_ns) {
            std::thread::sleep(FAST_INTERVAL);
            continue;
        }
        let woken = sampler.woken(&ready, now_ns);
        let mut edits = Vec::new();
        if woken.wake {
            let requests = std::mem::take(&mut shared.lock().requests);
            for request in requests {
                match request {
                    Request::Fast(path) if sampler.is_domain(&path) => sampler.fast(&path, now_ns),
                    Request::Fast(_) => sampler.replan_soon(now_ns),
                    Request::HostFast => sampler.host_fast(now_ns),
                }
            }
        }
        if woken.inotify {
            edits.extend(sampler.update(now_ns));
        }
        if sampler.schedule.rewalk_at_ns.is_some_and(|at| now_ns >= at) {
            edits.extend(sampler.rewalk(now_ns));
        }
        if now_ns >= sampler.schedule.next_slow_ns {
            edits.extend(sampler.look_again(now_ns));
        }
        if now_ns >= sampler.schedule.replan_at_ns {
            edits.extend(sampler.replan(now_ns));
        }
        let mut covered_anew = !edits.is_empty();
        if covered_anew {
            shared.lock().apply(edits, now_ns);
        }
        let due = sampler
            .schedule
            .next_slow_ns
            .min(sampler.schedule.next_fast_ns.unwrap_or(u64::MAX));
        if now_ns >= due {
            let reading = sampler.sample(now_ns);
            let mut recording = shared.lock();
            recording.push(&reading);
            if let Some(warnings) = &mut warnings {
                warn(
                    warnings,
                    &recording,
                    &reading.domains,
                    &sampler.memory,
                    now_ns,
                );
            }
            recording.purge(now_ns);
            covered_anew |= reading.rearmed;
        }
        if covered_anew {
            let coverage = sampler.coverage();
            *shared
                .coverage
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = coverage;
        }
    }
}

fn too_many_wakeups((second, count): &mut (u64, u32), now_ns: u64) -> bool {
    if now_ns >= *second + 1_000_000_000 {
        (*second, *count) = (now_ns, 0);
        return false;
    }
    *count += 1;
    if *count == MAX_WAKEUPS_PER_SECOND {
        log::warn!(
            "memory timeline: over {MAX_WAKEUPS_PER_SECOND} wake-ups in a second; slowing down"
        );
    }
    *count >= MAX_WAKEUPS_PER_SECOND
}

/// `--warn-pressure`: each domain sampled just now, against the thresholds.
fn warn(
    warnings: &mut WarningsState,
    recording: &Recording,
    sampled: &[CgroupId],
    memory: &MemoryHierarchy,
    now_ns: u64,
) {
    for path in sampled {
        let (Some(domain), Some(own)) = (recording.domains.get(path), recording.cgroups.get(path))
        else {
            continue;
        };
        let Some(newest) = own.series.last().filter(|sample| sample.at_ns == now_ns) else {
            continue;
        };
        let reading = DomainReading {
            path,
            limit_bytes: domain.limit_bytes,
            usage_bytes: newest.usage_bytes,
            growth: warning::growth(&own.series, |sample| sample.usage_bytes),
            stall: domain.pressure.as_ref().and_then(|pressure| {
                warning::stall_share(&pressure.series, |sample| {
                    (sample.totals.some_us, sample.totals.full_us)
                })
            }),
        };
        let Some((reason, working_set_bytes)) = warnings
            .warner
            .check(&reading, now_ns, || memory.working_set_bytes(path))
        else {
            continue;
        };
        // The member below the domain that grew fastest: who is taking the memory.
        let grower = domain
            .members
            .iter()
            .filter(|member| *member != path)
            .filter_map(|member| {
                let series = &recording.cgroups.get(member)?.series;
                let growth = warning::growth(series, |sample| sample.usage_bytes)?;
                Some(Grower {
                    path: member.to_string(),
                    usage_bytes: series.last()?.usage_bytes,
                    growth,
                })
            })
            .filter(|grower| grower.growth.bytes_per_second > 0)
            .max_by_key(|grower| grower.growth.bytes_per_second);
        let warning = PressureWarning {
            at_ns: now_ns,
            reason,
            thresholds: warnings.warner.thresholds(),
            domain: path.to_string(),
            limit_bytes: domain.limit_bytes,
            usage_bytes: reading.usage_bytes,
            working_set_bytes,
            growth: reading.growth,
            stall: reading.stall,
            grower,
        };
        if warnings.sender.try_send(warning).is_err() {
            warnings.dropped += 1;
            if warnings.dropped.is_power_of_two() {
                log::warn!(
                    "memory pressure: {} warnings dropped, the agent was busy or stopping",
                    warnings.dropped
                );
            }
        }
    }
}

/// The recorder keeps a descriptor or three open per cgroup it samples: raise the soft limit on
/// open files to the hard one, which any process may (systemd's default soft limit is 1,024).
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// One paragraph for the startup log: what is recorded, how often, what wakes it, its bounds
/// and the memory it holds.
pub(super) fn describe(coverage: &Coverage, window: Duration, held_bytes: usize) -> String {
    let Coverage {
        limits,
        domains,
        watched,
        bound,
        not_covered,
        first_not_covered,
        beyond,
        host_trigger,
        cgroup_triggers,
        armed: _,
        triggers: _,
        thresholds: _,
        events,
        inotify,
        version,
    } = coverage;
    let mut wakes = Vec::new();
    match host_trigger {
        Ok(()) => wakes.push(format!(
            "host-wide memory pressure ({HOST_PRESSURE} trigger: some {} ms in {} s)",
            psi::TRIGGER_STALL.as_millis(),
            psi::TRIGGER_WINDOW.as_secs()
        )),
        Err(err) => wakes.push(format!(
            "not host-wide pressure (no {HOST_PRESSURE} trigger: {err})"
        )),
    }
    let mut armed = Vec::new();
    match cgroup_triggers {
        Some(Ok(())) => armed.push("a memory.pressure trigger".to_owned()),
        Some(Err(err)) => wakes.push(format!("not a cgroup's pressure ({err})")),
        None => {}
    }
    if *version == Some(CgroupVersion::V1) {
        armed.push(format!(
            "usage thresholds at {} % of its limit (cgroup.event_control)",
            THRESHOLDS_PERCENT.map(|p| p.to_string()).join("/")
        ));
    }
    if !armed.is_empty() {
        wakes.push(format!(
            "once a domain is half full, {}",
            armed.join(" and ")
        ));
    }
    if *version == Some(CgroupVersion::V2) {
        wakes.push(format!(
            "memory.events notifications ({events} of {domains} limits)"
        ));
    }
    wakes.push(format!(
        "growth of 1/{GROWTH_FRACTION} of a limit (or {} MiB) between samples",
        GROWTH_UNLIMITED >> 20
    ));
    let found = match inotify {
        Ok(()) => "new cgroups and changed limits are seen at once (inotify)".to_owned(),
        Err(err) => {
            format!("new cgroups and changed limits are seen by a walk every 30 s (inotify: {err})")
        }
    };
    let per_cgroup = max_bytes_per_cgroup(window);
    let mut text = format!(
        "memory timeline: the {} s before each kill, for every cgroup with a memory limit and \
         the host's biggest entries: {domains} of {limits} limits, {watched} cgroups sampled \
         (at most {bound}, --timeline-max-cgroups); each read every {} s (every {} s while it \
         does not change), a domain every {} ms for {} s after a wake-up by {}; {found}; holds \
         {} KiB now, at most {:.1} KiB per cgroup ({} MiB at the bound)",
        window.as_secs(),
        SLOW_INTERVAL.as_secs(),
        STEADY_INTERVAL.as_secs(),
        FAST_INTERVAL.as_millis(),
        FAST_HOLD.as_secs(),
        wakes.join(", "),
        held_bytes >> 10,
        per_cgroup as f64 / 1024.0,
        per_cgroup.saturating_mul(*bound) >> 20,
    );
    if *not_covered > 0 {
        text.push_str(&format!("; {not_covered} cgroups not covered"));
        if let Some((path, why)) = first_not_covered {
            text.push_str(&format!(" (such as {path}: {})", why.describe()));
        }
    }
    if let Some(beyond) = beyond {
        text.push_str(&format!("; not walked: {beyond}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::timeline::NotCovered;
    use crate::observe::timeline::tree::fake::FakeHierarchy;
    use std::time::Instant;

    const MIB: u64 = 1 << 20;

    impl Prepared {
        fn without_trigger() -> Self {
            Prepared {
                host_trigger: Err(io::Error::other("not in a unit test")),
            }
        }
    }

    /// A recorder of the minute before each kill over `fake`, sampling at most `bound` cgroups.
    fn recording(fake: &FakeHierarchy, bound: usize) -> Recorder {
        Recorder::start(
            Prepared::without_trigger(),
            fake.memory(),
            Duration::from_secs(60),
            bound,
            None,
        )
        .unwrap()
    }

    fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(8);
        while !done() {
            assert!(Instant::now() < deadline, "not within 8 s: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn own(timeline: &Timeline, path: &str) -> Option<(Option<u64>, usize)> {
        timeline
            .cgroups
            .iter()
            .find(|cgroup| cgroup.path == path)
            .map(|cgroup| (cgroup.limit_bytes, cgroup.samples.len()))
    }

    #[test]
    fn hundreds_of_limits_are_all_sampled_and_new_ones_and_changes_seen_at_once() {
        let fake = FakeHierarchy::new("recorder");
        for pod in 0..300 {
            fake.cgroup(&format!("/pods/p{pod}"), 1000 + pod, Some(64 * MIB));
        }
        let recorder = recording(&fake, 4096);
        let coverage = recorder.coverage();
        assert_eq!((coverage.limits, coverage.domains), (300, 300));
        assert_eq!(coverage.not_covered, 0);
        assert!(coverage.inotify.is_ok(), "{coverage:?}");

        // A container made after startup, then limited, then growing.
        fake.cgroup("/pods/new", 10, None);
        fake.set_limit("/pods/new", Some(32 * MIB));
        eventually("the new limit is a domain", || {
            recorder.coverage().domains == 301
        });
        let started = Instant::now();
        for step in 1..=4 {
            fake.set_usage("/pods/new", step * MIB);
            std::thread::sleep(Duration::from_millis(1100));
        }
        let kill_ns = monotonic_ns();
        let timeline = recorder.timeline(&Scope::Cgroup("/pods/new".to_owned()), kill_ns);
        let (limit, samples) = own(&timeline, "/pods/new").expect("the new cgroup's samples");
        assert_eq!(limit, Some(32 * MIB));
        assert!(
            samples >= 4,
            "{samples} samples over {:?}: {timeline:?}",
            started.elapsed()
        );
        assert!(timeline.not_covered.is_empty(), "{timeline:?}");

        // A limit lowered after startup is the domain's limit within a second.
        fake.set_limit("/pods/p5", Some(16 * MIB));
        let lowered = Instant::now();
        eventually("the lowered limit", || {
            let timeline = recorder.timeline(&Scope::Cgroup("/pods/p5".to_owned()), monotonic_ns());
            own(&timeline, "/pods/p5").is_some_and(|(limit, _)| limit == Some(16 * MIB))
        });
        assert!(
            lowered.elapsed() < Duration::from_secs(1),
            "{:?}",
            lowered.elapsed()
        );

        // Half full: armed with usage thresholds (registered by the arming thread), which
        // wake the recorder; a quarter full no more: disarmed.
        fake.set_usage("/pods/p3", 40 * MIB);
        eventually("the half-full domain is armed", || {
            recorder.coverage().armed == 1
        });
        let control = fake.dir("/pods/p3").join("cgroup.event_control");
        eventually("its thresholds are registered", || {
            std::fs::read_to_string(&control).is_ok_and(|line| line.ends_with(" 60397920"))
        });
        fake.set_usage("/pods/p3", MIB);
        eventually("the emptied domain is disarmed", || {
            recorder.coverage().armed == 0
        });

        // Gone: its recording stays for kills reported late.
        fake.remove("/pods/p7");
        eventually("the removed cgroup is let go", || {
            recorder.coverage().domains == 300
        });
        let late = recorder.timeline(&Scope::Cgroup("/pods/p7".to_owned()), monotonic_ns());
        assert!(own(&late, "/pods/p7").is_some(), "{late:?}");
    }

    #[test]
    fn a_steady_neighbour_is_read_up_to_the_kill_while_its_domain_fills() {
        a_steady_neighbour_is_read_up_to_the_kill(&FakeHierarchy::new("neighbour"));
    }

    #[test]
    fn a_steady_neighbour_is_read_up_to_the_kill_while_its_domain_fills_on_cgroup2() {
        a_steady_neighbour_is_read_up_to_the_kill(&FakeHierarchy::v2("neighbour-v2"));
    }

    fn a_steady_neighbour_is_read_up_to_the_kill(fake: &FakeHierarchy) {
        fake.cgroup("/parent", 48 * MIB, Some(192 * MIB));
        fake.cgroup("/parent/steady", 48 * MIB, None);
        fake.cgroup("/parent/grower", 0, None);
        let recorder = recording(fake, 4096);
        // Long enough for both children to count as steady (read every 5 s only).
        std::thread::sleep(Duration::from_secs(7));
        // Then the grower fills the domain in 3 s: the domain and all its members go fast.
        // A new cgroup beside them makes the plan rank the domain's members again.
        fake.cgroup("/parent/late", 0, None);
        for step in 1..=28u64 {
            fake.set_usage("/parent/grower", step * 5 * MIB);
            fake.set_usage("/parent", 48 * MIB + step * 5 * MIB);
            std::thread::sleep(Duration::from_millis(100));
        }
        // The agent asks for the kill's timeline a while after the kernel captured it (the
        // kill is read, joined with its report, attributed); the recorder samples on meanwhile.
        let kill_ns = monotonic_ns();
        std::thread::sleep(Duration::from_millis(500));
        let timeline = recorder.timeline(&Scope::Cgroup("/parent".to_owned()), kill_ns);
        let steady = timeline
            .cgroups
            .iter()
            .find(|cgroup| cgroup.path == "/parent/steady")
            .unwrap_or_else(|| panic!("no neighbour: {timeline:?}"));
        let last = steady.samples.last().expect("a sample").offset_ms;
        assert!(
            last >= -1500,
            "last neighbour sample at {last} ms: {timeline:#?}"
        );
    }

    #[test]
    fn past_its_bound_a_kill_is_told_why_there_is_no_timeline() {
        let fake = FakeHierarchy::new("bound");
        for pod in 0..50 {
            // The higher the number, the fuller.
            fake.cgroup(&format!("/p{pod:02}"), pod * MIB, Some(64 * MIB));
        }
        let recorder = recording(&fake, 20);
        let coverage = recorder.coverage();
        assert_eq!((coverage.limits, coverage.watched), (50, 20));
        assert_eq!(coverage.not_covered, 30);
        let line = describe(&coverage, Duration::from_secs(60), 0);
        assert!(line.contains("30 cgroups not covered"), "{line}");
        let fullest = recorder.timeline(&Scope::Cgroup("/p49".to_owned()), monotonic_ns());
        assert!(own(&fullest, "/p49").is_some());
        let emptiest = recorder.timeline(&Scope::Cgroup("/p00".to_owned()), monotonic_ns());
        assert!(emptiest.cgroups.is_empty());
        assert_eq!(
            emptiest.not_covered,
            [("/p00".to_owned(), NotCovered::CgroupBound { max: 20 })]
        );
    }
}
