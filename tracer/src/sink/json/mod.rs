//! JSON Lines: one object per line on stdout, schema in `docs/json-schema.md`.
//!
//! Field names follow OpenTelemetry's semantic conventions where one fits: nested objects here
//! flatten with dots into the OTel attribute (`victim.process.pid` → `process.pid`).

mod explanation;
pub(crate) mod names;

use std::io::Write;

use serde::Serialize;

use self::explanation::{ExplanationJson, explanation_json};
use self::names::{DomainJson, NamesJson, domain_json, names_json};
use crate::attribute::{AttributedKill, AttributedSigkill};

use super::{Context, Sink, Totals};
use crate::badness::Badness;
use crate::capture::{CapturePlan, TaskHook};
use crate::decode::mark_victim::MarkVictimFields;
use crate::decode::{CgroupRef, ContextPart, Domain, SigkillPart, Task};
use crate::incident::{IncidentContext, OomIncident, OomKill, Parts, Sigkill, Trigger, Victim};

/// Bump on any change a consumer could notice; document it in `docs/json-schema.md`.
pub const SCHEMA_VERSION: u32 = 1;

pub struct JsonSink<W: Write> {
    out: W,
}

impl<W: Write> JsonSink<W> {
    pub fn new(out: W) -> Self {
        JsonSink { out }
    }

