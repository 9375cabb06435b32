//! The recorder's thread: it sleeps in `poll(2)` on the kernel's wake-ups (pressure triggers,
//! usage thresholds, limit events, new cgroups) with the next sample's time as the timeout,
//! and never polls in a loop. Its state sits behind a mutex that a kill's query takes briefly.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use super::Timeline;
use super::files::{self, Reread};
use super::psi;
use super::samples::{Domain, EventsFile, PressureFile, UsageSample};
use super::series::Series;
use super::warning::{self, DomainReading, Grower, PressureWarning, Thresholds, Warner};
use crate::clock::monotonic_ns;
use crate::observe::cgroupfs::{CgroupVersion, MemoryHierarchy};
use crate::observe::snapshot::Scope;

/// Between samples while nothing happens.
pub const SLOW_INTERVAL: Duration = Duration::from_secs(1);
/// Between samples after a wake-up.
pub const FAST_INTERVAL: Duration = Duration::from_millis(100);
/// How long one wake-up keeps the sampling fast.
pub const FAST_HOLD: Duration = Duration::from_secs(10);
/// A new look at the hierarchy at least this often: limits change, the biggest members too.
pub(super) const DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);
/// After a new cgroup appears, the look waits this long for its siblings and limit.
pub(super) const DISCOVERY_DEBOUNCE: Duration = Duration::from_millis(100);
/// And never comes sooner than this after the last one: container churn costs little.
pub(super) const DISCOVERY_MIN_GAP: Duration = Duration::from_secs(1);
/// Usage thresholds registered on a v1 limit, as fractions of it: crossing one wakes the
/// recorder.
pub(super) const THRESHOLDS_PERCENT: [u64; 3] = [50, 75, 90];
/// Growth between two samples that makes the sampling fast: this fraction of the domain's
/// limit, or GROWTH_UNLIMITED for a cgroup no watched limit covers.
pub(super) const GROWTH_FRACTION: u64 = 16;
pub(super) const GROWTH_UNLIMITED: u64 = 64 << 20;
/// Cgroups and domains kept after they left the plan (removed, or no longer the biggest), so
/// that a kill reported a moment later still finds its lead-up.
pub(super) const MAX_RETIRED_CGROUPS: usize = 16;
pub(super) const MAX_RETIRED_DOMAINS: usize = 8;
/// More wake-ups than this in a second mean a descriptor misbehaves: the thread then waits a
/// fast interval between polls rather than spin.
pub(super) const MAX_WAKEUPS_PER_SECOND: u32 = 100;
pub(super) const HOST_PRESSURE: &str = "/proc/pressure/memory";

/// What only a process with all its privileges may open: the host's pressure trigger (kernels
/// before 6.5 want CAP_SYS_RESOURCE for any trigger).
pub struct Prepared {
    host_trigger: io::Result<File>,
}

impl Prepared {
    /// Call it before the capabilities are dropped.
    pub fn new() -> Self {
        Prepared {
            host_trigger: psi::trigger(Path::new(HOST_PRESSURE)),
        }
    }
}

/// `--warn-pressure`: when to warn, and where the warnings go.
pub struct Warnings {
    pub thresholds: Thresholds,
    pub sender: tokio::sync::mpsc::Sender<PressureWarning>,
}

/// The recorder; stops its thread when dropped.
pub struct Recorder {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the thread: a kill's request, or stopping.
    wake: File,
    stop: AtomicBool,
}

