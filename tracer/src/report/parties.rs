//! The people-facing names of a stored record's parties. Every name goes through
//! [`printable`]: they come from containers' owners and processes.

use crate::attribute::Source;
use crate::cgroup_path::kube_level;
use crate::history::query::StoredEvent;
use crate::record::party::{Names, Party};
use crate::record::{Body, Record};
use crate::wording::{self, printable};

/// The stored record, read back; `None` if it cannot be (then only the columns are shown).
pub(super) fn record(event: &StoredEvent) -> Option<Record> {
    serde_json::from_str(&event.record).ok()
}

/// The victim's (a sigkill's target's) container for a table cell: `container (namespace/pod)`
/// in a Kubernetes pod, else its name, else the start of its id, else its pod.
pub(super) fn container_cell(event: &StoredEvent, record: Option<&Record>) -> String {
    let in_pod = record
        .and_then(victim)
        .and_then(|party| party.names.k8s_container());
    // The container first: a narrow column cuts the pod's name, not the container's.
    if let (Some(namespace), Some(pod), Some(container)) = (&event.namespace, &event.pod, in_pod) {
        return format!(
            "{} ({}/{})",
            printable(&container.name),
            printable(namespace),
            printable(pod)
        );
    }
    if let Some(name) = event
        .container_name
        .as_deref()
        .filter(|name| !name.is_empty())
    {
        return printable(name);
    }
    if let Some(id) = &event.container_id {
        return printable(wording::short_id(id));
    }
    match (&event.namespace, &event.pod) {
        (Some(namespace), Some(pod)) => format!("pod {}/{}", printable(namespace), printable(pod)),
        (None, Some(pod)) => format!("pod {}", printable(pod)),
        _ => "-".to_owned(),
    }
}

/// The victim of an OOM kill, the target of a SIGKILL.
fn victim(record: &Record) -> Option<&Party> {
    match &record.body {
        Body::OomKill(kill) => Some(&kill.victim),
        Body::Sigkill(sigkill) => Some(&sigkill.target),
        _ => None,
    }
}

/// The victim's (a sigkill's target's) Compose service, `project/service`, if it ran in one.
pub(super) fn compose_service_cell(record: Option<&Record>) -> Option<String> {
    let party = victim(record?)?;
    let compose = party.names.container.as_ref()?.compose.as_ref()?;
    let service = printable(compose.service.as_deref()?);
    Some(match &compose.project {
        Some(project) => format!("{}/{service}", printable(project)),
        None => service,
    })
}

/// Whose limit was hit, in a few words: `host`, `web` (a container), a cgroup path.
pub(super) fn limit_cell(event: &StoredEvent, record: Option<&Record>) -> String {
    if event.kind != "oom_kill" {
        return "-".to_owned();
    }
    let domain = match record.map(|record| &record.body) {
        Some(Body::OomKill(kill)) => kill.domain.as_ref(),
        _ => None,
    };
    match event.domain_kind.as_deref() {
        Some("host") => "host".to_owned(),
        Some("cgroup") => domain
            .and_then(|domain| {
                owner_short(&domain.names).or_else(|| {
                    let cgroup = domain.cgroup.as_ref()?;
                    Some(printable(&cgroup.path))
                })
            })
            .unwrap_or_else(|| "a cgroup".to_owned()),
        _ => "unknown".to_owned(),
    }
}

/// The trigger of an OOM kill (`itself` when the victim's own allocation set it off), or the
/// sender of a SIGKILL.
pub(super) fn trigger_cell(event: &StoredEvent, record: Option<&Record>) -> String {
    if let Some(Body::OomKill(kill)) = record.map(|record| &record.body)
        && kill.triggered_by_victim()
    {
        return "itself".to_owned();
    }
    event
        .trigger_name
        .as_deref()
        .map_or_else(|| "-".to_owned(), printable)
}

/// `container web`, `pod shop/web-0 container api`, `pod shop/web-0`, `unit nginx.service`:
/// who owns a cgroup, briefly.
pub(super) fn owner_short(names: &Names) -> Option<String> {
    if let Some(in_pod) = wording::pod_container(names) {
        return Some(in_pod);
    }
    if let Some(name) = names.container_name() {
        return Some(format!("container {}", printable(name)));
    }
    if let Some(container) = &names.container {
        return Some(format!(
            "container {}",
            printable(wording::short_id(&container.id))
        ));
    }
    if let Some(sandbox) = wording::sandbox_name(names) {
        return Some(sandbox);
    }
    if let Some(pod) = wording::pod_name(names) {
        return Some(pod);
    }
    if let Some(pod) = names
        .pod()
        .and_then(|pod| pod.name.as_deref().or(pod.uid.as_deref()))
    {
        return Some(format!("pod {}", printable(pod)));
    }
    if let Some(level) = names
        .attribution
        .as_ref()
        .and_then(|attribution| kube_level(&attribution.path))
    {
        return Some(wording::kube_level_name(level));
    }
    names
        .systemd
        .as_ref()
        .map(|systemd| format!("unit {}", printable(&systemd.unit)))
}

/// Who owns a cgroup, in full: `container web (podman, localhost/web:1, pod shop/web-0)`,
/// `pod shop/web-0 container api (containerd, registry/api:2, restart 3)`, else
/// `cgroup <path>`: the `path` given, else the one the names were resolved from.
pub(super) fn owner(names: &Names, path: Option<&str>) -> Option<String> {
    let Some(short) = owner_short(names) else {
        let path = path.or(names
            .attribution
            .as_ref()
            .map(|attribution| attribution.path.as_str()))?;
        return Some(format!("cgroup {}", printable(path)));
    };
    let mut about = Vec::new();
    if let Some(container) = &names.container {
        about.extend(wording::compose_service(names));
        about.extend(container.runtime.as_deref().map(printable));
        about.extend(container.image.as_ref().map(|image| printable(&image.name)));
        match (wording::pod_container(names), names.k8s_container()) {
            (Some(_), Some(in_pod)) => about.extend(
                in_pod
                    .restart_count
                    .filter(|&count| count > 0)
                    .map(|count| format!("restart {count}")),
            ),
            _ => about.extend(wording::pod_name(names)),
        }
    }
    if names
        .attribution
        .as_ref()
        .is_some_and(|attribution| attribution.source == Source::Tombstone)
    {
        about.push("since removed".to_owned());
    }
    Some(if about.is_empty() {
        short
    } else {
        format!("{short} ({})", about.join(", "))
    })
}

/// `pid 42 (java) in container web (podman, …)`.
pub(super) fn party(party: &Party) -> String {
    let pid = party
        .process
        .pid
        .map_or_else(|| "pid ?".to_owned(), |pid| format!("pid {pid}"));
    let mut out = match party.process.comm() {
        Some(comm) => format!("{pid} ({})", printable(comm)),
        None => pid,
    };
    let path = [&party.memcg, &party.cgroup]
        .into_iter()
        .find_map(|cgroup| cgroup.as_ref()?.path.as_deref());
    if let Some(owner) = owner(&party.names, path) {
        out.push_str(" in ");
        out.push_str(&owner);
    }
    out
}
