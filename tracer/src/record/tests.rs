//! The wire format, pinned: a golden file per record kind (`tracer/fixtures/records/`), built
//! from the pipeline's types as the agent builds it, and read back into the same value. A
//! change that shows up here is a change every consumer of the JSON sees: document it in
//! `docs/json-schema.md`, then regenerate with `OOMTRACE_BLESS=1 cargo test -p tracer record::`.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::agent::{AgentInfo, Totals};
use super::build::{self, Context};
use super::kill::{
    CgroupPath, CgroupUsage, Count, Explanation, ProcessUsage, Snapshot, Usage, UsingProcess,
};
use super::party::Executable;
use super::timeline::{
    CgroupTimeline, CompositionSample, LimitEvents, NotCovered, NotCoveredReason, Percent, Stall,
    Timeline, UsageSample,
};
use super::{Body, Record};
use crate::attribute::fixtures::{ID, in_web, web};
use crate::attribute::runtime::ComposeNames;
use crate::attribute::{AttributedKill, AttributedSigkill, Source};
use crate::capture::{CapturePlan, FunctionHook, TaskHook, Tier};
use crate::clock::KernelClock;
use crate::decode::tests::{
    as_bytes, context_end_record, context_record, layout_6_18, mark_victim_record,
    victim_task_record,
};
use crate::decode::{Part, decode};
use crate::incident::{Event, Joiner, OomIncident, OomKill};
use crate::observe::cgroupfs::CgroupMemory;
use crate::observe::snapshot::DomainMemory;
use crate::sink::Sink as _;
use crate::sink::json::JsonSink;

/// A record from its JSON, or a panic that says why not.
pub(crate) fn from_value(value: Value) -> Record {
    serde_json::from_value(value.clone())
        .unwrap_or_else(|err| panic!("not a record ({err}): {value:#}"))
}

/// 2026-11-30T10:00:00Z at kernel time 0: every golden time is this plus the kernel time.
fn clock() -> KernelClock {
    KernelClock::with_offset(1_796_032_800_000_000_000)
}

fn plan(tier: Tier) -> CapturePlan {
    CapturePlan {
        tier,
        reason: "test".into(),
        mark_victim_arg: (tier >= Tier::NoFunctionTracing)
            .then_some(crate::capture::prototype::TracepointArg::Task),
        task_hook: (tier >= Tier::NoFunctionTracing).then_some(TaskHook::TpBtf),
        function_hook: (tier == Tier::Full).then_some(FunctionHook::Fentry),
        layout: layout_6_18(),
        constraint_names: vec![(3, "memcg")],
        signal_layout: Some(crate::decode::signal::tests::layout_6_18()),
        signal_task_hook: Some(TaskHook::TpBtf),
    }
}

fn context(plan: &CapturePlan) -> Context<'_> {
    Context {
        plan,
        ringbuf_dropped_total: 3,
        clock: clock(),
    }
}

/// The events `parts` make, joined as the agent joins them.
fn joined(parts: Vec<Part>, expect_task_parts: bool, expect_incidents: bool) -> Vec<Event> {
    let now = std::time::Instant::now();
    let mut joiner = Joiner::new(expect_task_parts, expect_incidents);
    let mut events: Vec<Event> = parts
        .into_iter()
        .flat_map(|part| joiner.push(part, now))
        .collect();
    events.extend(joiner.flush());
    events
}

fn kill_of(events: &[Event]) -> OomKill {
    events
        .iter()
        .find_map(|event| match event {
            Event::Kill(kill) => Some((**kill).clone()),
            Event::Incident(_) | Event::Sigkill(_) => None,
        })
        .expect("the parts make a kill")
}

fn decoded(record: &impl Copy) -> Part {
    decode(&as_bytes(record), &layout_6_18()).unwrap()
}

