//! Records from the pipeline's types: the one place that decides what each record holds.
//! Exhaustive destructuring throughout: a field added to a pipeline type stops the build here
//! until it is written, or deliberately left out.

use std::collections::BTreeMap;
use std::time::Duration;

use super::agent::{AgentInfo, AgentStarted, AgentStopped, CaptureInfo, TimelineInfo, Totals};
use super::composition as record_composition;
use super::kill::{
    Basis, CapturePart, CgroupPath, Domain, DomainCgroup, DomainMemory, Explanation, Incident,
    IncidentDomain, KillCapture, OomIncidentRecord, OomKillRecord, Pid, VictimRef,
};
use super::party::{
    self, Attribution, Cgroup, Compose, Container, Executable, Image, K8s, K8sContainer, Memory,
    Named, Names, Party, Pod, Process, Systemd, Thread, User,
};
use super::pressure::{
    GrowthRate, MemoryPressureRecord, PressureDomain, PressureGrower, PressureMemory,
    PressureReason, PressureThresholds, StallRecord,
};
use super::sigkill::{Sender, SigkillRecord, Signal, SignalResult};
use super::{Body, Record};
use crate::attribute::runtime::{ComposeNames, ContainerMetadata, K8sNames, Role};
use crate::attribute::{AttributedKill, AttributedSigkill, DomainKind, ResolvedDomain};
use crate::badness::Badness;
use crate::capture::{CapturePlan, TaskHook};
use crate::cgroup_path::{ContainerRef, PathIdentity, PodRef};
use crate::clock::KernelClock;
use crate::decode::mark_victim::MarkVictimFields;
use crate::decode::{CgroupRef, ContextPart, SigkillPart, Task};
use crate::incident::{IncidentContext, OomIncident, OomKill, Parts, Sigkill, Trigger, Victim};
use crate::observe::cgroupfs::{CgroupMemory, CgroupVersion};
use crate::observe::composition as observed;
use crate::observe::snapshot::{DomainMemory as DomainMemoryRead, HostMemory};
use crate::observe::timeline::Coverage;
use crate::observe::timeline::warning::{
    Grower, Growth, PressureWarning, Reason, StallShare, Thresholds,
};

/// What every record of a running agent carries about the agent itself.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub plan: &'a CapturePlan,
    pub ringbuf_dropped_total: u64,
    pub clock: KernelClock,
}

impl Context<'_> {
    fn capture(&self, parts: Vec<CapturePart>) -> KillCapture {
        KillCapture {
            tier: Some(self.plan.tier),
            parts,
            ringbuf_dropped_total: Some(self.ringbuf_dropped_total),
        }
    }

    fn time(&self, ktime_ns: u64) -> String {
        self.clock.wall_time(ktime_ns).to_string()
    }
}

/// `agent_started`, written once the programs are attached.
pub(crate) fn agent_started(
    plan: &CapturePlan,
    time: jiff::Timestamp,
    agent: AgentInfo,
    timeline: Option<(&Coverage, Duration)>,
) -> Record {
    Record::new(Body::AgentStarted(AgentStarted {
        time: time.to_string(),
        capture: capture_info(plan),
        agent,
        timeline: timeline.map(|(coverage, window)| timeline_info(coverage, window)),
    }))
}

/// What was attached, and why that much: in `agent_started`, and in `oomtrace check`'s answer
/// of what `run` would attach.
pub(crate) fn capture_info(plan: &CapturePlan) -> CaptureInfo {
    let CapturePlan {
        tier,
        reason,
        mark_victim_arg,
        task_hook,
        function_hook,
        layout,
        constraint_names: _,
        signal_layout,
        signal_task_hook,
    } = plan;
    CaptureInfo {
        tier: *tier,
        reason: reason.clone(),
        mark_victim_argument: mark_victim_arg.as_ref().map(|arg| arg.kind().to_owned()),
        task_hook: task_hook.map(task_hook_name),
        function_hook: function_hook.map(|hook| hook.as_str().to_owned()),
        tracepoint_fields: layout
            .fields_present()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        sigkill: signal_layout.is_some(),
        sigkill_task_hook: signal_task_hook.map(task_hook_name),
    }
}

