//! The verdict on recorded kills, one branch each; [`gallery`] has one of each kind of kill.

mod gallery;

use std::sync::Arc;

use super::*;
use crate::attribute::runtime::ContainerMetadata;
use crate::attribute::{Attribution, Basis, DomainCgroup, ResolvedDomain, Source};
use crate::cgroup_path;
use crate::decode::Task;
use crate::decode::mark_victim::MarkVictimFields;
use crate::incident::{OomKill, Parts, Trigger, Victim};
use crate::observe::composition as observed;
use crate::record::composition::{Composition, TmpfsKind, TmpfsMount};

const DB: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const BUILDER: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const HOURS_6: Duration = Duration::from_secs(6 * 3600);

fn path(id: &str) -> String {
    format!("/libpod_parent/libpod-{id}")
}

fn container(id: &str, name: &str, limit: Option<u64>) -> Attribution {
    let mut meta = ContainerMetadata::new(id, name, "podman", []);
    meta.image = Some(format!("localhost/{name}:1"));
    meta.memory_limit_bytes = limit;
    Attribution {
        path: path(id),
        identity: cgroup_path::parse(&path(id)),
        container: Some(Arc::new(meta)),
        source: Source::Cache,
        warning: None,
    }
}

fn oom(victim: (u32, &str, u64), trigger: (u32, &str)) -> Box<OomKill> {
    let (pid, comm, anon_kb) = victim;
    Box::new(OomKill {
        ktime_ns: 1,
        victim: Victim {
            pid,
            tgid: Some(pid),
            comm: Some(comm.to_owned()),
            fields: Some(MarkVictimFields {
                pid,
                comm: Some(comm.to_owned()),
                total_vm_kb: None,
                anon_rss_kb: Some(anon_kb),
                file_rss_kb: Some(0),
                shmem_rss_kb: Some(0),
                uid: None,
                pgtables_kb: None,
                oom_score_adj: Some(0),
            }),
            cgroup: None,
            memcg: None,
        },
        trigger: Trigger {
            task: Task {
                pid: trigger.0,
                tgid: trigger.0,
                comm: trigger.1.to_owned(),
            },
            cgroup_id: None,
            cgroup: None,
            memcg: None,
        },
        parts: Parts {
            tracepoint: true,
            task: true,
            ..Parts::default()
        },
        incident: None,
        marked_without_kill: false,
        badness: None,
        namespace_init: None,
    })
}

fn domain(
    kind: DomainKind,
    basis: Basis,
    owner: Option<Attribution>,
    limit: Option<u64>,
) -> ResolvedDomain {
    ResolvedDomain {
        kind,
        cgroup: owner.as_ref().map(|owner| DomainCgroup {
            id: None,
            path: owner.path.clone(),
        }),
        limit_bytes: limit,
        basis,
        attribution: owner,
    }
}

/// A container at its own 48 MiB limit, its main process, self-triggered.
fn own_limit() -> AttributedKill {
    let web = container(DB, "web", Some(48 << 20));
    AttributedKill {
        kill: oom((42, "postgres", 47 * 1024), (42, "postgres")),
        victim: Some(web.clone()),
        trigger: Some(web.clone()),
        main_process: Some(true),
        domain: domain(DomainKind::Cgroup, Basis::Kernel, Some(web), Some(48 << 20)),
    }
}

/// The seed scenario: a host-wide OOM, the db killed, a build job next to it the trigger.
fn host_wide() -> AttributedKill {
    AttributedKill {
        kill: oom((42, "postgres", 2 << 20), (77, "cc1plus")),
        victim: Some(container(DB, "db", None)),
        trigger: Some(container(BUILDER, "builder", None)),
        main_process: Some(true),
        domain: domain(DomainKind::Host, Basis::Kernel, None, None),
    }
}

fn top() -> Top {
    Top {
        charged_to_domain: None,
        cgroups: vec![
            ("container builder".to_owned(), 6 << 30),
            ("container db".to_owned(), 2 << 30),
            ("cgroup /system.slice/sshd.service".to_owned(), 8 << 20),
            ("cgroup /user.slice".to_owned(), 4 << 20),
        ],
        processes: vec![TopProcess {
            comm: "cc1plus".to_owned(),
            pid: 77,
            container: Some("builder".to_owned()),
            bytes: 5 << 30,
        }],
        lead_up: None,
        filled: None,
    }
}

