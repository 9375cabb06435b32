//! Naming a Compose service without a runtime socket: with `--runtime-state-only`, the agent
//! reads Docker's state directory (read-only), and the kill reads as Compose names it.

use std::time::Duration;

use oomtrace::attribute::Source;
use oomtrace_tests::{ComposeProject, Dockerd, HOG_IN_IMAGE, IMAGE, or_dash, pretty, require_root};

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
    let victim = kill.victim.names.container.as_ref();
    let source = kill.victim.names.attribution.as_ref().map(|by| by.source);
    println!(
        "compose service db (--runtime-state-only): oomtrace says container {} ({}), source {}, \
         restart {}; verdict: {}",
        or_dash(victim.and_then(|victim| victim.name.as_ref())),
        or_dash(victim.and_then(|victim| victim.compose.as_ref())),
        or_dash(source),
        or_dash(victim.and_then(|victim| victim.restart_policy.as_ref())),
        or_dash(
            kill.explanation
                .as_ref()
                .map(|explanation| &explanation.verdict)
        ),
    );
    let context = pretty(&kill);
    let Some(victim) = victim else {
        panic!("no victim container in {context}");
    };
    assert_eq!(victim.name.as_deref(), Some(db.name()), "in {context}");
    assert_eq!(source, Some(Source::State), "in {context}");
    let compose = victim.compose.as_ref();
    assert_eq!(
        compose.and_then(|compose| compose.project.as_deref()),
        Some("shop"),
        "in {context}"
    );
    assert_eq!(
        compose.and_then(|compose| compose.service.as_deref()),
        Some("db"),
        "in {context}"
    );
    assert_eq!(
        victim.restart_policy.as_deref(),
        Some("on-failure"),
        "in {context}"
    );
    let log = agent.log();
    assert!(
        !log.contains("docker.sock"),
        "--runtime-state-only asks no socket:\n{log}"
    );

    agent.stop();
}
