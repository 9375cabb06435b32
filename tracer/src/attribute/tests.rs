//! The resolver against fake runtimes: each fault the agent must survive, one test each.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt as _};

use super::runtime::{RuntimeError, RuntimeEvent, RuntimeResult};
use super::*;
use crate::decode::{CgroupRef, Task};
use crate::incident::{Parts, Trigger, Victim};
use crate::observe::cgroupfs::Inference;
use crate::observe::{DomainSeen, Moment, PartyPaths};

const ID: &str = "3f2a9c0d1e4b5a6978877665544332211000ffeeddccbbaa9988776655443322";

fn podman_path(id: &str) -> String {
    format!("/libpod_parent/libpod-{id}")
}

fn meta(id: &str, name: &str) -> ContainerMetadata {
    let mut meta = ContainerMetadata::new(id, name, "podman", []);
    meta.image = Some("localhost/oomtrace-hog:latest".to_owned());
    meta.main_pid = Some(100);
    meta.memory_limit_bytes = Some(48 << 20);
    meta
}

/// A runtime that answers `inspect` as told, after `delay`.
struct FakeRuntime {
    answer: fn(&str) -> RuntimeResult<Option<ContainerMetadata>>,
    delay: Duration,
    inspected: AtomicUsize,
    connected: AtomicBool,
}

impl FakeRuntime {
    fn new(answer: fn(&str) -> RuntimeResult<Option<ContainerMetadata>>) -> Arc<Self> {
        Self::slow(answer, Duration::ZERO)
    }

    fn slow(
        answer: fn(&str) -> RuntimeResult<Option<ContainerMetadata>>,
        delay: Duration,
    ) -> Arc<Self> {
        Arc::new(FakeRuntime {
            answer,
            delay,
            inspected: AtomicUsize::new(0),
            connected: AtomicBool::new(true),
        })
    }
}

impl ContainerRuntime for FakeRuntime {
    fn describe(&self) -> String {
        "fake".to_owned()
    }
    fn connect(&self) -> BoxFuture<'_, RuntimeResult<()>> {
        Box::pin(async { Ok(()) })
    }
    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }
    fn disconnect(&self) {
        self.connected.store(false, Ordering::SeqCst);
    }
    fn list(&self) -> BoxFuture<'_, RuntimeResult<Vec<ContainerMetadata>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, RuntimeResult<Option<ContainerMetadata>>> {
        self.inspected.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            (self.answer)(id)
        })
    }
    fn events(&self, _since: std::time::SystemTime) -> BoxStream<'_, RuntimeResult<RuntimeEvent>> {
        stream::pending().boxed()
    }
}

fn attributor(runtimes: Vec<Arc<dyn ContainerRuntime>>) -> Attributor {
    Attributor::with_runtimes(runtimes, cache::DEFAULT_TOMBSTONE_TTL)
}

fn deadline() -> Instant {
    Instant::now() + ATTRIBUTION_BUDGET
}

fn cgroup(id: u64, path: &str) -> CgroupRef {
    CgroupRef {
        id,
        path: path.to_owned(),
        truncated: false,
        incomplete: false,
    }
}

/// What the observe stage would have seen of `kill`, with `domain`.
fn moment(kill: &OomKill, domain: DomainSeen) -> Moment {
    let paths = |cgroup: &Option<CgroupRef>, memcg: &Option<CgroupRef>| PartyPaths {
        cgroup: cgroup.as_ref().map(|c| c.path.clone()),
        memcg: memcg.as_ref().map(|c| c.path.clone()),
    };
    Moment {
        victim: paths(&kill.victim.cgroup, &kill.victim.memcg),
        trigger: paths(&kill.trigger.cgroup, &kill.trigger.memcg),
        domain,
        victim_is_pid_one: None,
        kmsg_oom_group: None,
    }
}