/// Pid 42 (`hog`) killed in the full tier by its own allocation, at the limit of its memcg.
fn full_tier_events() -> Vec<Event> {
    joined(
        vec![
            decoded(&context_record(0, 42, 42, Some(4242))),
            decoded(&mark_victim_record(0, 42, 65_500)),
            decoded(&victim_task_record(0, 42)),
            decoded(&context_end_record(0, 42)),
        ],
        true,
        true,
    )
}

/// A record as `--format json` writes it: one line, parsed.
fn written(record: &Record) -> Value {
    let mut out = Vec::new();
    JsonSink::new(&mut out).write(record).unwrap();
    assert_eq!(out.last(), Some(&b'\n'), "one object per line");
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
    serde_json::from_slice(&out).unwrap()
}

/// `record` must serialize to the golden file `name`, and the file read back must be `record`.
fn golden(name: &str, record: &Record) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/records")
        .join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(record).unwrap() + "\n";
    if std::env::var_os("OOMTRACE_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    assert_eq!(
        text, expected,
        "the `{name}` record changed; if that is meant, document it in docs/json-schema.md and \
         run OOMTRACE_BLESS=1 cargo test -p tracer record::"
    );
    let read_back: Record = serde_json::from_str(&expected).unwrap();
    assert_eq!(&read_back, record, "{name} does not read back as written");
    // What a consumer of the JSON Lines sees is the same object.
    assert_eq!(
        written(record),
        serde_json::from_str::<Value>(&expected).unwrap()
    );
}

/// The full tier's kill of a container's child at its limit, explained.
fn full_tier_kill() -> Record {
    let plan = plan(Tier::Full);
    let mut kill = in_web(kill_of(&full_tier_events()));
    // Run by docker-compose, with `restart: always`, restarted twice before this kill.
    let victim = kill.victim.as_mut().unwrap();
    let mut meta = (**victim.container.as_ref().unwrap()).clone();
    meta.restart_policy = Some("always".into());
    meta.restart_count = Some(2);
    meta.compose = ComposeNames {
        project: Some("shop".into()),
        service: Some("web".into()),
        number: Some(1),
    };
    victim.container = Some(std::sync::Arc::new(meta));
    let explanation = Explanation {
        verdict: "Container web (podman, localhost/web:1, pod shop/web-0) was OOM-killed.".into(),
        snapshot: Snapshot {
            scope: crate::attribute::fixtures::container_path(),
            cgroups: vec![CgroupUsage {
                cgroup: CgroupPath {
                    path: crate::attribute::fixtures::container_path(),
                },
                memory: Usage {
                    usage_bytes: 50_000_000,
                    read_after_kill_bytes: None,
                },
                names: build::names(Some(&web(Source::Cache)), None),
            }],
            processes: vec![ProcessUsage {
                process: UsingProcess {
                    pid: 42,
                    executable: Executable { name: "hog".into() },
                    // Gone by the read: its size at the kill, from the kernel.
                    memory: Usage {
                        usage_bytes: 48_000_000,
                        read_after_kill_bytes: Some(0),
                    },
                },
                names: build::names(Some(&web(Source::Cache)), None),
            }],
            processes_read: Some(3),
            processes_unread: Some(0),
            charged_to_scope_bytes: None,
            ktime_ns: Some(201_001),
            took_us: 180,
        },
        timeline: Some(Timeline {
            window_s: 60,
            pressure_source: Some("/proc/pressure/memory".into()),
            pressure: vec![Stall {
                offset_ms: -150,
                some_pct: Percent(41.5),
                full_pct: Percent(12.0),
            }],
            cgroups: vec![CgroupTimeline {
                cgroup: CgroupPath {
                    path: crate::attribute::fixtures::container_path(),
                },
                names: build::names(Some(&web(Source::Cache)), None),
                limit_bytes: Some(48 << 20),
                samples: vec![
                    UsageSample {
                        offset_ms: -12_000,
                        usage_bytes: 2_000_000,
                    },
                    UsageSample {
                        offset_ms: -1_100,
                        usage_bytes: 30_000_000,
                    },
                    UsageSample {
                        offset_ms: -150,
                        usage_bytes: 50_000_000,
                    },
                ],
                events: vec![LimitEvents {
                    offset_ms: -150,
                    high: 0,
                    max: 4,
                }],
                composition: vec![
                    CompositionSample {
                        offset_ms: -12_000,
                        anon_bytes: 1_000_000,
                        file_bytes: 500_000,
                        shmem_bytes: 300_000,
                        kernel_bytes: Some(200_000),
                    },
                    CompositionSample {
                        offset_ms: -1_100,
                        anon_bytes: 12_000_000,
                        file_bytes: 900_000,
                        shmem_bytes: 16_000_000,
                        kernel_bytes: Some(1_100_000),
                    },
                ],
            }],
            not_covered: vec![NotCovered {
                cgroup: CgroupPath {
                    path: "/docker/sidecar".into(),
                },
                reason: NotCoveredReason::CgroupBound,
                detail: "the recorder samples at most 4096 cgroups (--timeline-max-cgroups), \
                         the fullest limits first"
                    .into(),
            }],
        }),
        restart_loop: Some(Count {
            count: 3,
            window_seconds: 21_600,
        }),
        recurring_trigger: None,
    };
    let memory = DomainMemory::Cgroup(CgroupMemory {
        usage_bytes: Some(50_000_000),
        limit_bytes: Some(48 << 20),
        swap_max_bytes: None,
        memsw_limit_bytes: Some(48 << 20),
        events: vec![("oom_kill".into(), 3), ("under_oom".into(), 0)],
    });
    build::oom_kill(&kill, Some(explanation), Some(&memory), &context(&plan))
}

