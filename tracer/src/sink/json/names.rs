//! The names of a party (container, Kubernetes pod, systemd unit) and of the domain whose limit
//! was hit, as OpenTelemetry spells them: `container.name`, `k8s.pod.name`, ….

use std::collections::BTreeMap;

use serde::Serialize;

use crate::attribute::runtime::{ComposeNames, ContainerMetadata, K8sNames};
use crate::attribute::{Attribution, Basis, DomainCgroup, DomainKind, ResolvedDomain};
use crate::cgroup_path::{ContainerRef, PathIdentity, PodRef};
use crate::observe::cgroupfs::CgroupMemory;
use crate::observe::snapshot::{DomainMemory, HostMemory};

/// Flattened into a party: every part is left out when unknown.
#[derive(Default, Serialize)]
pub struct NamesJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<ContainerJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    k8s: Option<K8sJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    systemd: Option<SystemdJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attribution: Option<AttributionJson<'a>>,
}

#[derive(Serialize)]
struct ContainerJson<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<ImageJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    runtime: Option<&'a str>,
    /// Victim only: whether the runtime will say `OOMKilled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    main_process: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restart_policy: Option<&'a str>,
    /// How often the runtime restarted it under that policy, at the kill.
    #[serde(skip_serializing_if = "Option::is_none")]
    restart_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compose: Option<ComposeJson<'a>>,
}

/// docker-compose's names: `shop_db_1` is container number 1 of service `db` of project `shop`.
#[derive(Serialize)]
struct ComposeJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    project: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    number: Option<u32>,
}

#[derive(Serialize)]
struct ImageJson<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct NameJson<'a> {
    name: &'a str,
}

#[derive(Default, Serialize)]
struct K8sJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<PodJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<NameJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<NameJson<'a>>,
}

#[derive(Default, Serialize)]
struct PodJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    qos_class: Option<&'static str>,
}

#[derive(Serialize)]
struct SystemdJson<'a> {
    unit: &'a str,
}

#[derive(Serialize)]
struct AttributionJson<'a> {
    /// `live`, `cache`, `tombstone` or `path`.
    source: &'static str,
    /// The cgroup path the names were resolved from.
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<&'a str>,
}

pub fn names_json(attribution: Option<&Attribution>, main_process: Option<bool>) -> NamesJson<'_> {
    let Some(attribution) = attribution else {
        return NamesJson::default();
    };
    let Attribution {
        path,
        identity,
        container,
        source,
        warning,
    } = attribution;
    let PathIdentity {
        kind: _,
        container: path_container,
        pod: path_pod,
        systemd_unit,
    } = identity;
    NamesJson {
        container: container_json(path_container.as_ref(), container.as_deref(), main_process),
        k8s: k8s_json(path_pod.as_ref(), container.as_deref().map(|c| &c.k8s)),
        systemd: systemd_unit.as_deref().map(|unit| SystemdJson { unit }),
        attribution: Some(AttributionJson {
            source: source.as_str(),
            path,
            warning: warning.as_ref().map(|warning| warning.message.as_str()),
        }),
    }
}

fn container_json<'a>(
    from_path: Option<&'a ContainerRef>,
    from_runtime: Option<&'a ContainerMetadata>,
    main_process: Option<bool>,
) -> Option<ContainerJson<'a>> {
    match (from_runtime, from_path) {
        (Some(meta), path) => {
            let ContainerMetadata {
                id,
                name,
                image,
                runtime,
                main_pid: _,
                memory_limit_bytes,
                restart_policy,
                restart_count,
                k8s: _,
                compose,
                origin: _,
                labels: _,
            } = meta;
            let ComposeNames {
                project,
                service,
                number,
            } = compose;
            Some(ContainerJson {
                id,
                name: Some(name.as_str()).filter(|name| !name.is_empty()),
                image: image.as_deref().map(|name| ImageJson { name }),
                // The engine that answered, else what the path says.
                runtime: Some(*runtime)
                    .filter(|runtime| !runtime.is_empty())
                    .or_else(|| path.and_then(|p| p.runtime).map(|r| r.as_str())),
                main_process,
                memory_limit_bytes: *memory_limit_bytes,
                restart_policy: restart_policy.as_deref(),
                restart_count: *restart_count,
                compose: (project.is_some() || service.is_some()).then_some(ComposeJson {
                    project: project.as_deref(),
                    service: service.as_deref(),
                    number: *number,
                }),
            })
        }
        (None, Some(ContainerRef { runtime, id })) => Some(ContainerJson {
            id,
            name: None,
            image: None,
            runtime: runtime.map(|runtime| runtime.as_str()),
            main_process,
            memory_limit_bytes: None,
            restart_policy: None,
            restart_count: None,
            compose: None,
        }),
        (None, None) => None,
    }
}

