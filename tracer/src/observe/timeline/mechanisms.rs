//! What this host offers the recorder, for `oomtrace check`: the same files `run` opens, opened
//! once and closed.

use std::path::Path;

use super::psi;
use super::sampler::{
    FAST_INTERVAL, HOST_PRESSURE, SLOW_INTERVAL, STEADY_INTERVAL, THRESHOLDS_PERCENT, WARM_PERCENT,
};
use crate::observe::cgroupfs::{CgroupVersion, MemoryHierarchy};

pub(crate) struct Mechanisms {
    /// A trigger on the host's memory pressure: what wakes the recorder when memory runs short.
    pub pressure_trigger: Result<(), String>,
    /// The memory controller's version, and whether its limits notify.
    pub limits: Option<(CgroupVersion, bool)>,
    /// New cgroups seen as they appear.
    pub inotify: Result<(), String>,
}

/// Opens what the recorder would, and closes it.
pub(crate) fn mechanisms(memory: Option<&MemoryHierarchy>) -> Mechanisms {
    let pressure_trigger = psi::trigger(Path::new(HOST_PRESSURE))
        .map(drop)
        .map_err(|err| format!("no {HOST_PRESSURE} trigger: {err}"));
    let limits = memory.map(|memory| {
        let notifies = match memory.version {
            CgroupVersion::V1 => memory.root.join("cgroup.event_control").exists(),
            // memory.events is in every cgroup but the root, and notifies on change.
            CgroupVersion::V2 => true,
        };
        (memory.version, notifies)
    });
    let inotify = super::files::Inotify::new()
        .map(drop)
        .map_err(|err| format!("no inotify: {err}"));
    Mechanisms {
        pressure_trigger,
        limits,
        inotify,
    }
}

impl Mechanisms {
    /// `sampled every 1 s, every 100 ms after a wake-up by: …`.
    pub(crate) fn describe(&self) -> String {
        let mut wakes = Vec::new();
        match &self.pressure_trigger {
            Ok(()) => wakes.push(format!("memory pressure ({HOST_PRESSURE} trigger)")),
            Err(why) => wakes.push(format!("not memory pressure ({why})")),
        }
        match self.limits {
            Some((CgroupVersion::V1, true)) => wakes.push(format!(
                "usage thresholds at {} % of each limit once it is {WARM_PERCENT} % full \
                 (cgroup v1 cgroup.event_control)",
                THRESHOLDS_PERCENT.map(|p| p.to_string()).join("/")
            )),
            Some((CgroupVersion::V1, false)) => {
                wakes.push("not usage thresholds (no cgroup.event_control)".to_owned())
            }
            Some((CgroupVersion::V2, _)) => wakes.push("memory.events notifications".to_owned()),
            None => wakes.push("no limit (no memory controller)".to_owned()),
        }
        wakes.push("fast growth".to_owned());
        match &self.inotify {
            Ok(()) => wakes.push("new cgroups and changed limits (inotify)".to_owned()),
            Err(why) => wakes.push(format!("not new cgroups ({why}); walked instead")),
        }
        format!(
            "sampled every {} s (every {} s while steady), every {} ms after a wake-up by {}",
            SLOW_INTERVAL.as_secs(),
            STEADY_INTERVAL.as_secs(),
            FAST_INTERVAL.as_millis(),
            wakes.join(", ")
        )
    }
}