#[test]
fn the_lead_up_follows_the_biggest_users() {
    let top = Top {
        lead_up: Some(
            "In the minute before the kill, builder grew from 100 MiB to 6 GiB.".to_owned(),
        ),
        ..top()
    };
    let text = verdict(&own_limit(), &top, Flags::default(), HOURS_6);
    let biggest = text.find("At that moment").expect(&text);
    let lead_up = text.find("before the kill, builder grew").expect(&text);
    assert!(biggest < lead_up, "{text}");
}

#[test]
fn a_container_at_its_own_limit() {
    let text = verdict(&own_limit(), &Top::default(), Flags::default(), HOURS_6);
    assert_eq!(
        text,
        "Container web was killed by the OOM killer: pid 42 (postgres), 47 MiB resident. It \
         was the container's main process, so the container exited with code 137. It hit its \
         own memory limit of 48 MiB. Its own allocation tipped it over."
    );
}

#[test]
fn a_child_keeps_the_container_running() {
    let mut kill = own_limit();
    kill.main_process = Some(false);
    kill.domain.basis = Basis::Counters;
    let text = verdict(&kill, &Top::default(), Flags::default(), HOURS_6);
    assert!(
        text.contains(
            "It was not the container's main process: the container keeps running, and its \
             runtime will not report OOMKilled. It hit its own memory limit of 48 MiB \
             (inferred)."
        ),
        "{text}"
    );
}

#[test]
fn a_host_wide_oom_names_the_trigger_its_container_and_the_top_users() {
    let text = verdict(&host_wide(), &top(), Flags::default(), HOURS_6);
    assert_eq!(
        text,
        "Container db was killed by the OOM killer: pid 42 (postgres), 2 GiB resident. It was \
         the container's main process, so the container exited with code 137. The whole host \
         ran out of memory; no cgroup limit was hit. Container db has no memory limit of its \
         own: its limit is the host's memory, as `docker stats` shows. The allocation that \
         tipped it over came from pid 77 (cc1plus) in container builder, not in container db. \
         At that moment the biggest users were container builder (6 GiB), container db (2 GiB) \
         and cgroup /system.slice/sshd.service (8 MiB); the biggest process was cc1plus (pid \
         77, in builder, 5 GiB)."
    );
}

#[test]
fn a_container_with_a_limit_in_a_host_wide_oom_is_not_said_to_lack_one() {
    let mut kill = host_wide();
    kill.victim = Some(container(DB, "db", Some(8 << 30)));
    let text = verdict(&kill, &Top::default(), Flags::default(), HOURS_6);
    assert!(!text.contains("no memory limit of its own"), "{text}");
}

#[test]
fn a_pod_limit_is_not_the_victims_own() {
    let pod_path = "/kubepods/burstable/pod7d3e1c1a-2b4f-4a8e-9c1d-5e6f7a8b9c0d";
    let pod = Attribution {
        path: pod_path.to_owned(),
        identity: cgroup_path::parse(pod_path),
        container: None,
        source: Source::Path,
        warning: None,
    };
    let mut kill = own_limit();
    kill.domain = domain(
        DomainKind::Cgroup,
        Basis::Counters,
        Some(pod),
        Some(1 << 30),
    );
    let text = verdict(&kill, &Top::default(), Flags::default(), HOURS_6);
    assert!(
        text.contains(
            "The limit hit was not the victim's own but the 1 GiB limit of pod \
             7d3e1c1a-2b4f-4a8e-9c1d-5e6f7a8b9c0d (burstable) (inferred)."
        ),
        "{text}"
    );
}

#[test]
fn nothing_known_still_says_who_died() {
    let kill = AttributedKill::unattributed(*oom((9, "hog", 1024), (9, "hog")));
    let text = verdict(&kill, &Top::default(), Flags::default(), HOURS_6);
    assert_eq!(
        text,
        "Pid 9 (hog) was killed by the OOM killer, 1 MiB resident. Whose memory limit was \
         hit is unknown. Its own allocation tipped it over."
    );
}

