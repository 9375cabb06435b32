//! The recorder's view of the hierarchy, renewed: a new plan of what to sample, and the
//! descriptors it needs opened, while every recording made so far is kept.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::path::Path;

use super::discover::{self, Plan, Tree};
use super::files::{self, Reread};
use super::psi;
use super::recorder::{
    DISCOVERY_INTERVAL, GROWTH_FRACTION, GROWTH_UNLIMITED, MAX_RETIRED_CGROUPS,
    MAX_RETIRED_DOMAINS, State, THRESHOLDS_PERCENT, Watched,
};
use super::samples::{Domain, EventsFile, PressureFile};
use super::series::Series;
use crate::observe::cgroupfs::{CgroupVersion, MemoryHierarchy};

impl State {
    /// Looks at the hierarchy again and opens what the new plan needs, keeping every series.
    pub(super) fn discover(&mut self, now_ns: u64) {
        let plan = discover::plan(&Tree::read(&self.memory));
        self.last_discovery_ns = now_ns;
        self.discover_at_ns = now_ns + DISCOVERY_INTERVAL.as_nanos() as u64;
        self.watch_cgroups(&plan);
        self.watch_domains(&plan, now_ns);
        self.host_members = plan.host.clone();
        self.inotify = files::inotify(plan.dirs.iter().map(|dir| self.memory.dir(dir))).ok();
    }

    fn watch_cgroups(&mut self, plan: &Plan) {
        let watched = plan.watched();
        let mut steps: HashMap<&str, u64> = HashMap::new();
        for domain in &plan.domains {
            for member in &domain.members {
                let step = (domain.limit_bytes / GROWTH_FRACTION).max(1);
                let entry = steps.entry(member).or_insert(step);
                *entry = (*entry).min(step);
            }
        }
        for path in &watched {
            let entry = self.cgroups.entry(path.clone()).or_insert_with(|| Watched {
                usage: None,
                series: Series::default(),
                growth_step: GROWTH_UNLIMITED,
            });
            if entry.usage.is_none() {
                entry.usage =
                    Reread::open(&self.memory.dir(path).join(usage_file(&self.memory))).ok();
            }
            entry.growth_step = steps
                .get(path.as_str())
                .copied()
                .unwrap_or(GROWTH_UNLIMITED);
        }
        // Out of the plan: closed, kept while their recording may still be asked for.
        let mut retired: Vec<(String, u64)> = Vec::new();
        for (path, cgroup) in &mut self.cgroups {
            if !watched.contains(path) {
                cgroup.usage = None;
                retired.push((path.clone(), cgroup.series.last().map_or(0, |s| s.at_ns)));
            }
        }
        retired.sort_by_key(|&(_, last)| std::cmp::Reverse(last));
        for (path, _) in retired.into_iter().skip(MAX_RETIRED_CGROUPS) {
            self.cgroups.remove(&path);
        }
    }

    fn watch_domains(&mut self, plan: &Plan, now_ns: u64) {
        let mut old = std::mem::take(&mut self.domains);
        for planned in &plan.domains {
            let reused = old
                .iter()
                .position(|domain| domain.path == planned.path)
                .map(|index| old.swap_remove(index));
            let mut domain = match reused {
                Some(mut domain) if domain.limit_bytes == planned.limit_bytes => {
                    domain.members.clone_from(&planned.members);
                    domain
                }
                reused => {
                    let mut domain = Domain {
                        path: planned.path.clone(),
                        limit_bytes: planned.limit_bytes,
                        members: planned.members.clone(),
                        active: true,
                        pressure: None,
                        trigger: None,
                        events: None,
                        thresholds: None,
                    };
                    // A changed limit keeps the recording, with new thresholds.
                    if let Some(reused) = reused {
                        domain.pressure = reused.pressure;
                        domain.events = reused.events;
                    }
                    domain
                }
            };
            domain.active = true;
            self.open_domain(&mut domain, now_ns);
            self.domains.push(domain);
        }
        for domain in &mut old {
            domain.active = false;
            domain.trigger = None;
            domain.thresholds = None;
            if let Some(events) = &mut domain.events {
                events.file = None;
            }
        }
        old.sort_by_key(|domain| std::cmp::Reverse(domain.last_sample_ns()));
        old.truncate(MAX_RETIRED_DOMAINS);
        self.domains.extend(old);
    }

    /// Opens whatever of the domain's files is not open: pressure and its trigger, events,
    /// and on v1 its usage thresholds.
    fn open_domain(&self, domain: &mut Domain, now_ns: u64) {
        let dir = self.memory.dir(&domain.path);
        let pressure_path = self.cgroup2.as_ref().map(|root| {
            root.join(domain.path.trim_start_matches('/'))
                .join("memory.pressure")
        });
        match &mut domain.pressure {
            Some(pressure) if pressure.file.number().is_ok() => {}
            pressure => {
                let series = pressure.take().map(|p| p.series).unwrap_or_default();
                *pressure = pressure_path
                    .as_deref()
                    .and_then(|path| Reread::open(path).ok())
                    .map(|file| PressureFile {
                        source: domain.path.clone(),
                        file,
                        series,
                    });
                domain.trigger = None;
            }
        }
        if domain.trigger.is_none()
            && let Some(path) = pressure_path.filter(|_| domain.pressure.is_some())
        {
            domain.trigger = psi::trigger(&path).ok();
        }
        let events = domain.events.get_or_insert_with(|| EventsFile {
            file: None,
            version: self.memory.version,
            series: Series::default(),
        });
        if events.file.is_none() {
            let name = match self.memory.version {
                CgroupVersion::V1 => "memory.failcnt",
                CgroupVersion::V2 => "memory.events",
            };
            events.file = Reread::open(&dir.join(name)).ok();
            // The first read also clears a pending notification.
            events.sample(now_ns, self.window);
        }
        if self.memory.version == CgroupVersion::V1 && domain.thresholds.is_none() {
            domain.thresholds = self
                .cgroups
                .get(&domain.path)
                .and_then(|watched| watched.usage.as_ref())
                .and_then(|usage| register_thresholds(&dir, usage, domain.limit_bytes).ok());
        }
    }
}

fn usage_file(memory: &MemoryHierarchy) -> &'static str {
    match memory.version {
        CgroupVersion::V1 => "memory.usage_in_bytes",
        CgroupVersion::V2 => "memory.current",
    }
}

/// Registers usage thresholds on a v1 cgroup: its `cgroup.event_control` takes
/// `<eventfd> <fd of memory.usage_in_bytes> <bytes>`, and the eventfd is signalled whenever
/// usage crosses one, up or down. Closing the eventfd unregisters them.
fn register_thresholds(dir: &Path, usage: &Reread, limit_bytes: u64) -> io::Result<File> {
    let eventfd = files::eventfd()?;
    for percent in THRESHOLDS_PERCENT {
        let line = format!(
            "{} {} {}",
            eventfd.as_raw_fd(),
            usage.file().as_raw_fd(),
            limit_bytes / 100 * percent
        );
        std::fs::write(dir.join("cgroup.event_control"), line)?;
    }
    Ok(eventfd)
}