#[test]
fn oom_kill_golden() {
    golden("oom_kill", &full_tier_kill());
}

/// The same kill where the container's `/dev/shm` held most of its limit, as the kernel's
/// report of the kill said.
#[test]
fn oom_kill_with_its_composition_golden() {
    use crate::observe::composition as observed;
    use crate::observe::tmpfs;
    const MIB: u64 = 1 << 20;
    let composition = observed::Composition {
        source: observed::Source::KernelLog,
        kernel_log: observed::KernelLog::Report { seq: 13_913 },
        cgroup: Some(crate::attribute::fixtures::container_path()),
        usage_bytes: Some(48 * MIB),
        limit_bytes: Some(48 * MIB),
        parts: observed::Parts {
            anon: Some(13 * MIB),
            file: Some(MIB),
            file_active: Some(MIB / 2),
            file_inactive: Some(MIB / 2),
            file_dirty: Some(0),
            file_writeback: Some(0),
            file_mapped: Some(MIB),
            shmem: Some(33 * MIB),
            unevictable: Some(0),
            kernel: Some(MIB),
            slab_reclaimable: Some(MIB / 4),
            slab_unreclaimable: Some(MIB / 2),
            kernel_stack: Some(MIB / 8),
            page_tables: Some(MIB / 8),
            sock: Some(0),
            percpu: Some(0),
            vmalloc: Some(0),
            swap: Some(0),
        },
        processes: Some(observed::Processes {
            count: 2,
            resident_bytes: 14 * MIB,
            shmem_bytes: Some(0),
        }),
        reaped: None,
        victim_shmem_bytes: Some(0),
        tmpfs: Vec::new(),
        tmpfs_unknown: None,
    };
    let shm = tmpfs::TmpfsMount {
        mount_point: "/dev/shm".into(),
        kind: tmpfs::TmpfsKind::Shm,
        host_path: Some(format!(
            "/var/lib/containers/storage/overlay-containers/{}/userdata/shm",
            crate::attribute::fixtures::ID
        )),
        volume: None,
        used_bytes: Some(33 * MIB),
        size_bytes: Some(64 * MIB),
        outlives_container: false,
        owner: Some(crate::attribute::fixtures::container_path()),
    };
    let tmpfs = vec![build::tmpfs_mount(&shm, Some(web(Source::Cache)))];
    let record = build::with_composition(
        full_tier_kill(),
        Some(build::composition(&composition, tmpfs)),
    );
    golden("oom_kill_tmpfs", &record);
}