#[test]
fn cgroups_nobody_owns_are_named_by_their_paths() {
    let place = |path: &str| Attribution {
        path: path.to_owned(),
        identity: cgroup_path::parse(path),
        container: None,
        source: Source::Path,
        warning: None,
    };
    let kill = AttributedKill {
        kill: oom((152, "db", 1024), (293, "builder")),
        victim: Some(place("/db")),
        trigger: Some(place("/builder")),
        main_process: None,
        domain: domain(DomainKind::Host, Basis::Kernel, None, None),
    };
    let text = verdict(&kill, &Top::default(), Flags::default(), HOURS_6);
    assert_eq!(
        text,
        "Pid 152 (db) in cgroup /db was killed by the OOM killer, 1 MiB resident. The whole \
         host ran out of memory; no cgroup limit was hit. The allocation that tipped it over \
         came from pid 293 (builder) in cgroup /builder, not in cgroup /db."
    );
}

#[test]
fn a_restart_loop_and_a_recurring_trigger_are_called_out() {
    let flags = Flags {
        restart_loop: Some(3),
        recurring_trigger: Some(2),
        restarts: None,
    };
    let text = verdict(&host_wide(), &Top::default(), flags, HOURS_6);
    assert!(
        text.contains(
            "This is the 3rd OOM kill of container db in 6 hours: a restart policy is hiding a \
             loop."
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "Container builder has now set off 2 host-wide OOMs that killed different victims \
             in 6 hours."
        ),
        "{text}"
    );
}

#[test]
fn a_compose_loop_says_what_the_runtime_did() {
    let compose = |id: &str, service: &str| {
        let mut party = container(id, &format!("shop_{service}_1"), None);
        let meta = Arc::make_mut(party.container.as_mut().unwrap());
        meta.runtime = "docker";
        meta.compose.project = Some("shop".to_owned());
        meta.compose.service = Some(service.to_owned());
        meta.restart_policy = Some("always".to_owned());
        meta.restart_count = Some(2);
        party
    };
    let kill = AttributedKill {
        victim: Some(compose(DB, "db")),
        trigger: Some(compose(BUILDER, "builder")),
        ..host_wide()
    };
    let flags = Flags {
        restart_loop: Some(3),
        recurring_trigger: None,
        restarts: Some(crate::explain::patterns::Restarts {
            count: 2,
            over: Duration::from_millis(1_740),
        }),
    };
    let text = verdict(&kill, &Top::default(), flags, HOURS_6);
    assert!(
        text.starts_with("Service db of project shop was killed by the OOM killer"),
        "{text}"
    );
    assert!(
        text.contains("came from pid 77 (cc1plus) in service builder of project shop"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "This is the 3rd OOM kill of service db of project shop in 6 hours; Docker restarted \
             it twice in 1.7 s: its restart policy (always) is hiding a loop."
        ),
        "{text}"
    );
}

#[test]
fn an_exiting_task_given_reserves_is_not_called_a_kill() {
    let mut kill = own_limit();
    kill.kill.marked_without_kill = true;
    let text = verdict(&kill, &Top::default(), Flags::default(), HOURS_6);
    assert_eq!(
        text,
        "Nothing was killed: pid 42 (postgres) in container web, 47 MiB resident, was already \
         exiting, and was given memory reserves to finish. It hit its own memory limit of 48 \
         MiB. Its own allocation tipped it over."
    );
}

#[test]
fn names_are_escaped() {
    let mut kill = own_limit();
    kill.kill.victim.comm = Some("evil\u{1b}[2J".to_owned());
    let text = verdict(&kill, &Top::default(), Flags::default(), HOURS_6);
    assert!(text.contains("(evil\\x1b[2J)"), "{text}");
}

#[test]
fn ordinals() {
    let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111]
        .map(ordinal)
        .to_vec();
    assert_eq!(
        got,
        [
            "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"
        ]
    );
}

const MIB: u64 = 1 << 20;

