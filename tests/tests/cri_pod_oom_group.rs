//! A Kubernetes pod as the kubelet makes it on a cgroup v2 node: a pod limit, a smaller
//! container limit, and `memory.oom.group` set on the container, so that the kernel kills the
//! whole container when one of its processes outgrows the limit. On a systemd node (the
//! systemd cgroup driver, kubeadm's default) the pod is the slice
//! `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice` and the container
//! the scope `cri-containerd-<id>.scope` in it. The agent must tell one incident, with every
//! member of the container named with its pod and container, and the container's limit, not
//! the pod's, as the one hit.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use oomtrace::attribute::DomainKind;
use oomtrace::record::Body;
use oomtrace_tests::cri::{Containerd, CriContainerSpec, PodSpec};
use oomtrace_tests::{ContainerSpec, or_dash, pretty, require_root};

const MIB: u64 = 1 << 20;
const CONTAINER_LIMIT_BYTES: u64 = 48 * MIB;
const POD_LIMIT_BYTES: u64 = 128 * MIB;
/// Processes the container starts beside the hog, which the group kill takes with it.
const SLEEPERS: usize = 2;

#[test]
fn a_pods_container_with_oom_group_is_killed_whole_and_named() {
    require_root();
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        println!(
            "skipped: memory.oom.group needs the memory controller on cgroup v2; this host's is v1"
        );
        return;
    }
    let containerd = Containerd::start();
    let mut agent = containerd.start_agent_following_events();

    let pod = containerd
        .run_pod(PodSpec::new("shop-prod", "checkout-6d4b").with_memory_limit(POD_LIMIT_BYTES));
    let script = format!(
        "{}{}",
        "sleep 3600 & ".repeat(SLEEPERS),
        ContainerSpec::held_hog_script(CONTAINER_LIMIT_BYTES)
    );
    let container = pod.run(
        CriContainerSpec::new(
            "worker",
            ContainerSpec::shell(CONTAINER_LIMIT_BYTES, &script),
        )
        .oom_group(),
    );
    let container_path = pod.container_cgroup_path(&container);
    let container_dir = Path::new("/sys/fs/cgroup").join(container_path.trim_start_matches('/'));
    let read = |dir: &Path, file: &str| {
        std::fs::read_to_string(dir.join(file))
            .unwrap_or_else(|err| panic!("reading {}/{file}: {err}", dir.display()))
            .trim()
            .to_owned()
    };
    // What the kubelet would have set, as the kernel holds it.
    assert_eq!(read(&container_dir, "memory.oom.group"), "1");
    assert_eq!(
        read(&container_dir, "memory.max"),
        CONTAINER_LIMIT_BYTES.to_string()
    );
    assert_eq!(
        read(&pod.memcg_dir(), "memory.max"),
        POD_LIMIT_BYTES.to_string()
    );
    container.release();

    // The hog, then the sleepers, and nothing else: the shell exec'd the hog.
    let members = SLEEPERS + 1;
    let kills =
        agent.wait_for_kills_where(|kill| container.is_victim_of(kill), members, KILL_TIMEOUT);
    let incident_id = kills
        .first()
        .and_then(|kill| kill.incident.as_ref())
        .and_then(|incident| incident.id.clone());
    let incident = agent.wait_for_record(
        |record| match &record.body {
            Body::OomIncident(incident) if incident.incident.id == incident_id => {
                Some(incident.clone())
            }
            _ => None,
        },
        Duration::from_secs(10),
    );
    for kill in &kills {
        let names = &kill.victim.names;
        println!(
            "killed pid {} ({}) in pod {}/{} container {} (cgroup {}); incident {}; domain {} \
             {} limit {}",
            or_dash(kill.victim.process.pid),
            or_dash(kill.victim.process.comm()),
            or_dash(names.namespace()),
            or_dash(names.pod().and_then(|pod| pod.name.as_ref())),
            or_dash(names.k8s_container().map(|k8s| &k8s.name)),
            or_dash(
                kill.victim
                    .cgroup
                    .as_ref()
                    .and_then(|cgroup| cgroup.path.as_ref())
            ),
            or_dash(
                kill.incident
                    .as_ref()
                    .and_then(|incident| incident.id.as_ref())
            ),
            or_dash(kill.domain.as_ref().map(|domain| domain.kind)),
            or_dash(
                kill.domain
                    .as_ref()
                    .and_then(|domain| domain.cgroup.as_ref())
                    .map(|cgroup| &cgroup.path)
            ),
            or_dash(
                kill.domain
                    .as_ref()
                    .and_then(|domain| domain.memory)
                    .and_then(|memory| memory.limit_bytes)
            ),
        );
    }
    if let Some(explanation) = kills.first().and_then(|kill| kill.explanation.as_ref()) {
        println!("verdict: {}", explanation.verdict);
    }

    assert_eq!(
        kills.len(),
        members,
        "the group kill should take the hog and {SLEEPERS} sleepers: {}",
        pretty(&kills)
    );
    let Some(incident_id) = incident_id else {
        panic!("no incident id in {}", pretty(&kills));
    };
    let Some(incident) = incident else {
        panic!("no oom_incident record {incident_id}");
    };
    let killed: BTreeSet<u32> = kills
        .iter()
        .filter_map(|kill| kill.victim.process.pid)
        .collect();
    let victims: BTreeSet<u32> = incident
        .victims
        .iter()
        .map(|victim| victim.process.pid)
        .collect();
    assert_eq!(
        victims,
        killed,
        "the incident's victims: {}",
        pretty(&incident)
    );
    let comms: BTreeSet<&str> = kills
        .iter()
        .filter_map(|kill| kill.victim.process.comm())
        .collect();
    assert_eq!(
        comms,
        BTreeSet::from(["oomtrace-hog", "sleep"]),
        "{}",
        pretty(&kills)
    );
    for kill in &kills {
        let context = pretty(kill);
        assert_eq!(
            kill.incident
                .as_ref()
                .and_then(|incident| incident.id.as_deref()),
            Some(incident_id.as_str()),
            "one invocation, one incident: {context}"
        );
        let names = &kill.victim.names;
        assert_eq!(names.namespace(), Some("shop-prod"), "{context}");
        assert_eq!(
            names.pod().and_then(|pod| pod.name.as_deref()),
            Some("checkout-6d4b"),
            "{context}"
        );
        assert_eq!(
            names.pod().and_then(|pod| pod.uid.as_deref()),
            Some(pod.uid()),
            "{context}"
        );
        assert_eq!(
            names.k8s_container().map(|k8s| k8s.name.as_str()),
            Some("worker"),
            "{context}"
        );
        assert_eq!(
            kill.victim
                .cgroup
                .as_ref()
                .and_then(|cgroup| cgroup.path.as_deref()),
            Some(container_path.as_str()),
            "{context}"
        );
        // The container's limit was hit, not the pod's.
        let Some(domain) = &kill.domain else {
            panic!("no domain in {context}");
        };
        assert_eq!(domain.kind, DomainKind::Cgroup, "{context}");
        assert_eq!(
            domain.cgroup.as_ref().map(|cgroup| cgroup.path.as_str()),
            Some(container_path.as_str()),
            "{context}"
        );
        assert_eq!(
            domain.memory.and_then(|memory| memory.limit_bytes),
            Some(CONTAINER_LIMIT_BYTES),
            "{context}"
        );
        assert_eq!(
            domain.names.k8s_container().map(|k8s| k8s.name.as_str()),
            Some("worker"),
            "{context}"
        );
        assert_eq!(
            kill.kmsg_oom_group
                .as_ref()
                .map(|group| group.path.as_str()),
            Some(container_path.as_str()),
            "the kernel's `Tasks in … are going to be killed due to memory.oom.group`: {context}"
        );
    }
    agent.stop();
}

