//! The recorder thread's side: the descriptors of every watched cgroup and domain, when each is
//! read, and what wakes the thread. It reads without the recording's lock and hands over a
//! whole [`Reading`], or the [`Edit`]s a new plan or a change in the hierarchy makes.
//!
//! Each watched cgroup's usage is read once a second through a descriptor kept open (one
//! `pread`); a domain's composition (`memory.stat`) only when its usage moved (see
//! [`COMPOSITION_STEP_FRACTION`]); a domain's pressure and limit events only while it is warm (half full or more) or
//! fast, else its pressure every ten seconds and its v2 events on the kernel's notification.
//! A domain the kernel says is short of memory (its pressure trigger, a v1 usage threshold, a
//! v2 `memory.events` notification), or that grows fast, or that a kill hit, is read ten times
//! a second for a while, with its members; the others are not. Pressure triggers and usage
//! thresholds are set on a domain once it is half full (armed), as each costs the kernel an RCU
//! grace period to set or clear ([`Arming`]).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Parts;
use super::arming::Arming;
use super::files::{self, Epoll, Reread};
use super::plan::{self, Plan};
use super::psi::{self, Totals};
use super::samples::{CompositionSample, EventsSample};
use super::tree::{Beyond, CgroupId, Changes, Tree};
use super::{MAX_RETIRED_SHARE, NotCovered};
use crate::observe::cgroupfs::{CgroupVersion, MemoryHierarchy};

/// Between samples while nothing happens.
pub(super) const SLOW_INTERVAL: Duration = Duration::from_secs(1);
/// Between samples of a domain after a wake-up.
pub(super) const FAST_INTERVAL: Duration = Duration::from_millis(100);
/// How long one wake-up keeps a domain's sampling fast.
pub(super) const FAST_HOLD: Duration = Duration::from_secs(10);
/// A new ranking of each domain's biggest members at least this often.
pub(super) const REPLAN_INTERVAL: Duration = Duration::from_secs(30);
/// After cgroups come or go, the ranking waits this long for their siblings.
pub(super) const REPLAN_DEBOUNCE: Duration = Duration::from_millis(100);
/// And never comes sooner than this after the last one: container churn costs little.
pub(super) const REPLAN_MIN_GAP: Duration = Duration::from_secs(1);
/// Where some directory could not be watched, the hierarchy is walked again this often.
pub(super) const REWALK_INTERVAL: Duration = Duration::from_secs(30);
/// Usage thresholds registered on an armed v1 limit, as percentages of it: crossing one wakes
/// the recorder.
pub(super) const THRESHOLDS_PERCENT: [u64; 2] = [75, 90];
/// From this share of its limit on, a domain's pressure and events are read at every sample,
/// and it is armed with a pressure trigger (and v1 usage thresholds).
pub(super) const WARM_PERCENT: u64 = 50;
/// Below this share of its limit, an armed domain is disarmed.
pub(super) const DISARM_PERCENT: u64 = 25;
/// A cgroup whose usage was the same this many samples running is steady: read every
/// STEADY_INTERVAL instead of every second, until it changes (or the kernel wakes the recorder
/// for its domain). Its flat stretch is recorded as its two ends either way.
pub(super) const STEADY_AFTER: u32 = 5;
pub(super) const STEADY_INTERVAL: Duration = Duration::from_secs(5);
/// A cold domain's pressure is read this often.
pub(super) const COLD_PRESSURE_INTERVAL: Duration = Duration::from_secs(10);
/// Growth between two samples that makes a domain fast: this fraction of its limit, or
/// GROWTH_UNLIMITED for a cgroup no limit covers.
pub(super) const GROWTH_FRACTION: u64 = 16;
pub(super) const GROWTH_UNLIMITED: u64 = 64 << 20;
pub(super) const HOST_PRESSURE: &str = "/proc/pressure/memory";
/// A domain's composition (its `memory.stat`, and v1's `memory.kmem.usage_in_bytes`) is read
/// far less often than its usage: generating `memory.stat` costs the kernel a walk of every
/// counter, which at 500 limits a second would cost more than the rest of the recorder. So it
/// is read once when the domain is first sampled (the baseline a lead-up compares with), then
/// only when its usage moved since the last read by this fraction of its limit (at least
/// COMPOSITION_MIN_STEP), or at all while it is half full or more; at most once every
/// COMPOSITION_INTERVAL, however fast the domain is sampled. A steady domain, full or not, is
/// never read again; the usage sample stays as it is. The members are not read: the lead-up
/// says which kind of the domain's memory grew, and its usage series say which member did.
pub(super) const COMPOSITION_STEP_FRACTION: u64 = 32;
pub(super) const COMPOSITION_MIN_STEP: u64 = 1 << 20;
pub(super) const COMPOSITION_INTERVAL: Duration = Duration::from_secs(1);

/// Epoll tokens: the fixed sources, then three per domain.
const TOKEN_WAKE: u64 = 0;
const TOKEN_INOTIFY: u64 = 1;
const TOKEN_HOST_TRIGGER: u64 = 2;
const KIND_TRIGGER: u64 = 1;
const KIND_THRESHOLD: u64 = 2;
const KIND_EVENTS: u64 = 3;

/// One sample of everything due, read without the recording's lock.
#[derive(Debug, Default)]
pub(super) struct Reading {
    pub(super) at_ns: u64,
    pub(super) usage: Vec<(CgroupId, u64)>,
    pub(super) pressure: Vec<(CgroupId, Totals)>,
    pub(super) events: Vec<(CgroupId, u64, u64)>,
    pub(super) compositions: Vec<(CgroupId, Parts)>,
    pub(super) host_pressure: Option<Totals>,
    /// Domains whose own cgroup was read: what a warning looks at.
    pub(super) domains: Vec<CgroupId>,
    /// Whether a domain was armed or disarmed.
    pub(super) rearmed: bool,
}

