//! How oomtrace names things for people: containers, pods, units and sizes, in log lines and
//! verdicts. Names come from containers' owners and from processes, so they are escaped before
//! they reach a terminal.

use std::fmt::Write as _;

use crate::attribute::Source;
use crate::cgroup_path::{self, KubeLevel, PathKind};
use crate::record::party::{Container, Names};

/// What a person calls the owner of a cgroup, if anything better than its path.
pub(crate) fn name(names: &Names) -> Option<String> {
    let Names {
        container,
        k8s: _,
        systemd,
        attribution,
    } = names;
    let path = attribution
        .as_ref()
        .map(|attribution| attribution.path.as_str());
    let tombstone = attribution
        .as_ref()
        .is_some_and(|a| a.source == Source::Tombstone);
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
            let mut text = match (pod_name(names), names.k8s_container()) {
                // As the kubelet's user knows it: the pod, and the container's name in it.
                (Some(pod), Some(in_pod)) => {
                    if let Some(restarts) = in_pod.restart_count.filter(|&count| count > 0) {
                        about.push(format!("restart {restarts}"));
                    }
                    format!("{pod} container {}", printable(&in_pod.name))
                }
                (pod, _) => {
                    about.extend(pod);
                    format!("container {}", printable(name))
                }
            };
            if tombstone {
                about.push("since removed".to_owned());
            }
            let _ = write!(text, " ({})", about.join(", "));
            return Some(text);
        }
        // Known by its path only; in a known pod, by its pod and id.
        Some(Container { id, runtime, .. }) => {
            let id = printable(short_id(id));
            let runtime = runtime.as_deref().map(printable);
            return Some(match pod_name(names) {
                Some(pod) => {
                    let about = runtime.map(|runtime| format!(" ({runtime})"));
                    format!("{pod} container {id}{}", about.unwrap_or_default())
                }
                None => format!("{} container {id}", runtime.unwrap_or_default())
                    .trim_start()
                    .to_owned(),
            });
        }
        None => {}
    }
    // conmon and friends: not in the container, but there for it.
    if let Some(container) = path.and_then(cgroup_path::monitored_container) {
        return Some(format!(
            "the runtime monitor of container {}",
            printable(short_id(&container.id))
        ));
    }
    // The pod's sandbox: named as such, or its few KiB read as the whole pod's usage.
    if let Some(sandbox) = sandbox_name(names) {
        let qos = names.pod().and_then(|pod| pod.qos_class);
        let about = qos.map(|qos| format!(" ({})", qos.as_str()));
        return Some(format!("{sandbox}{}", about.unwrap_or_default()));
    }
    // A pod by its own cgroup's names (never a "pause" container).
    if let Some(pod) = pod_name(names) {
        let qos = names.pod().and_then(|pod| pod.qos_class);
        let about = qos.map(|qos| format!(" ({})", qos.as_str()));
        return Some(format!("{pod}{}", about.unwrap_or_default()));
    }
    // A pod known from its cgroup path (a container's pod is named with the container).
    if let Some(pod) = names.pod()
        && let (Some(uid), Some(qos)) = (&pod.uid, pod.qos_class)
    {
        return Some(format!("pod {} ({})", printable(uid), qos.as_str()));
    }
    if let Some(level) = path.and_then(cgroup_path::kube_level) {
        return Some(kube_level_name(level));
    }
    systemd
        .as_ref()
        .map(|systemd| format!("unit {}", printable(&systemd.unit)))
}

/// `service db of project shop` for a Compose service's container, `pod shop/web-0 container
/// api` for a Kubernetes one, else `container web`, `pod shop/web-0`, else the longer [`name`].
pub(crate) fn short_name(names: &Names) -> Option<String> {
    compose_service(names)
        .or_else(|| pod_container(names))
        .or_else(|| {
            names
                .container_name()
                .map(|name| format!("container {}", printable(name)))
        })
        .or_else(|| sandbox_name(names))
        .or_else(|| names.container.is_none().then(|| pod_name(names)).flatten())
        .or_else(|| name(names))
}