const KILL_TIMEOUT: Duration = Duration::from_secs(30);

/// The other limit of the same layout: two containers whose own limits are above the pod's,
/// one holding its working set, the other spiking. The pod's limit is hit, and the agent must
/// name the pod's cgroup and limit as the domain, not a container's.
#[test]
fn a_pod_limit_hit_is_told_from_a_container_limit() {
    require_root();
    if !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        println!(
            "skipped: the pod's limit is read from cgroup v2 here; this host's memory controller is v1"
        );
        return;
    }
    const POD_MIB: u64 = 96;
    const HELD_MIB: u64 = 60;
    let containerd = Containerd::start();
    let mut agent = containerd.start_agent_following_events();
    let pod = containerd
        .run_pod(PodSpec::new("shop-prod", "search-5c8f").with_memory_limit(POD_MIB * MIB));
    let held = format!(
        "{} --no-wait --hold --max-mib {HELD_MIB}",
        oomtrace_tests::HOG_IN_IMAGE
    );
    let _index = pod.run(CriContainerSpec::new(
        "index",
        ContainerSpec::shell(POD_MIB * 2 * MIB, &held),
    ));
    // The index holds its working set before the spike starts.
    let current = pod.memcg_dir().join("memory.current");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let bytes: u64 = std::fs::read_to_string(&current)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(0);
        if bytes >= HELD_MIB * MIB {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pod holds {bytes} bytes, not yet {HELD_MIB} MiB"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let spike = pod.run(CriContainerSpec::new(
        "reindex",
        ContainerSpec::held_hog(POD_MIB * 2 * MIB),
    ));
    spike.release();
    let kill = agent
        .wait_for_kill_where(
            |kill| {
                kill.victim
                    .cgroup
                    .as_ref()
                    .and_then(|cgroup| cgroup.path.as_deref())
                    .is_some_and(|path| path.starts_with(&pod.cgroup_path()))
            },
            KILL_TIMEOUT,
        )
        .unwrap_or_else(|| panic!("no oom_kill in pod {}", pod.cgroup_path()));
    let context = pretty(&kill);
    let domain = kill.domain.as_ref();
    println!(
        "killed pid {} ({}) container {}; trigger container {}; domain {} limit {} pod {} \
         container {}",
        or_dash(kill.victim.process.pid),
        or_dash(kill.victim.process.comm()),
        or_dash(kill.victim.names.k8s_container().map(|k8s| &k8s.name)),
        or_dash(
            kill.trigger
                .as_ref()
                .and_then(|trigger| trigger.names.k8s_container())
                .map(|k8s| &k8s.name)
        ),
        or_dash(
            domain
                .and_then(|domain| domain.cgroup.as_ref())
                .map(|cgroup| &cgroup.path)
        ),
        or_dash(
            domain
                .and_then(|domain| domain.memory)
                .and_then(|memory| memory.limit_bytes)
        ),
        or_dash(
            domain
                .and_then(|domain| domain.names.pod())
                .and_then(|pod| pod.name.as_ref())
        ),
        or_dash(
            domain
                .and_then(|domain| domain.names.k8s_container())
                .map(|k8s| &k8s.name)
        ),
    );
    if let Some(explanation) = &kill.explanation {
        println!("verdict: {}", explanation.verdict);
    }
    let Some(domain) = domain else {
        panic!("no domain in {context}");
    };
    assert_eq!(
        domain.cgroup.as_ref().map(|cgroup| cgroup.path.clone()),
        Some(pod.cgroup_path()),
        "the pod's limit was hit: {context}"
    );
    assert_eq!(
        domain.memory.and_then(|memory| memory.limit_bytes),
        Some(POD_MIB * MIB),
        "{context}"
    );
    assert_eq!(
        domain.names.pod().and_then(|pod| pod.name.as_deref()),
        Some("search-5c8f"),
        "{context}"
    );
    assert_eq!(
        domain.names.k8s_container(),
        None,
        "the pod's cgroup is no container's: {context}"
    );
    assert_eq!(
        kill.trigger
            .as_ref()
            .and_then(|trigger| trigger.names.k8s_container())
            .map(|k8s| k8s.name.as_str()),
        Some("reindex"),
        "{context}"
    );
    agent.stop();
}
