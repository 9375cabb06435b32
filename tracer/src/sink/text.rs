//! The human log line: who was killed, how big it was, where it lived, and who set it off.

use std::fmt::Write as _;

use super::{Context, Sink, Totals};
use crate::attribute::{
    AttributedKill, AttributedSigkill, Attribution, DomainKind, ResolvedDomain,
};
use crate::cgroup_path::PathKind;
use crate::decode::{CgroupRef, SigkillPart};
use crate::incident::{OomIncident, OomKill, SenderKind, Sigkill};
use crate::names::{human_kb, name, printable, short_name};

/// Writes through `log` (env_logger on stderr).
pub struct LogSink;

impl Sink for LogSink {
    fn started(&mut self, context: &Context<'_>) -> std::io::Result<()> {
        let plan = context.plan;
        log::info!(
            "attached; capture tier {}: {}; tracepoint fields: {}; {}; {}",
            plan.tier,
            plan.reason,
            plan.layout.fields_present().join(", "),
            plan.victim_source(),
            if plan.signal_task_hook.is_some() {
                "every SIGKILL is traced, its target's memory and cgroups read in the kernel"
            } else if plan.signal_layout.is_some() {
                "every SIGKILL is traced, its target's cgroups read from /proc"
            } else {
                "SIGKILLs other than the OOM killer's are not traced"
            }
        );
        Ok(())
    }

    fn oom_kill(&mut self, kill: &AttributedKill, _: &Context<'_>) -> std::io::Result<()> {
        log::warn!("{}", line(kill));
        if let Some(explanation) = &kill.explanation {
            log::info!("why: {}", explanation.verdict);
        }
        Ok(())
    }

    fn oom_incident(&mut self, incident: &OomIncident, _: &Context<'_>) -> std::io::Result<()> {
        let OomIncident {
            context,
            victims,
            ended,
        } = incident;
        // A plain kill is already one line; say more only for group kills and lost ends.
        if victims.len() > 1 || !ended {
            let pids: Vec<String> = victims.iter().map(u32::to_string).collect();
            log::warn!(
                "OOM incident {}: {} victims ({}){}",
                context.id,
                victims.len(),
                pids.join(", "),
                if *ended { "" } else { "; its end was not seen" }
            );
        }
        Ok(())
    }

    fn sigkill(&mut self, sigkill: &AttributedSigkill, _: &Context<'_>) -> std::io::Result<()> {
        log::warn!("{}", sigkill_line(sigkill));
        Ok(())
    }

    fn stopped(&mut self, totals: &Totals, context: &Context<'_>) -> std::io::Result<()> {
        let Totals {
            records,
            oom_kills,
            sigkills,
            oom_sigkills: _,
            decode_errors,
            history_write_errors,
        } = totals;
        log::info!(
            "stopped: {oom_kills} OOM kills and {sigkills} other SIGKILLs from {records} records, \
             {decode_errors} undecodable, \
             {} lost in the kernel (ring buffer full), \
             {history_write_errors} not stored in the history",
            context.ringbuf_dropped_total
        );
        Ok(())
    }
}

/// One line per kill, e.g. `OOM kill: pid 4242 (hog) anon-rss 63.9 MiB … in container web
/// (podman, localhost/web:1); the limit of container web (48.0 MiB) was hit; triggered by itself`.
pub fn line(attributed: &AttributedKill) -> String {
    let AttributedKill {
        kill,
        victim: victim_names,
        trigger: trigger_names,
        main_process,
        domain,
        explanation: _,
    } = attributed;
    let OomKill {
        ktime_ns: _,
        victim,
        trigger,
        parts: _,
        incident: _,
        marked_without_kill,
        badness,
        namespace_init: _,
    } = &**kill;
    let mut line = format!(
        "{}: pid {} ({})",
        if *marked_without_kill {
            "OOM, nothing killed: an exiting task was given memory reserves"
        } else {
            "OOM kill"
        },
        victim.pid,
        printable(victim.comm.as_deref().unwrap_or("?"))
    );
    if let Some(fields) = &victim.fields {
        for (name, kb) in [
            ("anon-rss", fields.anon_rss_kb),
            ("file-rss", fields.file_rss_kb),
            ("shmem-rss", fields.shmem_rss_kb),
        ] {
            if let Some(kb) = kb {
                let _ = write!(line, " {name} {}", human_kb(kb));
            }
        }
        if let Some(adj) = fields.oom_score_adj {
            let _ = write!(line, " oom_score_adj {adj}");
        }
    }
    line.push_str(&place(
        victim_names.as_ref(),
        victim.memcg.as_ref(),
        victim.cgroup.as_ref(),
    ));
    if *main_process == Some(false) {
        line.push_str(", not its main process (the runtime will not report OOMKilled)");
    }
    line.push_str(&domain_text(domain));
    if let Some(badness) = badness {
        let _ = write!(
            line,
            "; badness {}{}",
            badness.points,
            if badness.estimated {
                " (estimated)"
            } else {
                ""
            }
        );
    }
    let same_task =
        victim.tgid.unwrap_or(victim.pid) == trigger.task.tgid || victim.pid == trigger.task.pid;
    if same_task {
        line.push_str("; triggered by itself");
    } else {
        let _ = write!(
            line,
            "; triggered by pid {} ({})",
            trigger.task.pid,
            printable(&trigger.task.comm)
        );
        line.push_str(&place(
            trigger_names.as_ref(),
            trigger.memcg.as_ref(),
            trigger.cgroup.as_ref(),
        ));
        if let (None, None, Some(id)) = (&trigger.cgroup, trigger_names, trigger.cgroup_id) {
            let _ = write!(line, " in cgroup id {id}");
        }
    }
    line
}