/// What the kernel reported of a 128 MiB domain, its tmpfs mounts named.
fn filled(parts: observed::Parts, mounts: Vec<TmpfsMount>) -> Composition {
    let observed = observed::Composition {
        source: observed::Source::KernelLog,
        kernel_log: observed::KernelLog::Report { seq: 7 },
        cgroup: Some(path(DB)),
        usage_bytes: Some(128 * MIB),
        limit_bytes: Some(128 * MIB),
        parts,
        processes: None,
        reaped: None,
        victim_shmem_bytes: Some(0),
        tmpfs: Vec::new(),
        tmpfs_unknown: None,
    };
    crate::record::build::composition(&observed, mounts)
}

fn shm_of_web(used: u64) -> TmpfsMount {
    TmpfsMount {
        mount_point: "/dev/shm".to_owned(),
        kind: TmpfsKind::Shm,
        host_path: Some(format!("/var/lib/docker/containers/{DB}/mounts/shm")),
        volume: None,
        used_bytes: Some(used),
        size_bytes: Some(256 * MIB),
        outlives_container: false,
        names: crate::record::build::names(Some(&container(DB, "web", Some(128 * MIB))), None),
    }
}

/// A container at its 128 MiB limit, its process holding 27.5 MiB of its own.
fn small_victim() -> AttributedKill {
    let web = container(DB, "web", Some(128 * MIB));
    AttributedKill {
        kill: oom((42, "python3", 28_160), (42, "python3")),
        victim: Some(web.clone()),
        trigger: Some(web.clone()),
        main_process: Some(false),
        domain: domain(
            DomainKind::Cgroup,
            Basis::KernelLog,
            Some(web),
            Some(128 * MIB),
        ),
    }
}

#[test]
fn tmpfs_files_no_process_maps_lead_the_verdict_with_their_mount() {
    let parts = observed::Parts {
        anon: Some(28_160 * 1024),
        file: Some(300 * 1024),
        file_mapped: Some(300 * 1024),
        shmem: Some(100 * MIB),
        kernel: Some(128 * MIB - 28_160 * 1024 - 300 * 1024 - 100 * MIB),
        ..observed::Parts::default()
    };
    let top = Top {
        filled: Some(filled(parts, vec![shm_of_web(100 * MIB)])),
        ..Top::default()
    };
    let text = verdict(&small_victim(), &top, Flags::default(), HOURS_6);
    assert_eq!(
        text,
        "The limit of 128 MiB was filled by 100 MiB of tmpfs files and shared memory that no \
         process maps (in /dev/shm of container web, 100 MiB used); processes held 28 MiB (the \
         killed one 28 MiB of its own). Killing a process does not free such files. Pid 42 \
         (python3) in container web was killed by the OOM killer, 28 MiB resident. It was not \
         the container's main process: the container keeps running, and its runtime will not \
         report OOMKilled. It hit its own memory limit of 128 MiB. Its own allocation tipped it \
         over."
    );
}

#[test]
fn a_mount_whose_use_cannot_be_read_is_named_and_said_so() {
    let parts = observed::Parts {
        anon: Some(28 * MIB),
        shmem: Some(100 * MIB),
        ..observed::Parts::default()
    };
    let mut scratch = shm_of_web(0);
    scratch.mount_point = "/scratch".to_owned();
    scratch.kind = TmpfsKind::ContainerTmpfs;
    scratch.host_path = None;
    scratch.used_bytes = None;
    let top = Top {
        filled: Some(filled(parts, vec![scratch, shm_of_web(0)])),
        ..Top::default()
    };
    let text = verdict(&small_victim(), &top, Flags::default(), HOURS_6);
    assert!(
        text.starts_with(
            "The limit of 128 MiB was filled by 100 MiB of tmpfs files and shared memory that \
             no process maps (in /scratch of container web, whose use cannot be read from \
             outside the container); processes held 28 MiB (the killed one 28 MiB of its own)"
        ),
        "{text}"
    );
    // An empty /dev/shm is not where they are.
    assert!(!text.contains("/dev/shm"), "{text}");

    // Docker's own: neither mount can be measured from the host.
    let mut unmeasured_shm = shm_of_web(0);
    unmeasured_shm.used_bytes = None;
    let mut scratch = unmeasured_shm.clone();
    scratch.mount_point = "/scratch".to_owned();
    scratch.kind = TmpfsKind::ContainerTmpfs;
    let both = Top {
        filled: Some(filled(parts, vec![unmeasured_shm.clone(), scratch])),
        ..Top::default()
    };
    let text = verdict(&small_victim(), &both, Flags::default(), HOURS_6);
    assert!(
        text.contains(
            "(in /dev/shm or /scratch of container web, whose use cannot be read from outside \
             the container)"
        ),
        "{text}"
    );
    let alone = Top {
        filled: Some(filled(parts, vec![unmeasured_shm])),
        ..Top::default()
    };
    let text = verdict(&small_victim(), &alone, Flags::default(), HOURS_6);
    assert!(
        text.contains(
            "(in /dev/shm of container web, its only tmpfs mount, whose use cannot be read from \
             outside the container)"
        ),
        "{text}"
    );
}

