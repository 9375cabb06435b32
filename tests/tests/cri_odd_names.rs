//! Pods whose names are legal but unusual: dots, and a name of 253 bytes, the longest a pod
//! name may be. The agent names them whole, in JSON and in the log line.

use oomtrace_tests::cri::{Containerd, CriContainerSpec, PodSpec};
use oomtrace_tests::{ContainerSpec, pretty, require_root};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn long_dotted_pod_names_are_named_whole() {
    require_root();
    let containerd = Containerd::start();
    let mut agent = containerd.start_agent();

    // 253 bytes, a DNS subdomain: labels of at most 63, joined by dots.
    let name = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    assert_eq!(name.len(), 253);
    // The kubelet's log directory would be longer than a file name may be: none here.
    let pod = containerd.run_pod(PodSpec::new("odd-ns-1", &name).without_log_directory());
    let container = pod.run(CriContainerSpec::new(
        "c-0",
        ContainerSpec::hog(LIMIT_BYTES),
    ));
    let kill = container.kill_record(&mut agent);
    let names = &kill.victim.names;
    let context = pretty(&kill);
    assert_eq!(
        names.pod().and_then(|pod| pod.name.as_deref()),
        Some(name.as_str()),
        "in {context}"
    );
    assert_eq!(names.namespace(), Some("odd-ns-1"), "in {context}");
    assert_eq!(
        names.k8s_container().map(|k8s| k8s.name.as_str()),
        Some("c-0"),
        "in {context}"
    );
    agent.wait_for_log(
        &format!(
            " in pod odd-ns-1/{name} container c-0 (containerd, {})",
            oomtrace_tests::cri::CRI_IMAGE
        ),
        std::time::Duration::from_secs(10),
    );
    agent.stop();
}