fn timeline_info(coverage: &Coverage, window: Duration) -> TimelineInfo {
    let Coverage {
        limits,
        domains,
        watched,
        bound,
        not_covered,
        first_not_covered: _,
        beyond: _,
        host_trigger,
        cgroup_triggers,
        armed: _,
        triggers: _,
        thresholds: _,
        events,
        inotify,
        version,
    } = coverage;
    let mut wake_ups = Vec::new();
    if host_trigger.is_ok() {
        wake_ups.push("host_pressure_trigger");
    }
    if cgroup_triggers.as_ref().is_some_and(Result::is_ok) {
        wake_ups.push("cgroup_pressure_triggers");
    }
    if *version == Some(CgroupVersion::V1) {
        wake_ups.push("usage_thresholds");
    }
    if *events > 0 {
        wake_ups.push("memory_events");
    }
    wake_ups.push("growth");
    TimelineInfo {
        window_s: window.as_secs(),
        limits: *limits as u64,
        limits_sampled: *domains as u64,
        cgroups_sampled: *watched as u64,
        max_cgroups: *bound as u64,
        not_covered: *not_covered as u64,
        wake_ups: wake_ups.into_iter().map(str::to_owned).collect(),
        follows: if inotify.is_ok() { "inotify" } else { "walk" }.to_owned(),
    }
}

/// `agent_stopped`, after everything captured was written.
pub(crate) fn agent_stopped(totals: Totals, time: jiff::Timestamp) -> Record {
    Record::new(Body::AgentStopped(AgentStopped {
        time: time.to_string(),
        totals,
    }))
}

fn task_hook_name(hook: TaskHook) -> String {
    match hook {
        TaskHook::TpBtf => "tp_btf",
        TaskHook::RawTp => "raw_tp",
    }
    .to_owned()
}

/// The `oom_kill` record of a kill (`oom_mark_exiting` when nothing was killed), with what the
/// explain stage said of it and the domain's memory as the observe stage read it.
pub(crate) fn oom_kill(
    kill: &AttributedKill,
    explanation: Option<Explanation>,
    domain_memory: Option<&DomainMemoryRead>,
    context: &Context<'_>,
) -> Record {
    let AttributedKill {
        kill,
        victim: victim_names,
        trigger: trigger_names,
        main_process,
        domain,
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
    } = *parts;
    let parts = [
        (tracepoint, CapturePart::Tracepoint),
        (task, CapturePart::Task),
        (chosen, CapturePart::Chosen),
        (sigkill, CapturePart::Sigkill),
    ]
    .into_iter()
    .filter_map(|(present, part)| present.then_some(part))
    .collect();
    let record = OomKillRecord {
        time: context.time(*ktime_ns),
        ktime_ns: *ktime_ns,
        capture: context.capture(parts),
        kmsg: None,
        victim: Party {
            badness: badness.map(badness_record),
            names: names(victim_names.as_ref(), *main_process),
            ..victim_party(victim)
        },
        trigger: Some(Party {
            names: names(trigger_names.as_ref(), None),
            ..trigger_party(trigger)
        }),
        domain: Some(resolved_domain(domain, domain_memory, None)),
        explanation,
        incident: incident
            .as_deref()
            .map(|incident| incident_record(incident, context.plan)),
        kmsg_oom_group: None,
        cut: None,
    };
    // The same shape either way; the kind tells a consumer not to count it as a kill.
    Record::new(if *marked_without_kill {
        Body::OomMarkExiting(record)
    } else {
        Body::OomKill(record)
    })
}

