//! The human log line: who was killed, how big it was, where it lived, and who set it off.

use std::fmt::Write as _;

use super::Sink;
use crate::attribute::DomainKind;
use crate::cgroup_path::PathKind;
use crate::incident::SenderKind;
use crate::record::kill::Domain;
use crate::record::party::{Cgroup, Party};
use crate::record::pressure::{GrowthRate, PressureReason};
use crate::record::sigkill::Sender;
use crate::record::{
    AgentStarted, AgentStopped, MemoryPressureRecord, OomIncidentRecord, OomKillRecord,
    SigkillRecord,
};
use crate::wording::{human_bytes, human_kb, limit_words, name, printable};

/// Writes through `log` (env_logger on stderr).
pub(crate) struct LogSink {
    /// Whether kills, SIGKILLs and warnings are logged: not when the journal holds them as
    /// entries of their own (the agent's other lines are logged either way).
    pub events: bool,
}

impl Sink for LogSink {
    fn agent_started(&mut self, started: &AgentStarted) -> std::io::Result<()> {
        let capture = &started.capture;
        log::info!(
            "attached; capture tier {}: {}; tracepoint fields: {}; {}; {}",
            capture.tier,
            capture.reason,
            capture.tracepoint_fields.join(", "),
            capture.victim_source(),
            if capture.sigkill_task_hook.is_some() {
                "every SIGKILL is traced, its target's memory and cgroups read in the kernel"
            } else if capture.sigkill {
                "every SIGKILL is traced, its target's cgroups read from /proc"
            } else {
                "SIGKILLs other than the OOM killer's are not traced"
            }
        );
        Ok(())
    }

    fn oom_kill(&mut self, kill: &OomKillRecord) -> std::io::Result<()> {
        if !self.events {
            return Ok(());
        }
        log::warn!("{}", line(kill, false));
        why(kill);
        Ok(())
    }

    fn oom_mark_exiting(&mut self, marked: &OomKillRecord) -> std::io::Result<()> {
        if !self.events {
            return Ok(());
        }
        log::warn!("{}", line(marked, true));
        why(marked);
        Ok(())
    }

    fn oom_incident(&mut self, incident: &OomIncidentRecord) -> std::io::Result<()> {
        if !self.events {
            return Ok(());
        }
        let OomIncidentRecord {
            incident,
            victims,
            ended,
            ..
        } = incident;
        // A plain kill is already one line; say more only for group kills and lost ends.
        if victims.len() > 1 || !ended {
            let pids: Vec<String> = victims
                .iter()
                .map(|victim| victim.process.pid.to_string())
                .collect();
            log::warn!(
                "OOM incident {}: {} victims ({}){}",
                incident.id.as_deref().unwrap_or("?"),
                victims.len(),
                pids.join(", "),
                if *ended { "" } else { "; its end was not seen" }
            );
        }
        Ok(())
    }

    fn sigkill(&mut self, sigkill: &SigkillRecord) -> std::io::Result<()> {
        if !self.events {
            return Ok(());
        }
        log::warn!("{}", sigkill_line(sigkill));
        Ok(())
    }

    fn memory_pressure(&mut self, pressure: &MemoryPressureRecord) -> std::io::Result<()> {
        if !self.events {
            return Ok(());
        }
        log::warn!("{}", pressure_line(pressure));
        Ok(())
    }

    fn agent_stopped(&mut self, stopped: &AgentStopped) -> std::io::Result<()> {
        let crate::record::Totals {
            records,
            oom_kills,
            sigkills,
            oom_sigkills: _,
            decode_errors,
            ringbuf_dropped_total,
            history_write_errors,
            sigkills_rate_limited,
            observe_reads_given_up,
        } = stopped.totals;
        // Only where it happened: a read that never answers is rare, and says much of the host.
        let given_up = match observe_reads_given_up {
            0 => String::new(),
            given_up => format!(
                ", reads of /proc and cgroupfs given up for {} (no answer within their budget)",
                counted(given_up, "event")
            ),
        };
        log::info!(
            "stopped: {} and {} from {}, {decode_errors} undecodable, \
             {ringbuf_dropped_total} lost in the kernel (ring buffer full), \
             {history_write_errors} not stored in the history, \
             {} of flooding senders only logged{given_up}",
            counted(oom_kills, "OOM kill"),
            counted(sigkills, "other SIGKILL"),
            counted(records, "record"),
            counted(sigkills_rate_limited, "SIGKILL"),
        );
        Ok(())
    }
}

