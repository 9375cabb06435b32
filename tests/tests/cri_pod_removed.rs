//! A pod deleted right after its container's OOM kill: the sandbox, the container and their
//! cgroups are gone before the agent reads the kill. The record must still name the pod and
//! the container, from what the agent learned earlier (`cache`) or the runtime's removal
//! events (`tombstone`), not from the bare cgroup path.

use std::time::Duration;

use oomtrace_tests::cri::{Containerd, CriContainerSpec, PodSpec};
use oomtrace_tests::{ContainerSpec, expect_field, field_str, require_root};

const LIMIT_BYTES: u64 = 48 << 20;
/// The agent learns of containers from the runtime asynchronously.
const SETTLE: Duration = Duration::from_millis(500);

#[test]
fn a_pod_removed_after_the_kill_is_still_named() {
    require_root();
    let containerd = Containerd::start();
    let mut agent = containerd.start_agent();

    let pod = containerd.run_pod(PodSpec::new("shop", "cart-5d8f7"));
    let container = pod.run(CriContainerSpec::new(
        "cart",
        ContainerSpec::held_hog(LIMIT_BYTES),
    ));
    std::thread::sleep(SETTLE);

    // Frozen, the agent reads the kill only after the pod is gone.
    agent.suspend();
    container.release();
    let memcg = pod.memcg_dir();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while memcg.join(container.id()).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the container's cgroup {} is still there: was it OOM-killed?",
            memcg.join(container.id()).display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    pod.remove();
    assert!(
        !memcg.exists(),
        "the removed pod's cgroup {} is gone",
        memcg.display()
    );
    agent.resume();

    let kill = container.kill_record(&mut agent);
    let source = field_str(&kill, "victim.attribution.source");
    println!(
        "pod shop/cart-5d8f7 removed before the agent read the kill: oomtrace names it from \
         `{source}`"
    );
    assert!(
        ["cache", "tombstone"].contains(&source),
        "the pod was gone when the agent read the kill: its names must come from the cache or a \
         tombstone, not `{source}`"
    );
    expect_field(&kill, "victim.k8s.pod.name", "cart-5d8f7");
    expect_field(&kill, "victim.k8s.namespace.name", "shop");
    expect_field(&kill, "victim.k8s.container.name", "cart");
    agent.stop();
}
