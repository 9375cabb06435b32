//! Kills from the kernel log, as history records: what the agent could not trace because it
//! was not running yet. Each becomes an `oom_kill` record holding what the log says (pid, comm,
//! memory, the victim's and the limit's memory cgroups, the invoker's comm), named from the
//! cgroup path alone: the runtime is not asked, as such a container is usually long gone.

use std::time::Duration;

use super::parse::{KernelText, KilledMemory, KmsgKill, OomScope};
use crate::attribute::DomainKind;
use crate::clock::KernelClock;
use crate::observe::composition::Composition;
use crate::procfs;
use crate::record::build::{self, memory, names_from_path};
use crate::record::kill::{
    Basis, CapturePart, CgroupPath, Domain, DomainCgroup, Incident, KillCapture, KmsgOrigin,
};
use crate::record::party::{Badness, Cgroup, Executable, Party, Process, User};
use crate::record::{Body, OomKillRecord, Record};

/// How far apart the kernel log's clock and the tracer's may put one kill. The log stamps
/// records with the scheduler clock, `bpf_ktime_get_ns` reads CLOCK_MONOTONIC: they start
/// together at boot but are not slewed alike, so the gap grows with uptime (by at most about
/// 0.1 %, well past what NTP slews).
pub(crate) fn tolerance(kill: &KmsgKill) -> Duration {
    Duration::from_secs(2) + Duration::from_micros(kill.usec / 1000)
}

/// The `oom_kill` record of a kill the kernel logged.
pub(crate) fn record(kill: &KmsgKill, clock: &KernelClock) -> Record {
    let KmsgKill {
        seq,
        usec,
        pid,
        comm,
        scope,
        memory: killed_memory,
        constraint,
        legacy_limit: _,
        score,
        oom_group,
        invoker,
        report,
    } = kill;
    let ktime_ns = usec.saturating_mul(1000);
    let KilledMemory {
        total_vm_kb,
        anon_rss_kb,
        file_rss_kb,
        shmem_rss_kb,
        uid,
        pgtables_kb,
        oom_score_adj,
    } = *killed_memory;
    let memory = memory(
        total_vm_kb,
        anon_rss_kb,
        file_rss_kb,
        shmem_rss_kb,
        pgtables_kb,
    );
    let victim_memcg = kill.task_memcg().map(lossy);
    let victim = Party {
        process: Process {
            pid: Some(*pid),
            executable: Some(Executable { name: lossy(comm) }),
            real_user: uid.map(|id| User { id }),
            oom_score_adj,
            memory: (memory != Default::default()).then_some(memory),
        },
        thread: None,
        cgroup: None,
        memcg: victim_memcg.clone().map(|path| Cgroup {
            path: Some(path),
            ..Cgroup::default()
        }),
        badness: score.map(|score| Badness {
            points: i64::try_from(score).unwrap_or(i64::MAX),
            totalpages: None,
            score: None,
            estimated: false,
        }),
        names: victim_memcg
            .as_deref()
            .map(names_from_path)
            .unwrap_or_default(),
    };

    let kind = if kill.oom_memcg().is_some() || *scope == Some(OomScope::Memcg) {
        DomainKind::Cgroup
    } else if *scope == Some(OomScope::Host)
        || constraint
            .as_ref()
            .is_some_and(|constraint| constraint.global_oom)
    {
        DomainKind::Host
    } else {
        DomainKind::Unknown
    };
    let domain_memcg = kill.oom_memcg().map(lossy);
    let domain = Domain {
        kind,
        inferred: Some(false),
        basis: Some(Basis::KernelLog),
        cgroup: domain_memcg
            .clone()
            .map(|path| DomainCgroup { id: None, path }),
        memory: None,
        memory_events: None,
        composition: report.as_deref().and_then(|report| {
            let composition = Composition::from_report(report, *seq, procfs::page_size())?;
            Some(build::composition(&composition, Vec::new()))
        }),
        names: domain_memcg
            .as_deref()
            .map(names_from_path)
            .unwrap_or_default(),
    };

    Record::new(Body::OomKill(OomKillRecord {
        time: clock.wall_time(ktime_ns).to_string(),
        ktime_ns,
        capture: KillCapture {
            tier: None,
            parts: vec![CapturePart::Kmsg],
            ringbuf_dropped_total: None,
        },
        kmsg: Some(KmsgOrigin { seq: *seq }),
        victim,
        trigger: invoker.as_ref().map(|invoker| Party {
            process: Process {
                executable: Some(Executable {
                    name: lossy(&invoker.comm),
                }),
                ..Process::default()
            },
            ..Party::default()
        }),
        domain: Some(domain),
        explanation: None,
        incident: constraint.as_ref().map(|constraint| Incident {
            id: None,
            domain: None,
            badness: None,
            constraint: Some(constraint.constraint.to_ascii_lowercase()),
            order: None,
            gfp_mask: None,
            message: None,
        }),
        kmsg_oom_group: oom_group
            .as_ref()
            .map(|group| CgroupPath { path: lossy(group) }),
        cut: None,
    }))
}

