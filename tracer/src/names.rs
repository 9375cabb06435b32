//! How oomtrace names things for people: containers, pods, units and sizes, in log lines and
//! verdicts. Names come from containers' owners and from processes, so they are escaped before
//! they reach a terminal.

use std::fmt::Write as _;

use crate::attribute::runtime::{ContainerMetadata, Role};
use crate::attribute::{Attribution, Source};

/// What a person calls the owner of a cgroup, if anything better than its path.
pub fn name(names: &Attribution) -> Option<String> {
    let Attribution {
        path: _,
        identity,
        container,
        source,
        warning: _,
    } = names;
    if let Some(meta) = container {
        // A pod's sandbox, or the pod's own cgroup: the pod, never a "pause" container.
        if meta.role != Role::Workload
            && let (Some(namespace), Some(pod)) = (&meta.k8s.namespace, &meta.k8s.pod_name)
        {
            let mut about = vec![meta.runtime.to_owned()];
            about.extend(identity.pod.as_ref().map(|pod| pod.qos.as_str().to_owned()));
            if *source == Source::Tombstone {
                about.push("since removed".to_owned());
            }
            return Some(format!(
                "pod {}/{} ({})",
                printable(namespace),
                printable(pod),
                about.join(", ")
            ));
        }
        // Known only by its pod (nothing else knew the container): its id.
        let own_name = match meta.name.as_str() {
            "" => meta.id.get(..12).unwrap_or(&meta.id),
            name => name,
        };
        let mut name = format!("container {}", printable(own_name));
        let mut about: Vec<String> = compose_service(meta).into_iter().collect();
        about.push(meta.runtime.to_owned());
        about.extend(meta.image.as_deref().map(printable));
        if let (Some(namespace), Some(pod)) = (&meta.k8s.namespace, &meta.k8s.pod_name) {
            about.push(format!("pod {}/{}", printable(namespace), printable(pod)));
        }
        if *source == Source::Tombstone {
            about.push("since removed".to_owned());
        }
        let _ = write!(name, " ({})", about.join(", "));
        return Some(name);
    }
    if let Some(container) = &identity.container {
        let runtime = container.runtime.map_or("", |runtime| runtime.as_str());
        let id = container.id.get(..12).unwrap_or(&container.id);
        return Some(
            format!("{runtime} container {}", printable(id))
                .trim_start()
                .to_owned(),
        );
    }
    // conmon and friends: not in the container, but there for it.
    if let Some(container) = crate::cgroup_path::monitored_container(&names.path) {
        let id = container.id.get(..12).unwrap_or(&container.id);
        return Some(format!(
            "the runtime monitor of container {}",
            printable(id)
        ));
    }
    if let Some(pod) = &identity.pod {
        return Some(format!("pod {} ({})", pod.uid, pod.qos.as_str()));
    }
    identity
        .systemd_unit
        .as_deref()
        .map(|unit| format!("unit {}", printable(unit)))
}

/// `service db of project shop` for a Compose service's container, else `container web`, else
/// the longer [`name`].
pub fn short_name(names: &Attribution) -> Option<String> {
    match &names.container {
        Some(meta) => compose_service(meta).or_else(|| {
            (!meta.name.is_empty()).then(|| format!("container {}", printable(&meta.name)))
        }),
        None => None,
    }
    .or_else(|| name(names))
}

/// `service db of project shop`, as Compose users think of a container, when its labels say.
pub fn compose_service(meta: &ContainerMetadata) -> Option<String> {
    let (Some(service), Some(project)) = (&meta.compose.service, &meta.compose.project) else {
        return None;
    };
    Some(format!(
        "service {} of project {}",
        printable(service),
        printable(project)
    ))
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

    #[test]
    fn a_pods_sandbox_names_the_pod_and_an_unknown_container_its_id() {
        const UID: &str = "11111111-2222-3333-4444-555555555555";
        const ID: &str = "7a4d1b2805fd1506fb93883779daf46eb83f607c796d8a81cb147c45850e5f93";
        let mut meta = ContainerMetadata::new(ID, "", "containerd", []);
        meta.role = Role::PodSandbox;
        meta.k8s.pod_name = Some("ledger-api-7f9c".to_owned());
        meta.k8s.namespace = Some("pay-prod".to_owned());
        let mut names = Attribution::from_path(&format!("/kubepods/burstable/pod{UID}/{ID}"));
        names.container = Some(std::sync::Arc::new(meta.clone()));
        assert_eq!(
            name(&names).as_deref(),
            Some("pod pay-prod/ledger-api-7f9c (containerd, burstable)")
        );
        // The same names on a container nothing else knew: named by its id, in its pod.
        meta.role = Role::Workload;
        names.container = Some(std::sync::Arc::new(meta));
        assert_eq!(
            name(&names).as_deref(),
            Some("container 7a4d1b2805fd (containerd, pod pay-prod/ledger-api-7f9c)")
        );
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(printable("evil\x1b[2Jname\n"), "evil\\u{1b}[2Jname\\n");
        assert_eq!(printable("plain-ünïcode"), "plain-ünïcode");
    }
}
