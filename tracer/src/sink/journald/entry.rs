//! Which fields a record's journal entry has. `MESSAGE` is the log line; the `OOMTRACE_*`
//! fields let `journalctl OOMTRACE_CONTAINER=web` select kills as the metrics' labels do; a
//! fixed `MESSAGE_ID` per kind selects a kind, and finds its text in the catalog
//! (`deploy/oomtrace.catalog`, `journalctl -x`).
//!
//! Values are the record's own here; the sink escapes every one by the rule for printed lines
//! ([`super::escaped`]).

use super::socket::Field;
use crate::attribute::DomainKind;
use crate::incident::SenderKind;
use crate::record::party::{Cgroup, Names, Party};
use crate::record::{HistoryRef, MemoryPressureRecord, OomKillRecord, SigkillRecord};
use crate::sink::text;
use crate::wording::limit_words;

/// `journalctl MESSAGE_ID=…`: one per kind, never changed once released (the catalog and
/// people's queries know them).
pub(crate) const OOM_KILL: &str = "377b4ba9a5e44d82badfb510c999ebd9";
pub(crate) const OOM_MARK_EXITING: &str = "19e23f40ddfb48e1b286d63eae76cb4f";
pub(crate) const SIGKILL: &str = "e62f475421974aa4b6210344ca2e7023";
pub(crate) const MEMORY_PRESSURE: &str = "e36ee4f7e1cc4f7f956903a882b5366f";

/// syslog's priorities, as journald keeps them.
const ERR: u8 = 3;
const WARNING: u8 = 4;
const NOTICE: u8 = 5;

/// What a person selects entries by.
pub(crate) const IDENTIFIER: &str = "oomtrace";

/// The fields common to every entry.
fn head(message: &str, message_id: &'static str, priority: u8, kind: &str) -> Vec<Field> {
    vec![
        ("MESSAGE", message.to_owned()),
        ("MESSAGE_ID", message_id.to_owned()),
        ("PRIORITY", priority.to_string()),
        ("SYSLOG_IDENTIFIER", IDENTIFIER.to_owned()),
        ("OOMTRACE_KIND", kind.to_owned()),
    ]
}

/// An `oom_kill` (or, `marked_without_kill`, an `oom_mark_exiting`): the kernel logs its own
/// OOM kills at `err`; an exiting task given reserves killed nothing.
pub(crate) fn oom_kill(
    kill: &OomKillRecord,
    marked_without_kill: bool,
    history: Option<&HistoryRef>,
) -> Vec<Field> {
    let (id, priority, kind) = if marked_without_kill {
        (OOM_MARK_EXITING, NOTICE, "oom_mark_exiting")
    } else {
        (OOM_KILL, ERR, "oom_kill")
    };
    let mut fields = head(&text::line(kill, marked_without_kill), id, priority, kind);
    let OomKillRecord {
        capture,
        victim,
        trigger,
        domain,
        explanation,
        incident,
        ..
    } = kill;
    fields.extend(party(victim, Role::Subject));
    if let Some(memory) = &victim.process.memory
        && let Some(resident) = memory.usage_bytes
    {
        fields.push(("OOMTRACE_RSS_BYTES", resident.to_string()));
    }
    if let Some(adj) = victim.process.oom_score_adj {
        fields.push(("OOMTRACE_OOM_SCORE_ADJ", adj.to_string()));
    }
    if let Some(main) = victim.names.container.as_ref().and_then(|c| c.main_process) {
        fields.push(("OOMTRACE_MAIN_PROCESS", main.to_string()));
    }
    if let Some(domain) = domain {
        fields.push(("OOMTRACE_LIMIT_KIND", domain.kind.as_str().to_owned()));
        let path = domain.cgroup.as_ref().map(|cgroup| cgroup.path.as_str());
        let limit = domain.memory.and_then(|memory| memory.limit_bytes);
        if let Some(path) = path {
            fields.push(("OOMTRACE_LIMIT_CGROUP", path.to_owned()));
        }
        if let Some(limit) = limit {
            fields.push(("OOMTRACE_LIMIT_BYTES", limit.to_string()));
        }
        let whose = match domain.kind {
            DomainKind::Host => Some("the host".to_owned()),
            DomainKind::Cgroup => limit_words(&domain.names, path, limit),
            DomainKind::Unknown => None,
        };
        fields.extend(whose.map(|whose| ("OOMTRACE_LIMIT", whose)));
        if let Some(inferred) = domain.inferred {
            fields.push(("OOMTRACE_LIMIT_INFERRED", inferred.to_string()));
        }
    }
    if let Some(trigger) = trigger {
        if kill.triggered_by_victim() {
            fields.push(("OOMTRACE_TRIGGER_SELF", "true".to_owned()));
        }
        fields.extend(party(trigger, Role::Trigger));
    }
    if let Some(id) = incident.as_ref().and_then(|incident| incident.id.as_ref()) {
        fields.push(("OOMTRACE_INCIDENT", id.clone()));
    }
    if let Some(tier) = capture.tier {
        fields.push(("OOMTRACE_TIER", tier.as_str().to_owned()));
    }
    if let Some(explanation) = explanation {
        fields.push(("OOMTRACE_VERDICT", explanation.verdict.clone()));
    }
    fields.extend(history_fields(history));
    fields
}