/// A Kubernetes container's main process killed at its pod's limit, named by the CRI: the
/// `k8s.*` names, the container's restart count, and a domain that is the pod itself.
#[test]
fn oom_kill_in_a_pod_golden() {
    use crate::attribute::fixtures::{CRI_ID, in_pod, in_worker, pod_path};
    let plan = plan(Tier::Full);
    let mut oom = kill_of(&full_tier_events());
    // The kernel's paths, as the kubelet's cgroupfs driver lays them out.
    let container = format!("{}/{CRI_ID}", pod_path());
    for memcg in [&mut oom.victim.memcg, &mut oom.trigger.memcg] {
        if let Some(memcg) = memcg.as_mut() {
            memcg.path = container.clone();
        }
    }
    if let Some(incident) = oom.incident.as_mut() {
        let incident = std::sync::Arc::make_mut(incident);
        if let crate::decode::Domain::Cgroup(cgroup) = &mut incident.entry.domain {
            cgroup.path = pod_path();
        }
    }
    let kill = in_worker(oom, in_pod(&pod_path(), None), 256 << 20);
    let record = build::oom_kill(&kill, None, None, &context(&plan));
    golden("oom_kill_k8s", &record);
    let value = written(&record);
    assert_eq!(value["victim"]["k8s"]["container"]["restart_count"], 3);
    assert_eq!(value["domain"]["k8s"]["pod"]["name"], "ledger-api-7f9c");
    assert!(
        value["domain"].get("container").is_none(),
        "a pod's sandbox is no container: {value:#}"
    );
}

#[test]
fn oom_mark_exiting_golden() {
    let plan = plan(Tier::Full);
    // The victim is marked with no invocation open: an exiting task given reserves.
    let events = joined(
        vec![
            decoded(&mark_victim_record(0, 42, 65_500)),
            decoded(&victim_task_record(0, 42)),
        ],
        true,
        true,
    );
    let kill = kill_of(&events);
    assert!(kill.marked_without_kill);
    let record = build::oom_kill(
        &AttributedKill::unattributed(kill),
        None,
        None,
        &context(&plan),
    );
    assert!(matches!(record.body, Body::OomMarkExiting(_)));
    golden("oom_mark_exiting", &record);
}

#[test]
fn oom_incident_golden() {
    let plan = plan(Tier::Full);
    let incident: OomIncident = full_tier_events()
        .into_iter()
        .find_map(|event| match event {
            Event::Incident(incident) => Some(incident),
            Event::Kill(_) | Event::Sigkill(_) => None,
        })
        .expect("the end closes the incident");
    golden(
        "oom_incident",
        &build::oom_incident(&incident, &context(&plan)),
    );
}

#[test]
fn sigkill_golden() {
    let plan = plan(Tier::NoFunctionTracing);
    let attributed = AttributedSigkill {
        sigkill: crate::incident::fixtures::user_sigkill(),
        target: Some(web(Source::Cache)),
        sender: Some(crate::attribute::Attribution {
            warning: Some(crate::attribute::AttributionWarning {
                reason: crate::attribute::FailureReason::UnrecognisedPath,
                message: "the cgroup path matches no known container, pod or service layout".into(),
            }),
            ..crate::attribute::Attribution::from_path("/process_api/2ca228413268f8178a")
        }),
    };
    golden("sigkill", &build::sigkill(&attributed, &context(&plan)));
}

