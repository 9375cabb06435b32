//! `oomtrace show ID`: one stored kill in full, for people.

use serde_json::Value;

use super::parties::{owner, party, record};
use super::style::{Paint, Style, WIDTH, truncate, wrap};
use crate::history::query::StoredEvent;
use crate::names::{human_bytes, printable};

/// Labels are this wide, so values line up.
const LABEL: usize = 11;

pub fn text(event: &StoredEvent, incident: &[StoredEvent], style: &Style) -> Vec<String> {
    let record = record(event);
    let mut lines = Vec::new();
    let title = match event.kind.as_str() {
        "oom_kill" => format!("OOM kill #{}", event.id),
        "sigkill" => format!("SIGKILL #{}", event.id),
        other => format!("{} #{}", printable(other), event.id),
    };
    lines.push(format!(
        "{} at {}",
        style.paint(Paint::Bold, &title),
        style.when(event.time_ns)
    ));
    lines.push(style.paint(
        Paint::Dim,
        &format!(
            "{:LABEL$} {}, boot {}, kernel time {:.6} s",
            "Source",
            printable(&event.source),
            printable(event.boot_id.get(..8).unwrap_or(&event.boot_id)),
            event.ktime_ns as f64 / 1e9
        ),
    ));
    if record.is_null() {
        lines.push("the stored record cannot be read".to_owned());
        return lines;
    }
    match event.kind.as_str() {
        "sigkill" => sigkill(&record, &mut lines),
        _ => oom_kill(&record, incident, event, &mut lines),
    }
    lines
        .into_iter()
        .map(|line| {
            if line.contains('\x1b') {
                line
            } else {
                truncate(&line, WIDTH)
            }
        })
        .collect()
}

fn labelled(label: &str, value: String) -> String {
    format!("{label:LABEL$} {value}")
}

fn oom_kill(
    record: &Value,
    incident: &[StoredEvent],
    event: &StoredEvent,
    lines: &mut Vec<String>,
) {
    if let Some(verdict) = record
        .pointer("/explanation/verdict")
        .and_then(Value::as_str)
    {
        lines.push(String::new());
        lines.extend(wrap(&printable(verdict), ""));
    }
    lines.push(String::new());
    let victim = &record["victim"];
    lines.push(labelled("Victim", party(victim)));
    if let Some(memory) = victim.pointer("/process/memory") {
        let bytes = |name: &str| memory.get(name).and_then(Value::as_u64).map(human_bytes);
        let mut parts = Vec::new();
        for (name, label) in [
            ("usage_bytes", "resident"),
            ("anon_rss_bytes", "anon"),
            ("file_rss_bytes", "file"),
            ("shmem_rss_bytes", "shmem"),
            ("virtual_bytes", "virtual"),
        ] {
            parts.extend(bytes(name).map(|size| format!("{label} {size}")));
        }
        lines.push(labelled("", parts.join(", ")));
    }
    let mut facts = Vec::new();
    if let Some(adj) = victim
        .pointer("/process/oom_score_adj")
        .and_then(Value::as_i64)
    {
        facts.push(format!("oom_score_adj {adj}"));
    }
    if let Some(points) = victim.pointer("/badness/points").and_then(Value::as_i64) {
        let estimated = victim.pointer("/badness/estimated") == Some(&Value::Bool(true));
        facts.push(format!(
            "badness {points}{}",
            if estimated { " (estimated)" } else { "" }
        ));
    }
    match victim
        .pointer("/container/main_process")
        .and_then(Value::as_bool)
    {
        Some(true) => facts.push("its container's main process".to_owned()),
        Some(false) => facts.push("not its container's main process".to_owned()),
        None => {}
    }
    if !facts.is_empty() {
        lines.push(labelled("", facts.join(", ")));
    }
    lines.push(labelled("Trigger", party(&record["trigger"])));
    lines.push(labelled("Limit hit", domain(&record["domain"])));
    snapshot(record, lines);
    let lead_up = super::lead_up::lines(record, &" ".repeat(LABEL + 1));
    if !lead_up.is_empty() {
        let window = record
            .pointer("/explanation/timeline/window_s")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        lines.push(labelled(
            "Before",
            format!("the {window} s before the kill:"),
        ));
        lines.extend(lead_up);
    }
    if let Some(restart) = record.pointer("/explanation/restart_loop") {
        lines.push(labelled(
            "Pattern",
            format!(
                "restart loop: {} OOM kills of this container within {}",
                restart["count"],
                hours(&restart["window_seconds"])
            ),
        ));
    }
    if let Some(recurring) = record.pointer("/explanation/recurring_trigger") {
        lines.push(labelled(
            "Pattern",
            format!(
                "recurring trigger: {} host-wide OOMs within {}",
                recurring["count"],
                hours(&recurring["window_seconds"])
            ),
        ));
    }
    if let Some(id) = record.pointer("/incident/id").and_then(Value::as_str) {
        let others: Vec<String> = incident
            .iter()
            .filter(|other| other.id != event.id)
            .map(|other| {
                format!(
                    "#{} pid {} ({})",
                    other.id,
                    other.victim_pid,
                    other
                        .victim_comm
                        .as_deref()
                        .map_or("?".to_owned(), printable)
                )
            })
            .collect();
        let message = record
            .pointer("/incident/message")
            .and_then(Value::as_str)
            .map_or(String::new(), |message| {
                format!(" \"{}\"", printable(message))
            });
        lines.push(labelled("Incident", format!("{}{message}", printable(id))));
        if others.is_empty() {
            lines.push(labelled("", "no other victim".to_owned()));
        } else {
            let text = format!("also killed: {}", others.join(", "));
            lines.extend(wrap(&text, &" ".repeat(LABEL + 1)));
        }
    }
}