    fn write(&mut self, record: &impl Serialize) -> std::io::Result<()> {
        serde_json::to_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        // Each line is a complete event: consumers read it as it happens, not on exit.
        self.out.flush()
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn started(&mut self, context: &Context<'_>) -> std::io::Result<()> {
        let plan = context.plan;
        self.write(&Envelope {
            schema_version: SCHEMA_VERSION,
            kind: "agent_started",
            time: jiff::Timestamp::now().to_string(),
            body: Started {
                capture: CaptureInfo {
                    tier: plan.tier.as_str(),
                    reason: &plan.reason,
                    mark_victim_argument: plan.mark_victim_arg.as_ref().map(|arg| arg.kind()),
                    task_hook: plan.task_hook.map(task_hook_name),
                    function_hook: plan.function_hook.map(|hook| hook.as_str()),
                    tracepoint_fields: plan.layout.fields_present(),
                    sigkill: plan.signal_layout.is_some(),
                    sigkill_task_hook: plan.signal_task_hook.map(task_hook_name),
                },
                agent: AgentInfo {
                    version: env!("CARGO_PKG_VERSION"),
                    pid: std::process::id(),
                },
            },
        })
    }

    fn oom_kill(&mut self, kill: &AttributedKill, context: &Context<'_>) -> std::io::Result<()> {
        self.write(&oom_kill_record(kill, context))
    }

    fn oom_incident(
        &mut self,
        incident: &OomIncident,
        context: &Context<'_>,
    ) -> std::io::Result<()> {
        let OomIncident {
            context: incident_context,
            victims,
            ended,
        } = incident;
        self.write(&Envelope {
            schema_version: SCHEMA_VERSION,
            kind: "oom_incident",
            time: context
                .clock
                .wall_time(incident_context.entry.ktime_ns)
                .to_string(),
            body: IncidentRecord {
                ktime_ns: incident_context.entry.ktime_ns,
                capture: KillCapture {
                    tier: context.plan.tier.as_str(),
                    parts: vec!["function"],
                    ringbuf_dropped_total: context.ringbuf_dropped_total,
                },
                incident: incident_json(incident_context, context.plan),
                victims: victims
                    .iter()
                    .map(|pid| VictimRef {
                        process: PidJson { pid: *pid },
                    })
                    .collect(),
                ended: *ended,
                trigger: task_json(&incident_context.entry.trigger),
            },
        })
    }

    fn sigkill(
        &mut self,
        sigkill: &AttributedSigkill,
        context: &Context<'_>,
    ) -> std::io::Result<()> {
        self.write(&sigkill_record(sigkill, context))
    }

    fn stopped(&mut self, totals: &Totals, context: &Context<'_>) -> std::io::Result<()> {
        let Totals {
            records,
            oom_kills,
            sigkills,
            oom_sigkills,
            decode_errors,
            history_write_errors,
        } = *totals;
        self.write(&Envelope {
            schema_version: SCHEMA_VERSION,
            kind: "agent_stopped",
            time: jiff::Timestamp::now().to_string(),
            body: Stopped {
                records,
                oom_kills,
                sigkills,
                oom_sigkills,
                decode_errors,
                ringbuf_dropped_total: context.ringbuf_dropped_total,
                history_write_errors,
            },
        })
    }
}

/// The `oom_kill` (or `oom_mark_exiting`) record of a kill: what this sink writes, and what the
/// history stores.
pub fn oom_kill_record<'a>(kill: &'a AttributedKill, context: &Context<'_>) -> impl Serialize + 'a {
    let AttributedKill {
        kill,
        victim: victim_names,
        trigger: trigger_names,
        main_process,
        domain,
        explanation,
    } = kill;
    let OomKill {
        ktime_ns,
        victim,
        trigger,
        parts,
        incident,
        marked_without_kill,
        badness,
        // Read into `main_process`, which the victim's names carry.
        namespace_init: _,
    } = &**kill;
    let Parts {
        tracepoint,
        task,
        chosen,
        sigkill,
    } = parts;
    let parts: Vec<&str> = [
        (*tracepoint, "tracepoint"),
        (*task, "task"),
        (*chosen, "chosen"),
        (*sigkill, "sigkill"),
    ]
    .into_iter()
    .filter_map(|(present, name)| present.then_some(name))
    .collect();
    Envelope {
        schema_version: SCHEMA_VERSION,
        // The same shape either way; the kind tells a consumer not to count it as a kill.
        kind: if *marked_without_kill {
            "oom_mark_exiting"
        } else {
            "oom_kill"
        },
        time: context.clock.wall_time(*ktime_ns).to_string(),
        body: Kill {
            ktime_ns: *ktime_ns,
            capture: KillCapture {
                tier: context.plan.tier.as_str(),
                parts,
                ringbuf_dropped_total: context.ringbuf_dropped_total,
            },
            victim: PartyJson {
                badness: badness.map(badness_json),
                names: names_json(victim_names.as_ref(), *main_process),
                ..victim_json(victim)
            },
            trigger: PartyJson {
                names: names_json(trigger_names.as_ref(), None),
                ..trigger_json(trigger)
            },
            domain: domain_json(domain, explanation.as_deref().map(|e| &e.snapshot.domain)),
            explanation: explanation.as_deref().map(explanation_json),
            incident: incident
                .as_deref()
                .map(|incident| incident_json(incident, context.plan)),
        },
    }
}

/// The `sigkill` record: what this sink writes, and what the history stores.
pub fn sigkill_record<'a>(
    sigkill: &'a AttributedSigkill,
    context: &Context<'_>,
) -> impl Serialize + 'a {
    let AttributedSigkill {
        sigkill,
        target: target_names,
        sender: sender_names,
    } = sigkill;
    let Sigkill {
        part,
        target_task,
        // Through `target_tgid`.
        target_proc: _,
        sender_kind,
    } = &**sigkill;
    let SigkillPart {
        cpu: _,
        ktime_ns,
        target,
        sender,
        sender_cgroup_id,
        sender_cgroup,
        sender_memcg,
    } = part;
    let tgid = sigkill.target_tgid();
    let sender_cgroup = match sender_cgroup {
        Some(cgroup) => cgroup_json(cgroup),
        None => CgroupJson {
            id: *sender_cgroup_id,
            path: None,
            truncated: false,
            incomplete: false,
        },
    };
    Envelope {
        schema_version: SCHEMA_VERSION,
        kind: "sigkill",
        time: context.clock.wall_time(*ktime_ns).to_string(),
        body: SigkillJson {
            ktime_ns: *ktime_ns,
            capture: KillCapture {
                tier: context.plan.tier.as_str(),
                parts: vec!["signal"],
                ringbuf_dropped_total: context.ringbuf_dropped_total,
            },
            target: PartyJson {
                process: ProcessJson {
                    pid: Some(tgid.unwrap_or(target.pid)),
                    executable: target.comm.as_deref().map(|name| ExecutableJson { name }),
                    real_user: None,
                    oom_score_adj: None,
                    memory: None,
                },
                thread: ThreadJson { id: target.pid },
                cgroup: target_task
                    .as_ref()
                    .and_then(|task| task.target_cgroup.as_ref())
                    .map(cgroup_json),
                memcg: target_task
                    .as_ref()
                    .and_then(|task| task.target_memcg.as_ref())
                    .map(cgroup_json),
                badness: None,
                names: names_json(target_names.as_ref(), None),
            },
            sender: SenderJson {
                kind: sender_kind.as_str(),
                party: PartyJson {
                    cgroup: Some(sender_cgroup),
                    memcg: sender_memcg.as_ref().map(cgroup_json),
                    names: names_json(sender_names.as_ref(), None),
                    ..task_json(sender)
                },
            },
            signal: SignalJson {
                code: target.code,
                group: target.group.map(|group| group != 0),
                result: target.result.map(signal_result),
            },
        },
    }
}

