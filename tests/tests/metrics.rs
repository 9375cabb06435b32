//! Prometheus metrics: two real OOM kills in a podman container's memory cgroup, read back from
//! the agent's `/metrics` endpoint by a plain HTTP client, as a Prometheus server would scrape
//! it. The container's unique name keeps other kills on the host out of the count.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use oomtrace_tests::{ContainerSpec, Podman, field_str, require_root};

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
    let started = agent
        .wait_for_record_where(|record| record["kind"] == "agent_started", Duration::ZERO)
        .expect("the agent_started record");
    let tier = field_str(&started, "capture.tier").to_owned();

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
        assert_eq!(field_str(kill, "domain.kind"), "cgroup", "{kill:#}");
    }

    let (status, body) = http_get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    let kill_lines: Vec<&str> = body
        .lines()
        .filter(|line| {
            line.starts_with("oomtrace_oom_kills_total{")
                && line.contains(&format!("container=\"{}\"", container.name()))
        })
        .collect();
    println!("scraped: {kill_lines:#?}");
    let expected = format!(
        "oomtrace_oom_kills_total{{container=\"{}\",pod=\"\",namespace=\"\",domain_kind=\"cgroup\",tier=\"{tier}\"}} 2",
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
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    agent.stop();
}

/// A loopback port nothing listens on right now.
fn free_loopback_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener.local_addr().expect("the bound address")
}

/// `GET path` over a plain TCP connection; the status line and the body.
fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr)
        .unwrap_or_else(|err| panic!("connecting to the metrics endpoint at {addr}: {err}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("setting a read timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: oomtrace-tests\r\n\r\n"
    )
    .expect("sending the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|err| panic!("reading the response from {addr}{path}: {err}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {response:?}"));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}
