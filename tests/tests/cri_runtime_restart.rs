//! containerd restarted while the agent runs (an upgrade, a crash): the agent reconnects, lists
//! again and follows the new event stream, so a pod started after the restart is named when
//! its container is OOM-killed.

use std::time::Duration;

use oomtrace_tests::cri::{Containerd, CriContainerSpec, PodSpec};
use oomtrace_tests::{ContainerSpec, pretty, require_root};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn a_kill_after_containerd_restarted_is_named() {
    require_root();
    let mut containerd = Containerd::start();
    let mut agent = containerd.start_agent();

    containerd.restart();
    // Reconnected: a second listing.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while agent.log().matches("following its events").count() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent did not follow containerd again after its restart; its log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let pod = containerd.run_pod(PodSpec::new("pay-prod", "ledger-api-7f9c"));
    let container = pod.run(CriContainerSpec::new(
        "worker",
        ContainerSpec::hog(LIMIT_BYTES),
    ));
    let kill = container.kill_record(&mut agent);
    let names = &kill.victim.names;
    let context = pretty(&kill);
    assert_eq!(
        names.pod().and_then(|pod| pod.name.as_deref()),
        Some("ledger-api-7f9c"),
        "in {context}"
    );
    assert_eq!(names.namespace(), Some("pay-prod"), "in {context}");
    assert_eq!(
        names.k8s_container().map(|k8s| k8s.name.as_str()),
        Some("worker"),
        "in {context}"
    );
    assert_eq!(
        names
            .container
            .as_ref()
            .and_then(|container| container.runtime.as_deref()),
        Some("containerd"),
        "in {context}"
    );
    agent.stop();
}