/// A SIGKILL other than the OOM killer's: its target is the subject, and who sent it.
pub(crate) fn sigkill(sigkill: &SigkillRecord, history: Option<&HistoryRef>) -> Vec<Field> {
    let mut fields = head(&text::sigkill_line(sigkill), SIGKILL, WARNING, "sigkill");
    fields.extend(party(&sigkill.target, Role::Subject));
    fields.extend(party(&sigkill.sender.party, Role::Sender));
    fields.push((
        "OOMTRACE_SENDER_KIND",
        match sigkill.sender.kind {
            SenderKind::Process => "process",
            SenderKind::Kernel => "kernel",
            SenderKind::Unknown => "unknown",
        }
        .to_owned(),
    ));
    fields.extend(history_fields(history));
    fields
}

/// A limit near (`--warn-pressure`): its owner is the subject.
pub(crate) fn memory_pressure(pressure: &MemoryPressureRecord) -> Vec<Field> {
    let mut fields = head(
        &text::pressure_line(pressure),
        MEMORY_PRESSURE,
        WARNING,
        "memory_pressure",
    );
    let domain = &pressure.domain;
    fields.push(("OOMTRACE_CGROUP", domain.cgroup.path.clone()));
    fields.extend(names(&domain.names, Role::Subject));
    fields.push((
        "OOMTRACE_LIMIT_BYTES",
        domain.memory.limit_bytes.to_string(),
    ));
    fields.push((
        "OOMTRACE_USAGE_PERCENT",
        format!("{:.1}", domain.memory.percent_of_limit),
    ));
    fields
}

fn history_fields(history: Option<&HistoryRef>) -> Option<Field> {
    history.map(|history| ("OOMTRACE_HISTORY_ID", history.id.to_string()))
}

/// Whose fields: the entry's subject (the victim, a SIGKILL's target) has the short names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Subject,
    Trigger,
    Sender,
}

impl Role {
    /// `OOMTRACE_PID`, `OOMTRACE_TRIGGER_PID`, `OOMTRACE_SENDER_PID`, …
    fn name(self, field: PartyField) -> &'static str {
        use PartyField::*;
        match (self, field) {
            (Role::Subject, Pid) => "OOMTRACE_PID",
            (Role::Subject, Comm) => "OOMTRACE_COMM",
            (Role::Subject, Cgroup) => "OOMTRACE_CGROUP",
            (Role::Subject, Container) => "OOMTRACE_CONTAINER",
            (Role::Subject, ContainerId) => "OOMTRACE_CONTAINER_ID",
            (Role::Subject, Pod) => "OOMTRACE_POD",
            (Role::Subject, Namespace) => "OOMTRACE_NAMESPACE",
            (Role::Subject, ComposeProject) => "OOMTRACE_COMPOSE_PROJECT",
            (Role::Subject, ComposeService) => "OOMTRACE_COMPOSE_SERVICE",
            (Role::Subject, Unit) => "OOMTRACE_UNIT",
            (Role::Trigger, Pid) => "OOMTRACE_TRIGGER_PID",
            (Role::Trigger, Comm) => "OOMTRACE_TRIGGER_COMM",
            (Role::Trigger, Cgroup) => "OOMTRACE_TRIGGER_CGROUP",
            (Role::Trigger, Container) => "OOMTRACE_TRIGGER_CONTAINER",
            (Role::Trigger, ContainerId) => "OOMTRACE_TRIGGER_CONTAINER_ID",
            (Role::Trigger, Pod) => "OOMTRACE_TRIGGER_POD",
            (Role::Trigger, Namespace) => "OOMTRACE_TRIGGER_NAMESPACE",
            (Role::Trigger, ComposeProject) => "OOMTRACE_TRIGGER_COMPOSE_PROJECT",
            (Role::Trigger, ComposeService) => "OOMTRACE_TRIGGER_COMPOSE_SERVICE",
            (Role::Trigger, Unit) => "OOMTRACE_TRIGGER_UNIT",
            (Role::Sender, Pid) => "OOMTRACE_SENDER_PID",
            (Role::Sender, Comm) => "OOMTRACE_SENDER_COMM",
            (Role::Sender, Cgroup) => "OOMTRACE_SENDER_CGROUP",
            (Role::Sender, Container) => "OOMTRACE_SENDER_CONTAINER",
            (Role::Sender, ContainerId) => "OOMTRACE_SENDER_CONTAINER_ID",
            (Role::Sender, Pod) => "OOMTRACE_SENDER_POD",
            (Role::Sender, Namespace) => "OOMTRACE_SENDER_NAMESPACE",
            (Role::Sender, ComposeProject) => "OOMTRACE_SENDER_COMPOSE_PROJECT",
            (Role::Sender, ComposeService) => "OOMTRACE_SENDER_COMPOSE_SERVICE",
            (Role::Sender, Unit) => "OOMTRACE_SENDER_UNIT",
        }
    }
}