fn lossy(text: &KernelText) -> String {
    String::from_utf8_lossy(&text.0).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::Source;
    use crate::kmsg::tests::{LINUX_4_14, LINUX_6_18, kills};

    fn oom_kill(record: &Record) -> &OomKillRecord {
        match &record.body {
            Body::OomKill(kill) => kill,
            other => panic!("an oom_kill, not {other:?}"),
        }
    }

    #[test]
    fn a_memcg_kill_on_6_18_becomes_a_history_record() {
        let kill = kills(LINUX_6_18).remove(0);
        let record = record(&kill, &KernelClock::now());
        let row = crate::history::row::EventRow::from_record(
            &record,
            crate::history::row::Origin::Kmsg,
            "boot",
        )
        .expect("the history takes it");
        assert_eq!(row.victim_pid, kill.pid);
        assert_eq!(row.victim_comm.as_deref(), Some(lossy(&kill.comm).as_str()));
        assert_eq!(row.ktime_ns, kill.usec * 1000);
        assert_eq!(row.domain_kind.as_deref(), Some("cgroup"));
        let oom = oom_kill(&record);
        assert_eq!(oom.domain.as_ref().unwrap().basis, Some(Basis::KernelLog));
        assert_eq!(
            oom.victim
                .memcg
                .as_ref()
                .and_then(|memcg| memcg.path.clone()),
            kill.task_memcg().map(lossy)
        );
        assert_eq!(
            oom.victim
                .process
                .memory
                .and_then(|memory| memory.anon_rss_bytes),
            Some(kill.memory.anon_rss_kb.unwrap() * 1024)
        );
        assert_eq!(
            oom.victim.names.attribution.as_ref().map(|a| a.source),
            Some(Source::Path)
        );
    }

    #[test]
    fn legacy_host_and_memcg_kills_say_whose_memory_ran_out() {
        let kinds: Vec<DomainKind> = kills(LINUX_4_14)
            .iter()
            .map(|kill| {
                oom_kill(&record(kill, &KernelClock::now()))
                    .domain
                    .as_ref()
                    .unwrap()
                    .kind
            })
            .collect();
        assert!(kinds.contains(&DomainKind::Cgroup), "{kinds:?}");
        assert!(kinds.contains(&DomainKind::Host), "{kinds:?}");
    }

    #[test]
    fn a_container_is_named_from_its_path() {
        let path = format!("/libpod_parent/libpod-{}", "ab".repeat(32));
        let names = names_from_path(&path);
        assert_eq!(names.container.map(|c| c.id), Some("ab".repeat(32)));
        assert_eq!(names.attribution.map(|a| a.path), Some(path));
    }

    #[test]
    fn the_tolerance_grows_with_uptime() {
        let mut kill = kills(LINUX_6_18).remove(0);
        kill.usec = 1_000_000;
        assert_eq!(tolerance(&kill), Duration::from_millis(2001));
        kill.usec = 86_400 * 1_000_000;
        assert_eq!(tolerance(&kill), Duration::from_millis(2000 + 86_400));
    }
}
