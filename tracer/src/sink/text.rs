//! The human log line: who was killed, how big it was, where it lived, and who set it off.

use std::fmt::Write as _;

use super::{Context, Sink, Totals};
use crate::decode::{CgroupRef, Domain};
use crate::incident::{OomIncident, OomKill};

/// Writes through `log` (env_logger on stderr).
pub struct LogSink;

impl Sink for LogSink {
    fn started(&mut self, context: &Context<'_>) -> std::io::Result<()> {
        let plan = context.plan;
        log::info!(
            "attached; capture tier {}: {}; tracepoint fields: {}",
            plan.tier,
            plan.reason,
            plan.layout.fields_present().join(", ")
        );
        Ok(())
    }

    fn oom_kill(&mut self, kill: &OomKill, _: &Context<'_>) -> std::io::Result<()> {
        log::warn!("{}", line(kill));
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

    fn stopped(&mut self, totals: &Totals, context: &Context<'_>) -> std::io::Result<()> {
        let Totals {
            records,
            oom_kills,
            decode_errors,
        } = totals;
        log::info!(
            "stopped: {oom_kills} OOM kills from {records} records, {decode_errors} undecodable, \
             {} lost in the kernel (ring buffer full)",
            context.ringbuf_dropped_total
        );
        Ok(())
    }
}

/// One line per kill, e.g. `OOM kill: pid 4242 (hog) anon-rss 63.9 MiB … in memcg /x;
/// triggered by itself`.
pub fn line(kill: &OomKill) -> String {
    let OomKill {
        ktime_ns: _,
        victim,
        trigger,
        parts: _,
        incident,
        marked_without_kill,
        badness,
    } = kill;
    let mut line = format!(
        "{}: pid {} ({})",
        if *marked_without_kill {
            "OOM, nothing killed: an exiting task was given memory reserves"
        } else {
            "OOM kill"
        },
        victim.pid,
        victim.comm.as_deref().unwrap_or("?")
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
    line.push_str(&cgroups(victim.memcg.as_ref(), victim.cgroup.as_ref()));
    if let Some(incident) = incident {
        match &incident.entry.domain {
            Domain::Host => line.push_str("; the host ran out of memory (no cgroup limit hit)"),
            Domain::Cgroup(cgroup) => {
                let _ = write!(line, "; the limit of memcg {} was hit", cgroup.path);
            }
            Domain::Unknown => line.push_str("; a cgroup limit was hit"),
        }
    }
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
            trigger.task.pid, trigger.task.comm
        );
        line.push_str(&cgroups(trigger.memcg.as_ref(), trigger.cgroup.as_ref()));
        if let (None, Some(id)) = (&trigger.cgroup, trigger.cgroup_id) {
            let _ = write!(line, " in cgroup id {id}");
        }
    }
    line
}

/// ` in memcg /a (cgroup /b)`, collapsed when both are the same path.
fn cgroups(memcg: Option<&CgroupRef>, cgroup: Option<&CgroupRef>) -> String {
    match (memcg, cgroup) {
        (Some(memcg), Some(cgroup)) if memcg.path == cgroup.path => {
            format!(" in cgroup {}", memcg.path)
        }
        (Some(memcg), Some(cgroup)) => format!(" in memcg {} (cgroup {})", memcg.path, cgroup.path),
        (Some(memcg), None) => format!(" in memcg {}", memcg.path),
        (None, Some(cgroup)) => format!(" in cgroup {}", cgroup.path),
        (None, None) => String::new(),
    }
}

fn human_kb(kb: u64) -> String {
    match kb {
        0..1024 => format!("{kb} KiB"),
        1024..1_048_576 => format!("{:.1} MiB", kb as f64 / 1024.0),
        _ => format!("{:.2} GiB", kb as f64 / 1_048_576.0),
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
            line(&kill()),
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
        assert!(
            line(&kill).ends_with("; triggered by pid 77 (builder) in cgroup /"),
            "{}",
            line(&kill)
        );
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_kb(12), "12 KiB");
        assert_eq!(human_kb(1536), "1.5 MiB");
        assert_eq!(human_kb(3 * 1_048_576), "3.00 GiB");
    }
}
