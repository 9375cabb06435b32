//! A container with `--restart=always` that outgrows its limit at every start: podman restarts
//! it each time, so it only ever looks "running". The agent flags the loop by the third kill.

use std::time::Duration;

use serde_json::Value;

use oomtrace_tests::{ContainerSpec, Podman, field, field_str, field_u64, require_root};

const LIMIT_BYTES: u64 = 48 << 20;
/// The agent's default threshold.
const LOOP_KILLS: usize = 3;

#[test]
fn a_container_oom_killed_at_every_restart_is_a_restart_loop() {
    require_root();
    let podman = Podman::start();
    let mut agent = podman.start_agent();

    let container = podman.run(ContainerSpec::hog(LIMIT_BYTES).restart("always"));
    let kills = agent.wait_for_kills_where(
        |record| field_str(record, "victim.attribution.path").contains(container.id()),
        LOOP_KILLS,
        Duration::from_secs(60),
    );
    let describe = |kill: &Value| {
        format!(
            "container {}, restart_loop {}",
            kill.pointer("/victim/container/name")
                .map_or("-".to_owned(), Value::to_string),
            kill.pointer("/explanation/restart_loop")
                .map_or("-".to_owned(), Value::to_string),
        )
    };
    for (i, kill) in kills.iter().enumerate() {
        println!("kill {}: {}", i + 1, describe(kill));
    }
    if let Some(third) = kills.get(2) {
        println!("verdict: {}", field_str(third, "explanation.verdict"));
    }
    assert_eq!(
        kills.len(),
        LOOP_KILLS,
        "expected {LOOP_KILLS} kills of container {} as podman restarts it",
        container.name()
    );
    for kill in &kills {
        assert_eq!(field_str(kill, "victim.container.name"), container.name());
    }
    for kill in &kills[..LOOP_KILLS - 1] {
        assert_eq!(
            kill.pointer("/explanation/restart_loop"),
            None,
            "not a loop yet: {}",
            describe(kill)
        );
    }
    let third = &kills[LOOP_KILLS - 1];
    assert_eq!(
        field_u64(third, "explanation.restart_loop.count"),
        LOOP_KILLS as u64
    );
    assert_eq!(
        field(third, "explanation.restart_loop.window_seconds"),
        6 * 3600
    );
    let verdict = field_str(third, "explanation.verdict");
    assert!(
        verdict.contains("This is the 3rd OOM kill of container"),
        "the verdict should call the loop out: {verdict}"
    );

    agent.stop();
}
