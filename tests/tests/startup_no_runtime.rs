//! Startup on a host with no container runtime: every usual place (the Docker API's and the
//! CRI's sockets, the runtimes' state directories, the kubelet's log directories) is empty, and
//! the agent says so in one INFO line, with no WARN: nothing is wrong on such a host. A runtime
//! named on the command line that is not there is a WARN.

use std::time::Duration;

use oomtrace_tests::{Agent, require_root};

/// The agent in a mount namespace of its own where /run, /var/lib and /var/log are empty, as on
/// a host where no runtime was ever installed.
fn wrapper() -> Vec<String> {
    [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "for dir in /run /var/lib /var/log; do mount -t tmpfs none \"$dir\" || exit 1; done; \
         exec \"$@\"",
        "sh",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// `--oom-score-adj 0`: this test is about runtimes, and lowering the agent's own score needs
/// CAP_SYS_RESOURCE, which some test machines' root lacks (that WARN is right there).
const ARGS: [&str; 2] = ["--oom-score-adj", "0"];

const CENSUS: &str = "container runtimes not found at their usual places";

fn warnings(log: &str) -> Vec<&str> {
    log.lines().filter(|line| line.contains(" WARN ")).collect()
}

#[test]
fn a_host_without_runtimes_says_so_once_without_a_warning() {
    require_root();
    let agent = Agent::start_wrapped(&wrapper(), &ARGS);
    // The census is said once every runtime has been tried.
    agent.wait_for_log(CENSUS, Duration::from_secs(10));
    let log = agent.stop().stderr;
    let census: Vec<&str> = log.lines().filter(|line| line.contains(CENSUS)).collect();
    println!("{}", census.join("\n"));
    let [census] = census.as_slice() else {
        panic!("one census line, found {}:\n{log}", census.len())
    };
    assert!(census.contains(" INFO "), "{census}");
    for place in [
        "/var/run/docker.sock",
        "/run/podman/podman.sock",
        "/run/containerd/containerd.sock",
        "/run/crio/crio.sock",
        "/var/lib/docker",
        "/var/lib/containers/storage",
        "/var/log/pods",
    ] {
        assert!(census.contains(place), "the census names {place}: {census}");
    }
    assert_eq!(
        warnings(&log),
        Vec::<&str>::new(),
        "no WARN on a host without runtimes:\n{log}"
    );
}

#[test]
fn a_named_runtime_that_is_not_there_is_a_warning() {
    require_root();
    let mut args = ARGS.to_vec();
    args.extend(["--runtime-socket", "/run/docker.sock"]);
    let agent = Agent::start_wrapped(&wrapper(), &args);
    agent.wait_for_log("/run/docker.sock", Duration::from_secs(10));
    let log = agent.stop().stderr;
    let warnings = warnings(&log);
    println!("{}", warnings.join("\n"));
    assert!(
        warnings
            .iter()
            .any(|line| line.contains("container runtime the Docker API at /run/docker.sock")),
        "the runtime asked for is warned of:\n{log}"
    );
}