fn task_hook_name(hook: TaskHook) -> &'static str {
    match hook {
        TaskHook::TpBtf => "tp_btf",
        TaskHook::RawTp => "raw_tp",
    }
}

#[derive(Serialize)]
struct Envelope<B> {
    schema_version: u32,
    kind: &'static str,
    /// RFC 3339, UTC.
    time: String,
    #[serde(flatten)]
    body: B,
}

#[derive(Serialize)]
struct Started<'a> {
    capture: CaptureInfo<'a>,
    agent: AgentInfo,
}

#[derive(Serialize)]
struct CaptureInfo<'a> {
    tier: &'static str,
    reason: &'a str,
    /// What `mark_victim`'s BTF prototype passes: `task`, or `int` (the pid, before 6.9).
    mark_victim_argument: Option<&'static str>,
    /// The program that reads the victim's task at `mark_victim`: none where it passes a pid.
    task_hook: Option<&'static str>,
    function_hook: Option<&'static str>,
    tracepoint_fields: Vec<&'static str>,
    /// Whether every SIGKILL is traced (`signal:signal_generate` attached).
    sigkill: bool,
    /// `tp_btf` or `raw_tp`: the program that reads a SIGKILL target's cgroups in the kernel.
    sigkill_task_hook: Option<&'static str>,
}

#[derive(Serialize)]
struct AgentInfo {
    version: &'static str,
    pid: u32,
}

#[derive(Serialize)]
struct Stopped {
    records: u64,
    oom_kills: u64,
    sigkills: u64,
    oom_sigkills: u64,
    decode_errors: u64,
    ringbuf_dropped_total: u64,
    /// Events the history could not store (disk full, read-only, …); 0 with `--no-history`.
    history_write_errors: u64,
}

#[derive(Serialize)]
struct Kill<'a> {
    ktime_ns: u64,
    capture: KillCapture,
    victim: PartyJson<'a>,
    trigger: PartyJson<'a>,
    /// Whose limit was hit, known or inferred in every tier.
    domain: DomainJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    explanation: Option<ExplanationJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    incident: Option<IncidentJson<'a>>,
}

#[derive(Serialize)]
struct SigkillJson<'a> {
    ktime_ns: u64,
    capture: KillCapture,
    target: PartyJson<'a>,
    sender: SenderJson<'a>,
    signal: SignalJson,
}

#[derive(Serialize)]
struct SenderJson<'a> {
    /// `kernel` (a positive `si_code`, e.g. `SI_KERNEL`) or `process` (`kill()`, `tgkill()`).
    kind: &'static str,
    #[serde(flatten)]
    party: PartyJson<'a>,
}

#[derive(Serialize)]
struct SignalJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<i32>,
    /// Sent to the whole thread group rather than one thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    group: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'static str>,
}

/// `enum trace_signal_result`.
fn signal_result(result: i32) -> &'static str {
    match result {
        0 => "delivered",
        1 => "ignored",
        2 => "already_pending",
        3 => "overflow_fail",
        4 => "lose_info",
        _ => "other",
    }
}