/// A change of what the recording holds, made under its lock.
#[derive(Debug)]
pub(super) enum Edit {
    /// A domain's limit and members (new, or changed); `pressure` names where its stalls are read.
    Domain {
        path: CgroupId,
        limit_bytes: u64,
        members: Vec<CgroupId>,
        pressure: Option<String>,
    },
    /// A cgroup now watched.
    Cgroup(CgroupId),
    RetireDomain(CgroupId),
    RetireCgroup(CgroupId),
    Host(Vec<CgroupId>),
    NotCovered(HashMap<CgroupId, NotCovered>),
    /// Why a cgroup the tree does not know may be missing.
    Beyond(Option<NotCovered>),
}

/// What woke the thread, as far as the caller needs to know.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Woken {
    pub(super) wake: bool,
    pub(super) inotify: bool,
}

struct Watched {
    /// Closed once a read fails (the cgroup is going away).
    usage: Option<Reread>,
    last: Option<u64>,
    /// When it was last read, and how many reads running found the same usage.
    read_at_ns: u64,
    unchanged: u32,
    fast_until_ns: u64,
    /// Growth between samples that makes its domains fast.
    growth_step: u64,
    /// The domains it is sampled for (itself, if limited, and those it is a member of).
    domains: Vec<CgroupId>,
}

struct DomainFiles {
    id: u64,
    limit_bytes: u64,
    members: Vec<CgroupId>,
    /// Its `memory.pressure`, read only.
    pressure: Option<Reread>,
    /// Half full or more: its kernel wake-ups (trigger, thresholds) are set.
    armed: bool,
    /// A second descriptor of `memory.pressure`, with a trigger on it, while armed.
    trigger: Option<File>,
    /// v2 `memory.events`, kept open: the kernel notifies on it. (v1's `memory.failcnt` is
    /// read only while warm, and not kept open.)
    events: Option<Reread>,
    /// v1: the eventfd its usage thresholds signal, while armed.
    thresholds: Option<File>,
    fast_until_ns: u64,
    next_pressure_ns: u64,
    /// Its events are read at the next sample: new, or the kernel notified.
    read_events: bool,
    /// When its composition was last read, and its usage then; `None`: not yet.
    composition_read: Option<(u64, u64)>,
}

/// When things are due, CLOCK_MONOTONIC nanoseconds.
#[derive(Debug, Default)]
pub(super) struct Schedule {
    pub(super) next_slow_ns: u64,
    pub(super) next_fast_ns: Option<u64>,
    /// The latest any domain stays fast.
    fast_until_ns: u64,
    pub(super) replan_at_ns: u64,
    last_replan_ns: u64,
    pub(super) rewalk_at_ns: Option<u64>,
}

impl Schedule {
    pub(super) fn next_due_ns(&self) -> u64 {
        let mut due = self.next_slow_ns.min(self.replan_at_ns);
        if let Some(fast) = self.next_fast_ns {
            due = due.min(fast);
        }
        if let Some(rewalk) = self.rewalk_at_ns {
            due = due.min(rewalk);
        }
        due
    }
}

/// How the recorder runs on this host, for the startup log and `agent_started`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Coverage {
    /// Cgroups with a memory limit known.
    pub limits: usize,
    /// Of them, sampled.
    pub domains: usize,
    /// Cgroups sampled in all: the domains, their members, the host's entries.
    pub watched: usize,
    /// `--timeline-max-cgroups`.
    pub bound: usize,
    /// Cgroups left out, and the first reason.
    pub not_covered: usize,
    pub first_not_covered: Option<(String, NotCovered)>,
    /// Directories in the hierarchy the walk left out, and why.
    pub beyond: Option<String>,
    pub host_trigger: Result<(), String>,
    /// Whether this kernel lets the agent set a trigger on a cgroup's `memory.pressure`
    /// (unprivileged, since 6.5); `None` without a cgroup2 hierarchy.
    pub cgroup_triggers: Option<Result<(), String>>,
    /// Domains armed (half full or more), and of them with a pressure trigger and with v1
    /// usage thresholds; domains with v2 `memory.events` notifications.
    pub armed: usize,
    pub triggers: usize,
    pub thresholds: usize,
    pub events: usize,
    /// Whether new cgroups and limits are seen through inotify, or only by walks.
    pub inotify: Result<(), String>,
    pub version: Option<CgroupVersion>,
}

pub(super) struct Sampler {
    pub(super) memory: MemoryHierarchy,
    cgroup2: Option<PathBuf>,
    bound: usize,
    pub(super) tree: Tree,
    pub(super) epoll: Epoll,
    pub(super) wake: File,
    host_trigger: io::Result<File>,
    host_pressure: Option<Reread>,
    host_fast_until_ns: u64,
    cgroup_triggers: Option<Result<(), String>>,
    arming: Arming,
    host: Vec<CgroupId>,
    cgroups: HashMap<CgroupId, Watched>,
    domains: HashMap<CgroupId, DomainFiles>,
    by_id: HashMap<u64, CgroupId>,
    next_id: u64,
    /// Why cgroups the plan wants are not sampled.
    not_covered: HashMap<CgroupId, NotCovered>,
    pub(super) schedule: Schedule,
}

