//! A party: a process, its cgroups, and who owns them. The victim and the trigger of a kill, a
//! SIGKILL's target and sender; the owner's names alone ([`Names`]) also describe the domain of
//! a kill and the cgroups and processes of its snapshot.
//!
//! Names follow OpenTelemetry's semantic conventions where one fits: a nested path flattened
//! with dots is the OTel attribute (`process.executable.name`, `container.name`,
//! `k8s.pod.name`). Whatever is not known is left out, never null.

use serde::{Deserialize, Serialize};

use crate::attribute::{FailureReason, Source};
use crate::cgroup_path::QosClass;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Party {
    #[serde(default)]
    pub process: Process,
    /// The kernel task: always known for what the programs saw, not for the kernel log's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread: Option<Thread>,
    /// The cgroup2 (unified hierarchy) cgroup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<Cgroup>,
    /// The memory controller's cgroup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memcg: Option<Cgroup>,
    /// The victim's OOM badness.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub badness: Option<Badness>,
    #[serde(flatten)]
    pub names: Names,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// The thread group id (what userspace calls the pid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<Executable>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real_user: Option<User>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
}

impl Process {
    /// The kernel's `comm`.
    pub fn comm(&self) -> Option<&str> {
        self.executable
            .as_ref()
            .map(|executable| executable.name.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executable {
    /// The kernel's `comm`: at most 15 bytes.
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thread {
    /// The kernel task id.
    pub id: u32,
}

/// Bytes, as OpenTelemetry's `process.memory.*` metrics count them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub virtual_bytes: Option<u64>,
    /// Resident: anon + file + shmem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anon_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shmem_rss_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_tables_bytes: Option<u64>,
}

/// A cgroup as the kernel captured it at the moment of the event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cgroup {
    /// The cgroup directory's inode number; the kernel log does not give it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// From the hierarchy's root; unknown where only a helper gave the id (`tracepoint-only`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The hierarchy was deeper than the kernel walk: `path` starts with `…/`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// A kernel read failed part way.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
}

/// `oom_badness()`: rss + swap + page tables (in pages) + oom_score_adj × (totalpages / 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Badness {
    pub points: i64,
    /// What the points are relative to: the domain's limit, or RAM + swap, in pages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totalpages: Option<u64>,
    /// points × 1000 / totalpages, as `/proc/<pid>/oom_score` and the task dump show it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<i64>,
    /// False: the kernel's own figure.
    pub estimated: bool,
}

/// Who owns a cgroup; flattened into what it names. Every part is left out when unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Names {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<Container>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k8s: Option<K8s>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub systemd: Option<Systemd>,
    /// How the names were found; absent when nobody was asked (no cgroup known).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attribution: Option<Attribution>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    /// The runtime's name; only a runtime's answer gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
    /// The engine that answered (`docker`, `podman`), else what the cgroup path says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The victim only: whether it is the container's main process (only then does the runtime
    /// say `OOMKilled`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_process: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    /// How often the runtime restarted it under that policy, as it said at the kill.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compose: Option<Compose>,
}

/// docker-compose's names: `shop_db_1` is container number 1 of service `db` of project `shop`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compose {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct K8s {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<Pod>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Named>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<K8sContainer>,
}

/// The container's name in the pod spec, and how often the kubelet restarted it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct K8sContainer {
    pub name: String,
    /// Restarts before this instance: the CRI's `attempt`, the kubelet's `restartCount`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// From the kubelet's labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// From the labels, else the cgroup path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// From the cgroup path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos_class: Option<QosClass>,
}

/// `{"name": …}`: a Kubernetes namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Named {
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Systemd {
    pub unit: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    pub source: Source,
    /// The cgroup path the names were resolved from.
    pub path: String,
    /// Why a name is missing, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The same, as one of a few words (what `oomtrace_attribution_failures_total` counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
}

impl Names {
    /// The container's runtime name, unless empty.
    pub fn container_name(&self) -> Option<&str> {
        self.container
            .as_ref()
            .and_then(|container| container.name.as_deref())
            .filter(|name| !name.is_empty())
    }

    pub fn pod(&self) -> Option<&Pod> {
        self.k8s.as_ref().and_then(|k8s| k8s.pod.as_ref())
    }

    /// The container's name in its pod, with its restart count.
    pub fn k8s_container(&self) -> Option<&K8sContainer> {
        self.k8s.as_ref().and_then(|k8s| k8s.container.as_ref())
    }

    pub fn namespace(&self) -> Option<&str> {
        self.k8s
            .as_ref()
            .and_then(|k8s| k8s.namespace.as_ref())
            .map(|namespace| namespace.name.as_str())
    }
}