#[derive(Serialize)]
struct IncidentRecord<'a> {
    ktime_ns: u64,
    capture: KillCapture,
    incident: IncidentJson<'a>,
    victims: Vec<VictimRef>,
    /// False when the end of the invocation was not seen (its record was lost).
    ended: bool,
    trigger: PartyJson<'a>,
}

#[derive(Serialize)]
struct VictimRef {
    process: PidJson,
}

#[derive(Serialize)]
struct PidJson {
    pid: u32,
}

/// What `oom_kill_process` knew: the invocation every victim of it shares.
#[derive(Serialize)]
struct IncidentJson<'a> {
    id: &'a str,
    domain: IncidentDomainJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    badness: Option<BadnessJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    constraint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    order: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gfp_mask: Option<String>,
    message: &'a str,
}

#[derive(Serialize)]
struct IncidentDomainJson<'a> {
    /// `cgroup`: a memory cgroup's limit was hit; `host`: no limit, the host ran out.
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<CgroupJson<'a>>,
}

#[derive(Serialize)]
struct BadnessJson {
    /// rss + swap + page tables (in pages) + oom_score_adj × (totalpages / 1000).
    points: i64,
    totalpages: u64,
    /// chosen_points × 1000 / totalpages, as `oom_score` in /proc and the kernel's task dump.
    score: i64,
    /// False: the kernel's own figure (`oc->chosen_points`).
    estimated: bool,
}

fn badness_json(badness: Badness) -> BadnessJson {
    BadnessJson {
        points: badness.points,
        totalpages: badness.totalpages,
        score: badness.score(),
        estimated: badness.estimated,
    }
}

#[derive(Serialize)]
struct KillCapture {
    tier: &'static str,
    parts: Vec<&'static str>,
    ringbuf_dropped_total: u64,
}

/// The victim or the trigger. Unknown fields are left out rather than null.
#[derive(Serialize)]
struct PartyJson<'a> {
    process: ProcessJson<'a>,
    thread: ThreadJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<CgroupJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memcg: Option<CgroupJson<'a>>,
    /// Victim only.
    #[serde(skip_serializing_if = "Option::is_none")]
    badness: Option<BadnessJson>,
    #[serde(flatten)]
    names: NamesJson<'a>,
}

#[derive(Serialize)]
struct ProcessJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    executable: Option<ExecutableJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    real_user: Option<UserJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    oom_score_adj: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<MemoryJson>,
}

#[derive(Serialize)]
struct ExecutableJson<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct UserJson {
    id: u32,
}

#[derive(Serialize)]
struct ThreadJson {
    id: u32,
}

/// Bytes, as OpenTelemetry's `process.memory.*` metrics count them.
#[derive(Serialize)]
struct MemoryJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    virtual_bytes: Option<u64>,
    /// anon + file + shmem RSS.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anon_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shmem_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    page_tables_bytes: Option<u64>,
}

#[derive(Serialize)]
struct CgroupJson<'a> {
    id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    incomplete: bool,
}

fn incident_json<'a>(incident: &'a IncidentContext, plan: &CapturePlan) -> IncidentJson<'a> {
    let IncidentContext { id, entry } = incident;
    let ContextPart {
        cpu: _,
        ktime_ns: _,
        trigger: _,
        chosen: _,
        control,
        domain,
        message,
    } = entry;
    let domain = match domain {
        Domain::Host => IncidentDomainJson {
            kind: "host",
            cgroup: None,
        },
        Domain::Cgroup(cgroup) => IncidentDomainJson {
            kind: "cgroup",
            cgroup: Some(cgroup_json(cgroup)),
        },
        Domain::Unknown => IncidentDomainJson {
            kind: "unknown",
            cgroup: None,
        },
    };
    IncidentJson {
        id,
        domain,
        badness: control.map(|control| badness_json(Badness::from_kernel(&control))),
        constraint: control.map(|control| {
            plan.constraint_name(control.constraint)
                .map_or_else(|| control.constraint.to_string(), str::to_owned)
        }),
        order: control.map(|control| control.order),
        gfp_mask: control.map(|control| format!("{:#x}", control.gfp_mask)),
        message,
    }
}