/// One line per SIGKILL, e.g. `SIGKILL: pid 123 (postgres) in container db (podman), sent by
/// pid 456 (bash) on the host (kill from a process)`.
pub fn sigkill_line(attributed: &AttributedSigkill) -> String {
    let AttributedSigkill {
        sigkill,
        target: target_names,
        sender: sender_names,
    } = attributed;
    let Sigkill {
        part,
        target_task,
        // Through `target_tgid`.
        target_proc: _,
        sender_kind,
    } = &**sigkill;
    let SigkillPart {
        cpu: _,
        ktime_ns: _,
        target,
        sender,
        sender_cgroup_id,
        sender_cgroup,
        sender_memcg,
    } = part;
    let tgid = sigkill.target_tgid();
    let mut line = format!("SIGKILL: pid {}", tgid.unwrap_or(target.pid));
    if tgid.is_some_and(|tgid| tgid != target.pid) {
        let _ = write!(line, " (thread {})", target.pid);
    }
    let _ = write!(
        line,
        " ({})",
        printable(target.comm.as_deref().unwrap_or("?"))
    );
    let (target_memcg, target_cgroup) = target_task.as_ref().map_or((None, None), |task| {
        (task.target_memcg.as_ref(), task.target_cgroup.as_ref())
    });
    match target_names {
        Some(names) => line.push_str(&party_place(names, target_memcg, target_cgroup)),
        None => line.push_str(" (gone before its cgroup could be read)"),
    }
    let _ = write!(
        line,
        ", sent by pid {} ({})",
        sender.tgid,
        printable(&sender.comm)
    );
    match sender_names {
        Some(names) => line.push_str(&party_place(
            names,
            sender_memcg.as_ref(),
            sender_cgroup.as_ref(),
        )),
        None => {
            let _ = write!(line, " in cgroup id {sender_cgroup_id}");
        }
    }
    line.push_str(match sender_kind {
        SenderKind::Process => " (kill from a process)",
        SenderKind::Kernel => " (sent by the kernel)",
        SenderKind::Unknown => "",
    });
    line
}

/// ` on the host` for the root cgroup, else as [`place`].
fn party_place(
    names: &Attribution,
    memcg: Option<&CgroupRef>,
    cgroup: Option<&CgroupRef>,
) -> String {
    if names.identity.kind == PathKind::Host {
        return " on the host".to_owned();
    }
    place(Some(names), memcg, cgroup)
}

/// ` in container web (podman, localhost/web:1)`, ` in pod shop/web-0`, ` in unit nginx.service`,
/// else the cgroup paths.
fn place(
    names: Option<&Attribution>,
    memcg: Option<&CgroupRef>,
    cgroup: Option<&CgroupRef>,
) -> String {
    match names.and_then(name) {
        Some(name) => format!(" in {name}"),
        None => match names {
            // Read from /proc: the kernel captured no path.
            Some(names) if memcg.is_none() && cgroup.is_none() => {
                format!(" in cgroup {}", printable(&names.path))
            }
            _ => cgroups(memcg, cgroup),
        },
    }
}

fn domain_text(domain: &ResolvedDomain) -> String {
    let inferred = if domain.inferred() { " (inferred)" } else { "" };
    match domain.kind {
        DomainKind::Host => {
            format!("; the host ran out of memory, no cgroup limit was hit{inferred}")
        }
        DomainKind::Unknown => String::new(),
        DomainKind::Cgroup => {
            // Short: the party it names is usually described in full just before.
            let whose = match domain.attribution.as_ref().and_then(short_name) {
                Some(name) => name,
                None => format!(
                    "memcg {}",
                    domain.cgroup.as_ref().map_or("?", |c| c.path.as_str())
                ),
            };
            let limit = domain
                .limit_bytes
                .map(|bytes| format!(" ({})", human_kb(bytes / 1024)))
                .unwrap_or_default();
            format!("; the limit of {whose}{limit} was hit{inferred}")
        }
    }
}

