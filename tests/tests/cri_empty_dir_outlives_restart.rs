//! A Kubernetes pod's `emptyDir` with `medium: Memory` (a tmpfs the kubelet mounts on the host
//! and the runtime binds into the container) filled by the container, which is then OOM-killed
//! and restarted: the tmpfs pages stay charged to the pod, so the restarted container is killed
//! again at the pod's limit, small as it is. The verdict names the volume and its pod, and says
//! that a restart will not free them.

use oomtrace::record::composition::TmpfsKind;
use oomtrace_tests::cri::{Containerd, CriContainerSpec, PodSpec};
use oomtrace_tests::{
    ContainerSpec, ScratchTmpfs, assert_snapshot_holds_victim, assert_tmpfs_leads, composition_of,
    pretty, require_root, verdict_of, within_ten_percent,
};

const MIB: u64 = 1 << 20;
const LIMIT_BYTES: u64 = 128 * MIB;
const WRITTEN_MIB: u64 = 100;

#[test]
fn a_memory_backed_empty_dir_outlives_the_restarted_container() {
    require_root();
    let containerd = Containerd::start();
    let mut agent = containerd.start_agent_following_events();

    let pod = containerd.run_pod(PodSpec::new("shop", "web-0"));
    pod.set_memory_limit(LIMIT_BYTES);
    let volume = ScratchTmpfs::mount_at(pod.empty_dir("cache"), "256m");

    // The first run fills the volume, then allocates until killed.
    let first = pod.run(
        CriContainerSpec::new(
            "web",
            ContainerSpec::shell(
                LIMIT_BYTES,
                &format!(
                    "dd if=/dev/zero of=/cache/fill bs=1M count={WRITTEN_MIB} 2>/dev/null; exec {}",
                    ContainerSpec::hog_command(LIMIT_BYTES)
                ),
            ),
        )
        .volume(volume.dir(), "/cache"),
    );
    let first_kill = first.kill_record(&mut agent);
    // The kubelet's restart: the same container, attempt 1, its volume as it was.
    let second = pod.run(
        CriContainerSpec::new("web", ContainerSpec::hog(LIMIT_BYTES))
            .restarted(1)
            .volume(volume.dir(), "/cache"),
    );
    let kill = second.kill_record(&mut agent);
    let context = pretty(&kill);
    for kill in [&first_kill, &kill] {
        // The snapshot, read after the reaper, still shows the victim at its size at the kill;
        // the pod's sandbox is never listed as the pod (whose limit is full).
        assert!(
            assert_snapshot_holds_victim(kill).is_some(),
            "the kernel reported the victim's size: {}",
            pretty(kill)
        );
        let verdict = verdict_of(kill).replace("the sandbox of pod shop/web-0", "");
        assert!(
            !verdict.contains("pod shop/web-0 ("),
            "the sandbox is named like the pod: {}",
            verdict_of(kill)
        );
    }
    let composition = composition_of(&kill);
    let written = WRITTEN_MIB * MIB;
    let not_in = composition.not_in_processes;
    assert!(
        within_ten_percent(not_in.shmem_bytes, written),
        "the restarted container met the first one's {written} bytes of tmpfs files: shared \
         memory no process maps is {}, in {context}",
        not_in.shmem_bytes
    );
    let Some(mount) = composition
        .tmpfs
        .iter()
        .find(|mount| mount.kind == TmpfsKind::EmptyDir)
    else {
        panic!("no emptyDir volume named in {context}");
    };
    assert_eq!(mount.volume.as_deref(), Some("cache"), "{context}");
    assert!(mount.outlives_container, "{context}");
    assert_eq!(
        mount.names.pod().and_then(|p| p.uid.as_deref()),
        Some(pod.uid()),
        "the volume's pod, in {context}"
    );
    let used = mount
        .used_bytes
        .unwrap_or_else(|| panic!("no use of the volume in {context}"));
    assert!(
        within_ten_percent(used, written),
        "volume used {used}, in {context}"
    );

    println!(
        "first kill: {}",
        first_kill
            .explanation
            .as_ref()
            .map(|e| e.verdict.as_str())
            .unwrap_or_default()
    );
    println!("the record after the restart: {context}");
    assert_tmpfs_leads(
        &kill,
        LIMIT_BYTES,
        &[
            "emptyDir volume cache of pod shop/web-0",
            "Restarting the container will not free them",
        ],
    );

    drop(second);
    drop(first);
    drop(volume);
    drop(pod);
}
