//! A Docker container (`--memory 128m --shm-size 256m`) whose limit is filled by 100 MiB of
//! files in its `/dev/shm`, written by a `dd` that has exited; then a small process in it is
//! killed. The record names the container's `/dev/shm` and the verdict leads with it. With
//! Docker's default IPC mode (`private`, Docker 20.10) the `/dev/shm` is mounted in the
//! container's mount namespace only: its size is known from the container's mount table, its
//! use is not (reading it needs the container's capabilities), and the verdict says so. With
//! `--ipc shareable` Docker mounts it on the host (`containers/<id>/mounts/shm`), where its use
//! is read.

use oomtrace::record::composition::TmpfsKind;
use oomtrace_tests::{
    ContainerSpec, Dockerd, assert_tmpfs_leads, composition_of, mib, pretty, require_root,
    within_ten_percent,
};

const MIB: u64 = 1 << 20;
const LIMIT_BYTES: u64 = 128 * MIB;
const WRITTEN_MIB: u64 = 100;

#[test]
fn a_containers_dev_shm_filling_its_limit_is_named_in_the_verdict() {
    require_root();
    let docker = Dockerd::start();
    let mut agent = docker.start_agent();
    // The shell stays PID 1, so the container (and its /dev/shm) outlives the killed hog.
    let container = docker.run(
        ContainerSpec::shell(
            LIMIT_BYTES,
            &format!(
                "dd if=/dev/zero of=/dev/shm/fill bs=1M count={WRITTEN_MIB} 2>/dev/null; {}; \
                 sleep 3600",
                ContainerSpec::hog_command(LIMIT_BYTES)
            ),
        )
        .run_flag("--shm-size=256m"),
    );
    let kill = container.kill_record(&mut agent);
    let context = pretty(&kill);
    let composition = composition_of(&kill);
    let written = WRITTEN_MIB * MIB;
    let not_in = composition.not_in_processes;
    assert!(
        within_ten_percent(not_in.shmem_bytes, written),
        "shared memory no process maps {} is not within 10 % of the {written} bytes written, \
         in {context}",
        not_in.shmem_bytes
    );

    let ipc_mode = {
        let output = docker
            .command()
            .args([
                "inspect",
                "--format",
                "{{.HostConfig.IpcMode}}",
                container.id(),
            ])
            .output()
            .expect("docker inspect");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    };
    println!("Docker's IPC mode: {ipc_mode}");
    let Some(shm) = composition
        .tmpfs
        .iter()
        .find(|mount| mount.mount_point == "/dev/shm")
    else {
        panic!("the container's /dev/shm is not named in {context}");
    };
    assert_eq!(shm.kind, TmpfsKind::Shm, "{context}");
    assert_eq!(
        shm.names.container_name(),
        Some(container.name()),
        "the /dev/shm's owner, in {context}"
    );
    assert!(!shm.outlives_container, "{context}");
    assert_eq!(shm.size_bytes, Some(256 * MIB), "{context}");
    let place = match ipc_mode.as_str() {
        "private" => {
            assert_eq!(
                shm.host_path, None,
                "mounted in the container only: {context}"
            );
            assert_eq!(shm.used_bytes, None, "its use is not readable: {context}");
            let unknown = composition.tmpfs_unknown.as_deref().unwrap_or_default();
            assert!(
                unknown.contains("/dev/shm"),
                "why the use of /dev/shm is unknown: {unknown:?} in {context}"
            );
            format!(
                "/dev/shm of container {}, its only tmpfs mount, whose use cannot be read from \
                 outside the container",
                container.name()
            )
        }
        "shareable" => {
            assert!(
                shm.host_path.as_deref().is_some_and(|path| {
                    path.contains(container.id()) && path.ends_with("/mounts/shm")
                }),
                "Docker's host path of the container's /dev/shm, in {context}"
            );
            let used = shm
                .used_bytes
                .unwrap_or_else(|| panic!("no use of /dev/shm in {context}"));
            assert!(
                within_ten_percent(used, written),
                "/dev/shm used {used}, in {context}"
            );
            format!(
                "/dev/shm of container {}, {} used",
                container.name(),
                mib(used)
            )
        }
        other => panic!("Docker's IPC mode {other:?}: this test knows private and shareable"),
    };

    let verdict = assert_tmpfs_leads(&kill, LIMIT_BYTES, &[&place]);
    assert!(
        !verdict.contains("Restarting the container will not free them"),
        "a container's own /dev/shm goes with it: {verdict}"
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
