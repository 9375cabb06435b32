//! The metrics as a scraper reads them, fed by the sink from fixture kills, and the server's
//! answers to good and bad requests over a real loopback socket.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::http::{self, Limits, respond};

// `crate::metrics::tests` has a `http` module in scope: the crate's is `::http`.
use super::*;
use crate::attribute::{
    AttributedKill, AttributedSigkill, Attribution, AttributionWarning, DomainKind, FailureReason,
    Source, fixtures,
};
use crate::capture::{CapturePlan, TaskHook, Tier};
use crate::clock::KernelClock;
use crate::decode::tests::{as_bytes, layout_6_18, mark_victim_record, victim_task_record};
use crate::incident::{Event, Joiner, OomKill};
use crate::record::agent::AgentInfo;
use crate::record::{Context, build};
use crate::sink::Sink as _;
use crate::sink::metrics::MetricsSink;

fn plan(tier: Tier) -> CapturePlan {
    CapturePlan {
        tier,
        reason: "test".into(),
        mark_victim_arg: Some(crate::capture::prototype::TracepointArg::Task),
        task_hook: Some(TaskHook::TpBtf),
        function_hook: None,
        layout: layout_6_18(),
        constraint_names: Vec::new(),
        signal_layout: Some(crate::decode::signal::tests::layout_6_18()),
        signal_task_hook: Some(TaskHook::TpBtf),
    }
}

fn kill(pid: u32) -> OomKill {
    let now = std::time::Instant::now();
    let layout = layout_6_18();
    let mut joiner = Joiner::new(true, false);
    let decode = |record: &[u8]| crate::decode::decode(record, &layout).unwrap();
    joiner.push(decode(&as_bytes(&mark_victim_record(0, pid, 65_500))), now);
    let events = joiner.push(decode(&as_bytes(&victim_task_record(0, pid))), now);
    match events.as_slice() {
        [Event::Kill(kill)] => (**kill).clone(),
        other => panic!("expected one kill, got {other:?}"),
    }
}

fn sigkill_of(target: Option<Attribution>) -> AttributedSigkill {
    AttributedSigkill {
        sigkill: crate::incident::fixtures::user_sigkill(),
        target,
        sender: None,
    }
}

/// A container named `name`, with nothing but its runtime name.
fn container(name: &str, id_digit: char) -> Attribution {
    let id: String = std::iter::repeat_n(id_digit, 64).collect();
    let path = format!("/libpod_parent/libpod-{id}");
    let meta = crate::attribute::runtime::ContainerMetadata::new(
        &id,
        &format!("/{name}"),
        "podman",
        std::iter::empty(),
    );
    Attribution {
        path: path.clone(),
        identity: crate::cgroup_path::parse(&path),
        container: Some(Arc::new(meta)),
        source: Source::Cache,
        warning: None,
    }
}

/// The agent's default `--restart-loop-window`.
const LOOP_WINDOW: Duration = Duration::from_secs(6 * 3600);

fn metrics() -> Metrics {
    Metrics::new(Box::new(|| 0), Arc::new(AtomicU64::new(0)), LOOP_WINDOW)
}

struct Fed {
    metrics: Arc<Metrics>,
    sink: MetricsSink,
    plan: CapturePlan,
}

impl Fed {
    fn new(tier: Tier) -> Self {
        Self::with(metrics(), tier)
    }

    fn with(metrics: Metrics, tier: Tier) -> Self {
        let metrics = Arc::new(metrics);
        Fed {
            sink: MetricsSink::new(Arc::clone(&metrics)),
            metrics,
            plan: plan(tier),
        }
    }

    fn context(&self) -> Context<'_> {
        Context {
            plan: &self.plan,
            ringbuf_dropped_total: 0,
            clock: KernelClock::now(),
        }
    }

    fn kill(&mut self, kill: &AttributedKill) {
        self.record(build::oom_kill(kill, None, None, &self.context()));
    }

    fn record(&mut self, record: crate::record::Record) {
        self.sink.write(&record).unwrap();
    }

    fn text(&self) -> String {
        self.metrics.encode()
    }
}