/// A SIGKILL whose sender's `/proc/<pid>/cgroup` did not answer in time: written without its
/// sender's cgroups, and saying so.
#[test]
fn sigkill_cut_golden() {
    let plan = plan(Tier::TracepointOnly);
    let attributed = AttributedSigkill {
        sigkill: crate::incident::fixtures::user_sigkill(),
        target: Some(web(Source::Cache)),
        sender: None,
    };
    let cut = crate::record::Cut {
        reason: crate::record::CutReason::NoAnswer,
        parts: vec![crate::record::ObservedPart::PartyCgroups],
        waiting_on: Some(crate::record::ObservedPart::PartyCgroups),
        budget_ms: 1000,
    };
    assert_eq!(
        cut.describe(),
        "without party_cgroups: its party_cgroups read did not answer within 1000 ms"
    );
    golden(
        "sigkill_cut",
        &build::with_cut(build::sigkill(&attributed, &context(&plan)), Some(cut)),
    );
}

/// A Compose parent at 93 % of its 256 MiB, its `builder` child growing fastest.
pub(crate) fn pressure_warning() -> crate::observe::timeline::warning::PressureWarning {
    use crate::observe::timeline::warning::{
        Grower, Growth, Percent, PressureWarning, Reason, StallShare, Thresholds,
    };
    const MIB: u64 = 1 << 20;
    PressureWarning {
        at_ns: 7_000_000_000,
        reason: Reason::Usage,
        thresholds: Thresholds {
            usage: Percent(90),
            stall: Percent(10),
        },
        domain: "/shop".into(),
        limit_bytes: 256 * MIB,
        usage_bytes: 250 * MIB,
        working_set_bytes: Some(238 * MIB),
        growth: Some(Growth {
            bytes_per_second: 12 * MIB as i64,
            over_ms: 10_000,
        }),
        stall: Some(StallShare {
            some_percent: 3.5,
            full_percent: 0.0,
            over_ms: 1000,
        }),
        grower: Some(Grower {
            path: web(Source::Cache).path,
            usage_bytes: 180 * MIB,
            growth: Growth {
                bytes_per_second: 12 * MIB as i64 + 4096,
                over_ms: 9_900,
            },
        }),
    }
}

#[test]
fn memory_pressure_golden() {
    let domain = crate::attribute::Attribution::from_path("/shop");
    golden(
        "memory_pressure",
        &build::memory_pressure(
            &pressure_warning(),
            Some(&domain),
            Some(&web(Source::Cache)),
            clock(),
        ),
    );
}

#[test]
fn agent_started_golden() {
    let plan = plan(Tier::NoFunctionTracing);
    let agent = AgentInfo {
        version: "0.1.0".into(),
        pid: 4321,
    };
    let coverage = crate::observe::timeline::Coverage {
        limits: 312,
        domains: 312,
        watched: 320,
        bound: 4096,
        not_covered: 0,
        first_not_covered: None,
        beyond: None,
        host_trigger: Ok(()),
        cgroup_triggers: Some(Err("refused".into())),
        armed: 3,
        triggers: 0,
        thresholds: 3,
        events: 0,
        inotify: Ok(()),
        version: Some(crate::observe::cgroupfs::CgroupVersion::V1),
    };
    golden(
        "agent_started",
        &build::agent_started(
            &plan,
            clock().wall_time(5),
            agent,
            Some((&coverage, std::time::Duration::from_secs(60))),
        ),
    );
}

#[test]
fn agent_stopped_golden() {
    let totals = Totals {
        records: 12,
        oom_kills: 2,
        sigkills: 1,
        oom_sigkills: 2,
        decode_errors: 0,
        ringbuf_dropped_total: 0,
        history_write_errors: 0,
        sigkills_rate_limited: 40,
        observe_reads_given_up: 1,
    };
    golden(
        "agent_stopped",
        &build::agent_stopped(totals, clock().wall_time(9_000_000_000)),
    );
}

