//! Prometheus metrics: two real OOM kills in a podman container's memory cgroup, read back from
//! the agent's `/metrics` endpoint by a plain HTTP client, as a Prometheus server would scrape
//! it. The container's unique name keeps other kills on the host out of the count.

use std::time::Duration;

use oomtrace::attribute::DomainKind;
use oomtrace_tests::http::{free_loopback_port, http_get};
use oomtrace_tests::{ContainerSpec, Podman, pretty, require_root};

const LIMIT_BYTES: u64 = 48 << 20;

#[test]
fn oom_kills_of_a_container_are_counted_at_the_metrics_endpoint() {
    require_root();
    let addr = free_loopback_port();
    let podman = Podman::start();
    let mut agent = podman.start_agent_with(&["--metrics-addr", &addr.to_string()]);
    agent.wait_for_log(
        &format!("serving Prometheus metrics at http://{addr}/metrics"),
        Duration::from_secs(10),
    );
    let tier = agent.agent_started().capture.tier.as_str();

    // PID 1 is a shell that survives both of its hogs.
    let hog = ContainerSpec::hog_command(LIMIT_BYTES);
    let script = format!("{hog}; {hog}; echo 'both hogs ended'; sleep 600");
    let container = podman.run(ContainerSpec::shell(LIMIT_BYTES, &script));
    let kills = agent.wait_for_kills_where(
        |record| container.is_victim_of(record),
        2,
        Duration::from_secs(60),
    );
    assert_eq!(
        kills.len(),
        2,
        "expected two oom_kill records for container {}",
        container.name()
    );
    for kill in &kills {
        assert_eq!(
            kill.domain.as_ref().map(|domain| domain.kind),
            Some(DomainKind::Cgroup),
            "{}",
            pretty(kill)
        );
    }
    // The hogs are the shell's children: `false`, or `unknown` where the agent could not tell.
    let main_process = match kills[0]
        .victim
        .names
        .container
        .as_ref()
        .and_then(|container| container.main_process)
    {
        Some(main) => main.to_string(),
        None => "unknown".to_owned(),
    };
    assert_ne!(main_process, "true", "{}", pretty(&kills[0]));

    let (status, body) = http_get(addr, "/metrics");
    // HTTP/1.0 asked, HTTP/1.0 answered.
    assert_eq!(status, "HTTP/1.0 200 OK", "{body}");
    let kill_lines: Vec<&str> = body
        .lines()
        .filter(|line| {
            line.starts_with("oomtrace_oom_kills_total{")
                && line.contains(&format!("container=\"{}\"", container.name()))
        })
        .collect();
    println!("scraped: {kill_lines:#?}");
    let expected = format!(
        "oomtrace_oom_kills_total{{container=\"{}\",pod=\"\",namespace=\"\",compose_project=\"\",compose_service=\"\",domain_kind=\"cgroup\",main_process=\"{main_process}\",tier=\"{tier}\"}} 2",
        container.name()
    );
    assert_eq!(kill_lines, [expected.as_str()], "the whole scrape:\n{body}");
    let build_info = format!(
        "oomtrace_build_info{{version=\"{}\",tier=\"{tier}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(
        body.lines().any(|line| line == build_info),
        "no `{build_info}` in:\n{body}"
    );
    for metric in [
        "oomtrace_ringbuf_dropped_total ",
        "oomtrace_attribution_failures_total{reason=\"timeout\"} ",
        "oomtrace_history_write_errors_total 0",
    ] {
        assert!(
            body.lines().any(|line| line.starts_with(metric)),
            "no `{metric}` in:\n{body}"
        );
    }
    let (status, _) = http_get(addr, "/");
    assert_eq!(status, "HTTP/1.0 404 Not Found");

    agent.stop();
}