impl Recorder {
    /// Looks at the hierarchy once, says how the recorder runs, and starts its thread.
    pub fn start(
        prepared: Prepared,
        memory: MemoryHierarchy,
        window: Duration,
        warnings: Option<Warnings>,
    ) -> io::Result<Recorder> {
        let now_ns = monotonic_ns();
        let host_pressure = Reread::open(Path::new(HOST_PRESSURE))
            .ok()
            .map(|file| PressureFile {
                source: HOST_PRESSURE.to_owned(),
                file,
                series: Series::default(),
            });
        let mut state = State {
            window,
            cgroup2: crate::observe::cgroupfs::find_cgroup2(),
            memory,
            host_trigger: prepared.host_trigger,
            host_pressure,
            cgroups: HashMap::new(),
            domains: Vec::new(),
            host_members: Vec::new(),
            inotify: None,
            fast_until_ns: 0,
            discover_at_ns: now_ns,
            last_discovery_ns: 0,
            next_sample_ns: now_ns,
            wakeups: (now_ns, 0),
            warnings: warnings.map(|Warnings { thresholds, sender }| WarningsState {
                warner: Warner::new(thresholds),
                sender,
                dropped: 0,
            }),
        };
        state.discover(now_ns);
        state.sample(now_ns);
        log::info!("{}", state.describe());
        state.warn(now_ns);
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            wake: files::eventfd()?,
            stop: AtomicBool::new(false),
        });
        let thread = std::thread::Builder::new()
            .name("oomtrace-timeline".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || run(&shared)
            })?;
        Ok(Recorder {
            shared,
            thread: Some(thread),
        })
    }

    /// The recording of `scope`'s domain up to a kill captured at `kill_ns`. The kill also
    /// makes the sampling fast for a while (a restart loop kills again soon), and a domain not
    /// watched yet is looked for.
    pub fn timeline(&self, scope: &Scope, kill_ns: u64) -> Timeline {
        let mut state = self.shared.lock();
        let timeline = state.timeline(scope, kill_ns);
        let now_ns = monotonic_ns();
        state.fast_until_ns = now_ns + FAST_HOLD.as_nanos() as u64;
        state.next_sample_ns = state.next_sample_ns.min(now_ns);
        if let Scope::Cgroup(path) = scope
            && !state.domains.iter().any(|domain| domain.path == *path)
        {
            state.discover_soon(now_ns);
        }
        drop(state);
        files::signal(&self.shared.wake);
        timeline
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
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while sampling leaves plain data behind: go on with it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What woke the thread.
#[derive(Clone, Copy, Debug)]
enum Source {
    Wake,
    NewCgroup,
    HostTrigger,
    DomainTrigger(usize),
    Threshold(usize),
    Events(usize),
}

fn run(shared: &Shared) {
    loop {
        let (mut fds, sources, timeout_ms) = {
            let state = shared.lock();
            let (fds, sources) = state.poll_set(&shared.wake);
            let next = state.next_due_ns();
            let timeout_ns = next.saturating_sub(monotonic_ns());
            (
                fds,
                sources,
                timeout_ns.div_ceil(1_000_000).min(60_000) as i32,
            )
        };
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds for the whole call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                log::error!("memory timeline: poll failed, recording stops: {err}");
                return;
            }
        }
        let mut state = shared.lock();
        let now_ns = monotonic_ns();
        if state.too_many_wakeups(now_ns) {
            drop(state);
            std::thread::sleep(FAST_INTERVAL);
            continue;
        }
        for (fd, source) in fds.iter().zip(&sources) {
            if fd.revents != 0 {
                state.woken(*source, fd.revents, &shared.wake, now_ns);
            }
        }
        if now_ns >= state.discover_at_ns {
            state.discover(now_ns);
        }
        if now_ns >= state.next_sample_ns {
            state.sample(now_ns);
            state.warn(now_ns);
        }
    }
}

pub(super) struct State {
    pub(super) window: Duration,
    pub(super) memory: MemoryHierarchy,
    /// Where per-cgroup `memory.pressure` is.
    pub(super) cgroup2: Option<PathBuf>,
    pub(super) host_trigger: io::Result<File>,
    pub(super) host_pressure: Option<PressureFile>,
    pub(super) cgroups: HashMap<String, Watched>,
    pub(super) domains: Vec<Domain>,
    pub(super) host_members: Vec<String>,
    pub(super) inotify: Option<File>,
    pub(super) fast_until_ns: u64,
    pub(super) discover_at_ns: u64,
    pub(super) last_discovery_ns: u64,
    pub(super) next_sample_ns: u64,
    /// The second being counted, and the wake-ups in it.
    pub(super) wakeups: (u64, u32),
    pub(super) warnings: Option<WarningsState>,
}

