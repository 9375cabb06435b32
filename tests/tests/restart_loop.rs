//! A container with `--restart=always` that outgrows its limit at every start: podman restarts
//! it each time, so it only ever looks "running". The agent flags the loop by the third kill.

use std::time::Duration;

use oomtrace::record::OomKillRecord;
use oomtrace_tests::{ContainerSpec, Podman, or_dash, pretty, require_root};

const LIMIT_BYTES: u64 = 48 << 20;
/// The agent's default threshold.
const LOOP_KILLS: usize = 3;

#[test]
fn a_container_oom_killed_at_every_restart_is_a_restart_loop() {
    require_root();
    let podman = Podman::start();
    let mut agent = podman.start_agent();

    let container = podman.run(ContainerSpec::hog(LIMIT_BYTES).restart("always"));
    // Matched by the cgroup path its names were resolved from, which holds the container's id.
    let kills = agent.wait_for_kills_where(
        |kill| {
            kill.victim
                .names
                .attribution
                .as_ref()
                .is_some_and(|by| by.path.contains(container.id()))
        },
        LOOP_KILLS,
        Duration::from_secs(60),
    );
    let restart_loop = |kill: &OomKillRecord| {
        kill.explanation
            .as_ref()
            .and_then(|explanation| explanation.restart_loop)
    };
    let describe = |kill: &OomKillRecord| {
        format!(
            "container {}, restart_loop {}",
            or_dash(kill.victim.names.container_name()),
            or_dash(restart_loop(kill)),
        )
    };
    let verdict = |kill: &OomKillRecord| {
        kill.explanation
            .as_ref()
            .map(|explanation| explanation.verdict.clone())
            .unwrap_or_else(|| panic!("no explanation in {}", pretty(kill)))
    };
    for (i, kill) in kills.iter().enumerate() {
        println!("kill {}: {}", i + 1, describe(kill));
    }
    if let Some(third) = kills.get(2) {
        println!("verdict: {}", verdict(third));
    }
    assert_eq!(
        kills.len(),
        LOOP_KILLS,
        "expected {LOOP_KILLS} kills of container {} as podman restarts it",
        container.name()
    );
    for kill in &kills {
        assert_eq!(
            kill.victim
                .names
                .container
                .as_ref()
                .and_then(|victim| victim.name.as_deref()),
            Some(container.name()),
            "{}",
            pretty(kill)
        );
    }
    for kill in &kills[..LOOP_KILLS - 1] {
        assert_eq!(
            restart_loop(kill),
            None,
            "not a loop yet: {}",
            describe(kill)
        );
    }
    let third = &kills[LOOP_KILLS - 1];
    let Some(third_loop) = restart_loop(third) else {
        panic!("no restart loop at the third kill: {}", pretty(third));
    };
    assert_eq!(third_loop.count, LOOP_KILLS as u32, "{}", pretty(third));
    assert_eq!(third_loop.window_seconds, 6 * 3600, "{}", pretty(third));
    let verdict = verdict(third);
    assert!(
        verdict.contains("This is the 3rd OOM kill of container"),
        "the verdict should call the loop out: {verdict}"
    );

    agent.stop();
}