#[test]
fn a_pods_volume_outlives_its_container_and_a_restart_loop_is_explained() {
    let pod_uid = "7d3e1c1a-2b4f-4a8e-9c1d-5e6f7a8b9c0d";
    let pod_path = format!("/kubepods/burstable/pod{pod_uid}");
    let pod = Attribution {
        path: pod_path.clone(),
        identity: cgroup_path::parse(&pod_path),
        container: None,
        source: Source::Path,
        warning: None,
    };
    let parts = observed::Parts {
        anon: Some(20 * MIB),
        shmem: Some(100 * MIB),
        ..observed::Parts::default()
    };
    let volume = TmpfsMount {
        mount_point: "/cache".to_owned(),
        kind: TmpfsKind::EmptyDir,
        host_path: Some(format!(
            "/var/lib/kubelet/pods/{pod_uid}/volumes/kubernetes.io~empty-dir/cache"
        )),
        volume: Some("cache".to_owned()),
        used_bytes: Some(100 * MIB),
        size_bytes: None,
        outlives_container: true,
        names: crate::record::build::names(Some(&pod), None),
    };
    let top = Top {
        filled: Some(filled(parts, vec![volume])),
        ..Top::default()
    };
    let flags = Flags {
        restart_loop: Some(3),
        recurring_trigger: None,
        restarts: None,
    };
    let text = verdict(&small_victim(), &top, flags, HOURS_6);
    assert!(
        text.contains(&format!(
            "(in emptyDir volume cache of pod {pod_uid} (burstable), 100 MiB used)"
        )),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "Restarting the container will not free them: emptyDir volume cache belongs to \
             pod {pod_uid} (burstable), not to the container, and keeps its files until the pod \
             is deleted. Each restart starts with them already charged, which is why it is \
             killed again."
        )),
        "{text}"
    );
}

#[test]
fn a_volume_found_in_a_pods_container_is_named_as_the_pods() {
    // The kubelet's emptyDir, found mounted in the worker container of pod
    // pay-prod/ledger-api-7f9c: it belongs to the pod, and outlives the container.
    let worker = crate::attribute::fixtures::worker();
    let pod_uid = "7d3e1c1a-2b4f-4a8e-9c1d-5e6f7a8b9c0d";
    let volume = TmpfsMount {
        mount_point: "/cache".to_owned(),
        kind: TmpfsKind::EmptyDir,
        host_path: Some(format!(
            "/var/lib/kubelet/pods/{pod_uid}/volumes/kubernetes.io~empty-dir/cache"
        )),
        volume: Some("cache".to_owned()),
        used_bytes: Some(100 * MIB),
        size_bytes: None,
        outlives_container: true,
        names: crate::record::build::names(Some(&worker), None),
    };
    let parts = observed::Parts {
        anon: Some(20 * MIB),
        shmem: Some(100 * MIB),
        ..observed::Parts::default()
    };
    let top = Top {
        filled: Some(filled(parts, vec![volume])),
        ..Top::default()
    };
    let text = verdict(&small_victim(), &top, Flags::default(), HOURS_6);
    assert!(
        text.contains("(in emptyDir volume cache of pod pay-prod/ledger-api-7f9c, 100 MiB used)"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "Restarting the container will not free them: emptyDir volume cache belongs to pod \
             pay-prod/ledger-api-7f9c, not to container worker, and keeps its files until the \
             pod is deleted."
        ),
        "{text}"
    );
}

