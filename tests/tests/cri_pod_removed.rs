//! A pod deleted right after its container's OOM kill: the sandbox, the container and their
//! cgroups are gone before the agent reads the kill. The record must still name the pod and
//! the container, from what the agent learned earlier (`cache`) or the runtime's removal
//! events (`tombstone`), not from the bare cgroup path.

use std::time::Duration;

use oomtrace::attribute::Source;
use oomtrace_tests::cri::{Containerd, CriContainerSpec, PodSpec};
use oomtrace_tests::{ContainerSpec, pretty, require_root};

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
    let names = &kill.victim.names;
    let context = pretty(&kill);
    let Some(source) = names.attribution.as_ref().map(|by| by.source) else {
        panic!("no victim attribution in {context}");
    };
    println!(
        "pod shop/cart-5d8f7 removed before the agent read the kill: oomtrace names it from \
         `{}`",
        source.as_str()
    );
    assert!(
        matches!(source, Source::Cache | Source::Tombstone),
        "the pod was gone when the agent read the kill: its names must come from the cache or a \
         tombstone, not `{}`, in {context}",
        source.as_str()
    );
    assert_eq!(
        names.pod().and_then(|pod| pod.name.as_deref()),
        Some("cart-5d8f7"),
        "in {context}"
    );
    assert_eq!(names.namespace(), Some("shop"), "in {context}");
    assert_eq!(
        names.k8s_container().map(|k8s| k8s.name.as_str()),
        Some("cart"),
        "in {context}"
    );
    agent.stop();
}