/// What filled the domain, into the `oom_kill` (or `oom_mark_exiting`) record of the kill.
pub(crate) fn with_composition(
    mut record: Record,
    composition: Option<record_composition::Composition>,
) -> Record {
    if let Body::OomKill(kill) | Body::OomMarkExiting(kill) = &mut record.body
        && let Some(domain) = &mut kill.domain
    {
        domain.composition = composition;
    }
    record
}

/// The cgroup the kernel's report says a `memory.oom.group` kill empties, into the `oom_kill`
/// (or `oom_mark_exiting`) record of each of its victims.
pub(crate) fn with_oom_group(mut record: Record, kmsg_oom_group: Option<String>) -> Record {
    if let Body::OomKill(kill) | Body::OomMarkExiting(kill) = &mut record.body {
        kill.kmsg_oom_group = kmsg_oom_group.map(|path| CgroupPath { path });
    }
    record
}

/// The `oom_incident` record: the end of one `oom_kill_process` invocation.
pub(crate) fn oom_incident(incident: &OomIncident, context: &Context<'_>) -> Record {
    let OomIncident {
        context: incident_context,
        victims,
        ended,
    } = incident;
    let ktime_ns = incident_context.entry.ktime_ns;
    Record::new(Body::OomIncident(OomIncidentRecord {
        time: context.time(ktime_ns),
        ktime_ns,
        capture: context.capture(vec![CapturePart::Function]),
        incident: incident_record(incident_context, context.plan),
        victims: victims
            .iter()
            .map(|pid| VictimRef {
                process: Pid { pid: *pid },
            })
            .collect(),
        ended: *ended,
        trigger: task_party(&incident_context.entry.trigger),
    }))
}

/// The `sigkill` record.
pub(crate) fn sigkill(sigkill: &AttributedSigkill, context: &Context<'_>) -> Record {
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
        Some(cgroup) => cgroup_record(cgroup),
        None => Cgroup {
            id: Some(*sender_cgroup_id),
            ..Cgroup::default()
        },
    };
    Record::new(Body::Sigkill(SigkillRecord {
        time: context.time(*ktime_ns),
        ktime_ns: *ktime_ns,
        capture: context.capture(vec![CapturePart::Signal]),
        target: Party {
            process: Process {
                pid: Some(tgid.unwrap_or(target.pid)),
                executable: target.comm.clone().map(|name| Executable { name }),
                ..Process::default()
            },
            thread: Some(Thread { id: target.pid }),
            cgroup: target_task
                .as_ref()
                .and_then(|task| task.target_cgroup.as_ref())
                .map(cgroup_record),
            memcg: target_task
                .as_ref()
                .and_then(|task| task.target_memcg.as_ref())
                .map(cgroup_record),
            badness: None,
            names: names(target_names.as_ref(), None),
        },
        sender: Sender {
            kind: *sender_kind,
            party: Party {
                cgroup: Some(sender_cgroup),
                memcg: sender_memcg.as_ref().map(cgroup_record),
                names: names(sender_names.as_ref(), None),
                ..task_party(sender)
            },
        },
        signal: Signal {
            code: target.code,
            group: target.group.map(|group| group != 0),
            result: target.result.map(SignalResult::from_kernel),
        },
        cut: None,
    }))
}

/// What the record went out without (reads that did not answer in time), into an `oom_kill`,
/// `oom_mark_exiting` or `sigkill` record.
pub(crate) fn with_cut(mut record: Record, cut: Option<crate::record::Cut>) -> Record {
    match &mut record.body {
        Body::OomKill(kill) | Body::OomMarkExiting(kill) => kill.cut = cut,
        Body::Sigkill(sigkill) => sigkill.cut = cut,
        Body::AgentStarted(_)
        | Body::OomIncident(_)
        | Body::MemoryPressure(_)
        | Body::AgentStopped(_) => {}
    }
    record
}