#[test]
fn page_cache_the_kernel_could_not_reclaim_leads_with_why() {
    let parts = observed::Parts {
        anon: Some(30 * MIB),
        file: Some(96 * MIB),
        file_dirty: Some(80 * MIB),
        file_writeback: Some(4 * MIB),
        file_mapped: Some(2 * MIB),
        shmem: Some(0),
        unevictable: Some(10 * MIB),
        kernel: Some(2 * MIB),
        ..observed::Parts::default()
    };
    let top = Top {
        filled: Some(filled(parts, Vec::new())),
        ..Top::default()
    };
    let text = verdict(&small_victim(), &top, Flags::default(), HOURS_6);
    assert!(
        text.starts_with(
            "The limit of 128 MiB was filled by 94 MiB of page cache the kernel could not \
             reclaim (84 MiB dirty or being written back, 10 MiB unevictable (mlocked or \
             ramfs)); processes held 32 MiB (the killed one 28 MiB of its own). Killing a \
             process does not free it."
        ),
        "{text}"
    );
}

#[test]
fn kernel_memory_leads_with_its_slab() {
    let parts = observed::Parts {
        anon: Some(10 * MIB),
        file: Some(0),
        shmem: Some(0),
        kernel: Some(118 * MIB),
        slab_reclaimable: Some(90 * MIB),
        slab_unreclaimable: Some(20 * MIB),
        page_tables: Some(MIB),
        sock: Some(0),
        ..observed::Parts::default()
    };
    let top = Top {
        filled: Some(filled(parts, Vec::new())),
        ..Top::default()
    };
    let text = verdict(&small_victim(), &top, Flags::default(), HOURS_6);
    assert!(
        text.starts_with(
            "The limit of 128 MiB was filled by 118 MiB of the kernel's own memory (110 MiB \
             slab: dentries, inodes and other kernel objects, 90 MiB of it reclaimable); \
             processes held 10 MiB"
        ),
        "{text}"
    );
}

#[test]
fn a_limit_filled_by_processes_gets_no_such_sentence() {
    let parts = observed::Parts {
        anon: Some(120 * MIB),
        file: Some(4 * MIB),
        file_mapped: Some(4 * MIB),
        shmem: Some(MIB),
        kernel: Some(3 * MIB),
        ..observed::Parts::default()
    };
    let top = Top {
        filled: Some(filled(parts, Vec::new())),
        ..Top::default()
    };
    let text = verdict(&own_limit(), &top, Flags::default(), HOURS_6);
    assert!(text.starts_with("Container web was killed"), "{text}");
}

/// A pod whose removed container left its tmpfs pages behind: the kernel moved them to the
/// pod's cgroup, where no container shows them.
#[test]
fn memory_charged_to_the_pod_itself_is_told_when_it_is_a_large_share() {
    let parts = observed::Parts {
        anon: Some(28 * MIB),
        shmem: Some(100 * MIB),
        ..observed::Parts::default()
    };
    let charged = |bytes: u64| Top {
        cgroups: vec![
            ("pod shop/web-0 container web".to_owned(), 28 * MIB),
            ("the sandbox of pod shop/web-0".to_owned(), 176 << 10),
        ],
        filled: Some(filled(parts, Vec::new())),
        charged_to_domain: Some(("the pod".to_owned(), bytes)),
        ..Top::default()
    };
    let text = verdict(
        &small_victim(),
        &charged(100 * MIB),
        Flags::default(),
        HOURS_6,
    );
    assert!(
        text.contains(
            "At that moment the biggest users were pod shop/web-0 container web (28 MiB) and the \
             sandbox of pod shop/web-0 (176 KiB). 100 MiB was charged to the pod itself, to \
             none of its containers."
        ),
        "{text}"
    );
    // The pod's own few KiB of kernel objects are no news.
    let text = verdict(
        &small_victim(),
        &charged(2 * MIB),
        Flags::default(),
        HOURS_6,
    );
    assert!(!text.contains("charged to"), "{text}");
    let other = Top {
        charged_to_domain: Some(("cgroup /jobs".to_owned(), 100 * MIB)),
        ..charged(0)
    };
    let text = verdict(&small_victim(), &other, Flags::default(), HOURS_6);
    assert!(
        text.contains(
            "100 MiB was charged to cgroup /jobs itself, to none of the cgroups below it."
        ),
        "{text}"
    );
}
