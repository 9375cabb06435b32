//! The OOM killer SIGKILLs its victim right before it marks it: with every SIGKILL traced, an
//! OOM-killed container still makes exactly one `oom_kill` and no `sigkill` for its victim.

use std::time::Duration;

use oomtrace_tests::{ContainerSpec, Podman, pretty, require_root};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn an_oom_kill_is_not_also_a_sigkill() {
    require_root();
    let podman = Podman::start();
    let mut agent = podman.start_agent();

    let container = podman.run(ContainerSpec::hog(LIMIT_BYTES));
    let exit_code = container.wait_exit(Duration::from_secs(30));
    let kill = container.kill_record(&mut agent);
    let Some(victim) = kill.victim.process.pid else {
        panic!("no victim pid in {}", pretty(&kill));
    };
    // Past the 100 ms a SIGKILL is held for, with room to spare.
    std::thread::sleep(Duration::from_secs(1));
    let stopped = agent.stop();
    let kills = stopped.kills_of(victim);
    let sigkills = stopped.sigkills_of(victim);
    let totals = stopped.agent_stopped().totals;
    println!(
        "container {}: exit code {exit_code}; victim pid {victim}: {} oom_kill, {} sigkill; \
         {} sigkill records in all, {} SIGKILLs recognised as the OOM killer's",
        container.name(),
        kills.len(),
        sigkills.len(),
        totals.sigkills,
        totals.oom_sigkills
    );

    assert_eq!(exit_code, 137, "the container's exit code");
    assert_eq!(kills.len(), 1, "one oom_kill for the victim");
    // The SIGKILL was seen, and recognised as the OOM killer's.
    let merged = totals.oom_sigkills;
    assert!(
        merged >= 1,
        "oom_sigkills is {merged}: the OOM killer's SIGKILL was not seen"
    );
    assert!(
        sigkills.is_empty(),
        "the OOM killer's SIGKILL is part of the oom_kill, yet: {}",
        pretty(&sigkills)
    );
}
