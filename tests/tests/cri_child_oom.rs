//! A child process OOM-killed in a Kubernetes container whose PID 1 survives: the CRI keeps
//! the container running, and the agent names it and says the victim was not its main process.

use std::time::Duration;

use oomtrace_tests::cri::{Containerd, CriContainerSpec, PodSpec};
use oomtrace_tests::{ContainerSpec, expect_field, field, require_root, shown};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn a_child_killed_in_a_surviving_container_is_named() {
    require_root();
    let containerd = Containerd::start();
    let mut agent = containerd.start_agent();

    let pod = containerd.run_pod(PodSpec::new("batch", "report-28374-x9z"));
    let script = format!(
        "{}; echo \"hog exited $?\"; sleep 600",
        ContainerSpec::hog_command(LIMIT_BYTES)
    );
    let container = pod.run(CriContainerSpec::new(
        "runner",
        ContainerSpec::shell(LIMIT_BYTES, &script),
    ));
    let kill = container.kill_record(&mut agent);
    println!(
        "child of container {} killed: oomtrace says victim {} ({}) in pod {}/{} container {}, \
         main process {}",
        container.id(),
        shown(&kill, "/victim/process/pid"),
        shown(&kill, "/victim/process/executable/name"),
        shown(&kill, "/victim/k8s/namespace/name"),
        shown(&kill, "/victim/k8s/pod/name"),
        shown(&kill, "/victim/k8s/container/name"),
        shown(&kill, "/victim/container/main_process"),
    );
    expect_field(&kill, "victim.process.executable.name", "oomtrace-hog");
    expect_field(&kill, "victim.k8s.pod.name", "report-28374-x9z");
    expect_field(&kill, "victim.k8s.namespace.name", "batch");
    expect_field(&kill, "victim.k8s.container.name", "runner");
    assert_eq!(
        field(&kill, "victim.container.main_process"),
        false,
        "the hog is PID 1's child: its death does not end the container"
    );
    agent.wait_for_log(
        "not its main process (the runtime will not report OOMKilled)",
        Duration::from_secs(10),
    );
    agent.stop();
}