fn k8s_json<'a>(
    from_path: Option<&'a PodRef>,
    labels: Option<&'a K8sNames>,
) -> Option<K8sJson<'a>> {
    let pod = PodJson {
        name: labels.and_then(|k8s| k8s.pod_name.as_deref()),
        uid: labels
            .and_then(|k8s| k8s.pod_uid.as_deref())
            .or(from_path.map(|pod| pod.uid.as_str())),
        qos_class: from_path.map(|pod| pod.qos.as_str()),
    };
    let has_pod = pod.name.is_some() || pod.uid.is_some() || pod.qos_class.is_some();
    let k8s = K8sJson {
        pod: has_pod.then_some(pod),
        namespace: labels
            .and_then(|k8s| k8s.namespace.as_deref())
            .map(|name| NameJson { name }),
        container: labels
            .and_then(|k8s| k8s.container_name.as_deref())
            .map(|name| NameJson { name }),
    };
    (k8s.pod.is_some() || k8s.namespace.is_some() || k8s.container.is_some()).then_some(k8s)
}

/// The top-level `domain` of an `oom_kill`: whose limit was hit, named like a party.
#[derive(Serialize)]
pub struct DomainJson<'a> {
    /// `cgroup`, `host` or `unknown`.
    kind: &'static str,
    /// False only when the OOM killer's own `oom_control` said so (the full tier).
    inferred: bool,
    /// `kernel`, `counters`, `container_limit` or `none`.
    basis: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<DomainCgroupJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<DomainMemoryJson>,
    /// The cgroup's event counters as the kill arrived (`memory.events`, or v1's
    /// `memory.oom_control` and `memory.failcnt`).
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_events: Option<BTreeMap<&'a str, u64>>,
    #[serde(flatten)]
    names: NamesJson<'a>,
}

#[derive(Serialize)]
struct DomainCgroupJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    path: &'a str,
}

/// The domain's memory as the kill arrived: a cgroup's usage and limits, or the host's.
#[derive(Default, Serialize)]
struct DomainMemoryJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    swap_max_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memsw_limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    available_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    swap_total_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    swap_free_bytes: Option<u64>,
}

/// `at_the_moment` is what the observe stage read of the domain, when the kill was explained.
pub fn domain_json<'a>(
    domain: &'a ResolvedDomain,
    at_the_moment: Option<&'a DomainMemory>,
) -> DomainJson<'a> {
    let ResolvedDomain {
        kind,
        cgroup,
        limit_bytes,
        basis,
        attribution,
    } = domain;
    DomainJson {
        kind: match kind {
            DomainKind::Cgroup => "cgroup",
            DomainKind::Host => "host",
            DomainKind::Unknown => "unknown",
        },
        inferred: domain.inferred(),
        basis: match basis {
            Basis::Kernel => "kernel",
            Basis::Counters => "counters",
            Basis::ContainerLimit => "container_limit",
            Basis::None => "none",
        },
        cgroup: cgroup
            .as_ref()
            .map(|DomainCgroup { id, path }| DomainCgroupJson { id: *id, path }),
        memory: domain_memory_json(*limit_bytes, at_the_moment),
        memory_events: match at_the_moment {
            Some(DomainMemory::Cgroup(cgroup)) if !cgroup.events.is_empty() => Some(
                cgroup
                    .events
                    .iter()
                    .map(|(name, count)| (name.as_str(), *count))
                    .collect(),
            ),
            _ => None,
        },
        names: names_json(attribution.as_ref(), None),
    }
}

fn domain_memory_json(
    limit_bytes: Option<u64>,
    at_the_moment: Option<&DomainMemory>,
) -> Option<DomainMemoryJson> {
    let memory = match at_the_moment {
        Some(DomainMemory::Cgroup(CgroupMemory {
            usage_bytes,
            limit_bytes: read_limit,
            swap_max_bytes,
            memsw_limit_bytes,
            events: _,
        })) => DomainMemoryJson {
            limit_bytes: limit_bytes.or(*read_limit),
            usage_bytes: *usage_bytes,
            swap_max_bytes: *swap_max_bytes,
            memsw_limit_bytes: *memsw_limit_bytes,
            ..DomainMemoryJson::default()
        },
        Some(DomainMemory::Host(HostMemory {
            total_bytes,
            available_bytes,
            swap_total_bytes,
            swap_free_bytes,
        })) => DomainMemoryJson {
            limit_bytes,
            total_bytes: *total_bytes,
            available_bytes: *available_bytes,
            swap_total_bytes: *swap_total_bytes,
            swap_free_bytes: *swap_free_bytes,
            ..DomainMemoryJson::default()
        },
        Some(DomainMemory::Unknown) | None => DomainMemoryJson {
            limit_bytes,
            ..DomainMemoryJson::default()
        },
    };
    let DomainMemoryJson {
        limit_bytes,
        usage_bytes,
        total_bytes,
        ..
    } = &memory;
    (limit_bytes.is_some() || usage_bytes.is_some() || total_bytes.is_some()).then_some(memory)
}