#[test]
fn kmsg_backfilled_kill_golden() {
    let kill = crate::kmsg::tests::kills(crate::kmsg::tests::LINUX_6_18).remove(0);
    golden(
        "oom_kill_kmsg",
        &crate::kmsg::backfill::record(&kill, &clock()),
    );
}

#[test]
fn the_schema_version_is_written_first_and_kind_second() {
    let text = serde_json::to_string(&full_tier_kill()).unwrap();
    assert!(
        text.starts_with(r#"{"schema_version":1,"kind":"oom_kill","time":""#),
        "{text}"
    );
}

/// A stored record's line says where it is stored, last; the stored record itself does not.
#[test]
fn a_stored_records_line_ends_with_its_place_in_the_history() {
    let mut record = full_tier_kill();
    let stored = serde_json::to_string(&record).unwrap();
    assert!(!stored.contains("\"history\""), "{stored}");
    record.history = Some(crate::record::HistoryRef {
        id: 7,
        source: "live".to_owned(),
        boot_id: "b".to_owned(),
    });
    let text = serde_json::to_string(&record).unwrap();
    assert!(
        text.ends_with(r#","history":{"id":7,"source":"live","boot_id":"b"}}"#),
        "{text}"
    );
    assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), record);
}

#[test]
fn a_record_with_fields_from_a_later_version_still_reads() {
    let mut value = written(&full_tier_kill());
    value["victim"]["container"]["restart_count"] = json!(4);
    value["a_new_object"] = json!({"x": 1});
    let record = from_value(value);
    assert!(matches!(record.body, Body::OomKill(_)));
}

// What the JSON sink wrote before the record model, field by field.

