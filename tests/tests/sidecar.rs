//! The agent as a container next to the workloads it watches: its image (deploy/Containerfile)
//! run with the README's `podman run` line (no runtime socket: podman's state directory mounted
//! read-only), a second, named container OOM-killed, and the agent container's own JSON output
//! naming it from that state.

use std::time::Duration;

use oomtrace::attribute::Source;
use oomtrace::record::Body;
use oomtrace_tests::agent_container::{AgentContainer, AgentImage};
use oomtrace_tests::capabilities::{
    DOCUMENTED, OnlyCapabilities, expected_after_attach, of_every_thread,
};
use oomtrace_tests::{ContainerSpec, Podman, or_dash, pretty, require_root};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn the_agent_container_names_an_oom_killed_container() {
    require_root();
    let podman = Podman::start();
    let image = AgentImage::build();
    let granted = OnlyCapabilities::new(&DOCUMENTED).granted;
    let withheld: Vec<&str> = DOCUMENTED
        .into_iter()
        .filter(|cap| !granted.contains(cap))
        .collect();
    let agent = AgentContainer::start(&image, &withheld);
    agent.wait_for_log("following its events", Duration::from_secs(60));
    let drop_line = agent.wait_for_log("capabilities after attach:", Duration::from_secs(5));

    // Dropped as documented, in the container too: every thread of the agent's host process.
    let pid = agent.host_pid();
    let expected = expected_after_attach();
    for (tid, sets) in of_every_thread(pid) {
        assert_eq!(
            (sets.effective, sets.permitted, sets.ambient),
            (expected, expected, 0),
            "thread {tid} of the agent container's process {pid}: {sets:?}; {drop_line}"
        );
        assert!(sets.no_new_privs, "thread {tid}: no_new_privs; {sets:?}");
    }

    let victim = podman.run(ContainerSpec::hog(LIMIT_BYTES));
    let exit_code = victim.wait_exit(Duration::from_secs(30));
    let kill = agent
        .wait_for_record(
            |record| match &record.body {
                Body::OomKill(kill) if victim.is_victim_of(kill) => Some(kill.clone()),
                _ => None,
            },
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| {
            let (stdout, stderr) = agent.logs();
            panic!(
                "the agent container wrote no oom_kill for container {} (exit code {exit_code}) \
                 within 30 s; its stdout:\n{stdout}\nits stderr:\n{stderr}",
                victim.name()
            )
        });
    let source = kill.victim.names.attribution.as_ref().map(|by| by.source);
    println!(
        "agent container {} (pid {pid}): {drop_line}\n  victim {} (pid {}) in container {} \
         ({}), domain {}",
        agent.name(),
        or_dash(kill.victim.process.comm()),
        or_dash(kill.victim.process.pid),
        or_dash(kill.victim.names.container_name()),
        or_dash(source),
        or_dash(kill.domain.as_ref().map(|domain| domain.kind)),
    );
    let context = pretty(&kill);
    assert_eq!(exit_code, 137, "the victim container's exit code");
    let Some(container) = &kill.victim.names.container else {
        panic!("no victim container in {context}");
    };
    assert_eq!(
        container.name.as_deref(),
        Some(victim.name()),
        "in {context}"
    );
    assert_eq!(container.id, victim.id(), "in {context}");
    assert_eq!(container.runtime.as_deref(), Some("podman"), "in {context}");
    assert_eq!(container.main_process, Some(true), "in {context}");
    assert_eq!(source, Some(Source::State), "in {context}");
    assert_eq!(
        kill.domain
            .as_ref()
            .and_then(|domain| domain.memory)
            .and_then(|memory| memory.limit_bytes),
        Some(LIMIT_BYTES),
        "in {context}"
    );

    assert_eq!(agent.stop(), 0, "the agent's exit code after podman stop");
    let stopped = agent
        .wait_for_record(
            |record| match &record.body {
                Body::AgentStopped(stopped) => Some(stopped.clone()),
                _ => None,
            },
            Duration::from_secs(5),
        )
        .expect("an agent_stopped record after podman stop");
    println!("agent_stopped: {}", pretty(&stopped));
}