/// `memory_pressure`, from the recorder's warning and the names of the domain and the grower.
pub(crate) fn memory_pressure(
    warning: &PressureWarning,
    domain_names: Option<&crate::attribute::Attribution>,
    grower_names: Option<&crate::attribute::Attribution>,
    clock: KernelClock,
) -> Record {
    let PressureWarning {
        at_ns,
        reason,
        thresholds: Thresholds { usage, stall },
        domain,
        limit_bytes,
        usage_bytes,
        working_set_bytes,
        growth,
        stall: stall_share,
        grower,
    } = warning;
    let rate = |growth: &Growth| GrowthRate {
        bytes_per_second: growth.bytes_per_second,
        over_ms: growth.over_ms,
    };
    let held = working_set_bytes.unwrap_or(*usage_bytes);
    let percent_of_limit = (held as f64 * 1000.0 / (*limit_bytes).max(1) as f64).round() / 10.0;
    Record::new(Body::MemoryPressure(MemoryPressureRecord {
        time: clock.wall_time(*at_ns).to_string(),
        ktime_ns: *at_ns,
        reason: match reason {
            Reason::Usage => PressureReason::Usage,
            Reason::Stall => PressureReason::Stall,
        },
        thresholds: PressureThresholds {
            usage_percent: usage.0,
            stall_percent: stall.0,
        },
        domain: PressureDomain {
            cgroup: CgroupPath {
                path: domain.clone(),
            },
            memory: PressureMemory {
                limit_bytes: *limit_bytes,
                usage_bytes: *usage_bytes,
                working_set_bytes: *working_set_bytes,
                percent_of_limit,
            },
            growth: growth.as_ref().map(rate),
            stall: stall_share.map(
                |StallShare {
                     some_percent,
                     full_percent,
                     over_ms,
                 }| StallRecord {
                    some_percent,
                    full_percent,
                    over_ms,
                },
            ),
            names: names(domain_names, None),
        },
        grower: grower.as_ref().map(
            |Grower {
                 path,
                 usage_bytes,
                 growth,
             }| PressureGrower {
                cgroup: CgroupPath { path: path.clone() },
                usage_bytes: *usage_bytes,
                growth: rate(growth),
                names: names(grower_names, None),
            },
        ),
    }))
}

/// Who owns a cgroup, as the attribute stage found it; `main_process` is the victim's.
pub(crate) fn names(
    attribution: Option<&crate::attribute::Attribution>,
    main_process: Option<bool>,
) -> Names {
    let Some(attribution) = attribution else {
        return Names::default();
    };
    let crate::attribute::Attribution {
        path,
        identity,
        container: metadata,
        source,
        warning,
    } = attribution;
    let PathIdentity {
        kind: _,
        container: path_container,
        pod: path_pod,
        systemd_unit,
    } = identity;
    // A pod's sandbox (or the pod itself) names the pod (`k8s`): no container of the user's.
    let workload = metadata
        .as_deref()
        .is_none_or(|meta| meta.role == Role::Workload);
    Names {
        container: workload
            .then(|| container(path_container.as_ref(), metadata.as_deref(), main_process))
            .flatten(),
        k8s: k8s(path_pod.as_ref(), metadata.as_deref().map(|meta| &meta.k8s)),
        systemd: systemd_unit.clone().map(|unit| Systemd { unit }),
        attribution: Some(Attribution {
            source: *source,
            path: path.clone(),
            warning: warning.as_ref().map(|warning| warning.message.clone()),
            reason: warning.as_ref().map(|warning| warning.reason),
        }),
    }
}

/// What the cgroup path alone says: for a kill recovered from the kernel log, whose runtime is
/// not asked (such a container is usually long gone).
pub(crate) fn names_from_path(path: &str) -> Names {
    names(Some(&crate::attribute::Attribution::from_path(path)), None)
}