pub(super) struct WarningsState {
    pub(super) warner: Warner,
    sender: tokio::sync::mpsc::Sender<PressureWarning>,
    /// Warnings the agent had no room for.
    dropped: u64,
}

pub(super) struct Watched {
    /// Open while the cgroup is in the plan and exists.
    pub(super) usage: Option<Reread>,
    pub(super) series: Series<UsageSample>,
    /// Growth between samples that makes the sampling fast.
    pub(super) growth_step: u64,
}

impl State {
    fn fast(&self, now_ns: u64) -> bool {
        now_ns < self.fast_until_ns
    }

    pub(super) fn wake_fast(&mut self, now_ns: u64) {
        self.fast_until_ns = now_ns + FAST_HOLD.as_nanos() as u64;
        self.next_sample_ns = self
            .next_sample_ns
            .min(now_ns + FAST_INTERVAL.as_nanos() as u64);
    }

    pub(super) fn discover_soon(&mut self, now_ns: u64) {
        let earliest = (now_ns + DISCOVERY_DEBOUNCE.as_nanos() as u64)
            .max(self.last_discovery_ns + DISCOVERY_MIN_GAP.as_nanos() as u64);
        self.discover_at_ns = self.discover_at_ns.min(earliest);
    }

    fn next_due_ns(&self) -> u64 {
        self.next_sample_ns.min(self.discover_at_ns)
    }

    fn too_many_wakeups(&mut self, now_ns: u64) -> bool {
        let (second, count) = &mut self.wakeups;
        if now_ns >= *second + 1_000_000_000 {
            (*second, *count) = (now_ns, 0);
            return false;
        }
        *count += 1;
        if *count == MAX_WAKEUPS_PER_SECOND {
            log::warn!(
                "memory timeline: over {MAX_WAKEUPS_PER_SECOND} wake-ups in a second; slowing \
                 down"
            );
        }
        *count >= MAX_WAKEUPS_PER_SECOND
    }

    fn poll_set(&self, wake: &File) -> (Vec<libc::pollfd>, Vec<Source>) {
        let mut fds = Vec::new();
        let mut sources = Vec::new();
        let mut add = |file: &File, events: libc::c_short, source: Source| {
            fds.push(libc::pollfd {
                fd: file.as_raw_fd(),
                events,
                revents: 0,
            });
            sources.push(source);
        };
        add(wake, libc::POLLIN, Source::Wake);
        if let Some(inotify) = &self.inotify {
            add(inotify, libc::POLLIN, Source::NewCgroup);
        }
        if let Ok(trigger) = &self.host_trigger {
            add(trigger, libc::POLLPRI, Source::HostTrigger);
        }
        for (index, domain) in self.domains.iter().enumerate() {
            if let Some(trigger) = &domain.trigger {
                add(trigger, libc::POLLPRI, Source::DomainTrigger(index));
            }
            if let Some(thresholds) = &domain.thresholds {
                add(thresholds, libc::POLLIN, Source::Threshold(index));
            }
            if let Some(EventsFile {
                file: Some(file),
                version: CgroupVersion::V2,
                ..
            }) = &domain.events
            {
                add(file.file(), libc::POLLPRI, Source::Events(index));
            }
        }
        (fds, sources)
    }

