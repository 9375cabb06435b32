//! What the CRI says about pods and containers, as [`ContainerMetadata`]. Pure, so the
//! runtimes' answers are tested with fixtures.

use std::collections::HashMap;

use serde::Deserialize;

use super::proto::runtime::v1 as cri;
use crate::attribute::runtime::{ContainerMetadata, K8S_RESTART_COUNT, K8sNames, Role, bounded};

/// A pod's sandbox: it names the pod (its name, namespace and uid are always in the sandbox's
/// metadata, whoever created it).
pub(super) fn sandbox(
    id: &str,
    metadata: Option<&cri::PodSandboxMetadata>,
    labels: HashMap<String, String>,
    runtime: &'static str,
) -> ContainerMetadata {
    let mut meta = ContainerMetadata::new(id, "", runtime, labels);
    meta.role = Role::PodSandbox;
    meta.k8s = pod_names(metadata).or_pod(&meta.k8s);
    meta
}

/// A container from `ListContainers`, with its sandbox's metadata when known.
pub(super) fn listed(
    container: cri::Container,
    pod: Option<&cri::PodSandboxMetadata>,
    runtime: &'static str,
) -> ContainerMetadata {
    let cri::Container {
        id,
        pod_sandbox_id: _,
        metadata,
        image,
        image_ref,
        state: _,
        created_at: _,
        labels,
        annotations,
    } = container;
    let mut meta = workload(&id, metadata.as_ref(), labels, &annotations, runtime);
    meta.image = image_name(image.as_ref(), &image_ref);
    // The sandbox's names over the labels' (a label is whatever the creator wrote).
    meta.k8s = K8sNames {
        container_name: meta.k8s.container_name.take(),
        restart_count: meta.k8s.restart_count,
        ..pod_names(pod).or_pod(&meta.k8s)
    };
    meta
}

/// A container from `ContainerStatus` (verbose): also its main pid and memory limit.
pub(super) fn status(
    response: cri::ContainerStatusResponse,
    runtime: &'static str,
) -> Option<(ContainerMetadata, Option<String>)> {
    let cri::ContainerStatusResponse { status, info } = response;
    let verbose = info
        .get("info")
        .and_then(|json| serde_json::from_str::<VerboseInfo>(json).ok())
        .unwrap_or_default();
    let mut meta = from_status(status?, runtime);
    meta.main_pid = verbose.pid.filter(|&pid| pid > 0);
    Some((meta, verbose.sandbox_id.filter(|id| !id.is_empty())))
}

/// A container's status as an event or a status answer carries it.
pub(super) fn from_status(
    status: cri::ContainerStatus,
    runtime: &'static str,
) -> ContainerMetadata {
    let cri::ContainerStatus {
        id,
        metadata,
        state: _,
        created_at: _,
        started_at: _,
        finished_at: _,
        exit_code: _,
        image,
        image_ref,
        reason: _,
        message: _,
        labels,
        annotations,
        log_path: _,
        resources,
    } = status;
    let mut meta = workload(&id, metadata.as_ref(), labels, &annotations, runtime);
    meta.image = image_name(image.as_ref(), &image_ref);
    meta.memory_limit_bytes = resources
        .and_then(|resources| resources.linux)
        .and_then(|linux| u64::try_from(linux.memory_limit_in_bytes).ok())
        .filter(|&bytes| bytes > 0);
    meta
}

/// What `info["info"]` of a verbose status holds that matters here; containerd and CRI-O both
/// put the main pid and the sandbox there.
#[derive(Default, Deserialize)]
struct VerboseInfo {
    pid: Option<u32>,
    #[serde(rename = "sandboxID")]
    sandbox_id: Option<String>,
}