fn container(
    from_path: Option<&ContainerRef>,
    from_runtime: Option<&ContainerMetadata>,
    main_process: Option<bool>,
) -> Option<Container> {
    match (from_runtime, from_path) {
        (Some(meta), path) => {
            let ContainerMetadata {
                id,
                name,
                image,
                runtime,
                // Only workloads get here.
                role: _,
                main_pid: _,
                memory_limit_bytes,
                restart_policy,
                restart_count,
                k8s: _,
                compose,
                // Said by `attribution.source`.
                origin: _,
                labels: _,
            } = meta;
            let ComposeNames {
                project,
                service,
                number,
            } = compose;
            Some(Container {
                id: id.clone(),
                name: Some(name.clone()).filter(|name| !name.is_empty()),
                image: image.clone().map(|name| Image { name }),
                // The engine that answered, else what the path says.
                runtime: Some(*runtime)
                    .filter(|runtime| !runtime.is_empty())
                    .or_else(|| path.and_then(|p| p.runtime).map(|r| r.as_str()))
                    .map(str::to_owned),
                main_process,
                memory_limit_bytes: *memory_limit_bytes,
                restart_policy: restart_policy.clone(),
                restart_count: *restart_count,
                compose: (project.is_some() || service.is_some()).then(|| Compose {
                    project: project.clone(),
                    service: service.clone(),
                    number: *number,
                }),
            })
        }
        (None, Some(ContainerRef { runtime, id })) => Some(Container {
            id: id.clone(),
            runtime: runtime.map(|runtime| runtime.as_str().to_owned()),
            main_process,
            ..Container::default()
        }),
        (None, None) => None,
    }
}

fn k8s(from_path: Option<&PodRef>, labels: Option<&K8sNames>) -> Option<K8s> {
    let K8sNames {
        pod_name,
        pod_uid,
        namespace,
        container_name,
        restart_count,
    } = labels.cloned().unwrap_or_default();
    let pod = Pod {
        name: pod_name,
        uid: pod_uid.or(from_path.map(|pod| pod.uid.clone())),
        qos_class: from_path.map(|pod| pod.qos),
    };
    let has_pod = pod.name.is_some() || pod.uid.is_some() || pod.qos_class.is_some();
    let k8s = K8s {
        pod: has_pod.then_some(pod),
        namespace: namespace.map(|name| Named { name }),
        // The kubelet's restart count belongs to the container it counts.
        container: container_name.map(|name| K8sContainer {
            name,
            restart_count,
        }),
    };
    (k8s.pod.is_some() || k8s.namespace.is_some() || k8s.container.is_some()).then_some(k8s)
}