    fn woken(&mut self, source: Source, revents: libc::c_short, wake: &File, now_ns: u64) {
        let failed = revents & (libc::POLLERR | libc::POLLNVAL | libc::POLLHUP) != 0;
        match source {
            Source::Wake => {
                files::drain(wake);
            }
            Source::NewCgroup => {
                if let Some(inotify) = &self.inotify {
                    files::drain(inotify);
                }
                self.discover_soon(now_ns);
            }
            Source::HostTrigger => {
                if failed {
                    log::warn!("memory timeline: {HOST_PRESSURE} trigger failed; dropped");
                    self.host_trigger = Err(io::Error::other("the trigger failed"));
                } else {
                    self.wake_fast(now_ns);
                }
            }
            Source::DomainTrigger(index) => {
                // A removed cgroup's file reports an error forever: let it go.
                if failed {
                    self.domains[index].trigger = None;
                    self.discover_soon(now_ns);
                } else {
                    self.wake_fast(now_ns);
                }
            }
            Source::Threshold(index) => {
                if let Some(thresholds) = &self.domains[index].thresholds {
                    files::drain(thresholds);
                }
                self.wake_fast(now_ns);
            }
            Source::Events(index) => {
                // A kernfs notification polls as an error until the file is read again.
                let domain = &mut self.domains[index];
                if let Some(events) = &mut domain.events
                    && !events.sample(now_ns, self.window)
                {
                    events.file = None;
                    self.discover_soon(now_ns);
                }
                self.wake_fast(now_ns);
            }
        }
    }

    /// `--warn-pressure`: each limited cgroup sampled just now, against the thresholds.
    fn warn(&mut self, now_ns: u64) {
        let State {
            warnings: Some(warnings),
            domains,
            cgroups,
            memory,
            ..
        } = self
        else {
            return;
        };
        for domain in domains.iter().filter(|domain| domain.active) {
            let Some(watched) = cgroups.get(&domain.path) else {
                continue;
            };
            let Some(newest) = watched
                .series
                .last()
                .filter(|sample| sample.at_ns == now_ns)
            else {
                continue;
            };
            let reading = DomainReading {
                path: &domain.path,
                limit_bytes: domain.limit_bytes,
                usage_bytes: newest.usage_bytes,
                growth: warning::growth(&watched.series, |sample| sample.usage_bytes),
                stall: domain.pressure.as_ref().and_then(|pressure| {
                    warning::stall_share(&pressure.series, |sample| {
                        (sample.totals.some_us, sample.totals.full_us)
                    })
                }),
            };
            let Some((reason, working_set_bytes)) = warnings
                .warner
                .check(&reading, now_ns, || memory.working_set_bytes(&domain.path))
            else {
                continue;
            };
            // The member below the domain that grew fastest: who is taking the memory.
            let grower = domain
                .members
                .iter()
                .filter(|member| **member != domain.path)
                .filter_map(|member| {
                    let series = &cgroups.get(member)?.series;
                    let growth = warning::growth(series, |sample| sample.usage_bytes)?;
                    Some(Grower {
                        path: member.clone(),
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
                domain: domain.path.clone(),
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

    pub(super) fn sample(&mut self, now_ns: u64) {
        let window = self.window;
        if let Some(pressure) = &mut self.host_pressure {
            pressure.sample(now_ns, window);
        }
        let mut grew = false;
        let mut gone = false;
        for watched in self.cgroups.values_mut() {
            let Some(usage) = &watched.usage else {
                continue;
            };
            match usage.number() {
                Ok(Some(usage_bytes)) => {
                    grew |= watched.series.last().is_some_and(|last| {
                        usage_bytes >= last.usage_bytes.saturating_add(watched.growth_step)
                    });
                    watched.series.push(
                        UsageSample {
                            at_ns: now_ns,
                            usage_bytes,
                        },
                        window,
                    );
                }
                Ok(None) => {}
                Err(_) => {
                    watched.usage = None;
                    gone = true;
                }
            }
        }
        for domain in self.domains.iter_mut().filter(|domain| domain.active) {
            if let Some(pressure) = &mut domain.pressure
                && !pressure.sample(now_ns, window)
            {
                domain.pressure = None;
            }
            if let Some(events) = &mut domain.events
                && !events.sample(now_ns, window)
            {
                events.file = None;
            }
        }
        if gone {
            self.discover_soon(now_ns);
        }
        if grew {
            self.wake_fast(now_ns);
        }
        let interval = if self.fast(now_ns) {
            FAST_INTERVAL
        } else {
            SLOW_INTERVAL
        };
        self.next_sample_ns = now_ns + interval.as_nanos() as u64;
    }
}
