//! The people-facing names of a stored record's parties, read from its JSON. Every name goes
//! through [`printable`]: they come from containers' owners and processes.

use serde_json::Value;

use crate::history::query::StoredEvent;
use crate::names::printable;

fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// The stored record, parsed; `Null` if it cannot be (then only the columns are shown).
pub fn record(event: &StoredEvent) -> Value {
    serde_json::from_str(&event.record).unwrap_or(Value::Null)
}

/// The victim's (a sigkill's target's) container for a table cell: its name, else the start of
/// its id, else its pod.
pub fn container_cell(event: &StoredEvent) -> String {
    if let Some(name) = event
        .container_name
        .as_deref()
        .filter(|name| !name.is_empty())
    {
        return printable(name);
    }
    if let Some(id) = &event.container_id {
        return printable(id.get(..12).unwrap_or(id));
    }
    match (&event.namespace, &event.pod) {
        (Some(namespace), Some(pod)) => format!("pod {}/{}", printable(namespace), printable(pod)),
        (None, Some(pod)) => format!("pod {}", printable(pod)),
        _ => "-".to_owned(),
    }
}

/// The victim's (a sigkill's target's) Compose service, `project/service`, if it ran in one.
pub fn compose_service_cell(record: &Value) -> Option<String> {
    let party = record.get("victim").or_else(|| record.get("target"))?;
    let service = text(party, "/container/compose/service")?;
    Some(match text(party, "/container/compose/project") {
        Some(project) => format!("{}/{}", printable(project), printable(service)),
        None => printable(service),
    })
}

/// `service db of project shop`, when a party's container belongs to a Compose service.
fn compose_service(party: &Value) -> Option<String> {
    Some(format!(
        "service {} of project {}",
        printable(text(party, "/container/compose/service")?),
        printable(text(party, "/container/compose/project")?)
    ))
}

/// Whose limit was hit, in a few words: `host`, `web` (a container), a cgroup path.
pub fn limit_cell(event: &StoredEvent, record: &Value) -> String {
    if event.kind != "oom_kill" {
        return "-".to_owned();
    }
    let domain = &record["domain"];
    match event.domain_kind.as_deref() {
        Some("host") => "host".to_owned(),
        Some("cgroup") => owner_short(domain)
            .or_else(|| text(domain, "/cgroup/path").map(printable))
            .unwrap_or_else(|| "a cgroup".to_owned()),
        _ => "unknown".to_owned(),
    }
}

/// The trigger of an OOM kill (`itself` when the victim's own allocation set it off), or the
/// sender of a SIGKILL.
pub fn trigger_cell(event: &StoredEvent, record: &Value) -> String {
    let trigger_pid = record
        .pointer("/trigger/process/pid")
        .and_then(Value::as_u64);
    if event.kind == "oom_kill" && trigger_pid == Some(u64::from(event.victim_pid)) {
        return "itself".to_owned();
    }
    event
        .trigger_name
        .as_deref()
        .map_or_else(|| "-".to_owned(), printable)
}

/// `container web`, `pod shop/web-0`, `unit nginx.service`: who owns a party's cgroup, briefly.
pub fn owner_short(party: &Value) -> Option<String> {
    if let Some(name) = text(party, "/container/name").filter(|name| !name.is_empty()) {
        return Some(format!("container {}", printable(name)));
    }
    if let Some(id) = text(party, "/container/id") {
        return Some(format!(
            "container {}",
            printable(id.get(..12).unwrap_or(id))
        ));
    }
    if let Some(pod) = text(party, "/k8s/pod/name").or_else(|| text(party, "/k8s/pod/uid")) {
        return Some(format!("pod {}", printable(pod)));
    }
    text(party, "/systemd/unit").map(|unit| format!("unit {}", printable(unit)))
}

/// Who owns a party's cgroup, in full: `container web (podman, localhost/web:1, pod shop/web-0)`,
/// else its cgroup path.
pub fn owner(party: &Value) -> Option<String> {
    let Some(short) = owner_short(party) else {
        return text(party, "/memcg/path")
            .or_else(|| text(party, "/cgroup/path"))
            .or_else(|| text(party, "/attribution/path"))
            .map(|path| format!("cgroup {}", printable(path)));
    };
    let mut about = Vec::new();
    if party.get("container").is_some() {
        about.extend(compose_service(party));
        about.extend(text(party, "/container/runtime").map(printable));
        about.extend(text(party, "/container/image/name").map(printable));
        if let (Some(namespace), Some(pod)) = (
            text(party, "/k8s/namespace/name"),
            text(party, "/k8s/pod/name"),
        ) {
            about.push(format!("pod {}/{}", printable(namespace), printable(pod)));
        }
    }
    if text(party, "/attribution/source") == Some("tombstone") {
        about.push("since removed".to_owned());
    }
    Some(if about.is_empty() {
        short
    } else {
        format!("{short} ({})", about.join(", "))
    })
}

/// `pid 42 (java) in container web (podman, …)`.
pub fn party(party: &Value) -> String {
    let pid = party
        .pointer("/process/pid")
        .and_then(Value::as_u64)
        .map_or_else(|| "pid ?".to_owned(), |pid| format!("pid {pid}"));
    let mut out = match text(party, "/process/executable/name") {
        Some(comm) => format!("{pid} ({})", printable(comm)),
        None => pid,
    };
    if let Some(owner) = owner(party) {
        out.push_str(" in ");
        out.push_str(&owner);
    }
    out
}
