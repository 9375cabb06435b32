//! A Kubernetes container OOM-killed at its memory limit on a containerd node: the agent names
//! the pod, its namespace and uid, the container and its limit, from the CRI,
//! in the JSON record and in the log line, as a newcomer on such a node would want to read it.

use oomtrace::attribute::Source;
use oomtrace::cgroup_path::QosClass;
use oomtrace_tests::cri::{Containerd, CriContainerSpec, PodSpec};
use oomtrace_tests::{ContainerSpec, or_dash, pretty, require_root};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn a_container_killed_at_its_limit_is_named_with_its_pod() {
    require_root();
    let containerd = Containerd::start();
    let mut agent = containerd.start_agent_following_events();

    let pod = containerd.run_pod(PodSpec::new("pay-prod", "ledger-api-7f9c"));
    let container =
        pod.run(CriContainerSpec::new("worker", ContainerSpec::hog(LIMIT_BYTES)).restarted(2));
    let kill = container.kill_record(&mut agent);
    let names = &kill.victim.names;
    let pod_of_kill = names.pod();
    let k8s_container = names.k8s_container();
    let victim = names.container.as_ref();
    let source = names.attribution.as_ref().map(|by| by.source);
    println!(
        "containerd container {} in pod {}/{}: oomtrace says pod {}/{} (uid {}, {}), container \
         {} (restart {}, limit {}, main process {}), source {}",
        container.id(),
        pod.namespace(),
        pod.name(),
        or_dash(names.namespace()),
        or_dash(pod_of_kill.and_then(|pod| pod.name.as_ref())),
        or_dash(pod_of_kill.and_then(|pod| pod.uid.as_ref())),
        or_dash(pod_of_kill.and_then(|pod| pod.qos_class)),
        or_dash(k8s_container.map(|k8s| &k8s.name)),
        or_dash(k8s_container.and_then(|k8s| k8s.restart_count)),
        or_dash(victim.and_then(|victim| victim.memory_limit_bytes)),
        or_dash(victim.and_then(|victim| victim.main_process)),
        or_dash(source),
    );
    let context = pretty(&kill);

    let Some(pod_of_kill) = pod_of_kill else {
        panic!("no victim pod in {context}");
    };
    assert_eq!(
        pod_of_kill.name.as_deref(),
        Some("ledger-api-7f9c"),
        "in {context}"
    );
    assert_eq!(names.namespace(), Some("pay-prod"), "in {context}");
    assert_eq!(pod_of_kill.uid.as_deref(), Some(pod.uid()), "in {context}");
    assert_eq!(
        pod_of_kill.qos_class,
        Some(QosClass::Burstable),
        "in {context}"
    );
    let Some(k8s_container) = k8s_container else {
        panic!("no victim k8s container in {context}");
    };
    assert_eq!(k8s_container.name, "worker", "in {context}");
    // The kubelet's restarts before this instance (the CRI's `attempt`).
    assert_eq!(k8s_container.restart_count, Some(2), "in {context}");
    let Some(victim) = victim else {
        panic!("no victim container in {context}");
    };
    assert_eq!(victim.id, container.id(), "in {context}");
    assert_eq!(
        victim.runtime.as_deref(),
        Some("containerd"),
        "in {context}"
    );
    assert_eq!(victim.memory_limit_bytes, Some(LIMIT_BYTES), "in {context}");
    assert_eq!(victim.main_process, Some(true), "in {context}");
    assert!(
        matches!(source, Some(Source::Cache | Source::Live)),
        "a running container is known from the runtime, not `{source:?}`, in {context}"
    );
    let Some(domain) = &kill.domain else {
        panic!("no domain in {context}");
    };
    assert_eq!(
        domain.names.k8s_container().map(|k8s| k8s.name.as_str()),
        Some("worker"),
        "in {context}"
    );
    assert_eq!(
        domain.memory.and_then(|memory| memory.limit_bytes),
        Some(LIMIT_BYTES),
        "in {context}"
    );

    // As the kubelet's user knows it: the pod, then the container's name in it.
    let line = format!(
        " in pod pay-prod/ledger-api-7f9c container worker (containerd, {}, restart 2); the \
         limit of pod pay-prod/ledger-api-7f9c container worker (48.0 MiB) was hit",
        oomtrace_tests::cri::CRI_IMAGE
    );
    agent.wait_for_log(&line, std::time::Duration::from_secs(10));
    agent.stop();
}