#[test]
fn a_joined_kill_has_both_parties_and_their_cgroups() {
    let kill = kill_of(&joined(
        vec![
            decoded(&mark_victim_record(0, 42, 1000)),
            decoded(&victim_task_record(0, 42)),
        ],
        true,
        false,
    ));
    let plan = plan(Tier::NoFunctionTracing);
    let record = written(&build::oom_kill(
        &AttributedKill::unattributed(kill),
        None,
        None,
        &context(&plan),
    ));
    assert_eq!(record["schema_version"], super::SCHEMA_VERSION);
    assert_eq!(record["kind"], "oom_kill");
    assert_eq!(
        record["capture"],
        json!({"tier": "no-function-tracing", "parts": ["tracepoint", "task"],
               "ringbuf_dropped_total": 3})
    );
    let victim = &record["victim"];
    assert_eq!(victim["process"]["pid"], 42);
    assert_eq!(victim["thread"]["id"], 42);
    assert_eq!(victim["process"]["executable"]["name"], "hog");
    assert_eq!(victim["process"]["memory"]["anon_rss_bytes"], 1000 * 1024);
    assert_eq!(victim["process"]["memory"]["usage_bytes"], 1000 * 1024);
    assert_eq!(
        victim["memcg"],
        json!({"id": 4242, "path": "/oomtrace-test-1"})
    );
    assert_eq!(victim["cgroup"], json!({"id": 1, "path": "/"}));
    assert_eq!(record["trigger"]["memcg"]["id"], 4242);
    assert!(record["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn tracepoint_only_leaves_unknowns_out() {
    let kill = kill_of(&joined(
        vec![decoded(&mark_victim_record(0, 42, 1000))],
        false,
        false,
    ));
    let plan = plan(Tier::TracepointOnly);
    let record = written(&build::oom_kill(
        &AttributedKill::unattributed(kill),
        None,
        None,
        &context(&plan),
    ));
    assert_eq!(record["capture"]["parts"], json!(["tracepoint"]));
    assert_eq!(record["victim"].get("cgroup"), None);
    assert_eq!(record["victim"].get("memcg"), None);
    // The trigger's cgroup2 id comes from a helper; its path needs BTF.
    assert_eq!(record["trigger"]["cgroup"], json!({"id": 1}));
}

#[test]
fn a_kill_in_a_container_names_it_and_the_limit_hit() {
    let kill = kill_of(&joined(
        vec![
            decoded(&mark_victim_record(0, 42, 1000)),
            decoded(&victim_task_record(0, 42)),
        ],
        true,
        false,
    ));
    let plan = plan(Tier::NoFunctionTracing);
    let record = written(&build::oom_kill(&in_web(kill), None, None, &context(&plan)));
    assert_eq!(
        record["victim"]["container"],
        json!({"id": ID, "name": "web", "image": {"name": "localhost/web:1"},
               "runtime": "podman", "main_process": false,
               "memory_limit_bytes": 48 << 20})
    );
    assert_eq!(
        record["victim"]["k8s"],
        json!({"pod": {"name": "web-0"}, "namespace": {"name": "shop"}})
    );
    assert_eq!(
        record["victim"]["attribution"],
        json!({"source": "cache", "path": format!("/libpod_parent/libpod-{ID}")})
    );
    assert_eq!(record["trigger"]["container"]["name"], "web");
    assert_eq!(record["trigger"]["container"].get("main_process"), None);
    let domain = &record["domain"];
    assert_eq!(domain["kind"], "cgroup");
    assert_eq!(domain["inferred"], true);
    assert_eq!(domain["basis"], "counters");
    assert_eq!(domain["memory"]["limit_bytes"], 48 << 20);
    assert_eq!(domain["container"]["name"], "web");
}

#[test]
fn an_unknown_domain_still_says_so() {
    let kill = kill_of(&joined(
        vec![decoded(&mark_victim_record(0, 42, 1000))],
        false,
        false,
    ));
    let plan = plan(Tier::TracepointOnly);
    let record = written(&build::oom_kill(
        &AttributedKill::unattributed(kill),
        None,
        None,
        &context(&plan),
    ));
    assert_eq!(
        record["domain"],
        json!({"kind": "unknown", "inferred": true, "basis": "none"})
    );
    assert_eq!(record["victim"].get("container"), None);
    assert_eq!(record["victim"].get("attribution"), None);
}

#[test]
fn a_sigkill_names_target_sender_and_kind() {
    let attributed = AttributedSigkill {
        sigkill: crate::incident::fixtures::user_sigkill(),
        target: Some(web(Source::Cache)),
        sender: None,
    };
    let plan = plan(Tier::Full);
    let record = written(&build::sigkill(&attributed, &context(&plan)));
    assert_eq!(record["kind"], "sigkill");
    assert_eq!(record["capture"]["parts"], json!(["signal"]));
    let target = &record["target"];
    assert_eq!(target["process"]["pid"], 123);
    assert_eq!(target["thread"]["id"], 123);
    assert_eq!(target["process"]["executable"]["name"], "postgres");
    assert_eq!(target["container"]["name"], "web");
    assert_eq!(target["attribution"]["source"], "cache");
    assert_eq!(
        record["sender"],
        json!({"kind": "process",
               "process": {"pid": 456, "executable": {"name": "bash"}},
               "thread": {"id": 456},
               "cgroup": {"id": 77, "path": "/user.slice/session-1.scope"}})
    );
    assert_eq!(
        record["signal"],
        json!({"code": 0, "group": true, "result": "delivered"})
    );
}

/// The examples in docs/json-schema.md are lines earlier versions wrote: each reads back as a
/// record and writes out again byte for byte, field order included.
#[test]
fn the_documented_examples_read_back_and_write_out_unchanged() {
    let schema = include_str!("../../../docs/json-schema.md");
    let examples: Vec<&str> = schema
        .lines()
        .filter(|line| line.starts_with(r#"{"schema_version":"#))
        .collect();
    assert!(examples.len() >= 2, "the schema has examples");
    for example in examples {
        let record: Record =
            serde_json::from_str(example).unwrap_or_else(|err| panic!("{err}: {example}"));
        assert_eq!(serde_json::to_string(&record).unwrap(), example);
    }
}