impl Sampler {
    /// Walks the hierarchy and sets up the fixed wake-up sources; plans nothing yet.
    pub(super) fn new(
        memory: MemoryHierarchy,
        bound: usize,
        host_trigger: io::Result<File>,
        now_ns: u64,
    ) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        let wake = files::eventfd()?;
        epoll.add(&wake, libc::EPOLLIN, TOKEN_WAKE)?;
        let tree = Tree::walk(memory.clone(), max_dirs(bound));
        if let Some(inotify) = tree.inotify() {
            epoll.add(inotify.file(), libc::EPOLLIN, TOKEN_INOTIFY)?;
        }
        let host_trigger = host_trigger.and_then(|trigger| {
            epoll.add(&trigger, libc::EPOLLPRI, TOKEN_HOST_TRIGGER)?;
            Ok(trigger)
        });
        let mut schedule = Schedule {
            next_slow_ns: now_ns,
            replan_at_ns: now_ns,
            ..Schedule::default()
        };
        if tree.unwatched.is_some() {
            schedule.rewalk_at_ns = Some(now_ns + REWALK_INTERVAL.as_nanos() as u64);
        }
        let cgroup2 = crate::observe::cgroupfs::find_cgroup2();
        let arming = Arming::start()?;
        // Whether a trigger may be set on a cgroup's pressure, tried on the root's.
        let cgroup_triggers = cgroup2.as_ref().map(|root| {
            match Reread::open_pressure(
                &root.join("memory.pressure"),
                psi::TRIGGER_STALL,
                psi::TRIGGER_WINDOW,
            ) {
                Ok((file, true)) => {
                    arming.close(file.into_file());
                    Ok(())
                }
                Ok((_, false)) => Err("the kernel refuses a trigger without CAP_SYS_RESOURCE \
                                       (before 6.5)"
                    .to_owned()),
                Err(err) => Err(err.to_string()),
            }
        });
        Ok(Sampler {
            memory,
            cgroup2,
            bound,
            tree,
            epoll,
            wake,
            host_trigger,
            host_pressure: Reread::open(Path::new(HOST_PRESSURE)).ok(),
            host_fast_until_ns: 0,
            cgroup_triggers,
            arming,
            host: Vec::new(),
            cgroups: HashMap::new(),
            domains: HashMap::new(),
            by_id: HashMap::new(),
            next_id: 1,
            not_covered: HashMap::new(),
            schedule,
        })
    }

    /// Most retired cgroups (or domains) the recording keeps for kills reported late.
    pub(super) fn max_retired(&self) -> usize {
        (self.bound / MAX_RETIRED_SHARE).max(64)
    }

    /// Handles what epoll reported.
    pub(super) fn woken(&mut self, ready: &[(u64, u32)], now_ns: u64) -> Woken {
        let mut woken = Woken::default();
        log::trace!("memory timeline: woken by {ready:?}");
        for &(token, events) in ready {
            // A trigger polls an error once its cgroup is gone; a kernfs notification polls
            // one with every event.
            let failed = events & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
            match token {
                TOKEN_WAKE => {
                    files::drain(&self.wake);
                    woken.wake = true;
                }
                TOKEN_INOTIFY => woken.inotify = true,
                TOKEN_HOST_TRIGGER => {
                    if failed {
                        log::warn!("memory timeline: {HOST_PRESSURE} trigger failed; dropped");
                        self.host_trigger = Err(io::Error::other("the trigger failed"));
                    } else {
                        self.host_fast(now_ns);
                    }
                }
                token => {
                    let Some(path) = self.by_id.get(&(token >> 2)).cloned() else {
                        continue;
                    };
                    match token & 3 {
                        KIND_THRESHOLD => {
                            if let Some(thresholds) = self
                                .domains
                                .get(&path)
                                .and_then(|domain| domain.thresholds.as_ref())
                            {
                                files::drain(thresholds);
                            }
                        }
                        KIND_TRIGGER if failed => {
                            // A removed cgroup's trigger reports an error forever: let it go.
                            if let Some(trigger) = self
                                .domains
                                .get_mut(&path)
                                .and_then(|domain| domain.trigger.take())
                            {
                                self.arming.close(trigger);
                            }
                            continue;
                        }
                        _ => {}
                    }
                    self.fast(&path, now_ns);
                    if token & 3 == KIND_EVENTS
                        && let Some(domain) = self.domains.get_mut(&path)
                    {
                        // Read at the next (fast) sample; the descriptor is edge-triggered.
                        domain.read_events = true;
                    }
                }
            }
        }
        woken
    }

    /// Samples the domain at `path` (a kill's, or one the kernel woke us for) ten times a
    /// second, with its members, for a while.
    pub(super) fn fast(&mut self, path: &str, now_ns: u64) {
        let until = now_ns + FAST_HOLD.as_nanos() as u64;
        let Some(domain) = self.domains.get_mut(path) else {
            return;
        };
        domain.fast_until_ns = until;
        for member in &domain.members {
            if let Some(watched) = self.cgroups.get_mut(member) {
                watched.fast_until_ns = until;
            }
        }
        self.schedule.fast_until_ns = self.schedule.fast_until_ns.max(until);
        let next = now_ns + FAST_INTERVAL.as_nanos() as u64;
        self.schedule.next_fast_ns = Some(self.schedule.next_fast_ns.map_or(next, |n| n.min(next)));
    }

    /// The host is short of memory: its entries and every warm domain go fast.
    pub(super) fn host_fast(&mut self, now_ns: u64) {
        let until = now_ns + FAST_HOLD.as_nanos() as u64;
        self.host_fast_until_ns = until;
        for member in &self.host {
            if let Some(watched) = self.cgroups.get_mut(member) {
                watched.fast_until_ns = until;
            }
        }
        let warm: Vec<CgroupId> = self
            .domains
            .keys()
            .filter(|path| self.warm(path))
            .cloned()
            .collect();
        for path in warm {
            self.fast(&path, now_ns);
        }
        self.schedule.fast_until_ns = self.schedule.fast_until_ns.max(until);
        let next = now_ns + FAST_INTERVAL.as_nanos() as u64;
        self.schedule.next_fast_ns = Some(self.schedule.next_fast_ns.map_or(next, |n| n.min(next)));
    }

    /// A cgroup the recorder does not sample was a kill's domain: look again soon.
    pub(super) fn replan_soon(&mut self, now_ns: u64) {
        let earliest = (now_ns + REPLAN_DEBOUNCE.as_nanos() as u64)
            .max(self.schedule.last_replan_ns + REPLAN_MIN_GAP.as_nanos() as u64);
        self.schedule.replan_at_ns = self.schedule.replan_at_ns.min(earliest);
    }

    pub(super) fn is_domain(&self, path: &str) -> bool {
        self.domains.contains_key(path)
    }

    fn warm(&self, path: &str) -> bool {
        let (Some(domain), Some(watched)) = (self.domains.get(path), self.cgroups.get(path)) else {
            return false;
        };
        watched
            .last
            .is_some_and(|usage| usage >= domain.limit_bytes / 100 * WARM_PERCENT)
    }

    /// Reads what is due now: every watched cgroup on the slow tick, the fast ones in between.
    pub(super) fn sample(&mut self, now_ns: u64) -> Reading {
        let slow = now_ns >= self.schedule.next_slow_ns;
        let mut reading = Reading {
            at_ns: now_ns,
            ..Reading::default()
        };
        let mut grown: Vec<CgroupId> = Vec::new();
        let steady_ns = STEADY_INTERVAL.as_nanos() as u64;
        for (path, watched) in &mut self.cgroups {
            let steady = watched.unchanged >= STEADY_AFTER
                && now_ns < watched.read_at_ns.saturating_add(steady_ns);
            if !(slow && !steady || watched.fast_until_ns > now_ns) {
                continue;
            }
            let Some(usage) = &watched.usage else {
                continue;
            };
            match usage.number() {
                Ok(Some(usage_bytes)) => {
                    if watched
                        .last
                        .is_some_and(|last| usage_bytes >= last.saturating_add(watched.growth_step))
                    {
                        grown.extend(watched.domains.iter().cloned());
                    }
                    watched.unchanged = match watched.last {
                        Some(last) if last == usage_bytes => watched.unchanged.saturating_add(1),
                        _ => 0,
                    };
                    watched.last = Some(usage_bytes);
                    watched.read_at_ns = now_ns;
                    reading.usage.push((path.clone(), usage_bytes));
                }
                Ok(None) => log::debug!("memory timeline: {path}'s usage is not a number"),
                // Gone: inotify says so too, and the plan lets it go.
                Err(err) => {
                    log::debug!(
                        "memory timeline: {path}'s usage unreadable, no longer read: {err}"
                    );
                    watched.usage = None;
                }
            }
        }
        log::trace!(
            "memory timeline: sample ({}): {:?}",
            if slow { "slow" } else { "fast" },
            reading.usage
        );
        let version = self.memory.version;
        let mut rearm: Vec<CgroupId> = Vec::new();
        for (path, domain) in &mut self.domains {
            let fast = domain.fast_until_ns > now_ns;
            if !(slow || fast) {
                continue;
            }
            let watched = self.cgroups.get(path);
            if watched.is_some_and(|watched| watched.read_at_ns == now_ns) {
                reading.domains.push(path.clone());
            }
            let usage = watched.and_then(|watched| watched.last);
            let half_full =
                usage.is_some_and(|usage| usage >= domain.limit_bytes / 100 * WARM_PERCENT);
            let quarter_full =
                usage.is_some_and(|usage| usage >= domain.limit_bytes / 100 * DISARM_PERCENT);
            if half_full && !domain.armed || domain.armed && !quarter_full {
                rearm.push(path.clone());
            }
            let warm = fast || half_full;
            if let Some(pressure) = &domain.pressure
                && (warm || now_ns >= domain.next_pressure_ns)
            {
                match pressure.read(psi::parse) {
                    Ok(Some(totals)) => reading.pressure.push((path.clone(), totals)),
                    Ok(None) => {}
                    Err(_) => domain.pressure = None,
                }
                domain.next_pressure_ns = now_ns + COLD_PRESSURE_INTERVAL.as_nanos() as u64;
            }
            let events = match (version, &domain.events) {
                (CgroupVersion::V2, Some(events)) if warm || domain.read_events => {
                    domain.read_events = false;
                    match events.read(EventsSample::parse_v2) {
                        Ok(read) => read,
                        Err(_) => {
                            domain.events = None;
                            None
                        }
                    }
                }
                (CgroupVersion::V1, _) if warm => {
                    files::read_number(&self.memory.dir(path).join("memory.failcnt"))
                        .map(|failcnt| (0, failcnt))
                }
                _ => None,
            };
            if let Some((high, max)) = events {
                reading.events.push((path.clone(), high, max));
            }
            if let Some(usage) = usage
                && composition_due(domain.composition_read, usage, domain.limit_bytes, now_ns)
            {
                domain.composition_read = Some((now_ns, usage));
                let dir = self.memory.dir(path);
                let kmem = match version {
                    CgroupVersion::V1 => {
                        files::read_number(&dir.join("memory.kmem.usage_in_bytes"))
                    }
                    CgroupVersion::V2 => None,
                };
                if let Some(parts) = files::read_text(&dir.join("memory.stat"))
                    .and_then(|text| CompositionSample::parse(&text, version, kmem))
                {
                    reading.compositions.push((path.clone(), parts));
                }
            }
        }
        if (slow || self.host_fast_until_ns > now_ns)
            && let Some(host) = &self.host_pressure
        {
            reading.host_pressure = host.read(psi::parse).ok().flatten();
        }
        reading.rearmed = !rearm.is_empty();
        for path in rearm {
            match self.domains.get(&path).map(|domain| domain.armed) {
                Some(false) => self.arm(&path),
                Some(true) => self.disarm(&path),
                None => {}
            }
        }
        for domain in grown {
            self.fast(&domain, now_ns);
        }
        if slow {
            self.schedule.next_slow_ns = now_ns + SLOW_INTERVAL.as_nanos() as u64;
        }
        self.schedule.next_fast_ns = (self.schedule.fast_until_ns > now_ns)
            .then(|| now_ns + FAST_INTERVAL.as_nanos() as u64);
        reading
    }

    /// Each known cgroup's usage now: the last sample of those watched, a read of the others.
    fn usage_now(&self) -> HashMap<CgroupId, u64> {
        self.tree
            .paths()
            .filter_map(|path| {
                let usage = match self.cgroups.get(path).and_then(|watched| watched.last) {
                    Some(usage) => usage,
                    None => self.memory.usage_bytes(path)?,
                };
                Some((path.clone(), usage))
            })
            .collect()
    }

    /// Ranks the hierarchy again and samples what the new plan says.
    pub(super) fn replan(&mut self, now_ns: u64) -> Vec<Edit> {
        self.schedule.last_replan_ns = now_ns;
        self.schedule.replan_at_ns = now_ns + REPLAN_INTERVAL.as_nanos() as u64;
        let plan = plan::plan(&self.tree, &self.usage_now(), self.bound);
        self.apply(plan)
    }

    /// Walks the whole hierarchy again.
    pub(super) fn rewalk(&mut self, now_ns: u64) -> Vec<Edit> {
        let changes = self.tree.rewalk();
        self.walked_again(changes, now_ns)
    }

    /// After the tree walked again: its new inotify descriptor joins epoll (the old one left
    /// it when it was closed), and the plan follows what the walk found.
    fn walked_again(&mut self, changes: Changes, now_ns: u64) -> Vec<Edit> {
        if let Some(inotify) = self.tree.inotify() {
            let _ = self.epoll.add(inotify.file(), libc::EPOLLIN, TOKEN_INOTIFY);
        }
        self.schedule.rewalk_at_ns = self
            .tree
            .unwatched
            .is_some()
            .then(|| now_ns + REWALK_INTERVAL.as_nanos() as u64);
        let mut edits = self.changed(changes, now_ns);
        edits.extend(self.replan(now_ns));
        edits
    }

    /// Applies what inotify said changed in the hierarchy: a new limit is sampled at once, a
    /// removed cgroup let go; members are ranked again soon.
    pub(super) fn update(&mut self, now_ns: u64) -> Vec<Edit> {
        let watching = self
            .tree
            .inotify()
            .map(|inotify| inotify.file().as_raw_fd());
        let changes = self.tree.update();
        match self
            .tree
            .inotify()
            .map(|inotify| inotify.file().as_raw_fd())
        {
            // Could not watch at all: walked again later, on the rewalk schedule.
            None => self.rewalk(now_ns),
            // The queue overflowed, and the tree walked again with a new descriptor, opened
            // before the old one was closed (so never the same number), that epoll does not
            // know yet: without it no creation or limit change would wake the recorder again.
            fd if fd != watching => self.walked_again(changes, now_ns),
            _ => self.changed(changes, now_ns),
        }
    }

    /// Applies the limits of cgroups whose limit file appeared after they did, with no event
    /// to say so (`Tree::look_again`).
    pub(super) fn look_again(&mut self, now_ns: u64) -> Vec<Edit> {
        let changes = self.tree.look_again();
        if changes.limits.is_empty() {
            return Vec::new();
        }
        self.changed(changes, now_ns)
    }

    fn changed(&mut self, changes: Changes, now_ns: u64) -> Vec<Edit> {
        let Changes {
            limits,
            removed,
            structure,
        } = changes;
        if structure || !limits.is_empty() || !removed.is_empty() {
            log::debug!(
                "memory timeline: hierarchy changed: limits {limits:?}, removed {removed:?}, \
                 structure {structure}"
            );
        }
        let mut edits = Vec::new();
        let mut coverage_changed = false;
        for path in &removed {
            if self.cgroups.remove(path).is_some() {
                edits.push(Edit::RetireCgroup(path.clone()));
            }
            if self.domains.contains_key(path) {
                self.remove_domain(path);
                edits.push(Edit::RetireDomain(path.clone()));
            }
            coverage_changed |= self.not_covered.remove(path).is_some();
        }
        for path in &limits {
            match self.tree.limit_bytes(path) {
                Some(limit_bytes) => {
                    if !self.cgroups.contains_key(path) {
                        if self.cgroups.len() >= self.bound {
                            self.not_covered
                                .insert(path.clone(), NotCovered::CgroupBound { max: self.bound });
                            coverage_changed = true;
                            continue;
                        }
                        match self.open_cgroup(path) {
                            Ok(watched) => {
                                self.cgroups.insert(path.clone(), watched);
                                edits.push(Edit::Cgroup(path.clone()));
                            }
                            Err(Some(why)) => {
                                self.not_covered.insert(path.clone(), why);
                                coverage_changed = true;
                                continue;
                            }
                            Err(None) => continue,
                        }
                    }
                    coverage_changed |= self.not_covered.remove(path).is_some();
                    let members = match self.domains.get(path) {
                        Some(domain) => domain.members.clone(),
                        None => vec![path.clone()],
                    };
                    edits.extend(self.set_domain(path, limit_bytes, members));
                    if let Some(watched) = self.cgroups.get_mut(path)
                        && !watched.domains.contains(path)
                    {
                        watched.domains.push(path.clone());
                    }
                    self.set_growth_steps();
                    // A new or changed limit is where the next kill may come: watch it closely.
                    self.fast(path, now_ns);
                }
                None => {
                    if self.domains.contains_key(path) {
                        self.remove_domain(path);
                        edits.push(Edit::RetireDomain(path.clone()));
                    }
                }
            }
        }
        if coverage_changed {
            edits.push(Edit::NotCovered(self.not_covered.clone()));
        }
        if structure || !limits.is_empty() {
            self.replan_soon(now_ns);
        }
        edits
    }

    /// Samples what `plan` says, opening and closing what differs.
    fn apply(&mut self, plan: Plan) -> Vec<Edit> {
        let Plan {
            host,
            domains,
            watched,
            mut not_covered,
        } = plan;
        let mut edits = Vec::new();
        let wanted: HashSet<&CgroupId> = watched.iter().collect();
        let dropped: Vec<CgroupId> = self
            .cgroups
            .keys()
            .filter(|path| !wanted.contains(path))
            .cloned()
            .collect();
        for path in dropped {
            log::debug!("memory timeline: {path} no longer sampled (out of the plan)");
            self.cgroups.remove(&path);
            edits.push(Edit::RetireCgroup(path));
        }
        for path in &watched {
            if self.cgroups.contains_key(path) {
                continue;
            }
            match self.open_cgroup(path) {
                Ok(cgroup) => {
                    log::debug!("memory timeline: {path} sampled from now on");
                    self.cgroups.insert(path.clone(), cgroup);
                    edits.push(Edit::Cgroup(path.clone()));
                }
                Err(Some(why)) => {
                    not_covered.insert(path.clone(), why);
                }
                Err(None) => {}
            }
        }
        let planned: HashSet<&CgroupId> = domains
            .iter()
            .map(|domain| &domain.path)
            .filter(|path| self.cgroups.contains_key(*path))
            .collect();
        let retired: Vec<CgroupId> = self
            .domains
            .keys()
            .filter(|path| !planned.contains(path))
            .cloned()
            .collect();
        for path in retired {
            self.remove_domain(&path);
            edits.push(Edit::RetireDomain(path));
        }
        for domain in &domains {
            if !self.cgroups.contains_key(&domain.path) {
                continue;
            }
            let members: Vec<CgroupId> = domain
                .members
                .iter()
                .filter(|member| self.cgroups.contains_key(*member))
                .cloned()
                .collect();
            edits.extend(self.set_domain(&domain.path, domain.limit_bytes, members));
        }
        for watched in self.cgroups.values_mut() {
            watched.domains.clear();
        }
        for domain in &domains {
            for member in &domain.members {
                if let Some(watched) = self.cgroups.get_mut(member) {
                    watched.domains.push(domain.path.clone());
                }
            }
        }
        self.set_growth_steps();
        if host != self.host {
            self.host = host.clone();
            edits.push(Edit::Host(host));
        }
        if not_covered != self.not_covered {
            if not_covered.len() > self.not_covered.len() {
                log_bound(&not_covered, self.bound);
            }
            self.not_covered = not_covered;
            edits.push(Edit::NotCovered(self.not_covered.clone()));
        }
        edits.push(Edit::Beyond(self.tree.beyond.as_ref().map(
            |(why, _)| match why {
                Beyond::Directories { .. } | Beyond::Depth => NotCovered::WalkBound,
            },
        )));
        edits
    }

    /// Opens, or updates, the domain at `path`; the edit for the recording if anything changed.
    fn set_domain(
        &mut self,
        path: &CgroupId,
        limit_bytes: u64,
        members: Vec<CgroupId>,
    ) -> Option<Edit> {
        if let Some(domain) = self.domains.get_mut(path) {
            let limit_changed = domain.limit_bytes != limit_bytes;
            if !limit_changed && domain.members == members {
                return None;
            }
            log::debug!("memory timeline: domain {path}: limit {limit_bytes}, members {members:?}");
            domain.limit_bytes = limit_bytes;
            domain.members = members.clone();
            if limit_changed && domain.armed {
                // Thresholds for the new limit; the next sample arms it again if it is still
                // half full.
                self.disarm(path);
            }
            let pressure = self.pressure_source(path);
            return Some(Edit::Domain {
                path: path.clone(),
                limit_bytes,
                members,
                pressure,
            });
        }
        log::debug!("memory timeline: new domain {path}: limit {limit_bytes}, members {members:?}");
        let id = self.next_id;
        self.next_id += 1;
        let mut domain = DomainFiles {
            id,
            limit_bytes,
            members: members.clone(),
            pressure: None,
            armed: false,
            trigger: None,
            events: None,
            thresholds: None,
            fast_until_ns: 0,
            next_pressure_ns: 0,
            read_events: true,
            composition_read: None,
        };
        // The first sample reads its events and pressure for a baseline.
        domain.pressure = self
            .pressure_path(path)
            .and_then(|pressure| Reread::open(&pressure).ok());
        if self.memory.version == CgroupVersion::V2
            && let Ok(events) = Reread::open(&self.memory.dir(path).join("memory.events"))
        {
            // Read now: the first read also clears a pending notification.
            let _ = events.read(|_| Some(()));
            if self
                .epoll
                .add(
                    events.file(),
                    libc::EPOLLPRI | libc::EPOLLET,
                    token(id, KIND_EVENTS),
                )
                .is_ok()
            {
                domain.events = Some(events);
            }
        }
        let pressure = domain.pressure.is_some().then(|| path.to_string());
        self.by_id.insert(id, path.clone());
        self.domains.insert(path.clone(), domain);
        Some(Edit::Domain {
            path: path.clone(),
            limit_bytes,
            members,
            pressure,
        })
    }

    fn pressure_source(&self, path: &str) -> Option<String> {
        self.domains
            .get(path)
            .and_then(|domain| domain.pressure.as_ref())
            .map(|_| path.to_owned())
    }

    /// A cgroup's `memory.pressure`: in the cgroup2 hierarchy, even where memory is accounted
    /// in v1, as stalls are accounted to a task's cgroup2 cgroup.
    fn pressure_path(&self, path: &str) -> Option<PathBuf> {
        let root = self.cgroup2.as_ref()?;
        Some(
            root.join(path.trim_start_matches('/'))
                .join("memory.pressure"),
        )
    }

    /// Opens a cgroup's usage file; why not, if it should be said (a cgroup gone in between is
    /// not).
    fn open_cgroup(&self, path: &str) -> Result<Watched, Option<NotCovered>> {
        let file = match self.memory.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        };
        match Reread::open(&self.memory.dir(path).join(file)) {
            Ok(usage) => Ok(Watched {
                last: usage.number().ok().flatten(),
                read_at_ns: 0,
                unchanged: 0,
                usage: Some(usage),
                fast_until_ns: 0,
                growth_step: GROWTH_UNLIMITED,
                domains: Vec::new(),
            }),
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => Err(None),
            Err(err) if matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                Err(Some(NotCovered::Descriptors))
            }
            Err(err) => Err(Some(NotCovered::Unreadable(err.to_string()))),
        }
    }

    /// Sets the kernel's wake-ups on a domain half full or more: a trigger on its pressure, and
    /// on v1 usage thresholds at THRESHOLDS_PERCENT of its limit (`cgroup.event_control` takes
    /// `<eventfd> <fd of memory.usage_in_bytes> <bytes>`; the eventfd is signalled whenever usage
    /// crosses one, up or down, and closing it unregisters them).
    fn arm(&mut self, path: &CgroupId) {
        let usage = self
            .cgroups
            .get(path)
            .and_then(|watched| watched.usage.as_ref())
            .and_then(|usage| usage.file().try_clone().ok());
        let pressure_path = self.pressure_path(path);
        let version = self.memory.version;
        let control = self.memory.dir(path).join("cgroup.event_control");
        let Some(domain) = self.domains.get_mut(path) else {
            return;
        };
        domain.armed = true;
        if self.cgroup_triggers.as_ref().is_some_and(Result::is_ok)
            && let Some(pressure_path) = pressure_path
            && let Ok((trigger, true)) =
                Reread::open_pressure(&pressure_path, psi::TRIGGER_STALL, psi::TRIGGER_WINDOW)
        {
            let trigger = trigger.into_file();
            if self
                .epoll
                .add(&trigger, libc::EPOLLPRI, token(domain.id, KIND_TRIGGER))
                .is_ok()
            {
                domain.trigger = Some(trigger);
            } else {
                self.arming.close(trigger);
            }
        }
        if version == CgroupVersion::V1
            && let Some(usage) = usage
            && let Ok(eventfd) = files::eventfd()
            && self
                .epoll
                .add(&eventfd, libc::EPOLLIN, token(domain.id, KIND_THRESHOLD))
                .is_ok()
        {
            let bytes = THRESHOLDS_PERCENT
                .iter()
                .map(|percent| domain.limit_bytes / 100 * percent)
                .collect();
            self.arming.register(control, &eventfd, &usage, bytes);
            domain.thresholds = Some(eventfd);
        }
    }

    /// Lifts a domain's kernel wake-ups: it went below DISARM_PERCENT, its limit changed, or it
    /// is gone. Closing a trigger waits for the kernel, so the arming thread does it.
    fn disarm(&mut self, path: &str) {
        let Some(domain) = self.domains.get_mut(path) else {
            return;
        };
        domain.armed = false;
        domain.thresholds = None;
        if let Some(trigger) = domain.trigger.take() {
            self.arming.close(trigger);
        }
    }

    /// Lets a domain go, its trigger closed off this thread.
    fn remove_domain(&mut self, path: &str) {
        self.disarm(path);
        if let Some(domain) = self.domains.remove(path) {
            self.by_id.remove(&domain.id);
        }
    }

    fn set_growth_steps(&mut self) {
        for watched in self.cgroups.values_mut() {
            watched.growth_step = watched
                .domains
                .iter()
                .filter_map(|domain| self.domains.get(domain))
                .map(|domain| (domain.limit_bytes / GROWTH_FRACTION).max(1))
                .min()
                .unwrap_or(GROWTH_UNLIMITED);
        }
    }

    /// How the recorder runs now.
    pub(super) fn coverage(&self) -> Coverage {
        let first_not_covered = self
            .not_covered
            .iter()
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(path, why)| (path.to_string(), why.clone()));
        Coverage {
            limits: self.tree.limited().count(),
            domains: self.domains.len(),
            watched: self.cgroups.len(),
            bound: self.bound,
            not_covered: self.not_covered.len(),
            first_not_covered,
            beyond: self.tree.beyond.as_ref().map(|(why, count)| match why {
                Beyond::Directories { max } => {
                    format!("{count} cgroup directories past the first {max}")
                }
                Beyond::Depth => {
                    format!(
                        "{count} cgroup directories deeper than {}",
                        super::tree::MAX_DEPTH
                    )
                }
            }),
            host_trigger: self
                .host_trigger
                .as_ref()
                .map(|_| ())
                .map_err(|err| err.to_string()),
            cgroup_triggers: self.cgroup_triggers.clone(),
            armed: self.domains.values().filter(|domain| domain.armed).count(),
            triggers: self
                .domains
                .values()
                .filter(|domain| domain.trigger.is_some())
                .count(),
            thresholds: self
                .domains
                .values()
                .filter(|domain| domain.thresholds.is_some())
                .count(),
            events: self
                .domains
                .values()
                .filter(|domain| domain.events.is_some())
                .count(),
            inotify: match (&self.tree.inotify(), &self.tree.unwatched) {
                (Some(_), None) => Ok(()),
                (_, Some(err)) => Err(err.to_string()),
                (None, None) => Err("no inotify descriptor".to_owned()),
            },
            version: Some(self.memory.version),
        }
    }
}