/// `the sandbox of pod shop/web-0`: the cgroup of a pod's sandbox ("pause") container, which its
/// runtime names by the pod alone. It holds a few hundred KiB; named like the pod, it would
/// read as the whole pod's usage while the pod's limit is full. Told from the pod's own cgroup
/// by its path, a container's (containerd's and CRI-O's, cgroupfs and systemd drivers alike).
pub(crate) fn sandbox_name(names: &Names) -> Option<String> {
    if names.container.is_some() || names.k8s_container().is_some() {
        return None;
    }
    let path = &names.attribution.as_ref()?.path;
    if cgroup_path::parse(path).kind != PathKind::Container {
        return None;
    }
    let pod = pod_name(names).or_else(|| {
        let uid = names.pod()?.uid.as_deref()?;
        Some(format!("pod {}", printable(uid)))
    })?;
    Some(format!("the sandbox of {pod}"))
}

/// `pod shop/web-0`, from the pod's names.
pub(crate) fn pod_name(names: &Names) -> Option<String> {
    let namespace = names.namespace()?;
    let pod = names.pod()?.name.as_deref()?;
    Some(format!("pod {}/{}", printable(namespace), printable(pod)))
}

/// `pod shop/web-0 container api`: a container as the kubelet's user knows it.
pub(crate) fn pod_container(names: &Names) -> Option<String> {
    let pod = pod_name(names)?;
    let container = names.k8s_container()?;
    Some(format!("{pod} container {}", printable(&container.name)))
}

/// Whose memory a Kubernetes cgroup limits, when that is more than its owner's name: the
/// pod's own cgroup, or the kubelet's above the pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum KubeLimit {
    /// The pod's limit (the sum of its containers'), with the pod's name.
    Pod(String),
    Node(KubeLevel),
}

impl KubeLimit {
    /// The limit of the cgroup at `path`, owned by `names`, when it is a pod's or the node's.
    pub(crate) fn of(names: &Names, path: &str) -> Option<KubeLimit> {
        if cgroup_path::parse(path).kind == PathKind::Pod {
            return pod_name(names).or_else(|| name(names)).map(KubeLimit::Pod);
        }
        cgroup_path::kube_level(path).map(KubeLimit::Node)
    }

    /// `the pod's limit (pod shop/web-0, 256.0 MiB)`, `the node's allocatable memory for pods
    /// (7.50 GiB)`, `the limit of the node's burstable pods`.
    pub(crate) fn words(&self, limit_bytes: Option<u64>) -> String {
        let size = limit_bytes.map(human_bytes);
        match self {
            KubeLimit::Pod(pod) => {
                let about: Vec<String> = std::iter::once(pod.clone()).chain(size).collect();
                format!("the pod's limit ({})", about.join(", "))
            }
            KubeLimit::Node(level) => {
                let words = match level {
                    KubeLevel::Node => kube_level_name(*level),
                    KubeLevel::Qos(_) => format!("the limit of {}", kube_level_name(*level)),
                };
                match size {
                    Some(size) => format!("{words} ({size})"),
                    None => words,
                }
            }
        }
    }
}

/// Whose limit a domain cgroup is, and how big, in words: `the limit of container web
/// (48.0 MiB)`, `the pod's limit (pod shop/web-0, 256.0 MiB)`, `the node's allocatable memory
/// for pods (7.50 GiB)`; `path` is the cgroup's.
pub(crate) fn limit_words(
    names: &Names,
    path: Option<&str>,
    limit_bytes: Option<u64>,
) -> Option<String> {
    let path = path.or(names.attribution.as_ref().map(|a| a.path.as_str()));
    if let Some(kube) = path.and_then(|path| KubeLimit::of(names, path)) {
        return Some(kube.words(limit_bytes));
    }
    let size = limit_bytes
        .map(|bytes| format!(" ({})", human_bytes(bytes)))
        .unwrap_or_default();
    short_name(names).map(|name| format!("the limit of {name}{size}"))
}

/// The kubelet's cgroups above the pods: their limits are the node's.
pub(crate) fn kube_level_name(level: KubeLevel) -> String {
    match level {
        KubeLevel::Node => "the node's allocatable memory for pods".to_owned(),
        KubeLevel::Qos(qos) => format!("the node's {} pods", qos.as_str()),
    }
}

