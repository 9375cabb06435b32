//! containerd restarted while the agent runs (an upgrade, a crash): the agent reconnects, lists
//! again and follows the new event stream, so a pod started after the restart is named when
//! its container is OOM-killed.

use std::time::Duration;

use oomtrace_tests::cri::{Containerd, CriContainerSpec, PodSpec};
use oomtrace_tests::{ContainerSpec, expect_field, require_root};

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
    expect_field(&kill, "victim.k8s.pod.name", "ledger-api-7f9c");
    expect_field(&kill, "victim.k8s.namespace.name", "pay-prod");
    expect_field(&kill, "victim.k8s.container.name", "worker");
    expect_field(&kill, "victim.container.runtime", "containerd");
    agent.stop();
}