/// The top-level `domain` of an `oom_kill`; `at_the_moment` is what the observe stage read of
/// it.
/// `domain.composition`, with the tmpfs mounts named by the explain stage.
pub(crate) fn composition(
    composition: &observed::Composition,
    tmpfs: Vec<record_composition::TmpfsMount>,
) -> record_composition::Composition {
    use record_composition::{
        CompositionSource, FileMemory, KernelLogState, KernelLogUse, KernelMemory, NotInProcesses,
        ProcessesMemory, Reaped,
    };
    let observed::Composition {
        source,
        kernel_log,
        // The domain's own.
        cgroup: _,
        usage_bytes,
        limit_bytes,
        parts,
        processes,
        reaped,
        victim_shmem_bytes: _,
        // Named by the explain stage: `tmpfs` here.
        tmpfs: _,
        tmpfs_unknown,
    } = composition;
    let observed::Parts {
        anon,
        file,
        file_active,
        file_inactive,
        file_dirty,
        file_writeback,
        file_mapped,
        shmem,
        unevictable,
        kernel,
        slab_reclaimable,
        slab_unreclaimable,
        kernel_stack,
        page_tables,
        sock,
        percpu,
        vmalloc,
        swap,
    } = *parts;
    let not_in_processes = composition.not_in_processes();
    record_composition::Composition {
        source: match source {
            observed::Source::KernelLog => CompositionSource::KernelLog,
            observed::Source::MemoryStat => CompositionSource::MemoryStat,
            observed::Source::Meminfo => CompositionSource::Meminfo,
        },
        kernel_log: match kernel_log {
            observed::KernelLog::Report { seq } => KernelLogUse {
                state: KernelLogState::Report,
                seq: Some(*seq),
                reason: None,
            },
            observed::KernelLog::NoReport => KernelLogUse {
                state: KernelLogState::NoReport,
                seq: None,
                reason: Some(
                    "the kernel printed no report for this kill: it prints at most 10 every 5 s"
                        .to_owned(),
                ),
            },
            observed::KernelLog::Unreadable(why) => KernelLogUse {
                state: KernelLogState::Unreadable,
                seq: None,
                reason: Some(why.clone()),
            },
        },
        usage_bytes: *usage_bytes,
        limit_bytes: *limit_bytes,
        anon_bytes: anon,
        file: file.map(|bytes| FileMemory {
            bytes,
            active_bytes: file_active,
            inactive_bytes: file_inactive,
            dirty_bytes: file_dirty,
            writeback_bytes: file_writeback,
            mapped_bytes: file_mapped,
        }),
        shmem_bytes: shmem,
        unevictable_bytes: unevictable,
        kernel: kernel.map(|bytes| KernelMemory {
            bytes,
            slab_reclaimable_bytes: slab_reclaimable,
            slab_unreclaimable_bytes: slab_unreclaimable,
            stack_bytes: kernel_stack,
            page_tables_bytes: page_tables,
            sock_bytes: sock,
            percpu_bytes: percpu,
            vmalloc_bytes: vmalloc,
        }),
        swap_bytes: swap,
        reaped: reaped.map(
            |observed::Reaped {
                 anon_bytes,
                 page_tables_bytes,
             }| Reaped {
                anon_bytes,
                page_tables_bytes,
            },
        ),
        processes: processes.map(
            |observed::Processes {
                 count,
                 resident_bytes,
                 shmem_bytes,
             }| ProcessesMemory {
                count,
                resident_bytes,
                shmem_bytes,
            },
        ),
        in_processes_bytes: composition.in_processes(),
        not_in_processes: NotInProcesses {
            bytes: not_in_processes.total(),
            shmem_bytes: not_in_processes.shmem,
            page_cache_bytes: not_in_processes.page_cache,
            kernel_bytes: not_in_processes.kernel,
        },
        tmpfs,
        tmpfs_unknown: tmpfs_unknown.clone(),
    }
}

/// A tmpfs mount of `domain.composition`, its owner named.
pub(crate) fn tmpfs_mount(
    mount: &crate::observe::tmpfs::TmpfsMount,
    owner: Option<crate::attribute::Attribution>,
) -> record_composition::TmpfsMount {
    use crate::observe::tmpfs::TmpfsKind as Observed;
    use record_composition::TmpfsKind;
    let crate::observe::tmpfs::TmpfsMount {
        mount_point,
        kind,
        host_path,
        volume,
        used_bytes,
        size_bytes,
        outlives_container,
        owner: _,
    } = mount;
    record_composition::TmpfsMount {
        mount_point: mount_point.clone(),
        kind: match kind {
            Observed::Shm => TmpfsKind::Shm,
            Observed::ContainerTmpfs => TmpfsKind::ContainerTmpfs,
            Observed::EmptyDir => TmpfsKind::EmptyDir,
            Observed::Host => TmpfsKind::Host,
        },
        host_path: host_path.clone(),
        volume: volume.clone(),
        used_bytes: *used_bytes,
        size_bytes: *size_bytes,
        outlives_container: *outlives_container,
        names: names(owner.as_ref(), None),
    }
}

