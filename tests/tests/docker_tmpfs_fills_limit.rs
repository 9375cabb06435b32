//! A Docker container (`--memory 128m --tmpfs /scratch:size=256m`) whose limit is filled by
//! 100 MiB of files in its `--tmpfs` mount, written by a `dd` that has exited; then a small
//! process in it is killed. The mount exists only in the container's mount namespace: the
//! record names it with its size and says its use cannot be read from outside, and the verdict
//! leads with the tmpfs files and names the mount.

use oomtrace_tests::{
    ContainerSpec, Dockerd, assert_container_tmpfs, assert_snapshot_holds_victim,
    assert_tmpfs_leads, composition_of, pretty, require_root,
};

const MIB: u64 = 1 << 20;
const LIMIT_BYTES: u64 = 128 * MIB;
const WRITTEN_MIB: u64 = 100;

#[test]
fn a_containers_tmpfs_mount_filling_its_limit_is_named_in_the_verdict() {
    require_root();
    let docker = Dockerd::start();
    let mut agent = docker.start_agent();
    // The shell stays PID 1, so the container (and its tmpfs) outlives the killed hog.
    let container = docker.run(
        ContainerSpec::shell(
            LIMIT_BYTES,
            &format!(
                "dd if=/dev/zero of=/scratch/fill bs=1M count={WRITTEN_MIB} 2>/dev/null; {}; \
                 sleep 3600",
                ContainerSpec::hog_command(LIMIT_BYTES)
            ),
        )
        .run_flag("--tmpfs=/scratch:size=256m"),
    );
    let kill = container.kill_record(&mut agent);
    assert!(
        assert_snapshot_holds_victim(&kill).is_some(),
        "the kernel reported the victim's size: {}",
        pretty(&kill)
    );
    let context = pretty(&kill);
    let scratch = assert_container_tmpfs(
        &kill,
        WRITTEN_MIB * MIB,
        "/scratch",
        256 * MIB,
        container.name(),
    );
    assert_eq!(scratch.host_path, None, "{context}");
    assert_eq!(scratch.used_bytes, None, "{context}");
    let unknown = composition_of(&kill)
        .tmpfs_unknown
        .as_deref()
        .unwrap_or_default();
    assert!(
        unknown.contains("/scratch"),
        "tmpfs_unknown {unknown:?}, in {context}"
    );

    assert_tmpfs_leads(
        &kill,
        LIMIT_BYTES,
        &[
            "/scratch",
            &format!("of container {}", container.name()),
            "whose use cannot be read from outside the container",
        ],
    );

    drop(container);
    let stopped = agent.stop();
    assert_eq!(
        stopped.kills().count(),
        1,
        "one kill: {}",
        pretty(&stopped.records)
    );
}
