//! `explanation.timeline`: the recording of the domain's minute before the kill.

use serde::Serialize;

use super::names::{NamesJson, names_json};
use crate::attribute::Attribution;
use crate::observe::timeline::{CgroupTimeline, EventsAt, Pressure, Stall, Timeline, UsageAt};

#[derive(Serialize)]
pub struct TimelineJson<'a> {
    window_s: u64,
    /// Where the stalls were read: `/proc/pressure/memory`, or the domain's cgroup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pressure_source: Option<&'a str>,
    pressure: Vec<StallJson>,
    cgroups: Vec<CgroupTimelineJson<'a>>,
}

#[derive(Serialize)]
struct StallJson {
    offset_ms: i64,
    some_pct: f64,
    full_pct: f64,
}

#[derive(Serialize)]
struct CgroupTimelineJson<'a> {
    cgroup: PathJson<'a>,
    #[serde(flatten)]
    names: NamesJson<'a>,
    /// The domain's own limit, on the domain's entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    limit_bytes: Option<u64>,
    samples: Vec<UsageJson>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    events: Vec<EventsJson>,
}

#[derive(Serialize)]
struct PathJson<'a> {
    path: &'a str,
}

#[derive(Serialize)]
struct UsageJson {
    offset_ms: i64,
    usage_bytes: u64,
}

#[derive(Serialize)]
struct EventsJson {
    offset_ms: i64,
    high: u64,
    max: u64,
}

pub fn timeline_json<'a>(timeline: &'a Timeline, names: &'a [Attribution]) -> TimelineJson<'a> {
    let Timeline {
        window,
        pressure,
        cgroups,
    } = timeline;
    TimelineJson {
        window_s: window.as_secs(),
        pressure_source: pressure.as_ref().map(|pressure| pressure.source.as_str()),
        pressure: pressure
            .iter()
            .flat_map(|Pressure { intervals, .. }| intervals)
            .map(|stall| {
                let Stall {
                    offset_ms,
                    interval_us: _,
                    some_us,
                    full_us,
                } = *stall;
                StallJson {
                    offset_ms,
                    some_pct: stall.percent(some_us),
                    full_pct: stall.percent(full_us),
                }
            })
            .collect(),
        cgroups: cgroups
            .iter()
            .zip(names)
            .map(|(cgroup, names)| {
                let CgroupTimeline {
                    path,
                    limit_bytes,
                    samples,
                    events,
                } = cgroup;
                CgroupTimelineJson {
                    cgroup: PathJson { path },
                    names: names_json(Some(names), None),
                    limit_bytes: *limit_bytes,
                    samples: samples
                        .iter()
                        .map(
                            |&UsageAt {
                                 offset_ms,
                                 usage_bytes,
                             }| UsageJson {
                                offset_ms,
                                usage_bytes,
                            },
                        )
                        .collect(),
                    events: events
                        .iter()
                        .map(
                            |&EventsAt {
                                 offset_ms,
                                 high,
                                 max,
                             }| EventsJson {
                                offset_ms,
                                high,
                                max,
                            },
                        )
                        .collect(),
                }
            })
            .collect(),
    }
}