fn resolved_domain(
    domain: &ResolvedDomain,
    at_the_moment: Option<&DomainMemoryRead>,
    composition: Option<record_composition::Composition>,
) -> Domain {
    let ResolvedDomain {
        kind,
        cgroup,
        limit_bytes,
        basis,
        attribution,
    } = domain;
    Domain {
        kind: *kind,
        inferred: Some(domain.inferred()),
        basis: Some(match basis {
            crate::attribute::Basis::Kernel => Basis::Kernel,
            crate::attribute::Basis::Counters => Basis::Counters,
            crate::attribute::Basis::ContainerLimit => Basis::ContainerLimit,
            crate::attribute::Basis::None => Basis::None,
            crate::attribute::Basis::KernelLog => Basis::KernelLog,
        }),
        cgroup: cgroup.as_ref().map(|cgroup| DomainCgroup {
            id: cgroup.id,
            path: cgroup.path.clone(),
        }),
        memory: domain_memory(*limit_bytes, at_the_moment),
        memory_events: match at_the_moment {
            Some(DomainMemoryRead::Cgroup(cgroup)) if !cgroup.events.is_empty() => Some(
                cgroup
                    .events
                    .iter()
                    .map(|(name, count)| (name.clone(), *count))
                    .collect::<BTreeMap<_, _>>(),
            ),
            _ => None,
        },
        composition,
        names: names(attribution.as_ref(), None),
    }
}

fn domain_memory(
    limit_bytes: Option<u64>,
    at_the_moment: Option<&DomainMemoryRead>,
) -> Option<DomainMemory> {
    let memory = match at_the_moment {
        Some(DomainMemoryRead::Cgroup(CgroupMemory {
            usage_bytes,
            limit_bytes: read_limit,
            swap_max_bytes,
            memsw_limit_bytes,
            events: _,
        })) => DomainMemory {
            limit_bytes: limit_bytes.or(*read_limit),
            usage_bytes: *usage_bytes,
            swap_max_bytes: *swap_max_bytes,
            memsw_limit_bytes: *memsw_limit_bytes,
            ..DomainMemory::default()
        },
        Some(DomainMemoryRead::Host(HostMemory {
            total_bytes,
            available_bytes,
            swap_total_bytes,
            swap_free_bytes,
        })) => DomainMemory {
            limit_bytes,
            total_bytes: *total_bytes,
            available_bytes: *available_bytes,
            swap_total_bytes: *swap_total_bytes,
            swap_free_bytes: *swap_free_bytes,
            ..DomainMemory::default()
        },
        Some(DomainMemoryRead::Unknown) | None => DomainMemory {
            limit_bytes,
            ..DomainMemory::default()
        },
    };
    let DomainMemory {
        limit_bytes,
        usage_bytes,
        total_bytes,
        ..
    } = &memory;
    (limit_bytes.is_some() || usage_bytes.is_some() || total_bytes.is_some()).then_some(memory)
}

fn incident_record(incident: &IncidentContext, plan: &CapturePlan) -> Incident {
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
        crate::decode::Domain::Host => IncidentDomain {
            kind: DomainKind::Host,
            cgroup: None,
        },
        crate::decode::Domain::Cgroup(cgroup) => IncidentDomain {
            kind: DomainKind::Cgroup,
            cgroup: Some(cgroup_record(cgroup)),
        },
        crate::decode::Domain::Unknown => IncidentDomain {
            kind: DomainKind::Unknown,
            cgroup: None,
        },
    };
    Incident {
        id: Some(id.clone()),
        domain: Some(domain),
        badness: control.map(|control| badness_record(Badness::from_kernel(&control))),
        constraint: control.map(|control| {
            plan.constraint_name(control.constraint)
                .map_or_else(|| control.constraint.to_string(), str::to_owned)
        }),
        order: control.map(|control| control.order),
        gfp_mask: control.map(|control| format!("{:#x}", control.gfp_mask)),
        message: Some(message.clone()),
    }
}

fn badness_record(badness: Badness) -> party::Badness {
    party::Badness {
        points: badness.points,
        totalpages: Some(badness.totalpages),
        score: Some(badness.score()),
        estimated: badness.estimated,
    }
}

fn cgroup_record(cgroup: &CgroupRef) -> Cgroup {
    let CgroupRef {
        id,
        path,
        truncated,
        incomplete,
    } = cgroup;
    Cgroup {
        id: Some(*id),
        path: Some(path.clone()),
        truncated: *truncated,
        incomplete: *incomplete,
    }
}

