//! How oomtrace names things for people: containers, pods, units and sizes, in log lines and
//! verdicts. Names come from containers' owners and from processes, so they are escaped before
//! they reach a terminal.

use std::fmt::Write as _;

use crate::attribute::Source;
use crate::record::party::{Container, Names};

/// What a person calls the owner of a cgroup, if anything better than its path.
pub fn name(names: &Names) -> Option<String> {
    let Names {
        container,
        k8s: _,
        systemd,
        attribution,
    } = names;
    let path = attribution
        .as_ref()
        .map(|attribution| attribution.path.as_str());
    match container {
        // Named by its runtime.
        Some(Container {
            name: Some(name),
            image,
            runtime,
            ..
        }) => {
            let mut about: Vec<String> = compose_service(names).into_iter().collect();
            about.extend(runtime.iter().map(|runtime| printable(runtime)));
            about.extend(image.as_ref().map(|image| printable(&image.name)));
            if let (Some(namespace), Some(pod)) = (
                names.namespace(),
                names.pod().and_then(|pod| pod.name.as_deref()),
            ) {
                about.push(format!("pod {}/{}", printable(namespace), printable(pod)));
            }
            if attribution
                .as_ref()
                .is_some_and(|a| a.source == Source::Tombstone)
            {
                about.push("since removed".to_owned());
            }
            let mut text = format!("container {}", printable(name));
            let _ = write!(text, " ({})", about.join(", "));
            return Some(text);
        }
        // Known by its path only.
        Some(Container { id, runtime, .. }) => {
            let runtime = runtime.as_deref().unwrap_or("");
            let id = id.get(..12).unwrap_or(id);
            return Some(
                format!("{runtime} container {}", printable(id))
                    .trim_start()
                    .to_owned(),
            );
        }
        None => {}
    }
    // conmon and friends: not in the container, but there for it.
    if let Some(container) = path.and_then(crate::cgroup_path::monitored_container) {
        let id = container.id.get(..12).unwrap_or(&container.id);
        return Some(format!(
            "the runtime monitor of container {}",
            printable(id)
        ));
    }
    // A pod by its names (its sandbox, or its own cgroup: never a "pause" container).
    if let (Some(namespace), Some(pod)) = (
        names.namespace(),
        names.pod().and_then(|pod| pod.name.as_deref()),
    ) {
        let qos = names.pod().and_then(|pod| pod.qos_class);
        let about = qos.map(|qos| format!(" ({})", qos.as_str()));
        return Some(format!(
            "pod {}/{}{}",
            printable(namespace),
            printable(pod),
            about.unwrap_or_default()
        ));
    }
    // A pod known from its cgroup path (a container's pod is named with the container).
    if let Some(pod) = names.pod()
        && let (Some(uid), Some(qos)) = (&pod.uid, pod.qos_class)
    {
        return Some(format!("pod {uid} ({})", qos.as_str()));
    }
    systemd
        .as_ref()
        .map(|systemd| format!("unit {}", printable(&systemd.unit)))
}

/// `service db of project shop` for a Compose service's container, else `container web`, else
/// the longer [`name`].
pub fn short_name(names: &Names) -> Option<String> {
    compose_service(names)
        .or_else(|| {
            names
                .container_name()
                .map(|name| format!("container {}", printable(name)))
        })
        .or_else(|| name(names))
}

/// `service db of project shop`, as Compose users think of a container, when its labels say.
pub fn compose_service(names: &Names) -> Option<String> {
    let compose = names.container.as_ref()?.compose.as_ref()?;
    let (Some(service), Some(project)) = (&compose.service, &compose.project) else {
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
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(printable("evil\x1b[2Jname\n"), "evil\\u{1b}[2Jname\\n");
        assert_eq!(printable("plain-ünïcode"), "plain-ünïcode");
    }
}