fn workload(
    id: &str,
    metadata: Option<&cri::ContainerMetadata>,
    labels: HashMap<String, String>,
    annotations: &HashMap<String, String>,
    runtime: &'static str,
) -> ContainerMetadata {
    let name = metadata.map_or("", |metadata| metadata.name.as_str());
    let mut meta = ContainerMetadata::new(id, name, runtime, labels);
    if !name.is_empty() {
        meta.k8s.container_name = Some(bounded(name));
    }
    // The kubelet's own count where it set one; the CRI's attempt is the same number.
    meta.k8s.restart_count = annotations
        .get(K8S_RESTART_COUNT)
        .and_then(|count| count.parse().ok())
        .or(metadata.map(|metadata| metadata.attempt));
    meta
}

fn pod_names(metadata: Option<&cri::PodSandboxMetadata>) -> K8sNames {
    let field = |value: Option<&String>| value.filter(|v| !v.is_empty()).map(|v| bounded(v));
    K8sNames {
        pod_name: field(metadata.map(|m| &m.name)),
        pod_uid: field(metadata.map(|m| &m.uid)),
        namespace: field(metadata.map(|m| &m.namespace)),
        ..K8sNames::default()
    }
}

/// The image as the user named it: the first of these that is not a bare `sha256:` id (which
/// some runtimes answer in `image`), else whatever there is.
fn image_name(spec: Option<&cri::ImageSpec>, image_ref: &str) -> Option<String> {
    let candidates = [
        spec.map_or("", |spec| spec.user_specified_image.as_str()),
        spec.map_or("", |spec| spec.image.as_str()),
        image_ref,
    ];
    let present = || candidates.into_iter().filter(|name| !name.is_empty());
    present()
        .find(|name| !name.starts_with("sha256:"))
        .or_else(|| present().next())
        .map(bounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "7a4d1b2805fd1506fb93883779daf46eb83f607c796d8a81cb147c45850e5f93";
    const SANDBOX: &str = "2984ae224f95eb32be3846dbeda8e38430c59af3ddcd623aeaaeae3f8c31a30c";
    const UID: &str = "11111111-2222-3333-4444-555555555555";

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn pod() -> cri::PodSandboxMetadata {
        cri::PodSandboxMetadata {
            name: "ledger-api-7f9c".to_owned(),
            uid: UID.to_owned(),
            namespace: "pay-prod".to_owned(),
            attempt: 0,
        }
    }

    /// containerd 1.6.20's `ContainerStatus` of a container the kubelet made, verbatim in the
    /// parts that matter (the verbose info cut down).
    fn containerd_status() -> cri::ContainerStatusResponse {
        cri::ContainerStatusResponse {
            status: Some(cri::ContainerStatus {
                id: ID.to_owned(),
                metadata: Some(cri::ContainerMetadata {
                    name: "worker".to_owned(),
                    attempt: 2,
                }),
                state: cri::ContainerState::ContainerRunning as i32,
                image: Some(cri::ImageSpec {
                    image: "localhost/oomtrace-busybox:1".to_owned(),
                    ..cri::ImageSpec::default()
                }),
                image_ref:
                    "sha256:e63fb89cdb63de2df1ed9af01199c292cd29478c9c6fbb6833a3f03a9afd5cdb"
                        .to_owned(),
                labels: map(&[
                    ("io.kubernetes.pod.namespace", "pay-prod"),
                    ("io.kubernetes.container.name", "worker"),
                    ("io.kubernetes.pod.name", "ledger-api-7f9c"),
                    ("io.kubernetes.pod.uid", UID),
                ]),
                annotations: map(&[("io.kubernetes.container.restartCount", "2")]),
                resources: Some(cri::ContainerResources {
                    linux: Some(cri::LinuxContainerResources {
                        memory_limit_in_bytes: 64 << 20,
                        memory_swap_limit_in_bytes: 64 << 20,
                        ..cri::LinuxContainerResources::default()
                    }),
                }),
                ..cri::ContainerStatus::default()
            }),
            info: map(&[(
                "info",
                &format!(
                    r#"{{"sandboxID":"{SANDBOX}","pid":8127,"removing":false,"runtimeSpec":{{"linux":{{}}}}}}"#
                ),
            )]),
        }
    }

    #[test]
    fn a_status_names_pod_container_restarts_limit_and_pid() {
        let (meta, sandbox) = status(containerd_status(), "containerd").expect("a status");
        assert_eq!(meta.id, ID);
        assert_eq!(meta.name, "worker");
        assert_eq!(meta.runtime, "containerd");
        assert_eq!(meta.role, Role::Workload);
        assert_eq!(meta.image.as_deref(), Some("localhost/oomtrace-busybox:1"));
        assert_eq!(meta.main_pid, Some(8127));
        assert_eq!(meta.memory_limit_bytes, Some(64 << 20));
        assert_eq!(meta.k8s.pod_name.as_deref(), Some("ledger-api-7f9c"));
        assert_eq!(meta.k8s.namespace.as_deref(), Some("pay-prod"));
        assert_eq!(meta.k8s.pod_uid.as_deref(), Some(UID));
        assert_eq!(meta.k8s.container_name.as_deref(), Some("worker"));
        assert_eq!(meta.k8s.restart_count, Some(2));
        assert_eq!(sandbox.as_deref(), Some(SANDBOX));
    }

    #[test]
    fn without_the_kubelets_labels_the_sandbox_names_the_pod() {
        let container = cri::Container {
            id: ID.to_owned(),
            pod_sandbox_id: SANDBOX.to_owned(),
            metadata: Some(cri::ContainerMetadata {
                name: "worker".to_owned(),
                attempt: 3,
            }),
            image: Some(cri::ImageSpec {
                image: "sha256:e63f".to_owned(),
                ..cri::ImageSpec::default()
            }),
            image_ref: "docker.io/library/busybox@sha256:e63f".to_owned(),
            ..cri::Container::default()
        };
        let meta = listed(container, Some(&pod()), "cri-o");
        assert_eq!(meta.k8s.pod_name.as_deref(), Some("ledger-api-7f9c"));
        assert_eq!(meta.k8s.namespace.as_deref(), Some("pay-prod"));
        assert_eq!(meta.k8s.pod_uid.as_deref(), Some(UID));
        assert_eq!(meta.k8s.container_name.as_deref(), Some("worker"));
        // No annotation: the CRI's attempt.
        assert_eq!(meta.k8s.restart_count, Some(3));
        // A bare image id loses to the reference by digest.
        assert_eq!(
            meta.image.as_deref(),
            Some("docker.io/library/busybox@sha256:e63f")
        );
        assert_eq!(meta.memory_limit_bytes, None);
    }

    #[test]
    fn a_sandbox_names_its_pod_and_is_no_workload() {
        let meta = sandbox(SANDBOX, Some(&pod()), HashMap::new(), "containerd");
        assert_eq!(meta.role, Role::PodSandbox);
        assert_eq!(meta.k8s.pod_name.as_deref(), Some("ledger-api-7f9c"));
        assert_eq!(meta.k8s.container_name, None);
        assert_eq!(meta.name, "");
    }

    #[test]
    fn a_status_without_verbose_info_or_limit_still_names() {
        let mut response = containerd_status();
        response.info.clear();
        if let Some(status) = response.status.as_mut() {
            status.resources = None;
        }
        let (meta, sandbox) = status(response, "containerd").expect("a status");
        assert_eq!(meta.main_pid, None);
        assert_eq!(meta.memory_limit_bytes, None);
        assert_eq!(sandbox, None);
        assert_eq!(meta.k8s.container_name.as_deref(), Some("worker"));
        assert!(status(cri::ContainerStatusResponse::default(), "containerd").is_none());
    }

    #[test]
    fn long_names_are_kept_whole_up_to_the_bound() {
        // A pod name may be 253 bytes (a DNS subdomain), dots included.
        let long = format!("{}.{}", "a".repeat(126), "b".repeat(126));
        let mut metadata = pod();
        metadata.name = long.clone();
        let meta = sandbox(SANDBOX, Some(&metadata), HashMap::new(), "containerd");
        assert_eq!(meta.k8s.pod_name.as_deref(), Some(long.as_str()));
    }
}