fn cgroup_json(cgroup: &CgroupRef) -> CgroupJson<'_> {
    let CgroupRef {
        id,
        path,
        truncated,
        incomplete,
    } = cgroup;
    CgroupJson {
        id: *id,
        path: Some(path),
        truncated: *truncated,
        incomplete: *incomplete,
    }
}

fn victim_json(victim: &Victim) -> PartyJson<'_> {
    let Victim {
        pid,
        tgid,
        comm,
        fields,
        cgroup,
        memcg,
    } = victim;
    let bytes = |kb: Option<u64>| kb.map(|kb| kb.saturating_mul(1024));
    // A pid-only tracepoint with no task read: no memory object rather than an empty one.
    let known = |fields: &&MarkVictimFields| {
        [
            fields.total_vm_kb,
            fields.anon_rss_kb,
            fields.file_rss_kb,
            fields.shmem_rss_kb,
            fields.pgtables_kb,
        ]
        .iter()
        .any(Option::is_some)
    };
    let memory = fields.as_ref().filter(known).map(|fields| MemoryJson {
        virtual_bytes: bytes(fields.total_vm_kb),
        usage_bytes: bytes(
            [fields.anon_rss_kb, fields.file_rss_kb, fields.shmem_rss_kb]
                .into_iter()
                .sum::<Option<u64>>(),
        ),
        anon_rss_bytes: bytes(fields.anon_rss_kb),
        file_rss_bytes: bytes(fields.file_rss_kb),
        shmem_rss_bytes: bytes(fields.shmem_rss_kb),
        page_tables_bytes: bytes(fields.pgtables_kb),
    });
    PartyJson {
        process: ProcessJson {
            pid: Some(tgid.unwrap_or(*pid)),
            executable: comm.as_deref().map(|name| ExecutableJson { name }),
            real_user: fields
                .as_ref()
                .and_then(|fields| fields.uid)
                .map(|id| UserJson { id }),
            oom_score_adj: fields.as_ref().and_then(|fields| fields.oom_score_adj),
            memory,
        },
        thread: ThreadJson { id: *pid },
        cgroup: cgroup.as_ref().map(cgroup_json),
        memcg: memcg.as_ref().map(cgroup_json),
        badness: None,
        names: NamesJson::default(),
    }
}

fn trigger_json(trigger: &Trigger) -> PartyJson<'_> {
    let Trigger {
        task,
        cgroup_id,
        cgroup,
        memcg,
    } = trigger;
    // Without BTF only the cgroup2 id is known, from a helper.
    let cgroup = match (cgroup, cgroup_id) {
        (Some(cgroup), _) => Some(cgroup_json(cgroup)),
        (None, Some(id)) => Some(CgroupJson {
            id: *id,
            path: None,
            truncated: false,
            incomplete: false,
        }),
        (None, None) => None,
    };
    PartyJson {
        cgroup,
        memcg: memcg.as_ref().map(cgroup_json),
        ..task_json(task)
    }
}

