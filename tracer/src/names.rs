//! How oomtrace names things for people: containers, pods, units and sizes, in log lines and
//! verdicts. Names come from containers' owners and from processes, so they are escaped before
//! they reach a terminal.

use std::fmt::Write as _;

use crate::attribute::cgroup_path::{self, KubeLevel};
use crate::attribute::runtime::{ContainerMetadata, Role};
use crate::attribute::{Attribution, Source};

/// What a person calls the owner of a cgroup, if anything better than its path.
pub fn name(names: &Attribution) -> Option<String> {
    let Attribution {
        path,
        identity,
        container,
        source,
        warning: _,
    } = names;
    if let Some(meta) = container {
        let pod = pod_name(meta);
        let mut about = vec![meta.runtime.to_owned()];
        let mut name = match (&pod, meta.role, &meta.k8s.container_name) {
            // The pod itself (its sandbox, or the pod's own cgroup).
            (Some(pod), Role::PodSandbox | Role::Pod, _) => {
                about.extend(identity.pod.as_ref().map(|pod| pod.qos.as_str().to_owned()));
                pod.clone()
            }
            (Some(pod), Role::Workload, Some(container)) => {
                about.extend(meta.image.as_deref().map(printable));
                if let Some(restarts) = meta.k8s.restart_count.filter(|&count| count > 0) {
                    about.push(format!("restart {restarts}"));
                }
                format!("{pod} container {}", printable(container))
            }
            // Only its pod is known (a container nothing else knows): its id.
            (Some(pod), Role::Workload, None) if meta.name.is_empty() => {
                format!("{pod} container {}", printable(short_id(&meta.id)))
            }
            _ => {
                about.extend(meta.image.as_deref().map(printable));
                about.extend(pod);
                format!("container {}", printable(&meta.name))
            }
        };
        if *source == Source::Tombstone {
            about.push("since removed".to_owned());
        }
        let _ = write!(name, " ({})", about.join(", "));
        return Some(name);
    }
    if let Some(container) = &identity.container {
        let runtime = container.runtime.map_or("", |runtime| runtime.as_str());
        let id = short_id(&container.id);
        return Some(
            format!("{runtime} container {}", printable(id))
                .trim_start()
                .to_owned(),
        );
    }
    // conmon and friends: not in the container, but there for it.
    if let Some(container) = crate::attribute::cgroup_path::monitored_container(&names.path) {
        let id = short_id(&container.id);
        return Some(format!(
            "the runtime monitor of container {}",
            printable(id)
        ));
    }
    if let Some(pod) = &identity.pod {
        return Some(format!("pod {} ({})", pod.uid, pod.qos.as_str()));
    }
    if let Some(level) = cgroup_path::kube_level(path) {
        return Some(kube_level_name(level));
    }
    identity
        .systemd_unit
        .as_deref()
        .map(|unit| format!("unit {}", printable(unit)))
}

fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `pod shop/web-0`, from the pod's names.
fn pod_name(meta: &ContainerMetadata) -> Option<String> {
    let (namespace, pod) = (meta.k8s.namespace.as_ref()?, meta.k8s.pod_name.as_ref()?);
    Some(format!("pod {}/{}", printable(namespace), printable(pod)))
}

/// The kubelet's cgroups above the pods: their limits are the node's.
fn kube_level_name(level: KubeLevel) -> String {
    match level {
        KubeLevel::Node => "the node's allocatable memory for pods".to_owned(),
        KubeLevel::Qos(qos) => format!("the node's {} pods", qos.as_str()),
    }
}

/// Whose limit a domain cgroup is, and how big, in words: `the limit of container web
/// (48.0 MiB)`, `the pod's limit (pod shop/web-0, 256.0 MiB)`, `the node's allocatable memory
/// for pods (7.50 GiB)`.
pub fn limit_words(names: &Attribution, limit_bytes: Option<u64>) -> Option<String> {
    let size = limit_bytes.map(human_bytes);
    let with_size = |words: String| match &size {
        Some(size) => format!("{words} ({size})"),
        None => words,
    };
    if names.identity.kind == cgroup_path::PathKind::Pod {
        let pod = match names.container.as_deref().and_then(pod_name) {
            Some(pod) => pod,
            None => name(names)?,
        };
        let about: Vec<String> = std::iter::once(pod).chain(size).collect();
        return Some(format!("the pod's limit ({})", about.join(", ")));
    }
    if let Some(level) = cgroup_path::kube_level(&names.path) {
        return Some(with_size(match level {
            KubeLevel::Node => kube_level_name(level),
            KubeLevel::Qos(_) => format!("the limit of {}", kube_level_name(level)),
        }));
    }
    short_name(names).map(|name| with_size(format!("the limit of {name}")))
}

/// `container web`, `pod shop/web-0 container api`, else the longer [`name`].
pub fn short_name(names: &Attribution) -> Option<String> {
    match &names.container {
        Some(meta) if meta.role != Role::Workload => pod_name(meta).or_else(|| name(names)),
        Some(meta) => match (pod_name(meta), &meta.k8s.container_name) {
            (Some(pod), Some(container)) => {
                Some(format!("{pod} container {}", printable(container)))
            }
            _ if !meta.name.is_empty() => Some(format!("container {}", printable(&meta.name))),
            _ => name(names),
        },
        _ => name(names),
    }
}