fn kill_in(path: &str, victim_tgid: u32) -> Box<OomKill> {
    Box::new(OomKill {
        ktime_ns: 1,
        victim: Victim {
            pid: victim_tgid,
            tgid: Some(victim_tgid),
            comm: Some("oomtrace-hog".to_owned()),
            fields: None,
            cgroup: Some(cgroup(7, path)),
            memcg: Some(cgroup(8, path)),
        },
        trigger: Trigger {
            task: Task {
                pid: victim_tgid,
                tgid: victim_tgid,
                comm: "oomtrace-hog".to_owned(),
            },
            cgroup_id: Some(7),
            cgroup: Some(cgroup(7, path)),
            memcg: Some(cgroup(8, path)),
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

#[tokio::test]
async fn a_cached_container_is_named_without_asking() {
    let runtime = FakeRuntime::new(|_| panic!("a cached container is not inspected"));
    let attributor = attributor(vec![runtime.clone()]);
    attributor
        .shared()
        .with_cache(|cache| cache.upsert(meta(ID, "web"), Instant::now()));

    let named = attributor.resolve(&podman_path(ID), deadline()).await;
    assert_eq!(named.source, Source::Cache);
    assert_eq!(
        named.container.as_ref().map(|c| c.name.as_str()),
        Some("web")
    );
    assert_eq!(named.warning, None);
    assert_eq!(runtime.inspected.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_removed_container_is_named_from_its_tombstone() {
    let attributor = attributor(vec![FakeRuntime::new(|_| Ok(None))]);
    let now = Instant::now();
    attributor.shared().with_cache(|cache| {
        cache.upsert(meta(ID, "batch"), now);
        cache.removed(ID, now);
    });
    let named = attributor.resolve(&podman_path(ID), deadline()).await;
    assert_eq!(named.source, Source::Tombstone);
    assert_eq!(
        named.container.map(|c| c.name.clone()).as_deref(),
        Some("batch")
    );
}

#[tokio::test]
async fn an_uncached_container_is_inspected_live_and_then_cached() {
    let runtime = FakeRuntime::new(|id| Ok(Some(meta(id, "fresh"))));
    let attributor = attributor(vec![runtime.clone()]);
    let named = attributor.resolve(&podman_path(ID), deadline()).await;
    assert_eq!(named.source, Source::Live);
    assert_eq!(
        named.container.map(|c| c.name.clone()).as_deref(),
        Some("fresh")
    );

    let again = attributor.resolve(&podman_path(ID), deadline()).await;
    assert_eq!(again.source, Source::Cache);
    assert_eq!(runtime.inspected.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_absent_runtime_gives_the_path_and_says_why() {
    let attributor = attributor(vec![FakeRuntime::new(|_| {
        Err(RuntimeError::Absent("no socket at /nowhere".to_owned()))
    })]);
    let started = Instant::now();
    let named = attributor.resolve(&podman_path(ID), deadline()).await;
    assert_eq!(named.source, Source::Path);
    assert_eq!(named.container, None);
    assert_eq!(
        named.identity.container.as_ref().map(|c| c.id.as_str()),
        Some(ID)
    );
    let warning = named.warning.expect("a warning");
    assert!(
        warning.message.contains("absent: no socket at /nowhere"),
        "{warning:?}"
    );
    assert_eq!(warning.reason, FailureReason::RuntimeAbsent);
    // No runtime is connected, so nothing is worth waiting for.
    assert!(started.elapsed() < Duration::from_millis(200));
}

#[tokio::test]
async fn garbage_from_the_runtime_gives_the_path_and_says_why() {
    let attributor = attributor(vec![FakeRuntime::new(|_| {
        Err(RuntimeError::Garbage("expected value at line 1".to_owned()))
    })]);
    let named = attributor.resolve(&podman_path(ID), deadline()).await;
    assert_eq!(named.source, Source::Path);
    let warning = named.warning.unwrap();
    assert!(warning.message.contains("unexpected answer"));
    assert_eq!(warning.reason, FailureReason::RuntimeError);
}

#[tokio::test(start_paused = true)]
async fn a_slow_runtime_does_not_hold_the_kill_past_its_budget() {
    let runtime = FakeRuntime::slow(|id| Ok(Some(meta(id, "late"))), Duration::from_secs(30));
    let attributor = attributor(vec![runtime]);
    let started = tokio::time::Instant::now();
    let named = attributor.resolve(&podman_path(ID), deadline()).await;
    assert_eq!(named.source, Source::Path);
    let warning = named.warning.unwrap();
    assert!(warning.message.contains("no answer in time"));
    assert_eq!(warning.reason, FailureReason::Timeout);
    assert!(started.elapsed() <= ATTRIBUTION_BUDGET);
}

#[tokio::test]
async fn a_container_unknown_to_the_runtime_waits_for_its_event() {
    let attributor = attributor(vec![FakeRuntime::new(|_| Ok(None))]);
    let shared = Arc::clone(attributor.shared());
    shared.connected.store(1, Ordering::SeqCst);
    // The event that names it is read 50 ms after the kill.
    let feeder = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        shared.with_cache(|cache| cache.upsert(meta(ID, "short-lived"), Instant::now()));
    });
    let named = attributor.resolve(&podman_path(ID), deadline()).await;
    feeder.await.unwrap();
    assert_eq!(named.source, Source::Cache);
    assert_eq!(
        named.container.map(|c| c.name.clone()).as_deref(),
        Some("short-lived")
    );
}

#[tokio::test]
async fn a_container_nobody_knows_is_named_by_its_path_at_the_deadline() {
    let attributor = attributor(vec![FakeRuntime::new(|_| Ok(None))]);
    attributor.shared().connected.store(1, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_millis(100);
    let named = attributor.resolve(&podman_path(ID), deadline).await;
    assert!(Instant::now() >= deadline);
    assert_eq!(named.source, Source::Path);
    let warning = named.warning.unwrap();
    assert!(warning.message.contains("unknown to fake"));
    assert_eq!(warning.reason, FailureReason::UnknownContainer);
}

#[tokio::test]
async fn paths_that_are_not_containers_need_no_runtime() {
    let runtime = FakeRuntime::new(|_| panic!("not a container"));
    let attributor = attributor(vec![runtime]);
    let unit = attributor
        .resolve("/system.slice/nginx.service", deadline())
        .await;
    assert_eq!(unit.identity.systemd_unit.as_deref(), Some("nginx.service"));
    assert_eq!((unit.source, unit.warning), (Source::Path, None));

    let odd = attributor.resolve("/oomtrace-test-1", deadline()).await;
    assert_eq!(odd.identity.kind, PathKind::Unrecognised);
    assert_eq!(
        odd.warning.map(|warning| warning.reason),
        Some(FailureReason::UnrecognisedPath)
    );
}

#[tokio::test]
async fn the_main_process_is_told_from_a_child() {
    let attributor = attributor(Vec::new());
    attributor
        .shared()
        .with_cache(|cache| cache.upsert(meta(ID, "web"), Instant::now()));
    for (path, tgid, expected) in [
        (podman_path(ID), 100, Some(true)),
        (podman_path(ID), 101, Some(false)),
        ("/oomtrace-test-1".to_owned(), 101, None),
    ] {
        let kill = kill_in(&path, tgid);
        let seen = moment(&kill, DomainSeen::Unknown);
        let named = attributor.kill(kill, seen, deadline()).await;
        assert_eq!(named.main_process, expected, "{path} {tgid}");
    }
}

#[tokio::test]
async fn a_removed_container_with_a_limit_is_the_inferred_domain() {
    // The cgroup was gone before the counters could be read: the container's own limit is used.
    let attributor = attributor(Vec::new());
    attributor
        .shared()
        .with_cache(|cache| cache.upsert(meta(ID, "web"), Instant::now()));
    let kill = kill_in(&podman_path(ID), 100);
    let seen = moment(
        &kill,
        DomainSeen::Inferred {
            victim_memcg: podman_path(ID),
            inference: Inference::Unreadable,
        },
    );
    let kill = attributor.kill(kill, seen, deadline()).await;
    assert_eq!(kill.domain.kind, DomainKind::Cgroup);
    assert_eq!(kill.domain.basis, Basis::ContainerLimit);
    assert_eq!(kill.domain.limit_bytes, Some(48 << 20));
    assert_eq!(
        kill.domain
            .attribution
            .and_then(|a| a.container)
            .map(|c| c.name.clone())
            .as_deref(),
        Some("web")
    );
}

#[tokio::test]
async fn the_kernel_domain_is_named_and_not_inferred() {
    let attributor = attributor(Vec::new());
    attributor
        .shared()
        .with_cache(|cache| cache.upsert(meta(ID, "web"), Instant::now()));
    let kill = kill_in(&podman_path(ID), 100);
    let seen = moment(
        &kill,
        DomainSeen::Kernel {
            domain: Domain::Cgroup(cgroup(8, &podman_path(ID))),
            // Not readable here.
            limit_bytes: None,
        },
    );
    let kill = attributor.kill(kill, seen, deadline()).await;
    assert_eq!(kill.domain.basis, Basis::Kernel);
    assert!(!kill.domain.inferred());
    // The cgroup cannot be read here; the container's limit stands in.
    assert_eq!(kill.domain.limit_bytes, Some(48 << 20));
    assert_eq!(kill.domain.cgroup.map(|c| c.id), Some(Some(8)));
}

#[tokio::test]
async fn a_kill_during_the_first_connection_waits_for_it() {
    let runtime = FakeRuntime::new(|id| Ok(Some(meta(id, "early"))));
    runtime.connected.store(false, Ordering::SeqCst);
    let attributor = attributor(vec![runtime.clone()]);
    let shared = Arc::clone(attributor.shared());
    shared.connecting.store(1, Ordering::SeqCst);
    // The runtime answers its first `/version` 100 ms after the kill.
    let connector = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        runtime.connected.store(true, Ordering::SeqCst);
        shared.connecting.store(0, Ordering::SeqCst);
        shared.connected.store(1, Ordering::SeqCst);
        shared.updated.notify_waiters();
    });
    let named = attributor.resolve(&podman_path(ID), deadline()).await;
    connector.await.unwrap();
    assert_eq!(named.source, Source::Live);
    assert_eq!(
        named.container.map(|c| c.name.clone()).as_deref(),
        Some("early")
    );
}

#[tokio::test]
async fn a_runtime_that_is_down_is_not_waited_for() {
    let runtime = FakeRuntime::new(|_| panic!("not connected, not asked"));
    runtime.connected.store(false, Ordering::SeqCst);
    let attributor = attributor(vec![runtime]);
    let started = Instant::now();
    let named = attributor.resolve(&podman_path(ID), deadline()).await;
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(named.source, Source::Path);
    let warning = named.warning.unwrap();
    assert!(warning.message.contains("fake is not connected"));
    assert_eq!(warning.reason, FailureReason::RuntimeAbsent);
}

const UID: &str = "11111111-2222-3333-4444-555555555555";

/// What the CRI or the kubelet's log directory said of pod `pay-prod/ledger-api`.
fn pod_entry(id: &str, role: runtime::Role) -> ContainerMetadata {
    let mut pod = ContainerMetadata::new(id, "", "containerd", []);
    pod.role = role;
    pod.k8s.pod_name = Some("ledger-api".to_owned());
    pod.k8s.namespace = Some("pay-prod".to_owned());
    pod.k8s.pod_uid = Some(UID.to_owned());
    pod
}

#[tokio::test]
async fn a_kill_in_a_pods_own_cgroup_names_the_pod() {
    let runtime = FakeRuntime::new(|_| panic!("a pod is looked up in the cache"));
    let attributor = attributor(vec![runtime]);
    attributor
        .shared()
        .with_cache(|cache| cache.upsert(pod_entry(ID, runtime::Role::PodSandbox), Instant::now()));
    let named = attributor
        .resolve(&format!("/kubepods/burstable/pod{UID}"), deadline())
        .await;
    let pod = named.container.expect("the pod");
    assert_eq!(pod.role, runtime::Role::PodSandbox);
    assert_eq!(pod.k8s.pod_name.as_deref(), Some("ledger-api"));
    assert_eq!(named.source, Source::Cache);
}

/// On a node whose runtime listed the pod's containers but not its sandbox (the whole-system
/// guest's containerd), the pod's own cgroup is named by the pod, not by one of them.
#[tokio::test]
async fn a_pods_own_cgroup_known_only_by_a_container_is_named_by_the_pod_alone() {
    let attributor = attributor(vec![FakeRuntime::new(|_| panic!("looked up in the cache"))]);
    let mut reindex = pod_entry(ID, runtime::Role::Workload);
    reindex.name = "reindex".to_owned();
    reindex.k8s.container_name = Some("reindex".to_owned());
    reindex.k8s.restart_count = Some(2);
    attributor
        .shared()
        .with_cache(|cache| cache.upsert(reindex, Instant::now()));
    let path = format!("/kubepods/burstable/pod{UID}");
    let named = attributor.resolve(&path, deadline()).await;
    let pod = named.container.as_deref().expect("the pod");
    assert_eq!(pod.role, runtime::Role::Pod);
    assert_eq!(pod.k8s.pod_name.as_deref(), Some("ledger-api"));
    assert_eq!(pod.k8s.namespace.as_deref(), Some("pay-prod"));
    assert_eq!(pod.k8s.container_name, None);
    let names = crate::record::build::names(Some(&named), None);
    assert_eq!(names.container, None, "{names:?}");
    assert_eq!(names.k8s_container(), None, "{names:?}");
    assert_eq!(
        names.pod().and_then(|pod| pod.name.as_deref()),
        Some("ledger-api")
    );
}

#[tokio::test]
async fn a_container_nobody_knows_in_a_known_pod_gets_the_pods_names() {
    let attributor = attributor(vec![FakeRuntime::new(|_| Ok(None))]);
    attributor.shared().with_cache(|cache| {
        cache.upsert(
            pod_entry(&format!("pay-prod_ledger-api_{UID}"), runtime::Role::Pod),
            Instant::now(),
        )
    });
    let deadline = Instant::now() + Duration::from_millis(50);
    let named = attributor
        .resolve(&format!("/kubepods/burstable/pod{UID}/{ID}"), deadline)
        .await;
    let container = named.container.expect("named after its pod");
    assert_eq!(container.id, ID);
    assert_eq!(container.role, runtime::Role::Workload);
    assert_eq!(container.k8s.pod_name.as_deref(), Some("ledger-api"));
    assert_eq!(container.k8s.namespace.as_deref(), Some("pay-prod"));
    assert_eq!(container.k8s.container_name, None);
    // The container itself is still unknown, and that is said.
    assert_eq!(
        named.warning.map(|warning| warning.reason),
        Some(FailureReason::UnknownContainer)
    );
}