/// The sample lines of one metric, without HELP and TYPE, sorted (a family's order is not
/// fixed).
fn samples(text: &str, name: &str) -> Vec<String> {
    let mut samples: Vec<String> = text
        .lines()
        .filter(|line| line.starts_with(name) && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    samples.sort();
    samples
}

#[test]
fn kills_are_counted_by_container_domain_and_tier() {
    let mut fed = Fed::new(Tier::NoFunctionTracing);
    let in_web = fixtures::in_web(kill(9));
    fed.kill(&in_web);
    fed.kill(&in_web);
    let mut on_host = AttributedKill::unattributed(kill(10));
    on_host.domain.kind = DomainKind::Host;
    fed.kill(&on_host);
    fed.kill(&AttributedKill::unattributed(kill(11)));
    let text = fed.text();
    assert_eq!(
        samples(&text, "oomtrace_oom_kills_total"),
        [
            r#"oomtrace_oom_kills_total{container="",pod="",namespace="",compose_project="",compose_service="",domain_kind="host",main_process="unknown",tier="no-function-tracing"} 1"#,
            r#"oomtrace_oom_kills_total{container="",pod="",namespace="",compose_project="",compose_service="",domain_kind="unknown",main_process="unknown",tier="no-function-tracing"} 1"#,
            r#"oomtrace_oom_kills_total{container="web",pod="web-0",namespace="shop",compose_project="",compose_service="",domain_kind="cgroup",main_process="false",tier="no-function-tracing"} 2"#,
        ],
        "{text}"
    );
}

#[test]
fn host_wide_kills_are_counted_by_their_trigger() {
    let mut fed = Fed::new(Tier::NoFunctionTracing);
    // The web container set off a host-wide OOM, twice.
    let mut by_web = fixtures::in_web(kill(9));
    by_web.domain.kind = DomainKind::Host;
    fed.kill(&by_web);
    fed.kill(&by_web);
    // A process outside any container did it once; a cgroup limit does not count.
    let mut by_host_process = AttributedKill::unattributed(kill(10));
    by_host_process.domain.kind = DomainKind::Host;
    by_host_process.kill.trigger.task.comm = "cc1plus".to_owned();
    fed.kill(&by_host_process);
    fed.kill(&fixtures::in_web(kill(11)));
    let comm = &by_web.kill.trigger.task.comm;
    assert_eq!(
        samples(&fed.text(), "oomtrace_host_oom_kills_total"),
        [
            r#"oomtrace_host_oom_kills_total{trigger_container="",trigger_pod="",trigger_namespace="",trigger_comm="cc1plus"} 1"#.to_owned(),
            format!(
                r#"oomtrace_host_oom_kills_total{{trigger_container="web",trigger_pod="web-0",trigger_namespace="shop",trigger_comm="{comm}"}} 2"#
            ),
        ]
    );
}

#[test]
fn the_last_kill_of_each_container_is_a_timestamp_in_seconds() {
    let mut fed = Fed::new(Tier::NoFunctionTracing);
    let mut in_web = fixtures::in_web(kill(9));
    in_web.kill.ktime_ns = crate::clock::monotonic_ns() - 30_000_000_000;
    fed.kill(&in_web);
    let text = fed.text();
    let lines = samples(&text, "oomtrace_last_oom_kill_timestamp_seconds");
    let [line] = lines.as_slice() else {
        panic!("one label set expected: {text}");
    };
    let (labels, value) = line.rsplit_once(' ').unwrap();
    assert_eq!(
        labels,
        r#"oomtrace_last_oom_kill_timestamp_seconds{container="web",pod="web-0",namespace="shop",compose_project="",compose_service=""}"#
    );
    let seconds: f64 = value.parse().unwrap();
    let expected = unix_seconds(std::time::SystemTime::now()) - 30.0;
    assert!(
        (seconds - expected).abs() < 5.0,
        "{seconds} is not 30 s ago ({expected})"
    );
}

/// A kill of `container` as the metrics see it, with the explain stage's restart-loop verdict.
fn looped(container: &str, flagged: bool) -> KillFacts {
    KillFacts {
        victim: Names {
            container: container.to_owned(),
            ..Names::default()
        },
        domain_kind: "cgroup",
        main_process: Some(true),
        tier: "full",
        host_trigger: None,
        unix_seconds: 0.0,
        restart_loop: flagged,
        filled_by: None,
    }
}

#[test]
fn a_restart_loop_is_shown_while_it_lasts() {
    let metrics = metrics();
    let now = std::time::Instant::now();
    metrics.oom_kill(looped("web", false), now);
    metrics.oom_kill(looped("web", true), now);
    // Flagged two windows ago, and nothing since: the loop is over.
    metrics.oom_kill(looped("db", true), now - 2 * LOOP_WINDOW);
    // Never flagged.
    metrics.oom_kill(looped("cache", false), now);
    let text = metrics.encode();
    assert!(
        text.contains("# TYPE oomtrace_restart_loop gauge"),
        "{text}"
    );
    assert_eq!(
        samples(&text, "oomtrace_restart_loop{"),
        [
            r#"oomtrace_restart_loop{container="db",pod="",namespace="",compose_project="",compose_service=""} 0"#,
            r#"oomtrace_restart_loop{container="web",pod="",namespace="",compose_project="",compose_service=""} 1"#,
        ],
        "{text}"
    );
}

#[test]
fn a_kill_the_explain_stage_flags_starts_a_restart_loop() {
    use crate::record::Body;
    use crate::record::kill::{Count, Explanation, Snapshot};
    let mut fed = Fed::new(Tier::NoFunctionTracing);
    let explained = |restart_loop: Option<Count>| {
        let mut record = build::oom_kill(&fixtures::in_web(kill(9)), None, None, &fed.context());
        let Body::OomKill(kill) = &mut record.body else {
            panic!("an oom_kill record: {record:?}");
        };
        kill.explanation = Some(Explanation {
            verdict: String::new(),
            snapshot: Snapshot {
                scope: "host".to_owned(),
                cgroups: Vec::new(),
                processes: Vec::new(),
                processes_read: None,
                processes_unread: None,
                charged_to_scope_bytes: None,
                ktime_ns: None,
                took_us: 0,
            },
            timeline: None,
            restart_loop,
            recurring_trigger: None,
        });
        record
    };
    let (first, third) = (
        explained(None),
        explained(Some(Count {
            count: 3,
            window_seconds: LOOP_WINDOW.as_secs(),
        })),
    );
    fed.record(first);
    assert_eq!(
        samples(&fed.text(), "oomtrace_restart_loop{"),
        Vec::<String>::new()
    );
    fed.record(third);
    assert_eq!(
        samples(&fed.text(), "oomtrace_restart_loop{"),
        [
            r#"oomtrace_restart_loop{container="web",pod="web-0",namespace="shop",compose_project="",compose_service=""} 1"#
        ]
    );
}

#[test]
fn a_task_marked_without_a_kill_is_not_counted() {
    let mut fed = Fed::new(Tier::Full);
    let mut marked = AttributedKill::unattributed(kill(9));
    marked.kill.marked_without_kill = true;
    fed.kill(&marked);
    assert_eq!(
        samples(&fed.text(), "oomtrace_oom_kills_total"),
        Vec::<String>::new()
    );
}

#[test]
fn each_cgroup_named_by_its_path_only_counts_once_per_kill_by_reason() {
    let mut fed = Fed::new(Tier::NoFunctionTracing);
    let mut kill = fixtures::in_web(kill(9));
    let timed_out = Some(AttributionWarning {
        reason: FailureReason::Timeout,
        message: "podman: no answer in time".into(),
    });
    // Victim and trigger are the same cgroup: one failure.
    kill.victim.as_mut().unwrap().warning = timed_out.clone();
    kill.trigger.as_mut().unwrap().warning = timed_out;
    let mut odd = fixtures::web(Source::Path);
    odd.path = "/oomtrace-test-1".into();
    odd.warning = Some(AttributionWarning {
        reason: FailureReason::UnrecognisedPath,
        message: "no layout".into(),
    });
    kill.domain.attribution = Some(odd);
    fed.kill(&kill);
    let text = fed.text();
    let failures = samples(&text, "oomtrace_attribution_failures_total");
    assert_eq!(
        failures.len(),
        FailureReason::ALL.len(),
        "every reason shown: {text}"
    );
    for reason in FailureReason::ALL {
        let expected = match reason {
            FailureReason::Timeout | FailureReason::UnrecognisedPath => 1,
            _ => 0,
        };
        let line = format!(
            "oomtrace_attribution_failures_total{{reason=\"{}\"}} {expected}",
            reason.as_str()
        );
        assert!(failures.contains(&line), "no `{line}` in {text}");
    }
}

#[test]
fn sigkills_are_counted_by_target_and_sender_kind() {
    let fed = Fed::new(Tier::NoFunctionTracing);
    let context = fed.context();
    let mut sink = MetricsSink::new(Arc::clone(&fed.metrics));
    for target in [Some(fixtures::web(Source::Cache)), None] {
        sink.write(&build::sigkill(&sigkill_of(target), &context))
            .unwrap();
    }
    assert_eq!(
        samples(&fed.text(), "oomtrace_sigkills_total"),
        [
            r#"oomtrace_sigkills_total{container="",pod="",namespace="",compose_project="",compose_service="",sender_kind="process"} 1"#,
            r#"oomtrace_sigkills_total{container="web",pod="web-0",namespace="shop",compose_project="",compose_service="",sender_kind="process"} 1"#,
        ]
    );
}

#[test]
fn past_the_label_cap_new_containers_are_counted_as_other() {
    let mut fed = Fed::with(
        Metrics::with_label_cap(Box::new(|| 0), Arc::new(AtomicU64::new(0)), LOOP_WINDOW, 2),
        Tier::NoFunctionTracing,
    );
    for (name, digit) in [("a", 'a'), ("b", 'b'), ("c", 'c'), ("d", 'd'), ("a", 'a')] {
        let mut kill = AttributedKill::unattributed(kill(9));
        kill.victim = Some(container(name, digit));
        fed.kill(&kill);
    }
    let text = fed.text();
    let containers: Vec<String> = samples(&text, "oomtrace_oom_kills_total")
        .iter()
        .map(|line| {
            let (_, rest) = line.split_once("container=\"").unwrap();
            let (name, _) = rest.split_once('"').unwrap();
            let count = line.rsplit(' ').next().unwrap();
            format!("{name}={count}")
        })
        .collect();
    let mut containers = containers;
    containers.sort();
    assert_eq!(containers, ["a=2", "b=1", "other=2"], "{text}");
}

#[test]
fn the_exposition_has_every_metric_from_the_start() {
    let history_write_errors = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let read_dropped = Arc::clone(&dropped);
    let fed = Fed::with(
        Metrics::new(
            Box::new(move || read_dropped.load(Ordering::Relaxed)),
            Arc::clone(&history_write_errors),
            LOOP_WINDOW,
        ),
        Tier::NoFunctionTracing,
    );
    let mut sink = MetricsSink::new(Arc::clone(&fed.metrics));
    sink.write(&build::agent_started(
        &fed.plan,
        jiff::Timestamp::now(),
        AgentInfo::this(),
        None,
    ))
    .unwrap();
    // Both are read at the scrape, not when an event passed.
    history_write_errors.store(5, Ordering::Relaxed);
    dropped.store(7, Ordering::Relaxed);
    let text = fed.text();
    // Kills and SIGKILLs appear with their first label set; the rest from the start.
    for line in [
        "# TYPE oomtrace_ringbuf_dropped_total counter",
        "oomtrace_ringbuf_dropped_total 7",
        "# TYPE oomtrace_attribution_failures_total counter",
        "oomtrace_attribution_failures_total{reason=\"no_runtime\"} 0",
        "# TYPE oomtrace_history_write_errors_total counter",
        "oomtrace_history_write_errors_total 5",
        "oomtrace_sigkills_rate_limited_total 0",
        "# TYPE oomtrace_restart_loop gauge",
        "# TYPE oomtrace_start_time_seconds gauge",
        "# TYPE oomtrace_build_info gauge",
        &format!(
            "oomtrace_build_info{{version=\"{}\",tier=\"no-function-tracing\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    let started: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("oomtrace_start_time_seconds "))
        .unwrap_or_else(|| panic!("no start time in:\n{text}"))
        .parse()
        .unwrap();
    let now = unix_seconds(std::time::SystemTime::now());
    assert!((0.0..5.0).contains(&(now - started)), "{started} vs {now}");
}

#[test]
fn every_metric_is_named_as_a_scraper_sees_it() {
    assert_eq!(
        exposed_names(),
        [
            "oomtrace_attribution_failures_total",
            "oomtrace_build_info",
            "oomtrace_history_write_errors_total",
            "oomtrace_host_oom_kills_total",
            "oomtrace_last_oom_kill_timestamp_seconds",
            "oomtrace_oom_kills_filled_by_total",
            "oomtrace_oom_kills_total",
            "oomtrace_restart_loop",
            "oomtrace_ringbuf_dropped_total",
            "oomtrace_sigkills_rate_limited_total",
            "oomtrace_sigkills_total",
            "oomtrace_start_time_seconds",
        ]
        .map(str::to_owned)
        .into()
    );
}

#[test]
fn only_get_metrics_is_answered() {
    let metrics = metrics();
    let status = |method: &str, uri: &str| {
        let request = ::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap();
        respond(&request, &metrics).status().as_u16()
    };
    assert_eq!(status("GET", "/metrics"), 200);
    assert_eq!(status("GET", "/metrics?name[]=x"), 200);
    assert_eq!(status("GET", "/"), 404);
    assert_eq!(status("GET", "/metrics/"), 404);
    assert_eq!(status("POST", "/metrics"), 405);
    assert_eq!(status("HEAD", "/metrics"), 405);
}

/// A server on a loopback port with tight limits.
async fn server(limits: Limits) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(metrics());
    tokio::spawn(http::serve(listener, metrics, limits));
    addr
}

fn tight() -> Limits {
    Limits {
        header_timeout: Duration::from_millis(300),
        per_peer: 4,
        total: 8,
    }
}

/// Sends `request`, then reads until the server closes the connection.
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8(response).unwrap()
}

const SCRAPE: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn the_server_answers_a_scrape() {
    let addr = server(tight()).await;
    let response = exchange(addr, SCRAPE).await;
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    assert!(body.contains("oomtrace_attribution_failures_total{reason=\"timeout\"} 0"));
}

#[tokio::test]
async fn an_http_1_0_scrape_is_answered_and_closed() {
    let addr = server(tight()).await;
    let response = exchange(addr, b"GET /metrics HTTP/1.0\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.0 200 OK\r\n"), "{response}");
}