fn victim_party(victim: &Victim) -> Party {
    let Victim {
        pid,
        tgid,
        comm,
        fields,
        cgroup,
        memcg,
    } = victim;
    Party {
        process: Process {
            pid: Some(tgid.unwrap_or(*pid)),
            executable: comm.clone().map(|name| Executable { name }),
            real_user: fields
                .as_ref()
                .and_then(|fields| fields.uid)
                .map(|id| User { id }),
            oom_score_adj: fields.as_ref().and_then(|fields| fields.oom_score_adj),
            // A pid-only tracepoint and no task read: no memory object rather than an empty one.
            memory: fields
                .as_ref()
                .filter(|fields| knows_memory(fields))
                .map(|fields| {
                    let MarkVictimFields {
                        pid: _,
                        comm: _,
                        total_vm_kb,
                        anon_rss_kb,
                        file_rss_kb,
                        shmem_rss_kb,
                        // Written above.
                        uid: _,
                        pgtables_kb,
                        oom_score_adj: _,
                    } = *fields;
                    memory(
                        total_vm_kb,
                        anon_rss_kb,
                        file_rss_kb,
                        shmem_rss_kb,
                        pgtables_kb,
                    )
                }),
        },
        thread: Some(Thread { id: *pid }),
        cgroup: cgroup.as_ref().map(cgroup_record),
        memcg: memcg.as_ref().map(cgroup_record),
        badness: None,
        names: Names::default(),
    }
}

fn knows_memory(fields: &MarkVictimFields) -> bool {
    [
        fields.total_vm_kb,
        fields.anon_rss_kb,
        fields.file_rss_kb,
        fields.shmem_rss_kb,
        fields.pgtables_kb,
    ]
    .iter()
    .any(Option::is_some)
}

/// The victim's memory as the kernel reports it in kB (the tracepoint, or the kernel log's
/// `Killed process` line), in bytes; resident memory is their sum where all three are known.
pub(crate) fn memory(
    total_vm_kb: Option<u64>,
    anon_rss_kb: Option<u64>,
    file_rss_kb: Option<u64>,
    shmem_rss_kb: Option<u64>,
    pgtables_kb: Option<u64>,
) -> Memory {
    let bytes = |kb: Option<u64>| kb.map(|kb| kb.saturating_mul(1024));
    Memory {
        virtual_bytes: bytes(total_vm_kb),
        usage_bytes: bytes(
            [anon_rss_kb, file_rss_kb, shmem_rss_kb]
                .into_iter()
                .sum::<Option<u64>>(),
        ),
        anon_rss_bytes: bytes(anon_rss_kb),
        file_rss_bytes: bytes(file_rss_kb),
        shmem_rss_bytes: bytes(shmem_rss_kb),
        page_tables_bytes: bytes(pgtables_kb),
    }
}

fn trigger_party(trigger: &Trigger) -> Party {
    let Trigger {
        task,
        cgroup_id,
        cgroup,
        memcg,
    } = trigger;
    // Without BTF only the cgroup2 id is known, from a helper.
    let cgroup = match (cgroup, cgroup_id) {
        (Some(cgroup), _) => Some(cgroup_record(cgroup)),
        (None, Some(id)) => Some(Cgroup {
            id: Some(*id),
            ..Cgroup::default()
        }),
        (None, None) => None,
    };
    Party {
        cgroup,
        memcg: memcg.as_ref().map(cgroup_record),
        ..task_party(task)
    }
}

fn task_party(task: &Task) -> Party {
    let Task { pid, tgid, comm } = task;
    Party {
        process: Process {
            pid: Some(*tgid),
            executable: Some(Executable { name: comm.clone() }),
            ..Process::default()
        },
        thread: Some(Thread { id: *pid }),
        ..Party::default()
    }
}