fn task_json(task: &Task) -> PartyJson<'_> {
    let Task { pid, tgid, comm } = task;
    PartyJson {
        process: ProcessJson {
            pid: Some(*tgid),
            executable: Some(ExecutableJson { name: comm }),
            real_user: None,
            oom_score_adj: None,
            memory: None,
        },
        thread: ThreadJson { id: *pid },
        cgroup: None,
        memcg: None,
        badness: None,
        names: NamesJson::default(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::capture::{CapturePlan, Tier};
    use crate::clock::KernelClock;
    use crate::decode::tests::{as_bytes, layout_6_18, mark_victim_record, victim_task_record};
    use crate::decode::{Part, decode};
    use crate::incident::Joiner;

    fn plan(tier: Tier) -> CapturePlan {
        CapturePlan {
            tier,
            reason: "test".into(),
            mark_victim_arg: Some(crate::capture::prototype::TracepointArg::Task),
            task_hook: (tier >= Tier::NoFunctionTracing).then_some(TaskHook::TpBtf),
            function_hook: (tier == Tier::Full).then_some(crate::capture::FunctionHook::Fentry),
            layout: layout_6_18(),
            constraint_names: vec![(3, "memcg")],
            signal_layout: Some(crate::decode::signal::tests::layout_6_18()),
            signal_task_hook: Some(TaskHook::TpBtf),
        }
    }

    fn kill(parts: Vec<Part>, expect_task_parts: bool) -> OomKill {
        let now = std::time::Instant::now();
        let mut joiner = Joiner::new(expect_task_parts, false);
        parts
            .into_iter()
            .flat_map(|part| joiner.push(part, now))
            .find_map(|event| match event {
                crate::incident::Event::Kill(kill) => Some(*kill),
                crate::incident::Event::Incident(_) | crate::incident::Event::Sigkill(_) => None,
            })
            .expect("the parts make a kill")
    }

    fn emit(kill: &OomKill, plan: &CapturePlan) -> Value {
        emit_attributed(&AttributedKill::unattributed(kill.clone()), plan)
    }

    fn emit_attributed(kill: &AttributedKill, plan: &CapturePlan) -> Value {
        let mut out = Vec::new();
        let context = Context {
            plan,
            ringbuf_dropped_total: 3,
            clock: KernelClock::now(),
        };
        JsonSink::new(&mut out).oom_kill(kill, &context).unwrap();
        assert_eq!(out.last(), Some(&b'\n'), "one object per line");
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn a_joined_kill_has_both_parties_and_their_cgroups() {
        let layout = layout_6_18();
        let kill = kill(
            vec![
                decode(&as_bytes(&mark_victim_record(0, 42, 1000)), &layout).unwrap(),
                decode(&as_bytes(&victim_task_record(0, 42)), &layout).unwrap(),
            ],
            true,
        );
        let record = emit(&kill, &plan(Tier::NoFunctionTracing));
        assert_eq!(record["schema_version"], SCHEMA_VERSION);
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
        let layout = layout_6_18();
        let kill = kill(
            vec![decode(&as_bytes(&mark_victim_record(0, 42, 1000)), &layout).unwrap()],
            false,
        );
        let record = emit(&kill, &plan(Tier::TracepointOnly));
        assert_eq!(record["capture"]["parts"], json!(["tracepoint"]));
        assert_eq!(record["victim"].get("cgroup"), None);
        assert_eq!(record["victim"].get("memcg"), None);
        // The trigger's cgroup2 id comes from a helper; its path needs BTF.
        assert_eq!(record["trigger"]["cgroup"], json!({"id": 1}));
    }

    #[test]
    fn a_kill_in_a_container_names_it_and_the_limit_hit() {
        let layout = layout_6_18();
        let kill = kill(
            vec![
                decode(&as_bytes(&mark_victim_record(0, 42, 1000)), &layout).unwrap(),
                decode(&as_bytes(&victim_task_record(0, 42)), &layout).unwrap(),
            ],
            true,
        );
        let record = emit_attributed(
            &crate::attribute::fixtures::in_web(kill),
            &plan(Tier::NoFunctionTracing),
        );
        let id = crate::attribute::fixtures::ID;
        assert_eq!(
            record["victim"]["container"],
            json!({"id": id, "name": "web", "image": {"name": "localhost/web:1"},
                   "runtime": "podman", "main_process": false,
                   "memory_limit_bytes": 48 << 20})
        );
        assert_eq!(
            record["victim"]["k8s"],
            json!({"pod": {"name": "web-0"}, "namespace": {"name": "shop"}})
        );
        assert_eq!(
            record["victim"]["attribution"],
            json!({"source": "cache", "path": format!("/libpod_parent/libpod-{id}")})
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
        let layout = layout_6_18();
        let kill = kill(
            vec![decode(&as_bytes(&mark_victim_record(0, 42, 1000)), &layout).unwrap()],
            false,
        );
        let record = emit(&kill, &plan(Tier::TracepointOnly));
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
            target: Some(crate::attribute::fixtures::web(
                crate::attribute::Source::Cache,
            )),
            sender: None,
        };
        let plan = plan(Tier::Full);
        let context = Context {
            plan: &plan,
            ringbuf_dropped_total: 0,
            clock: KernelClock::now(),
        };
        let mut out = Vec::new();
        JsonSink::new(&mut out)
            .sigkill(&attributed, &context)
            .unwrap();
        let record: Value = serde_json::from_slice(&out).unwrap();
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
}