/// The fields a party has, each under its role's name.
#[derive(Clone, Copy)]
enum PartyField {
    Pid,
    Comm,
    Cgroup,
    Container,
    ContainerId,
    Pod,
    Namespace,
    ComposeProject,
    ComposeService,
    Unit,
}

fn party(party: &Party, role: Role) -> Vec<Field> {
    let mut fields = Vec::new();
    let pid = party.process.pid.or(party.thread.map(|thread| thread.id));
    fields.extend(pid.map(|pid| (role.name(PartyField::Pid), pid.to_string())));
    fields.extend(
        party
            .process
            .comm()
            .map(|comm| (role.name(PartyField::Comm), comm.to_owned())),
    );
    // The memory controller's cgroup, where the kernel read it; else what names were found by.
    let path = [&party.memcg, &party.cgroup]
        .into_iter()
        .find_map(|cgroup| cgroup.as_ref().and_then(|Cgroup { path, .. }| path.clone()))
        .or_else(|| party.names.attribution.as_ref().map(|a| a.path.clone()));
    fields.extend(path.map(|path| (role.name(PartyField::Cgroup), path)));
    fields.extend(names(&party.names, role));
    // `journalctl -u web.service` shows oomtrace's entries about the unit's processes too:
    // what OBJECT_SYSTEMD_UNIT from a root sender is for.
    if role == Role::Subject
        && let Some(systemd) = &party.names.systemd
    {
        fields.push(("OBJECT_SYSTEMD_UNIT", systemd.unit.clone()));
    }
    fields
}

/// The container (as the metrics' `container` label names it: the Kubernetes container name,
/// else the runtime's, else the id's first 12 characters), its pod, namespace, Compose names
/// and unit.
fn names(names: &Names, role: Role) -> Vec<Field> {
    let mut fields = Vec::new();
    let container = names
        .k8s_container()
        .map(|container| container.name.clone())
        .or_else(|| names.container_name().map(str::to_owned))
        .or_else(|| {
            let id = &names.container.as_ref()?.id;
            Some(id.get(..12).unwrap_or(id).to_owned())
        });
    fields.extend(container.map(|name| (role.name(PartyField::Container), name)));
    if let Some(container) = &names.container {
        fields.push((role.name(PartyField::ContainerId), container.id.clone()));
        if let Some(compose) = &container.compose {
            fields.extend(
                compose
                    .project
                    .as_deref()
                    .map(|project| (role.name(PartyField::ComposeProject), project.to_owned())),
            );
            fields.extend(
                compose
                    .service
                    .as_deref()
                    .map(|service| (role.name(PartyField::ComposeService), service.to_owned())),
            );
        }
    }
    if let Some(pod) = names.pod().and_then(|pod| pod.name.as_deref()) {
        fields.push((role.name(PartyField::Pod), pod.to_owned()));
    }
    if let Some(namespace) = names.namespace() {
        fields.push((role.name(PartyField::Namespace), namespace.to_owned()));
    }
    if let Some(systemd) = &names.systemd {
        fields.push((role.name(PartyField::Unit), systemd.unit.clone()));
    }
    fields
}

#[cfg(test)]
mod tests;