/// The start of a container id, as `docker ps` shows it.
pub(crate) fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `service db of project shop`, as Compose users think of a container, when its labels say.
pub(crate) fn compose_service(names: &Names) -> Option<String> {
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

/// Names come from containers' owners and processes: never let them drive the terminal. The
/// output's own writers apply the same rule ([`crate::escape`]); this is for a name measured or
/// cut before it is written (a table's cell).
pub(crate) fn printable(text: &str) -> String {
    crate::escape::escape(text).into_owned()
}

/// Kibibytes as people write them: `12 KiB`, `1.5 MiB`, `3.00 GiB`.
pub(crate) fn human_kb(kb: u64) -> String {
    match kb {
        0..1024 => format!("{kb} KiB"),
        1024..1_048_576 => format!("{:.1} MiB", kb as f64 / 1024.0),
        _ => format!("{:.2} GiB", kb as f64 / 1_048_576.0),
    }
}

/// Bytes as people write them.
pub(crate) fn human_bytes(bytes: u64) -> String {
    human_kb(bytes / 1024)
}

/// Bytes as people say them in a sentence: whole numbers from 10 up, one decimal below, no
/// trailing zero (`64 MiB`, `61 MiB`, `259 MiB`, `5.4 MiB`, `2.8 GiB`, `1 GiB`). The log line
/// keeps [`human_bytes`]'s fixed precision; the verdict speaks, and the JSON has every byte.
pub(crate) fn spoken_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while unit + 1 < UNITS.len() && value >= 1024.0 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes} bytes");
    }
    let decimals = if value >= 9.95 { 0 } else { 1 };
    let mut text = format!("{value:.decimals$}");
    // Rounding up may reach the next unit: 1023.7 MiB is 1 GiB.
    if text == "1024" && unit + 1 < UNITS.len() {
        return format!("1 {}", UNITS[unit + 1]);
    }
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_owned();
    }
    format!("{text} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_spoken_as_people_say_them() {
        let mib = 1u64 << 20;
        for (bytes, spoken) in [
            (0, "0 bytes"),
            (900, "900 bytes"),
            (12 << 10, "12 KiB"),
            (48 * mib, "48 MiB"),
            (128 * mib, "128 MiB"),
            (63 * mib + mib / 2, "64 MiB"),
            (70 * mib + (50 << 10), "70 MiB"),
            (258_900 << 10, "253 MiB"),
            (5 * mib + (400 << 10), "5.4 MiB"),
            (9 * mib + (990 << 10), "10 MiB"),
            ((28 << 30) / 10, "2.8 GiB"),
            (1 << 30, "1 GiB"),
            (1023 * mib + (900 << 10), "1 GiB"),
            ((15 << 30) / 2, "7.5 GiB"),
        ] {
            assert_eq!(spoken_bytes(bytes), spoken, "{bytes}");
        }
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_kb(12), "12 KiB");
        assert_eq!(human_kb(1536), "1.5 MiB");
        assert_eq!(human_kb(3 * 1_048_576), "3.00 GiB");
    }

    use crate::attribute::fixtures::{CRI_ID, POD_UID, in_pod, pod_path, worker};
    use crate::record::build::{names, names_from_path};

    #[test]
    fn a_kubernetes_container_is_named_by_its_pod_and_its_name_in_it() {
        let names = names(Some(&worker()), None);
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
            limit_words(&names, None, Some(48 << 20)).as_deref(),
            Some("the limit of pod pay-prod/ledger-api-7f9c container worker (48.0 MiB)")
        );
    }

    #[test]
    fn a_first_run_says_no_restart_and_a_removed_one_says_so() {
        let mut attribution = worker();
        if let Some(meta) = attribution.container.as_mut() {
            std::sync::Arc::make_mut(meta).k8s.restart_count = Some(0);
        }
        attribution.source = Source::Tombstone;
        assert_eq!(
            name(&names(Some(&attribution), None)).as_deref(),
            Some(
                "pod pay-prod/ledger-api-7f9c container worker (containerd, \
                 registry.example/ledger:4.1, since removed)"
            )
        );
    }

    #[test]
    fn an_unknown_container_in_a_known_pod_is_named_by_its_id() {
        let mut attribution = worker();
        if let Some(meta) = attribution.container.as_mut() {
            let meta = std::sync::Arc::make_mut(meta);
            meta.name = String::new();
            meta.k8s.container_name = None;
        }
        assert_eq!(
            name(&names(Some(&attribution), None)).as_deref(),
            Some("pod pay-prod/ledger-api-7f9c container 7a4d1b2805fd (containerd)")
        );
    }

    #[test]
    fn a_pods_sandbox_is_named_as_its_sandbox_and_its_cgroup_as_the_pod() {
        let sandbox = names(
            Some(&in_pod(&format!("{}/{CRI_ID}", pod_path()), None)),
            None,
        );
        assert_eq!(
            name(&sandbox).as_deref(),
            Some("the sandbox of pod pay-prod/ledger-api-7f9c (burstable)")
        );
        assert_eq!(
            short_name(&sandbox).as_deref(),
            Some("the sandbox of pod pay-prod/ledger-api-7f9c")
        );
        let pod = names(Some(&in_pod(&pod_path(), None)), None);
        assert_eq!(
            name(&pod).as_deref(),
            Some("pod pay-prod/ledger-api-7f9c (burstable)")
        );
        assert_eq!(
            short_name(&pod).as_deref(),
            Some("pod pay-prod/ledger-api-7f9c")
        );
        assert_eq!(sandbox_name(&pod), None);
        assert_eq!(
            limit_words(&pod, None, Some(256 << 20)).as_deref(),
            Some("the pod's limit (pod pay-prod/ledger-api-7f9c, 256.0 MiB)")
        );
        // Nothing knows the pod: its uid, from the path.
        let uid = "0a1b2c3d-0000-1111-2222-333344445555";
        let unknown = names_from_path(&format!("/kubepods/pod{uid}"));
        assert_eq!(
            limit_words(&unknown, None, None).as_deref(),
            Some(format!("the pod's limit (pod {uid} (guaranteed))").as_str())
        );
    }

    /// The sandbox's cgroup as each runtime and cgroup driver makes it, beside the pod's own.
    #[test]
    fn a_sandbox_is_told_from_its_pod_on_every_runtime_and_driver() {
        let uid = POD_UID.replace('-', "_");
        for (pod, sandbox) in [
            // containerd, cgroupfs driver.
            (pod_path(), format!("{}/{CRI_ID}", pod_path())),
            // containerd, systemd driver.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice"
                ),
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/\
                     cri-containerd-{CRI_ID}.scope"
                ),
            ),
            // CRI-O, systemd driver.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice"
                ),
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/\
                     crio-{CRI_ID}.scope"
                ),
            ),
            // CRI-O, cgroupfs driver.
            (pod_path(), format!("{}/crio-{CRI_ID}", pod_path())),
        ] {
            let named = names(Some(&in_pod(&sandbox, None)), None);
            assert_eq!(
                short_name(&named).as_deref(),
                Some("the sandbox of pod pay-prod/ledger-api-7f9c"),
                "{sandbox}"
            );
            let own = names(Some(&in_pod(&pod, None)), None);
            assert_eq!(
                short_name(&own).as_deref(),
                Some("pod pay-prod/ledger-api-7f9c"),
                "{pod}"
            );
        }
        // A container of the pod the runtime has not named yet is a container, by its id.
        let unnamed = names_from_path(&format!("{}/{CRI_ID}", pod_path()));
        assert_eq!(sandbox_name(&unnamed), None);
        assert_eq!(sandbox_name(&names(Some(&worker()), None)), None);
    }

    #[test]
    fn the_kubelets_own_cgroups_are_the_nodes_memory() {
        let node = names_from_path("/kubepods");
        assert_eq!(
            limit_words(&node, None, Some(7 << 30)).as_deref(),
            Some("the node's allocatable memory for pods (7.00 GiB)")
        );
        assert_eq!(
            name(&node).as_deref(),
            Some("the node's allocatable memory for pods")
        );
        let qos = names_from_path("/kubepods.slice/kubepods-besteffort.slice");
        assert_eq!(
            limit_words(&qos, None, None).as_deref(),
            Some("the limit of the node's besteffort pods")
        );
        // The domain's own path decides, whatever the names were resolved from.
        assert_eq!(
            limit_words(
                &Names::default(),
                Some("/kubepods/burstable"),
                Some(1 << 30)
            )
            .as_deref(),
            Some("the limit of the node's burstable pods (1.00 GiB)")
        );
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        assert_eq!(printable("evil\x1b[2Jname\n"), "evil\\x1b[2Jname\\n");
        assert_eq!(printable("plain-ünïcode"), "plain-ünïcode");
    }
}
