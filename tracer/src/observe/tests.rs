//! A kill's reads against a memory hierarchy where one file never answers: a FIFO, whose
//! `open` waits for a writer, stands in for a `/proc` or cgroup file whose kernel lock is held.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroupfs::{CgroupVersion, MemoryHierarchy};
use super::*;
use crate::decode::Task;
use crate::incident::{Parts, Trigger, Victim};
use crate::record::CutReason;

const BUDGET: Duration = Duration::from_millis(300);
const MIB: u64 = 1 << 20;

/// A cgroup2 hierarchy in a temporary directory; `stuck` names the cgroups whose
/// `cgroup.procs` never answers.
struct Hierarchy {
    memory: MemoryHierarchy,
    fifos: Vec<PathBuf>,
}

impl Hierarchy {
    fn new(name: &str, cgroups: &[(&str, Option<u64>, u64)], stuck: &[&str]) -> Self {
        let root =
            std::env::temp_dir().join(format!("oomtrace-observe-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        for (path, limit, current) in cgroups {
            let dir = root.join(path.trim_start_matches('/'));
            fs::create_dir_all(&dir).unwrap();
            let max = limit.map_or("max".to_owned(), |limit| limit.to_string());
            let ooms = u64::from(limit.is_some());
            for (file, text) in [
                ("memory.max", format!("{max}\n")),
                ("memory.current", format!("{current}\n")),
                (
                    "memory.events.local",
                    format!("oom {ooms}\noom_kill {ooms}\n"),
                ),
                ("memory.events", format!("oom {ooms}\noom_kill {ooms}\n")),
                ("memory.stat", format!("anon {current}\nfile 0\nshmem 0\n")),
                ("cgroup.procs", String::new()),
            ] {
                fs::write(dir.join(file), text).unwrap();
            }
        }
        let mut fifos = Vec::new();
        for cgroup in stuck {
            let fifo = root
                .join(cgroup.trim_start_matches('/'))
                .join("cgroup.procs");
            fs::remove_file(&fifo).unwrap();
            let made = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .expect("mkfifo");
            assert!(made.success(), "mkfifo {}", fifo.display());
            fifos.push(fifo);
        }
        Hierarchy {
            memory: MemoryHierarchy {
                root,
                version: CgroupVersion::V2,
            },
            fifos,
        }
    }
}

impl Drop for Hierarchy {
    /// Lets every stuck read go: a writer opens each FIFO (the reader's `open` returns) and
    /// closes it (the read finds its end).
    fn drop(&mut self) {
        for fifo in &self.fifos {
            let _ = open_writer(fifo);
        }
        let _ = fs::remove_dir_all(&self.memory.root);
    }
}

/// Opens `fifo` for writing without waiting for a reader: only a stuck read holds it open.
fn open_writer(fifo: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
}

fn observer(memory: &MemoryHierarchy) -> Observer {
    Observer {
        sources: Arc::new(Sources {
            memory: Some(memory.clone()),
            invocations: Mutex::new(Invocations::new()),
            recorder: None,
            kernel_log: Err("not followed in this test".to_owned()),
        }),
        reads: BoundedReads::new(BUDGET),
    }
}

fn cgroup(path: &str) -> Option<CgroupRef> {
    Some(CgroupRef {
        id: 1,
        path: path.to_owned(),
        truncated: false,
        incomplete: false,
    })
}

/// Pid `pid` killed in `memcg` by trigger thread `tid`, captured at `ktime_ns`.
fn kill(memcg: &str, pid: u32, tid: u32, ktime_ns: u64) -> Box<OomKill> {
    Box::new(OomKill {
        ktime_ns,
        victim: Victim {
            pid,
            tgid: Some(pid),
            comm: Some("hog".to_owned()),
            fields: None,
            cgroup: cgroup(memcg),
            memcg: cgroup(memcg),
        },
        trigger: Trigger {
            task: Task {
                pid: tid,
                tgid: tid,
                comm: "hog".to_owned(),
            },
            cgroup_id: None,
            cgroup: cgroup(memcg),
            memcg: cgroup(memcg),
        },
        parts: Parts::default(),
        incident: None,
        marked_without_kill: false,
        badness: None,
        namespace_init: None,
    })
}

async fn observe_timed(observer: &mut Observer, kill: Box<OomKill>) -> (Observed, Duration) {
    let started = Instant::now();
    let (_, observed) = observer.observe(kill).await;
    (observed, started.elapsed())
}

fn within_budget(took: Duration) {
    assert!(
        took >= BUDGET && took < BUDGET + Duration::from_millis(200),
        "the kill waited {took:?} for its reads, with a budget of {BUDGET:?}"
    );
}

fn snapshot_rows(observed: &Observed) -> Vec<(&str, u64)> {
    observed
        .snapshot
        .cgroups
        .iter()
        .map(|row| (row.path.as_str(), row.usage_bytes))
        .collect()
}

#[tokio::test]
async fn a_process_read_that_never_answers_cuts_the_processes_only() {
    let hierarchy = Hierarchy::new(
        "processes",
        &[
            ("/shop", Some(100 * MIB), 90 * MIB),
            ("/shop/web", None, 80 * MIB),
            ("/shop/db", None, 10 * MIB),
        ],
        &["/shop"],
    );
    let mut observer = observer(&hierarchy.memory);
    let (observed, took) = observe_timed(&mut observer, kill("/shop/web", 42, 42, 1_000)).await;
    within_budget(took);
    // Everything read before the stuck read is in the record.
    assert_eq!(
        observed.moment.domain,
        DomainSeen::Inferred {
            victim_memcg: "/shop/web".to_owned(),
            inference: Inference::Cgroup {
                path: "/shop".to_owned(),
                limit_bytes: 100 * MIB,
            },
        }
    );
    assert_eq!(observed.moment.victim.memcg.as_deref(), Some("/shop/web"));
    assert_eq!(
        snapshot_rows(&observed),
        [("/shop/web", 80 * MIB), ("/shop/db", 10 * MIB)]
    );
    let composition = observed.composition.as_ref().expect("the composition");
    assert_eq!(composition.usage_bytes, Some(90 * MIB));
    assert!(observed.snapshot.processes.is_empty());
    let cut = observed.cut.as_ref().expect("the record says what was cut");
    assert_eq!(cut.reason, CutReason::NoAnswer);
    assert_eq!(cut.parts, [ObservedPart::SnapshotProcesses]);
    assert_eq!(cut.waiting_on, Some(ObservedPart::SnapshotProcesses));
    assert_eq!(cut.budget_ms, 300);
    assert_eq!(observer.reads_given_up(), 1);

    // A second victim of the same invocation takes what was read, without waiting again.
    let (same, took) = observe_timed(&mut observer, kill("/shop/db", 43, 42, 2_000)).await;
    assert!(took < Duration::from_millis(100), "took {took:?}");
    assert_eq!(same.cut.as_ref().map(|cut| &cut.parts), Some(&cut.parts));
    assert_eq!(snapshot_rows(&same), snapshot_rows(&observed));
    assert_eq!(observer.reads_given_up(), 1);
    drop(hierarchy);
}

#[tokio::test]
async fn the_next_kill_is_read_in_full_while_a_read_stays_stuck() {
    let hierarchy = Hierarchy::new(
        "next",
        &[
            ("/stuck", Some(64 * MIB), 60 * MIB),
            ("/stuck/job", None, 60 * MIB),
            ("/fine", Some(32 * MIB), 30 * MIB),
            ("/fine/api", None, 30 * MIB),
        ],
        &["/stuck"],
    );
    let mut observer = observer(&hierarchy.memory);
    let (stuck, took) = observe_timed(&mut observer, kill("/stuck/job", 10, 10, 1_000)).await;
    within_budget(took);
    assert!(stuck.cut.is_some());
    let (fine, took) = observe_timed(&mut observer, kill("/fine/api", 20, 20, 2_000)).await;
    assert!(
        took < Duration::from_millis(100),
        "the next kill waited {took:?}"
    );
    assert_eq!(fine.cut, None, "{:?}", fine.cut);
    assert_eq!(snapshot_rows(&fine), [("/fine/api", 30 * MIB)]);
    assert_eq!(observer.reads_given_up(), 1);
}

#[tokio::test]
async fn past_the_cap_of_stuck_reads_kills_and_sigkills_go_out_unread_at_once() {
    let cgroups: Vec<(String, Option<u64>, u64)> = (0..bounded::MAX_STUCK_THREADS)
        .flat_map(|n| {
            [
                (format!("/d{n}"), Some(64 * MIB), 60 * MIB),
                (format!("/d{n}/c"), None, 60 * MIB),
            ]
        })
        .collect();
    let cgroups: Vec<(&str, Option<u64>, u64)> = cgroups
        .iter()
        .map(|(path, limit, current)| (path.as_str(), *limit, *current))
        .collect();
    let stuck: Vec<String> = (0..bounded::MAX_STUCK_THREADS)
        .map(|n| format!("/d{n}"))
        .collect();
    let stuck: Vec<&str> = stuck.iter().map(String::as_str).collect();
    let hierarchy = Hierarchy::new("cap", &cgroups, &stuck);
    let mut observer = observer(&hierarchy.memory);
    for n in 0..bounded::MAX_STUCK_THREADS {
        let memcg = format!("/d{n}/c");
        let (observed, took) = observe_timed(
            &mut observer,
            kill(&memcg, 100 + n as u32, 100 + n as u32, 1_000),
        )
        .await;
        within_budget(took);
        assert_eq!(
            observed.cut.map(|cut| cut.reason),
            Some(CutReason::NoAnswer)
        );
    }
    // Every read thread is stuck: nothing more is started, and nothing waits.
    let (observed, took) = observe_timed(&mut observer, kill("/d0/c", 7, 7, 9_000_000_000)).await;
    assert!(took < Duration::from_millis(50), "took {took:?}");
    let cut = observed.cut.expect("cut");
    assert_eq!(cut.reason, CutReason::StuckReads);
    assert_eq!(cut.parts[0], ObservedPart::PartyCgroups);
    assert_eq!(cut.parts.len(), 6, "{cut:?}");
    // Captured paths are kept, as the kernel gave them; the domain is unknown.
    assert_eq!(observed.moment.victim.memcg.as_deref(), Some("/d0/c"));
    assert_eq!(observed.moment.domain, DomainSeen::Unknown);
    let started = Instant::now();
    let (paths, cut) = observer.sender_paths(None, None, std::process::id()).await;
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(paths, PartyPaths::default());
    assert_eq!(cut.map(|cut| cut.reason), Some(CutReason::StuckReads));
    // A sender the kernel captured needs no read.
    let (paths, cut) = observer
        .sender_paths(cgroup("/d1/c").as_ref(), None, 1)
        .await;
    assert_eq!(paths.cgroup.as_deref(), Some("/d1/c"));
    assert_eq!(cut, None);
    assert_eq!(observer.reads_given_up(), bounded::MAX_STUCK_THREADS as u64);
    drop(hierarchy);
}

#[tokio::test]
async fn a_senders_cgroups_are_read_from_proc_where_the_kernel_did_not_capture_them() {
    let hierarchy = Hierarchy::new("sender", &[("/a", None, 1)], &[]);
    let mut observer = observer(&hierarchy.memory);
    let (paths, cut) = observer.sender_paths(None, None, std::process::id()).await;
    assert_eq!(cut, None);
    let own = crate::procfs::cgroups(std::process::id()).expect("this process's cgroups");
    assert_eq!(paths.cgroup, own.unified);
    assert_eq!(paths.memcg, own.memory);
}

/// Each victim of a `memory.oom.group` kill carries the group the kernel named: the pod's
/// container whose `memory.oom.group` the kubelet set, as the whole-system guest shows it.
#[test]
fn the_group_of_the_kernels_report_is_the_kills() {
    use crate::kmsg::follow::Seen;
    use crate::kmsg::parse::KernelText;

    let group = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podc6292756_85cc_b4e2_1981_e10c5d015a64.slice/cri-containerd-f8c41ddba4b0.scope";
    let seen = |group: Option<&str>| {
        Lookup::Report(Seen {
            pid: 1666,
            seq: 7,
            oom_memcg: Some(KernelText(group.unwrap_or("/a").as_bytes().to_vec())),
            group: group.map(|group| KernelText(group.as_bytes().to_vec())),
            task_memcg: None,
            report: Arc::default(),
        })
    };
    assert_eq!(kernel_log_group(&seen(Some(group))).as_deref(), Some(group));
    assert_eq!(kernel_log_group(&seen(None)), None);
    assert_eq!(kernel_log_group(&Lookup::NoReport), None);
}

/// A service killed at its `MemoryMax=` on a systemd host: systemd removes its cgroup as its
/// main process dies, before the limit can be read from it; the kernel's report of the kill
/// printed it (`memory: usage 49152kB, limit 49152kB`, the whole-system guest's 48 MiB unit).
#[test]
fn a_removed_cgroups_limit_is_the_one_the_kernel_reported() {
    use crate::kmsg::follow::Seen;
    use crate::kmsg::parse::KernelText;
    use crate::kmsg::report::{PageCounter, ReportedMemory};

    let path = "/system.slice/oomtrace-test-545-0.service";
    let report = |oom_memcg: &str| {
        Lookup::Report(Seen {
            pid: 562,
            seq: 9,
            oom_memcg: Some(KernelText(oom_memcg.as_bytes().to_vec())),
            group: None,
            task_memcg: Some(KernelText(path.as_bytes().to_vec())),
            report: Arc::new(ReportedMemory {
                memory: Some(PageCounter {
                    usage_kb: 49152,
                    limit_kb: 49152,
                    failcnt: Some(40),
                }),
                ..ReportedMemory::default()
            }),
        })
    };
    let domain = Domain::Cgroup(CgroupRef {
        id: 2101,
        path: path.to_owned(),
        truncated: false,
        incomplete: false,
    });
    assert_eq!(reported_limit(&report(path), &domain), Some(48 << 20));
    // Another cgroup's report, no report, or the host: nothing to take.
    assert_eq!(reported_limit(&report("/system.slice"), &domain), None);
    assert_eq!(reported_limit(&Lookup::NoReport, &domain), None);
    assert_eq!(reported_limit(&report(path), &Domain::Host), None);
}
