//! No CRI socket the agent can reach, only the kubelet's log directories (mounted read-only, as
//! the DaemonSet can): the pod's directory and the container's link, which containerd and the
//! kubelet made for real, still name the pod, its namespace and the container.

use oomtrace_tests::cri::{Containerd, CriContainerSpec, PodSpec};
use oomtrace_tests::{Agent, ContainerSpec, or_dash, pretty, require_root};

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
    let names = &kill.victim.names;
    let runtime = names
        .container
        .as_ref()
        .and_then(|container| container.runtime.as_deref());
    println!(
        "no CRI socket: oomtrace names pod {}/{} container {} from `{}` ({})",
        or_dash(names.namespace()),
        or_dash(names.pod().and_then(|pod| pod.name.as_ref())),
        or_dash(names.k8s_container().map(|k8s| &k8s.name)),
        or_dash(runtime),
        or_dash(names.attribution.as_ref().map(|by| by.source)),
    );
    let context = pretty(&kill);
    let Some(pod_of_kill) = names.pod() else {
        panic!("no victim pod in {context}");
    };
    assert_eq!(
        pod_of_kill.name.as_deref(),
        Some("ledger-api-7f9c"),
        "in {context}"
    );
    assert_eq!(names.namespace(), Some("pay-prod"), "in {context}");
    assert_eq!(pod_of_kill.uid.as_deref(), Some(pod.uid()), "in {context}");
    let Some(k8s_container) = names.k8s_container() else {
        panic!("no victim k8s container in {context}");
    };
    assert_eq!(k8s_container.name, "worker", "in {context}");
    assert_eq!(runtime, Some("kubelet"), "in {context}");
    // From the `3.log` the container's link points to.
    assert_eq!(k8s_container.restart_count, Some(3), "in {context}");
    agent.wait_for_log(
        " in pod pay-prod/ledger-api-7f9c container worker (kubelet, restart 3)",
        std::time::Duration::from_secs(10),
    );
    agent.stop();
}
