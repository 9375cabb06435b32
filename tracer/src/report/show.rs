//! `oomtrace show ID`: one stored kill in full, for people.

use super::parties::{owner, owner_short, party, record};
use super::style::{Paint, Style, WIDTH, truncate, wrap};
use crate::attribute::DomainKind;
use crate::history::query::StoredEvent;
use crate::incident::SenderKind;
use crate::record::kill::{Count, Domain, Explanation, Usage};
use crate::record::{Body, Cut, OomKillRecord, SigkillRecord};
use crate::wording::{KubeLimit, human_bytes, kube_level_name, printable};

/// Labels are this wide, so values line up.
const LABEL: usize = 11;

pub(super) fn text(event: &StoredEvent, incident: &[StoredEvent], style: &Style) -> Vec<String> {
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
    match record.map(|record| record.body) {
        Some(Body::Sigkill(sigkill)) => self::sigkill(&sigkill, &mut lines),
        Some(Body::OomKill(kill)) => oom_kill(&kill, incident, event, &mut lines),
        _ => {
            lines.push("the stored record cannot be read".to_owned());
            return lines;
        }
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
    record: &OomKillRecord,
    incident: &[StoredEvent],
    event: &StoredEvent,
    lines: &mut Vec<String>,
) {
    if let Some(Explanation { verdict, .. }) = &record.explanation {
        lines.push(String::new());
        lines.extend(wrap(&printable(verdict), ""));
    }
    lines.push(String::new());
    let victim = &record.victim;
    lines.push(labelled("Victim", party(victim)));
    if let Some(memory) = &victim.process.memory {
        let mut parts = Vec::new();
        for (bytes, label) in [
            (memory.usage_bytes, "resident"),
            (memory.anon_rss_bytes, "anon"),
            (memory.file_rss_bytes, "file"),
            (memory.shmem_rss_bytes, "shmem"),
            (memory.virtual_bytes, "virtual"),
        ] {
            parts.extend(bytes.map(|bytes| format!("{label} {}", human_bytes(bytes))));
        }
        lines.push(labelled("", parts.join(", ")));
    }
    let mut facts = Vec::new();
    if let Some(adj) = victim.process.oom_score_adj {
        facts.push(format!("oom_score_adj {adj}"));
    }
    if let Some(badness) = &victim.badness {
        facts.push(format!(
            "badness {}{}",
            badness.points,
            if badness.estimated {
                " (estimated)"
            } else {
                ""
            }
        ));
    }
    match victim
        .names
        .container
        .as_ref()
        .and_then(|container| container.main_process)
    {
        Some(true) => facts.push("its container's main process".to_owned()),
        Some(false) => facts.push("not its container's main process".to_owned()),
        None => {}
    }
    if !facts.is_empty() {
        lines.push(labelled("", facts.join(", ")));
    }
    lines.push(labelled("Trigger", trigger(record)));
    let limit = record
        .domain
        .as_ref()
        .map_or_else(|| "unknown".to_owned(), domain);
    lines.push(labelled("Limit hit", limit));
    if let Some(composition) = record
        .domain
        .as_ref()
        .and_then(|domain| domain.composition.as_ref())
    {
        let (heading, picture) = super::composition::lines(composition, &" ".repeat(LABEL + 1));
        lines.push(labelled("Filled by", heading));
        lines.extend(picture);
    }
    if let Some(explanation) = &record.explanation {
        snapshot(explanation, lines);
        if let Some(timeline) = &explanation.timeline {
            let lead_up = super::sparklines::lines(timeline, &" ".repeat(LABEL + 1));
            if !lead_up.is_empty() {
                lines.push(labelled(
                    "Before",
                    format!("the {} s before the kill:", timeline.window_s),
                ));
                lines.extend(lead_up);
            }
        }
        if let Some(Count {
            count,
            window_seconds,
        }) = explanation.restart_loop
        {
            lines.push(labelled(
                "Pattern",
                format!(
                    "restart loop: {count} OOM kills of this container within {}",
                    hours(window_seconds)
                ),
            ));
        }
        if let Some(Count {
            count,
            window_seconds,
        }) = explanation.recurring_trigger
        {
            lines.push(labelled(
                "Pattern",
                format!(
                    "recurring trigger: {count} host-wide OOMs within {}",
                    hours(window_seconds)
                ),
            ));
        }
    }
    if let Some(incident_record) = &record.incident
        && let Some(id) = &incident_record.id
    {
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
        let message = incident_record
            .message
            .as_deref()
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
    unread(record.cut.as_ref(), lines);
}

/// What the record went out without, and why.
fn unread(cut: Option<&Cut>, lines: &mut Vec<String>) {
    if let Some(cut) = cut {
        lines.push(labelled("Unread", cut.parts_text()));
        lines.extend(wrap(&cut.why(), &" ".repeat(LABEL + 1)));
    }
}

/// Who set the OOM killer off. A process that ran out of memory itself is not named twice.
fn trigger(record: &OomKillRecord) -> String {
    match &record.trigger {
        Some(_) if record.triggered_by_victim() => {
            "the victim itself: its own allocation found no memory left".to_owned()
        }
        Some(trigger) => party(trigger),
        None => "pid ?".to_owned(),
    }
}

fn domain(domain: &Domain) -> String {
    let path = domain.cgroup.as_ref().map(|cgroup| cgroup.path.as_str());
    // Kubernetes: the pod's own limit, or the node's memory for pods, said so.
    let kube = path.and_then(|path| KubeLimit::of(&domain.names, path));
    let mut out = match (domain.kind, &kube) {
        (DomainKind::Host, _) => "the host ran out of memory, no cgroup limit was hit".to_owned(),
        (DomainKind::Cgroup, Some(KubeLimit::Node(level))) => kube_level_name(*level),
        (DomainKind::Cgroup, kube) => {
            let owner = owner(&domain.names, path).unwrap_or_else(|| "a cgroup".to_owned());
            match kube {
                Some(KubeLimit::Pod(_)) => format!("the pod's limit: {owner}"),
                _ => owner,
            }
        }
        (DomainKind::Unknown, _) => "unknown".to_owned(),
    };
    if let Some(memory) = &domain.memory {
        if let Some(limit) = memory.limit_bytes {
            out.push_str(&format!(", limit {}", human_bytes(limit)));
        }
        if let Some(usage) = memory.usage_bytes {
            out.push_str(&format!(", usage {}", human_bytes(usage)));
        }
        if let (Some(available), Some(total)) = (memory.available_bytes, memory.total_bytes) {
            out.push_str(&format!(
                ", {} of {} available",
                human_bytes(available),
                human_bytes(total)
            ));
        }
    }
    if domain.inferred == Some(true) {
        let basis = domain.basis.map_or("none", |basis| basis.as_str());
        out.push_str(&format!(" (inferred: {basis})"));
    }
    // Last: a long path is what the line's width cuts, not the figures.
    if domain.kind == DomainKind::Cgroup
        && (owner_short(&domain.names).is_some() || kube.is_some())
        && let Some(path) = path
    {
        out.push_str(&format!("; cgroup {}", printable(path)));
    }
    out
}

/// ` (the victim's at the kill; 212 KiB when read)`: a row read after the victim's memory was
/// freed, which shows what the victim held instead.
fn read_after_kill(usage: &Usage) -> String {
    match usage.read_after_kill_bytes {
        None => String::new(),
        Some(0) => " (at the kill; gone when read)".to_owned(),
        Some(read) => format!(
            " (the victim's at the kill; {} when read)",
            human_bytes(read)
        ),
    }
}

fn snapshot(explanation: &Explanation, lines: &mut Vec<String>) {
    let snapshot = &explanation.snapshot;
    let scope = printable(&snapshot.scope);
    let cgroups: Vec<String> = snapshot
        .cgroups
        .iter()
        .map(|entry| {
            let name = owner_short(&entry.names).unwrap_or_else(|| printable(&entry.cgroup.path));
            format!(
                "{name} {}{}",
                human_bytes(entry.memory.usage_bytes),
                read_after_kill(&entry.memory)
            )
        })
        .collect();
    let processes: Vec<String> = snapshot
        .processes
        .iter()
        .map(|entry| {
            let process = &entry.process;
            format!(
                "{} (pid {}) {}{}",
                printable(&process.executable.name),
                process.pid,
                human_bytes(process.memory.usage_bytes),
                read_after_kill(&process.memory)
            )
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
    if let Some(charged) = snapshot.charged_to_scope_bytes.filter(|&bytes| bytes > 0) {
        lines.extend(wrap(
            &format!(
                "charged to {scope} itself, to none of those: {}",
                human_bytes(charged)
            ),
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

fn sigkill(record: &SigkillRecord, lines: &mut Vec<String>) {
    lines.push(String::new());
    lines.push(labelled("Target", party(&record.target)));
    let kind = match record.sender.kind {
        SenderKind::Process => "a process (kill())",
        SenderKind::Kernel => "the kernel",
        SenderKind::Unknown => "unknown",
    };
    lines.push(labelled("Sent by", party(&record.sender.party)));
    lines.push(labelled("", format!("sent by {kind}")));
    if let Some(result) = record.signal.result {
        lines.push(labelled("Signal", result.as_str().to_owned()));
    }
    unread(record.cut.as_ref(), lines);
}

fn hours(seconds: u64) -> String {
    if seconds.is_multiple_of(3600) {
        format!("{} h", seconds / 3600)
    } else {
        format!("{} min", seconds / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::party::{Executable, Thread};
    use crate::report::list::tests::kill_in_a_pod;
    use crate::report::style::tests::style;

    #[test]
    fn a_kill_in_a_pod_names_the_pod_its_container_and_the_pods_limit() {
        let lines = text(&kill_in_a_pod(), &[], &style(false));
        println!("{}", lines.join("\n"));
        let labelled = |label: &str| {
            lines
                .iter()
                .find(|line| line.starts_with(label))
                .unwrap_or_else(|| panic!("no {label} line: {lines:#?}"))
                .clone()
        };
        assert!(
            labelled("Victim").starts_with(
                "Victim      pid 42 (hog) in pod pay-prod/ledger-api-7f9c container worker \
                 (containerd, registry.exa"
            ),
            "{lines:#?}"
        );
        assert_eq!(
            labelled("Trigger"),
            "Trigger     the victim itself: its own allocation found no memory left"
        );
        assert!(
            labelled("Limit hit").starts_with(
                "Limit hit   the pod's limit: pod pay-prod/ledger-api-7f9c, limit 256.0 MiB; cgroup \
                 /kubepods/"
            ),
            "{lines:#?}"
        );
    }

    /// A kill written without its snapshot's processes says so, and why, after everything else.
    #[test]
    fn what_a_kill_was_written_without_is_told_last() {
        let mut event = kill_in_a_pod();
        let mut stored: crate::record::Record = serde_json::from_str(&event.record).unwrap();
        let Body::OomKill(kill) = &mut stored.body else {
            panic!("an oom_kill");
        };
        kill.cut = Some(Cut {
            reason: crate::record::CutReason::NoAnswer,
            parts: vec![crate::record::ObservedPart::SnapshotProcesses],
            waiting_on: Some(crate::record::ObservedPart::SnapshotProcesses),
            budget_ms: 1000,
        });
        event.record = serde_json::to_string(&stored).unwrap();
        let lines = text(&event, &[], &style(false));
        println!("{}", lines.join("\n"));
        let at = lines
            .iter()
            .position(|line| line.starts_with("Unread"))
            .unwrap_or_else(|| panic!("no Unread line: {lines:#?}"));
        assert_eq!(lines[at], "Unread      snapshot_processes");
        assert_eq!(
            lines[at + 1],
            "            its snapshot_processes read did not answer within 1000 ms"
        );
        assert_eq!(at + 2, lines.len(), "{lines:#?}");
        // Without a cut, no such line.
        let lines = text(&kill_in_a_pod(), &[], &style(false));
        assert!(!lines.iter().any(|line| line.starts_with("Unread")));
    }

    /// The golden victim was gone when the snapshot was read: its row says it is its size at the
    /// kill.
    #[test]
    fn a_row_read_after_the_kill_says_so() {
        let lines = text(
            &crate::report::list::tests::kill_filled_by_tmpfs(),
            &[],
            &style(false),
        );
        let joined = lines.join("\n");
        println!("{joined}");
        assert!(
            joined.contains("hog (pid 42) 45.8 MiB (at the kill; gone when read)"),
            "{lines:#?}"
        );
    }

    #[test]
    fn what_filled_the_limit_is_drawn_and_told_by_kind() {
        let lines = text(
            &crate::report::list::tests::kill_filled_by_tmpfs(),
            &[],
            &style(false),
        );
        println!("{}", lines.join("\n"));
        let at = lines
            .iter()
            .position(|line| line.starts_with("Filled by"))
            .unwrap_or_else(|| panic!("no Filled by line: {lines:#?}"));
        assert_eq!(
            lines[at],
            "Filled by   48.0 MiB of 48.0 MiB, from the kernel's report of the kill:"
        );
        // 14 MiB held by processes, 33 of shared memory, 1 of the kernel's, in 50 cells.
        assert_eq!(
            lines[at + 1],
            format!(
                "            [{}{}{}]",
                "█".repeat(14),
                "▓".repeat(34),
                "░".repeat(2)
            )
        );
        assert_eq!(
            lines[at + 2],
            "            █ processes     14.0 MiB  29 %  anon 13.0 MiB, mapped files 1.0 MiB, 2 \
             processes"
        );
        assert!(
            lines[at + 3].starts_with(
                "            ▓ tmpfs/shmem   33.0 MiB  68 %  /dev/shm of container web 33.0 MiB"
            ),
            "{lines:#?}"
        );
        assert_eq!(lines[at + 4], "            ▒ page cache       0 KiB   0 %");
        assert_eq!(
            lines[at + 5],
            "            ░ kernel         1.0 MiB   2 %  slab 768 KiB, page tables 128 KiB, \
             stacks 128 KiB"
        );
        // The kill's own log line says it too.
        let crate::record::Body::OomKill(kill) =
            record(&crate::report::list::tests::kill_filled_by_tmpfs())
                .unwrap()
                .body
        else {
            panic!("the fixture is an oom_kill");
        };
        let line = crate::sink::text::line(&kill, false);
        assert!(
            line.contains(
                "(48.0 MiB) was hit (inferred), filled by 33.0 MiB of tmpfs/shared memory no \
                 process maps; badness"
            ),
            "{line}"
        );
    }

    #[test]
    fn another_trigger_is_named_as_a_party() {
        let mut event = kill_in_a_pod();
        let mut stored = record(&event).expect("the fixture reads");
        let Body::OomKill(kill) = &mut stored.body else {
            panic!("the fixture is an oom_kill");
        };
        let mut builder = kill.victim.clone();
        builder.process.pid = Some(4301);
        builder.thread = Some(Thread { id: 4301 });
        builder.process.executable = Some(Executable {
            name: "cc1plus".to_owned(),
        });
        kill.trigger = Some(builder);
        event.record = serde_json::to_string(&stored).unwrap();
        let lines = text(&event, &[], &style(false));
        let trigger = lines
            .iter()
            .find(|line| line.starts_with("Trigger"))
            .unwrap_or_else(|| panic!("no Trigger line: {lines:#?}"));
        assert!(
            trigger.starts_with("Trigger     pid 4301 (cc1plus) in pod pay-prod/ledger-api-7f9c"),
            "{lines:#?}"
        );
    }
}
