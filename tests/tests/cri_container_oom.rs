//! A Kubernetes container OOM-killed at its memory limit on a containerd node: the agent names
//! the pod, its namespace and uid, the container and its limit, from the CRI,
//! in the JSON record and in the log line, as a newcomer on such a node would want to read it.

use oomtrace_tests::cri::{Containerd, CriContainerSpec, PodSpec};
use oomtrace_tests::{ContainerSpec, expect_field, field_str, require_root, shown};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn a_container_killed_at_its_limit_is_named_with_its_pod() {
    require_root();
    let containerd = Containerd::start();
    let mut agent = containerd.start_agent();
    agent.wait_for_log(
        "following containerd's event stream",
        std::time::Duration::from_secs(10),
    );

    let pod = containerd.run_pod(PodSpec::new("pay-prod", "ledger-api-7f9c"));
    let container =
        pod.run(CriContainerSpec::new("worker", ContainerSpec::hog(LIMIT_BYTES)).restarted(2));
    let kill = container.kill_record(&mut agent);
    let show = |pointer: &str| shown(&kill, pointer);
    println!(
        "containerd container {} in pod {}/{}: oomtrace says pod {}/{} (uid {}, {}), container \
         {} (restart {}, limit {}, main process {}), source {}",
        container.id(),
        pod.namespace(),
        pod.name(),
        show("/victim/k8s/namespace/name"),
        show("/victim/k8s/pod/name"),
        show("/victim/k8s/pod/uid"),
        show("/victim/k8s/pod/qos_class"),
        show("/victim/k8s/container/name"),
        show("/victim/k8s/container/restart_count"),
        show("/victim/container/memory_limit_bytes"),
        show("/victim/container/main_process"),
        show("/victim/attribution/source"),
    );

    expect_field(&kill, "victim.k8s.pod.name", "ledger-api-7f9c");
    expect_field(&kill, "victim.k8s.namespace.name", "pay-prod");
    expect_field(&kill, "victim.k8s.pod.uid", pod.uid());
    expect_field(&kill, "victim.k8s.pod.qos_class", "burstable");
    expect_field(&kill, "victim.k8s.container.name", "worker");
    // The kubelet's restarts before this instance (the CRI's `attempt`).
    expect_field(&kill, "victim.k8s.container.restart_count", 2);
    expect_field(&kill, "victim.container.id", container.id());
    expect_field(&kill, "victim.container.runtime", "containerd");
    expect_field(&kill, "victim.container.memory_limit_bytes", LIMIT_BYTES);
    expect_field(&kill, "victim.container.main_process", true);
    let source = field_str(&kill, "victim.attribution.source");
    assert!(
        ["cache", "live"].contains(&source),
        "a running container is known from the runtime, not `{source}`"
    );
    expect_field(&kill, "domain.k8s.container.name", "worker");
    expect_field(&kill, "domain.memory.limit_bytes", LIMIT_BYTES);

    // As the kubelet's user knows it: the pod, then the container's name in it.
    let line = format!(
        " in pod pay-prod/ledger-api-7f9c container worker (containerd, {}, restart 2); the \
         limit of pod pay-prod/ledger-api-7f9c container worker (48.0 MiB) was hit",
        oomtrace_tests::cri::CRI_IMAGE
    );
    agent.wait_for_log(&line, std::time::Duration::from_secs(10));
    agent.stop();
}