/// `1 record`, `0 records`, `2 records`.
fn counted(count: u64, one: &str) -> String {
    match count {
        1 => format!("1 {one}"),
        count => format!("{count} {one}s"),
    }
}

fn why(kill: &OomKillRecord) {
    if let Some(explanation) = &kill.explanation {
        log::info!("why: {}", explanation.verdict);
    }
}

/// One line per kill, e.g. `OOM kill: pid 4242 (hog) anon-rss 63.9 MiB … in container web
/// (podman, localhost/web:1); the limit of container web (48.0 MiB) was hit; triggered by itself`.
/// `marked_without_kill`: the `oom_mark_exiting` record of an exiting task given reserves.
pub(crate) fn line(kill: &OomKillRecord, marked_without_kill: bool) -> String {
    let OomKillRecord {
        victim,
        trigger,
        domain,
        ..
    } = kill;
    let victim_thread = thread_id(victim);
    let mut line = format!(
        "{}: pid {} ({})",
        if marked_without_kill {
            "OOM, nothing killed: an exiting task was given memory reserves"
        } else {
            "OOM kill"
        },
        victim_thread.map_or_else(|| "?".to_owned(), |pid| pid.to_string()),
        printable(victim.process.comm().unwrap_or("?"))
    );
    if let Some(memory) = &victim.process.memory {
        for (name, bytes) in [
            ("anon-rss", memory.anon_rss_bytes),
            ("file-rss", memory.file_rss_bytes),
            ("shmem-rss", memory.shmem_rss_bytes),
        ] {
            if let Some(bytes) = bytes {
                let _ = write!(line, " {name} {}", human_kb(bytes / 1024));
            }
        }
    }
    if let Some(adj) = victim.process.oom_score_adj {
        let _ = write!(line, " oom_score_adj {adj}");
    }
    line.push_str(&place(victim));
    let main_process = victim
        .names
        .container
        .as_ref()
        .and_then(|container| container.main_process);
    if main_process == Some(false) {
        line.push_str(", not its main process (the runtime will not report OOMKilled)");
    }
    if let Some(domain) = domain {
        line.push_str(&domain_text(domain));
        // What filled it, where no process holds most of it: what the kill does not free.
        if let Some(filled) = domain
            .composition
            .as_ref()
            .and_then(crate::explain::filled::in_brief)
        {
            let _ = write!(line, ", filled by {filled}");
        }
    }
    if let Some(badness) = &victim.badness {
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
    let Some(trigger) = trigger else {
        return line;
    };
    if kill.triggered_by_victim() {
        line.push_str("; triggered by itself");
    } else {
        let _ = write!(
            line,
            "; triggered by pid {} ({})",
            thread_id(trigger).map_or_else(|| "?".to_owned(), |pid| pid.to_string()),
            printable(trigger.process.comm().unwrap_or("?"))
        );
        line.push_str(&place(trigger));
        // Without BTF the kernel gives the trigger's cgroup2 id only.
        if trigger.names.attribution.is_none()
            && let Some(Cgroup {
                id: Some(id),
                path: None,
                ..
            }) = &trigger.cgroup
        {
            let _ = write!(line, " in cgroup id {id}");
        }
    }
    line
}

/// One line per SIGKILL, e.g. `SIGKILL: pid 123 (postgres) in container db (podman), sent by
/// pid 456 (bash) on the host (kill from a process)`.
pub(crate) fn sigkill_line(sigkill: &SigkillRecord) -> String {
    let SigkillRecord { target, sender, .. } = sigkill;
    let Sender {
        kind,
        party: sender,
    } = sender;
    let thread = thread_id(target);
    let pid = target.process.pid.or(thread);
    let mut line = format!(
        "SIGKILL: pid {}",
        pid.map_or_else(|| "?".to_owned(), |pid| pid.to_string())
    );
    if let (Some(pid), Some(thread)) = (pid, thread)
        && pid != thread
    {
        let _ = write!(line, " (thread {thread})");
    }
    let _ = write!(
        line,
        " ({})",
        printable(target.process.comm().unwrap_or("?"))
    );
    if target.names.attribution.is_some() {
        line.push_str(&party_place(target));
    } else {
        line.push_str(" (gone before its cgroup could be read)");
    }
    let _ = write!(
        line,
        ", sent by pid {} ({})",
        sender
            .process
            .pid
            .map_or_else(|| "?".to_owned(), |pid| pid.to_string()),
        printable(sender.process.comm().unwrap_or("?"))
    );
    if sender.names.attribution.is_some() {
        line.push_str(&party_place(sender));
    } else if let Some(id) = sender.cgroup.as_ref().and_then(|cgroup| cgroup.id) {
        let _ = write!(line, " in cgroup id {id}");
    }
    line.push_str(match kind {
        SenderKind::Process => " (kill from a process)",
        SenderKind::Kernel => " (sent by the kernel)",
        SenderKind::Unknown => "",
    });
    line
}

/// `memory pressure: the limit of container web (96.0 MiB) is 92.4 % used (working set
/// 88.7 MiB), growing 4.1 MiB/s over 10 s; fastest grower: …; no kill yet`.
pub(crate) fn pressure_line(pressure: &MemoryPressureRecord) -> String {
    let MemoryPressureRecord {
        reason,
        thresholds,
        domain,
        grower,
        ..
    } = pressure;
    let memory = &domain.memory;
    let path = domain.cgroup.path.as_str();
    let whose =
        limit_words(&domain.names, Some(path), Some(memory.limit_bytes)).unwrap_or_else(|| {
            format!(
                "the limit of cgroup {} ({})",
                printable(path),
                human_bytes(memory.limit_bytes)
            )
        });
    let held = match memory.working_set_bytes {
        Some(working_set) => format!("working set {}", human_bytes(working_set)),
        None => format!("usage {}", human_bytes(memory.usage_bytes)),
    };
    let mut line = format!(
        "memory pressure: {whose} is {:.1} % used ({held})",
        memory.percent_of_limit
    );
    if let Some(growth) = &domain.growth {
        let _ = write!(line, ", {}", growth_words(growth));
    }
    // A stall of nothing says nothing a reader needs.
    if let Some(stall) = domain.stall.filter(|stall| stall.some_percent > 0.0) {
        let _ = write!(
            line,
            "; tasks stalled on memory {:.1} % of the last {:.1} s",
            stall.some_percent,
            stall.over_ms as f64 / 1000.0
        );
    }
    if let Some(grower) = grower {
        let who = crate::wording::short_name(&grower.names)
            .unwrap_or_else(|| format!("cgroup {}", printable(&grower.cgroup.path)));
        let _ = write!(
            line,
            "; fastest grower: {who} at {}, {}",
            human_bytes(grower.usage_bytes),
            growth_words(&grower.growth)
        );
    }
    let crossed = match reason {
        PressureReason::Usage => {
            format!("past the {} % warning threshold", thresholds.usage_percent)
        }
        PressureReason::Stall => format!("stalls past {} %", thresholds.stall_percent),
    };
    let _ = write!(line, "; {crossed}, no kill yet");
    line
}

/// `growing 4.1 MiB/s over 10 s`, `shrinking …`, `flat over 10 s`.
fn growth_words(growth: &GrowthRate) -> String {
    let over = format!("over {:.0} s", growth.over_ms as f64 / 1000.0);
    let rate = human_bytes(growth.bytes_per_second.unsigned_abs());
    match growth.bytes_per_second {
        0 => format!("flat {over}"),
        1.. => format!("growing {rate}/s {over}"),
        _ => format!("shrinking {rate}/s {over}"),
    }
}

fn thread_id(party: &Party) -> Option<u32> {
    party.thread.map(|thread| thread.id)
}

/// ` on the host` for the root cgroup, else as [`place`].
fn party_place(party: &Party) -> String {
    let on_host = party.names.attribution.as_ref().is_some_and(|attribution| {
        crate::cgroup_path::parse(&attribution.path).kind == PathKind::Host
    });
    if on_host {
        return " on the host".to_owned();
    }
    place(party)
}

/// ` in container web (podman, localhost/web:1)`, ` in pod shop/web-0`, ` in unit nginx.service`,
/// else the cgroup paths.
fn place(party: &Party) -> String {
    let Party {
        names,
        memcg,
        cgroup,
        ..
    } = party;
    // Only a cgroup with a path says where: an id alone is for the caller to add.
    let memcg = memcg.as_ref().and_then(|cgroup| cgroup.path.as_deref());
    let cgroup = cgroup.as_ref().and_then(|cgroup| cgroup.path.as_deref());
    match name(names) {
        Some(name) => format!(" in {name}"),
        None => match &names.attribution {
            // Read from /proc: the kernel captured no path.
            Some(attribution) if memcg.is_none() && cgroup.is_none() => {
                format!(" in cgroup {}", printable(&attribution.path))
            }
            _ => cgroups(memcg, cgroup),
        },
    }
}

fn domain_text(domain: &Domain) -> String {
    let inferred = if domain.inferred == Some(true) {
        " (inferred)"
    } else {
        ""
    };
    match domain.kind {
        DomainKind::Host => {
            format!("; the host ran out of memory, no cgroup limit was hit{inferred}")
        }
        DomainKind::Unknown => String::new(),
        DomainKind::Cgroup => {
            // Short: the party it names is usually described in full just before.
            let path = domain.cgroup.as_ref().map(|cgroup| cgroup.path.as_str());
            let limit_bytes = domain.memory.and_then(|memory| memory.limit_bytes);
            let whose = limit_words(&domain.names, path, limit_bytes).unwrap_or_else(|| {
                let size = limit_bytes
                    .map(|bytes| format!(" ({})", human_bytes(bytes)))
                    .unwrap_or_default();
                format!(
                    "the limit of memcg {}{size}",
                    printable(path.unwrap_or("?"))
                )
            });
            format!("; {whose} was hit{inferred}")
        }
    }
}

/// ` in memcg /a (cgroup /b)`, collapsed when both are the same path.
fn cgroups(memcg: Option<&str>, cgroup: Option<&str>) -> String {
    match (memcg, cgroup) {
        (Some(memcg), Some(cgroup)) if memcg == cgroup => {
            format!(" in cgroup {}", printable(memcg))
        }
        (Some(memcg), Some(cgroup)) => format!(
            " in memcg {} (cgroup {})",
            printable(memcg),
            printable(cgroup)
        ),
        (Some(memcg), None) => format!(" in memcg {}", printable(memcg)),
        (None, Some(cgroup)) => format!(" in cgroup {}", printable(cgroup)),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use crate::attribute::{AttributedKill, AttributedSigkill};
    use crate::capture::{CapturePlan, Tier};
    use crate::clock::KernelClock;
    use crate::decode::tests::{as_bytes, layout_6_18, mark_victim_record, victim_task_record};
    use crate::decode::{Task, decode};
    use crate::incident::{Joiner, OomKill};
    use crate::record::{Body, Context, build};

    fn plan() -> CapturePlan {
        CapturePlan {
            tier: Tier::NoFunctionTracing,
            reason: "test".into(),
            mark_victim_arg: None,
            task_hook: None,
            function_hook: None,
            layout: layout_6_18(),
            constraint_names: Vec::new(),
            signal_layout: None,
            signal_task_hook: None,
        }
    }

    /// The log line of `kill`'s record.
    fn line(kill: &AttributedKill) -> String {
        let plan = plan();
        let context = Context {
            plan: &plan,
            ringbuf_dropped_total: 0,
            clock: KernelClock::now(),
        };
        match build::oom_kill(kill, None, None, &context).body {
            Body::OomKill(record) => super::line(&record, false),
            other => panic!("an oom_kill, not {other:?}"),
        }
    }

    /// The log line of `sigkill`'s record.
    fn sigkill_line(sigkill: &AttributedSigkill) -> String {
        let plan = plan();
        let context = Context {
            plan: &plan,
            ringbuf_dropped_total: 0,
            clock: KernelClock::now(),
        };
        match build::sigkill(sigkill, &context).body {
            Body::Sigkill(record) => super::sigkill_line(&record),
            other => panic!("a sigkill, not {other:?}"),
        }
    }

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
    fn counts_are_said_in_the_singular_for_one() {
        use super::counted;
        assert_eq!(counted(1, "OOM kill"), "1 OOM kill");
        assert_eq!(counted(0, "OOM kill"), "0 OOM kills");
        assert_eq!(counted(4, "record"), "4 records");
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
    fn a_kill_in_a_pod_names_the_pod_the_container_and_whose_limit() {
        use crate::attribute::fixtures::{in_pod, in_worker, pod_path, worker};
        let own = line(&in_worker(kill(), worker(), 48 << 20));
        assert!(
            own.contains(
                "oom_score_adj 0 in pod pay-prod/ledger-api-7f9c container worker (containerd, \
                 registry.example/ledger:4.1, restart 3); the limit of pod \
                 pay-prod/ledger-api-7f9c container worker (48.0 MiB) was hit;"
            ),
            "{own}"
        );
        let pods = line(&in_worker(kill(), in_pod(&pod_path(), None), 256 << 20));
        assert!(
            pods.contains("; the pod's limit (pod pay-prod/ledger-api-7f9c, 256.0 MiB) was hit;"),
            "{pods}"
        );
        let node = crate::attribute::Attribution::from_path("/kubepods");
        let nodes = line(&in_worker(kill(), node, 7 << 30));
        assert!(
            nodes.contains("; the node's allocatable memory for pods (7.00 GiB) was hit;"),
            "{nodes}"
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
        assert!(line.contains("evil\\x1b[2J"), "{line}");
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

    #[test]
    fn a_pressure_warning_says_whose_limit_how_full_and_who_grows() {
        use super::pressure_line;
        use crate::attribute::fixtures::web;
        use crate::attribute::{Attribution, Source};
        use crate::record::build::memory_pressure;
        use crate::record::tests::pressure_warning;
        let warning = pressure_warning();
        let grower = web(Source::Cache);
        let record = memory_pressure(
            &warning,
            Some(&Attribution::from_path("/shop")),
            Some(&grower),
            KernelClock::now(),
        );
        let Body::MemoryPressure(record) = record.body else {
            panic!("a memory_pressure record");
        };
        assert_eq!(
            pressure_line(&record),
            "memory pressure: the limit of cgroup /shop (256.0 MiB) is 93.0 % used (working set \
             238.0 MiB), growing 12.0 MiB/s over 10 s; tasks stalled on memory 3.5 % of the last \
             1.0 s; fastest grower: container web at 180.0 MiB, growing 12.0 MiB/s over 10 s; \
             past the 90 % warning threshold, no kill yet"
        );
        // The container's own limit: named by its owner; nothing below it grew.
        let mut own = warning.clone();
        own.domain = grower.path.clone();
        own.grower = None;
        own.stall = None;
        own.growth = Some(crate::observe::timeline::warning::Growth {
            bytes_per_second: -(1 << 20),
            over_ms: 4000,
        });
        let Body::MemoryPressure(record) =
            memory_pressure(&own, Some(&grower), None, KernelClock::now()).body
        else {
            panic!("a memory_pressure record");
        };
        assert_eq!(
            pressure_line(&record),
            "memory pressure: the limit of container web (256.0 MiB) is 93.0 % used (working set \
             238.0 MiB), shrinking 1.0 MiB/s over 4 s; past the 90 % warning threshold, no kill \
             yet"
        );
    }
}
