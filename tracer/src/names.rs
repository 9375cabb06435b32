//! How oomtrace names things for people: containers, pods, units and sizes, in log lines and
//! verdicts. Names come from containers' owners and from processes, so they are escaped before
//! they reach a terminal.

use std::fmt::Write as _;

use crate::attribute::runtime::ContainerMetadata;
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
        let mut name = format!("container {}", printable(&meta.name));
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
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(printable("evil\x1b[2Jname\n"), "evil\\u{1b}[2Jname\\n");
        assert_eq!(printable("plain-ünïcode"), "plain-ünïcode");
    }
}
