//! No CRI socket the agent can reach, only the kubelet's log directories (mounted read-only, as
//! the DaemonSet can): the pod's directory and the container's link, which containerd and the
//! kubelet made for real, still name the pod, its namespace and the container.

use oomtrace_tests::cri::{Containerd, CriContainerSpec, PodSpec};
use oomtrace_tests::{Agent, ContainerSpec, expect_field, require_root, shown};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn the_kubelets_log_directories_alone_name_the_kill() {
    require_root();
    let containerd = Containerd::start();
    let log_root = containerd.log_root().display().to_string();
    let no_socket = format!("{log_root}/no-cri.sock");
    let mut agent = Agent::start_with(&[
        "--cri-socket",
        &no_socket,
        "--runtime-socket",
        &format!("{log_root}/no-docker.sock"),
        "--kubelet-log-dir",
        &log_root,
    ]);
    agent.wait_for_log("following its events", std::time::Duration::from_secs(30));

    let pod = containerd.run_pod(PodSpec::new("pay-prod", "ledger-api-7f9c"));
    let container =
        pod.run(CriContainerSpec::new("worker", ContainerSpec::hog(LIMIT_BYTES)).restarted(3));
    let kill = container.kill_record(&mut agent);
    println!(
        "no CRI socket: oomtrace names pod {}/{} container {} from `{}` ({})",
        shown(&kill, "/victim/k8s/namespace/name"),
        shown(&kill, "/victim/k8s/pod/name"),
        shown(&kill, "/victim/k8s/container/name"),
        shown(&kill, "/victim/container/runtime"),
        shown(&kill, "/victim/attribution/source"),
    );
    expect_field(&kill, "victim.k8s.pod.name", "ledger-api-7f9c");
    expect_field(&kill, "victim.k8s.namespace.name", "pay-prod");
    expect_field(&kill, "victim.k8s.pod.uid", pod.uid());
    expect_field(&kill, "victim.k8s.container.name", "worker");
    expect_field(&kill, "victim.container.runtime", "kubelet");
    // From the `3.log` the container's link points to.
    expect_field(&kill, "victim.k8s.container.restart_count", 3);
    agent.wait_for_log(
        " in pod pay-prod/ledger-api-7f9c container worker (kubelet, restart 3)",
        std::time::Duration::from_secs(10),
    );
    agent.stop();
}