/// Names come from containers' owners and processes: never let them drive the terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Kibibytes as people write them: `12 KiB`, `1.5 MiB`, `3.00 GiB`.
pub fn human_kb(kb: u64) -> String {
    match kb {
        0..1024 => format!("{kb} KiB"),
        1024..1_048_576 => format!("{:.1} MiB", kb as f64 / 1024.0),
        _ => format!("{:.2} GiB", kb as f64 / 1_048_576.0),
    }
}

/// Bytes as people write them.
pub fn human_bytes(bytes: u64) -> String {
    human_kb(bytes / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_kb(12), "12 KiB");
        assert_eq!(human_kb(1536), "1.5 MiB");
        assert_eq!(human_kb(3 * 1_048_576), "3.00 GiB");
    }

    const UID: &str = "11111111-2222-3333-4444-555555555555";
    const ID: &str = "7a4d1b2805fd1506fb93883779daf46eb83f607c796d8a81cb147c45850e5f93";

    fn in_pod(path: &str, role: Role, container: Option<&str>) -> Attribution {
        let mut meta = ContainerMetadata::new(ID, container.unwrap_or(""), "containerd", []);
        meta.role = role;
        meta.image = Some("registry.example/ledger:4.1".to_owned());
        meta.k8s.pod_name = Some("ledger-api-7f9c".to_owned());
        meta.k8s.namespace = Some("pay-prod".to_owned());
        meta.k8s.pod_uid = Some(UID.to_owned());
        meta.k8s.container_name = container.map(str::to_owned);
        meta.k8s.restart_count = Some(3);
        let mut attribution = Attribution::from_path(path);
        attribution.container = Some(std::sync::Arc::new(meta));
        attribution.source = Source::Cache;
        attribution
    }

    #[test]
    fn a_kubernetes_container_is_named_by_its_pod_and_its_name_in_it() {
        let names = in_pod(
            &format!("/kubepods/burstable/pod{UID}/{ID}"),
            Role::Workload,
            Some("worker"),
        );
        assert_eq!(
            name(&names).as_deref(),
            Some(
                "pod pay-prod/ledger-api-7f9c container worker (containerd, \
                 registry.example/ledger:4.1, restart 3)"
            )
        );
        assert_eq!(
            short_name(&names).as_deref(),
            Some("pod pay-prod/ledger-api-7f9c container worker")
        );
        assert_eq!(
            limit_words(&names, Some(48 << 20)).as_deref(),
            Some("the limit of pod pay-prod/ledger-api-7f9c container worker (48.0 MiB)")
        );
    }

    #[test]
    fn an_unknown_container_in_a_known_pod_is_named_by_its_id() {
        let mut names = in_pod(
            &format!("/kubepods/burstable/pod{UID}/{ID}"),
            Role::Workload,
            None,
        );
        if let Some(meta) = names.container.as_mut() {
            std::sync::Arc::make_mut(meta).image = None;
        }
        assert_eq!(
            name(&names).as_deref(),
            Some("pod pay-prod/ledger-api-7f9c container 7a4d1b2805fd (containerd)")
        );
    }

    #[test]
    fn a_pods_sandbox_and_cgroup_name_the_pod() {
        let sandbox = in_pod(
            &format!("/kubepods/burstable/pod{UID}/{ID}"),
            Role::PodSandbox,
            None,
        );
        assert_eq!(
            name(&sandbox).as_deref(),
            Some("pod pay-prod/ledger-api-7f9c (containerd, burstable)")
        );
        let pod = in_pod(&format!("/kubepods/burstable/pod{UID}"), Role::Pod, None);
        assert_eq!(
            limit_words(&pod, Some(256 << 20)).as_deref(),
            Some("the pod's limit (pod pay-prod/ledger-api-7f9c, 256.0 MiB)")
        );
        // Nothing knows the pod: its uid.
        let unknown = Attribution::from_path(&format!("/kubepods/pod{UID}"));
        assert_eq!(
            limit_words(&unknown, None).as_deref(),
            Some(format!("the pod's limit (pod {UID} (guaranteed))").as_str())
        );
    }

    #[test]
    fn the_kubelets_own_cgroups_are_the_nodes_memory() {
        let node = Attribution::from_path("/kubepods");
        assert_eq!(
            limit_words(&node, Some(7 << 30)).as_deref(),
            Some("the node's allocatable memory for pods (7.00 GiB)")
        );
        let qos = Attribution::from_path("/kubepods.slice/kubepods-besteffort.slice");
        assert_eq!(
            limit_words(&qos, None).as_deref(),
            Some("the limit of the node's besteffort pods")
        );
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(printable("evil\x1b[2Jname\n"), "evil\\u{1b}[2Jname\\n");
        assert_eq!(printable("plain-ünïcode"), "plain-ünïcode");
    }
}
