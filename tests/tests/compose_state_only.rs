//! Naming a Compose service without a runtime socket: with `--runtime-state-only`, the agent
//! reads Docker's state directory (read-only), and the kill reads as Compose names it.

use std::time::Duration;

use oomtrace_tests::{
    ComposeProject, Dockerd, HOG_IN_IMAGE, IMAGE, expect_field, require_root, shown,
};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn a_compose_service_is_named_from_the_state_alone() {
    require_root();
    let docker = Dockerd::start();
    let data_root = docker.data_root();
    let mut agent = oomtrace_tests::Agent::start_with(&[
        "--runtime-state-only",
        "--runtime-state",
        data_root.to_str().expect("UTF-8"),
    ]);
    agent.wait_for_log("following its events", Duration::from_secs(30));

    let compose_file = format!(
        r#"version: "2.4"
services:
  db:
    image: {IMAGE}
    command: ["{HOG_IN_IMAGE}", "--no-wait", "--max-mib", "200"]
    mem_limit: {LIMIT_BYTES}
    restart: on-failure:1
    network_mode: none
"#
    );
    let project = ComposeProject::up(&docker, "shop", &compose_file);
    let db = project.container("db");
    let kill = db.kill_record(&mut agent);
    println!(
        "compose service db (--runtime-state-only): oomtrace says container {} ({}), source {}, \
         restart {}; verdict: {}",
        shown(&kill, "/victim/container/name"),
        shown(&kill, "/victim/container/compose"),
        shown(&kill, "/victim/attribution/source"),
        shown(&kill, "/victim/container/restart_policy"),
        shown(&kill, "/explanation/verdict"),
    );
    expect_field(&kill, "victim.container.name", db.name());
    expect_field(&kill, "victim.attribution.source", "state");
    expect_field(&kill, "victim.container.compose.project", "shop");
    expect_field(&kill, "victim.container.compose.service", "db");
    expect_field(&kill, "victim.container.restart_policy", "on-failure");
    let log = agent.log();
    assert!(
        !log.contains("docker.sock"),
        "--runtime-state-only asks no socket:\n{log}"
    );

    agent.stop();
}