#[tokio::test]
async fn the_server_refuses_wrong_paths_methods_and_oversized_requests() {
    let addr = server(tight()).await;
    let status = |response: String| response.lines().next().unwrap_or_default().to_owned();
    assert_eq!(
        status(exchange(addr, b"GET /debug HTTP/1.1\r\nConnection: close\r\n\r\n").await),
        "HTTP/1.1 404 Not Found"
    );
    let post = exchange(
        addr,
        b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{post}"
    );
    assert!(post.contains("allow: GET\r\n"), "{post}");
    // Headers that never end, past the limit.
    let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 64 * 1024));
    assert_eq!(
        status(exchange(addr, &huge).await),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
}

#[tokio::test]
async fn a_silent_client_is_timed_out() {
    let addr = server(tight()).await;
    let started = std::time::Instant::now();
    let response = exchange(addr, b"GET /metr").await;
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 408"),
        "{response}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// Idle connections held open (and reopened as they are closed) from the scraper's own
/// address, many more than the server keeps: every scrape is answered.
#[tokio::test]
async fn scrapes_are_answered_while_idle_connections_are_held() {
    let limits = Limits {
        header_timeout: Duration::from_secs(30),
        ..tight()
    };
    let addr = server(limits).await;
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            if let Ok(stream) = TcpStream::connect(addr).await {
                held.push(stream);
            }
            held.retain(|stream| {
                let mut byte = [0u8; 1];
                // Closed by the server: reopen.
                !matches!(stream.try_read(&mut byte), Ok(0))
            });
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut answered = 0;
    for _ in 0..25 {
        let response = tokio::time::timeout(Duration::from_secs(2), exchange(addr, SCRAPE)).await;
        if response.is_ok_and(|response| response.starts_with("HTTP/1.1 200 OK")) {
            answered += 1;
        }
    }
    holder.abort();
    assert!(answered >= 24, "{answered} of 25 scrapes answered");
}

#[tokio::test]
async fn an_address_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = http::start(addr, Arc::new(metrics()))
        .await
        .expect_err("the port is taken");
    let message = format!("{err:#}");
    assert!(
        message.contains(&format!("listening for metrics scrapes on {addr}")),
        "{message}"
    );
}

#[test]
fn a_kill_whose_limit_tmpfs_files_filled_is_counted_by_what_filled_it() {
    let mut fed = Fed::new(Tier::NoFunctionTracing);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/records/oom_kill_tmpfs.json"
    );
    let filled: crate::record::Record =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    fed.record(filled);
    // A kill its processes filled is not counted there.
    fed.record(build::oom_kill(
        &fixtures::in_web(kill(9)),
        None,
        None,
        &fed.context(),
    ));
    assert_eq!(
        samples(&fed.text(), "oomtrace_oom_kills_filled_by_total{"),
        [
            r#"oomtrace_oom_kills_filled_by_total{container="web",pod="web-0",namespace="shop",compose_project="shop",compose_service="web",filled_by="tmpfs"} 1"#
        ]
    );
    // Both kills are counted as kills, each under its own victim's labels.
    assert_eq!(samples(&fed.text(), "oomtrace_oom_kills_total{").len(), 2);
}
