//! The `explanation` of an `oom_kill`: the verdict, who held the memory at that moment, and
//! the patterns the kill completes.

use serde::Serialize;

use super::names::{NamesJson, names_json};
use crate::explain::Explanation;
use crate::explain::patterns::Flags;
use crate::observe::snapshot::{CgroupUsage, ProcessUsage, Scope, Snapshot};

#[derive(Serialize)]
pub struct ExplanationJson<'a> {
    verdict: &'a str,
    snapshot: SnapshotJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restart_loop: Option<CountJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recurring_trigger: Option<CountJson>,
}

#[derive(Serialize)]
struct SnapshotJson<'a> {
    /// `host`, or the domain's cgroup path.
    scope: &'a str,
    cgroups: Vec<CgroupUsageJson<'a>>,
    processes: Vec<ProcessUsageJson<'a>>,
    took_us: u128,
}

#[derive(Serialize)]
struct CgroupUsageJson<'a> {
    cgroup: PathJson<'a>,
    memory: UsageJson,
    #[serde(flatten)]
    names: NamesJson<'a>,
}

#[derive(Serialize)]
struct PathJson<'a> {
    path: &'a str,
}

#[derive(Serialize)]
struct UsageJson {
    usage_bytes: u64,
}

#[derive(Serialize)]
struct ProcessUsageJson<'a> {
    process: ProcessJson<'a>,
    #[serde(flatten)]
    names: NamesJson<'a>,
}

#[derive(Serialize)]
struct ProcessJson<'a> {
    pid: u32,
    executable: ExecutableJson<'a>,
    memory: UsageJson,
}

#[derive(Serialize)]
struct ExecutableJson<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct CountJson {
    count: u32,
    window_seconds: u64,
}

pub fn explanation_json(explanation: &Explanation) -> ExplanationJson<'_> {
    let Explanation {
        verdict,
        snapshot,
        cgroup_names,
        process_names,
        flags,
        window,
    } = explanation;
    let Snapshot {
        scope,
        // Written with the top-level `domain`.
        domain: _,
        cgroups,
        processes,
        took,
    } = snapshot;
    let Flags {
        restart_loop,
        recurring_trigger,
        restarts: _,
    } = *flags;
    let count = |count: u32| CountJson {
        count,
        window_seconds: window.as_secs(),
    };
    ExplanationJson {
        verdict,
        snapshot: SnapshotJson {
            scope: match scope {
                Scope::Host => "host",
                Scope::Cgroup(path) => path,
            },
            cgroups: cgroups
                .iter()
                .zip(cgroup_names)
                .map(
                    |(CgroupUsage { path, usage_bytes }, names)| CgroupUsageJson {
                        cgroup: PathJson { path },
                        memory: UsageJson {
                            usage_bytes: *usage_bytes,
                        },
                        names: names_json(Some(names), None),
                    },
                )
                .collect(),
            processes: processes
                .iter()
                .zip(process_names)
                .map(|(process, names)| {
                    let ProcessUsage {
                        pid,
                        comm,
                        rss_bytes,
                        cgroup: _,
                    } = process;
                    ProcessUsageJson {
                        process: ProcessJson {
                            pid: *pid,
                            executable: ExecutableJson { name: comm },
                            memory: UsageJson {
                                usage_bytes: *rss_bytes,
                            },
                        },
                        names: names_json(names.as_ref(), None),
                    }
                })
                .collect(),
            took_us: took.as_micros(),
        },
        restart_loop: restart_loop.map(count),
        recurring_trigger: recurring_trigger.map(count),
    }
}