fn domain(domain: &Value) -> String {
    let kind = domain
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let mut out = match kind {
        "host" => "the host ran out of memory, no cgroup limit was hit".to_owned(),
        "cgroup" => owner(domain).unwrap_or_else(|| "a cgroup".to_owned()),
        _ => "unknown".to_owned(),
    };
    if kind == "cgroup"
        && owner(domain).is_some_and(|owner| !owner.starts_with("cgroup "))
        && let Some(path) = domain.pointer("/cgroup/path").and_then(Value::as_str)
    {
        out.push_str(&format!(", cgroup {}", printable(path)));
    }
    let memory = &domain["memory"];
    let bytes = |name: &str| memory.get(name).and_then(Value::as_u64).map(human_bytes);
    if let Some(limit) = bytes("limit_bytes") {
        out.push_str(&format!(", limit {limit}"));
    }
    if let Some(usage) = bytes("usage_bytes") {
        out.push_str(&format!(", usage {usage}"));
    }
    if let (Some(available), Some(total)) = (bytes("available_bytes"), bytes("total_bytes")) {
        out.push_str(&format!(", {available} of {total} available"));
    }
    if domain.get("inferred") == Some(&Value::Bool(true)) {
        let basis = domain
            .get("basis")
            .and_then(Value::as_str)
            .unwrap_or("none");
        out.push_str(&format!(" (inferred: {})", printable(basis)));
    }
    out
}

fn snapshot(record: &Value, lines: &mut Vec<String>) {
    let Some(snapshot) = record.pointer("/explanation/snapshot") else {
        return;
    };
    let scope = snapshot
        .get("scope")
        .and_then(Value::as_str)
        .map_or("?".to_owned(), printable);
    // A cgroup's usage is `memory.usage_bytes`, a process's `process.memory.usage_bytes`.
    let usage = |entry: &Value| {
        entry
            .pointer("/memory/usage_bytes")
            .or_else(|| entry.pointer("/process/memory/usage_bytes"))
            .and_then(Value::as_u64)
            .map_or("?".to_owned(), human_bytes)
    };
    let cgroups: Vec<String> = snapshot["cgroups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let name = super::parties::owner_short(entry).unwrap_or_else(|| {
                entry
                    .pointer("/cgroup/path")
                    .and_then(Value::as_str)
                    .map_or("?".to_owned(), printable)
            });
            format!("{name} {}", usage(entry))
        })
        .collect();
    let processes: Vec<String> = snapshot["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let comm = entry
                .pointer("/process/executable/name")
                .and_then(Value::as_str)
                .map_or("?".to_owned(), printable);
            let pid = entry
                .pointer("/process/pid")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            format!("{comm} (pid {pid}) {}", usage(entry))
        })
        .collect();
    if cgroups.is_empty() && processes.is_empty() {
        lines.push(labelled(
            "Snapshot",
            format!("at the kill, in {scope}: nothing found"),
        ));
        return;
    }
    lines.push(labelled("Snapshot", format!("at the kill, in {scope}:")));
    let indent = " ".repeat(LABEL + 1);
    if !cgroups.is_empty() {
        lines.extend(wrap(
            &format!("biggest cgroups: {}", cgroups.join(", ")),
            &indent,
        ));
    }
    if !processes.is_empty() {
        lines.extend(wrap(
            &format!("biggest processes: {}", processes.join(", ")),
            &indent,
        ));
    }
}

fn sigkill(record: &Value, lines: &mut Vec<String>) {
    lines.push(String::new());
    lines.push(labelled("Target", party(&record["target"])));
    let sender = &record["sender"];
    let kind = match sender.get("kind").and_then(Value::as_str) {
        Some("process") => "a process (kill())",
        Some("kernel") => "the kernel",
        _ => "unknown",
    };
    lines.push(labelled("Sent by", party(sender)));
    lines.push(labelled("", format!("sent by {kind}")));
    if let Some(result) = record.pointer("/signal/result").and_then(Value::as_str) {
        lines.push(labelled("Signal", printable(result)));
    }
}

fn hours(seconds: &Value) -> String {
    match seconds.as_u64() {
        Some(seconds) if seconds % 3600 == 0 => format!("{} h", seconds / 3600),
        Some(seconds) => format!("{} min", seconds / 60),
        None => "the window".to_owned(),
    }
}
