//! A child process OOM-killed in a Kubernetes container whose PID 1 survives: the CRI keeps
//! the container running, and the agent names it and says the victim was not its main process.

use std::time::Duration;

use oomtrace_tests::cri::{Containerd, CriContainerSpec, PodSpec};
use oomtrace_tests::{ContainerSpec, or_dash, pretty, require_root};

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
    let names = &kill.victim.names;
    let main_process = names
        .container
        .as_ref()
        .and_then(|container| container.main_process);
    println!(
        "child of container {} killed: oomtrace says victim {} ({}) in pod {}/{} container {}, \
         main process {}",
        container.id(),
        or_dash(kill.victim.process.pid),
        or_dash(kill.victim.process.comm()),
        or_dash(names.namespace()),
        or_dash(names.pod().and_then(|pod| pod.name.as_ref())),
        or_dash(names.k8s_container().map(|k8s| &k8s.name)),
        or_dash(main_process),
    );
    let context = pretty(&kill);
    assert_eq!(
        kill.victim.process.comm(),
        Some("oomtrace-hog"),
        "in {context}"
    );
    assert_eq!(
        names.pod().and_then(|pod| pod.name.as_deref()),
        Some("report-28374-x9z"),
        "in {context}"
    );
    assert_eq!(names.namespace(), Some("batch"), "in {context}");
    assert_eq!(
        names.k8s_container().map(|k8s| k8s.name.as_str()),
        Some("runner"),
        "in {context}"
    );
    assert_eq!(
        main_process,
        Some(false),
        "the hog is PID 1's child: its death does not end the container, in {context}"
    );
    agent.wait_for_log(
        "not its main process (the runtime will not report OOMKilled)",
        Duration::from_secs(10),
    );
    agent.stop();
}
