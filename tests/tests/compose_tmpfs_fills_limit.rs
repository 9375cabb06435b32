//! A Compose service (`mem_limit: 128m`, `tmpfs: /scratch:size=256m`) whose limit is filled by
//! 100 MiB of files in its `tmpfs:` mount, written by a `dd` that has exited; then a small
//! process in it is killed. The verdict leads with the tmpfs files and names the mount as the
//! service's, as the user wrote it in `docker-compose.yml`.

use oomtrace::record::party::Compose;
use oomtrace_tests::{
    ComposeProject, ContainerSpec, Dockerd, IMAGE, assert_container_tmpfs, assert_tmpfs_leads,
    pretty, require_root,
};

const MIB: u64 = 1 << 20;
const LIMIT_BYTES: u64 = 128 * MIB;
const WRITTEN_MIB: u64 = 100;
const PROJECT: &str = "reports";
const SERVICE: &str = "render";

#[test]
fn a_compose_services_tmpfs_filling_its_limit_is_named_in_the_verdict() {
    require_root();
    let docker = Dockerd::start();
    let mut agent = docker.start_agent();
    // The shell stays PID 1, so the container (and its tmpfs) outlives the killed hog.
    let script = format!(
        "dd if=/dev/zero of=/scratch/fill bs=1M count={WRITTEN_MIB} 2>/dev/null; {}; sleep 3600",
        ContainerSpec::hog_command(LIMIT_BYTES)
    );
    let compose_file = format!(
        r#"version: "2.4"
services:
  {SERVICE}:
    image: {IMAGE}
    command: ["/bin/sh", "-c", {script:?}]
    mem_limit: {LIMIT_BYTES}
    memswap_limit: {LIMIT_BYTES}
    tmpfs:
      - /scratch:size=256m
    network_mode: none
"#
    );
    let project = ComposeProject::up(&docker, PROJECT, &compose_file);
    let render = project.container(SERVICE);
    let kill = render.kill_record(&mut agent);
    let context = pretty(&kill);

    let scratch = assert_container_tmpfs(
        &kill,
        WRITTEN_MIB * MIB,
        "/scratch",
        256 * MIB,
        render.name(),
    );
    // Compose's `tmpfs:` is the engine's `--tmpfs`: the same mount, named by its service.
    let Some(Compose {
        project: named_project,
        service: named_service,
        ..
    }) = scratch
        .names
        .container
        .as_ref()
        .and_then(|container| container.compose.as_ref())
    else {
        panic!("the mount's owner has no Compose names in {context}");
    };
    assert_eq!(named_project.as_deref(), Some(PROJECT), "{context}");
    assert_eq!(named_service.as_deref(), Some(SERVICE), "{context}");

    assert_tmpfs_leads(&kill, LIMIT_BYTES, &["/scratch", SERVICE]);

    drop(render);
    drop(project);
    let stopped = agent.stop();
    assert_eq!(
        stopped.kills().count(),
        1,
        "one kill: {}",
        pretty(&stopped.records)
    );
}