/// ` in memcg /a (cgroup /b)`, collapsed when both are the same path.
fn cgroups(memcg: Option<&CgroupRef>, cgroup: Option<&CgroupRef>) -> String {
    match (memcg, cgroup) {
        (Some(memcg), Some(cgroup)) if memcg.path == cgroup.path => {
            format!(" in cgroup {}", printable(&memcg.path))
        }
        (Some(memcg), Some(cgroup)) => format!(
            " in memcg {} (cgroup {})",
            printable(&memcg.path),
            printable(&cgroup.path)
        ),
        (Some(memcg), None) => format!(" in memcg {}", printable(&memcg.path)),
        (None, Some(cgroup)) => format!(" in cgroup {}", printable(&cgroup.path)),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::{as_bytes, layout_6_18, mark_victim_record, victim_task_record};
    use crate::decode::{Task, decode};
    use crate::incident::Joiner;

    fn kill() -> OomKill {
        let now = std::time::Instant::now();
        let mut joiner = Joiner::new(true, false);
        let layout = layout_6_18();
        joiner.push(
            decode(&as_bytes(&mark_victim_record(0, 9, 65_500)), &layout).unwrap(),
            now,
        );
        let events = joiner.push(
            decode(&as_bytes(&victim_task_record(0, 9)), &layout).unwrap(),
            now,
        );
        match events.as_slice() {
            [crate::incident::Event::Kill(kill)] => (**kill).clone(),
            other => panic!("expected one kill, got {other:?}"),
        }
    }

    #[test]
    fn self_triggered_kill() {
        assert_eq!(
            line(&AttributedKill::unattributed(kill())),
            "OOM kill: pid 9 (hog) anon-rss 64.0 MiB file-rss 0 KiB shmem-rss 0 KiB \
             oom_score_adj 0 in memcg /oomtrace-test-1 (cgroup /); badness 16375 (estimated); \
             triggered by itself"
        );
    }

    #[test]
    fn names_another_trigger_and_its_cgroup() {
        let mut kill = kill();
        kill.trigger.task = Task {
            pid: 77,
            tgid: 77,
            comm: "builder".into(),
        };
        kill.trigger.memcg = None;
        let line = line(&AttributedKill::unattributed(kill));
        assert!(
            line.ends_with("; triggered by pid 77 (builder) in cgroup /"),
            "{line}"
        );
    }

    #[test]
    fn names_the_container_its_limit_and_that_it_was_a_child() {
        let line = line(&crate::attribute::fixtures::in_web(kill()));
        assert!(
            line.contains(
                "oom_score_adj 0 in container web (podman, localhost/web:1, pod shop/web-0), \
                 not its main process (the runtime will not report OOMKilled); the limit of \
                 container web (48.0 MiB) was hit (inferred)"
            ),
            "{line}"
        );
    }

    #[test]
    fn hostile_container_names_never_reach_the_terminal_raw() {
        use crate::attribute::{fixtures, runtime::ContainerMetadata};
        let hostile = |source| {
            let mut attribution = fixtures::web(source);
            let mut meta = ContainerMetadata::new(
                fixtures::ID,
                "/evil\u{1b}[2J\u{1b}]0;pwned\u{7}name\r\n",
                "podman",
                [
                    ("io.kubernetes.pod.name", "pod\u{1b}[31m"),
                    ("io.kubernetes.pod.namespace", "ns\u{0}"),
                ]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
            );
            meta.image = Some("img\u{9b}31m".to_owned());
            attribution.container = Some(std::sync::Arc::new(meta));
            attribution
        };
        let mut attributed = fixtures::in_web(kill());
        attributed.victim = Some(hostile(crate::attribute::Source::Cache));
        attributed.trigger = Some(hostile(crate::attribute::Source::Live));
        attributed.kill.victim.comm = Some("comm\u{1b}[1m".to_owned());
        let line = line(&attributed);
        assert!(
            !line.chars().any(char::is_control),
            "a control character reached the log line: {line:?}"
        );
        assert!(line.contains("evil\\u{1b}[2J"), "{line}");
    }

    #[test]
    fn a_sigkill_names_target_sender_and_how() {
        let sigkill = crate::incident::fixtures::user_sigkill();
        let host = crate::attribute::Attribution {
            path: "/".into(),
            identity: crate::cgroup_path::parse("/"),
            container: None,
            source: crate::attribute::Source::Path,
            warning: None,
        };
        let attributed = AttributedSigkill {
            sigkill,
            target: Some(crate::attribute::fixtures::web(
                crate::attribute::Source::Cache,
            )),
            sender: Some(host),
        };
        assert_eq!(
            sigkill_line(&attributed),
            "SIGKILL: pid 123 (postgres) in container web (podman, localhost/web:1, pod \
             shop/web-0), sent by pid 456 (bash) on the host (kill from a process)"
        );
        let gone = AttributedSigkill {
            target: None,
            sender: None,
            ..attributed
        };
        assert_eq!(
            sigkill_line(&gone),
            "SIGKILL: pid 123 (postgres) (gone before its cgroup could be read), sent by pid \
             456 (bash) in cgroup id 77 (kill from a process)"
        );
    }
}