/// Whether a domain's composition is read now, by the rule at COMPOSITION_STEP_FRACTION:
/// `last`, when it was last read and its usage then.
fn composition_due(last: Option<(u64, u64)>, usage: u64, limit: u64, now_ns: u64) -> bool {
    let Some((read_ns, read_usage)) = last else {
        return true;
    };
    if now_ns < read_ns.saturating_add(COMPOSITION_INTERVAL.as_nanos() as u64) {
        return false;
    }
    let moved = usage.abs_diff(read_usage);
    let step = (limit / COMPOSITION_STEP_FRACTION).max(COMPOSITION_MIN_STEP);
    let half_full = usage >= limit / 100 * WARM_PERCENT;
    moved >= step || half_full && moved > 0
}

/// Directories the tree holds at most: four per cgroup watched, so that a hierarchy full of
/// unlimited cgroups (slices, sandboxes) does not keep a limited one from being found.
fn max_dirs(bound: usize) -> usize {
    bound.saturating_mul(4).max(1024)
}

fn token(id: u64, kind: u64) -> u64 {
    id << 2 | kind
}

fn log_bound(not_covered: &HashMap<CgroupId, NotCovered>, bound: usize) {
    let past_bound = not_covered
        .values()
        .filter(|why| matches!(why, NotCovered::CgroupBound { .. }))
        .count();
    if past_bound > 0 {
        log::warn!(
            "memory timeline: {past_bound} cgroups left out, past its bound of {bound} \
             (--timeline-max-cgroups): a kill there says so in its timeline"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const SECOND: u64 = 1_000_000_000;

    /// After inotify's queue overflowed, the tree's new descriptor is in epoll: a cgroup made
    /// afterwards still wakes the recorder.
    #[test]
    fn after_an_inotify_overflow_a_new_cgroup_still_wakes_the_recorder() {
        use crate::observe::timeline::tree::fake::FakeHierarchy;
        let fake = FakeHierarchy::new("overflow");
        fake.cgroup("/a", MIB, Some(64 * MIB));
        let mut sampler =
            Sampler::new(fake.memory(), 64, Err(io::Error::other("no trigger")), 0).unwrap();
        sampler.tree.overflow_next = true;
        sampler.update(0);
        fake.cgroup("/b", MIB, Some(64 * MIB));
        let mut ready = Vec::new();
        sampler.epoll.wait(&mut ready, 2000).unwrap();
        assert!(
            ready.iter().any(|&(token, _)| token == TOKEN_INOTIFY),
            "no inotify wake-up after the overflow: {ready:?}"
        );
        let edits = sampler.update(SECOND);
        assert!(sampler.tree.contains("/b"), "{edits:?}");
    }

    #[test]
    fn a_composition_is_read_when_usage_moved_at_most_once_a_second() {
        let limit = 128 * MIB;
        // The first sample of a domain: its baseline.
        assert!(composition_due(None, 3 * MIB, limit, 0));
        let read = Some((10 * SECOND, 10 * MIB));
        // Below half full: only a move of a 32nd of the limit (4 MiB), either way.
        assert!(!composition_due(read, 13 * MIB, limit, 20 * SECOND));
        assert!(composition_due(read, 14 * MIB, limit, 20 * SECOND));
        assert!(composition_due(read, 6 * MIB, limit, 20 * SECOND));
        // Half full: any move, but not within a second of the last read, and a steady domain
        // never again.
        let full = Some((10 * SECOND, 100 * MIB));
        assert!(composition_due(full, 100 * MIB + 4096, limit, 11 * SECOND));
        assert!(!composition_due(
            full,
            120 * MIB,
            limit,
            10 * SECOND + SECOND / 2
        ));
        assert!(!composition_due(full, 100 * MIB, limit, 100 * SECOND));
        // A small limit still needs a MiB.
        let small = Some((0, MIB));
        assert!(!composition_due(small, MIB + MIB / 2, 8 * MIB, 5 * SECOND));
    }
}
