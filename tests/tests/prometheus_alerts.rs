//! The alerting rules users load (deploy/prometheus/oomtrace-rules.yaml) in a real Prometheus,
//! Debian's, that scrapes a real agent every second: a docker-compose service OOM-killed at
//! every restart (`restart: always`, so it only ever looks "running") must show up as the
//! `OomKillRestartLoop` alert, firing, in Prometheus's HTTP API, naming the container and its
//! Compose project and service and saying what to run next.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Deserialize;

use oomtrace_tests::http::free_loopback_port;
use oomtrace_tests::prometheus::{Alert, sample_value};
use oomtrace_tests::{
    ComposeProject, Dockerd, HOG_IN_IMAGE, IMAGE, Prometheus, pretty, require_root,
};

const LIMIT_BYTES: u64 = 48 << 20;
/// The agent's threshold: the third kill within the window is a loop.
const LOOP_KILLS: usize = 3;
const ALERT: &str = "OomKillRestartLoop";
const PROJECT: &str = "shop";
const SERVICE: &str = "web";

#[test]
fn a_compose_service_oom_killed_at_every_restart_fires_the_restart_loop_alert() {
    require_root();
    let metrics_addr = free_loopback_port();
    let docker = Dockerd::start();
    let mut agent = docker.start_agent_with(&["--metrics-addr", &metrics_addr.to_string()]);
    agent.wait_for_log(
        &format!("serving Prometheus metrics at http://{metrics_addr}/metrics"),
        Duration::from_secs(10),
    );
    let rules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/oomtrace-rules.yaml");
    let prometheus = Prometheus::start(metrics_addr, &[rules]);
    prometheus.wait_for_target_up(Duration::from_secs(30));
    println!(
        "prometheus at http://{} scrapes the agent at {metrics_addr}",
        prometheus.addr()
    );

    let compose_file = format!(
        r#"version: "2.4"
services:
  {SERVICE}:
    image: {IMAGE}
    command: ["{HOG_IN_IMAGE}", "--no-wait", "--max-mib", "200"]
    mem_limit: {LIMIT_BYTES}
    memswap_limit: {LIMIT_BYTES}
    restart: always
    network_mode: none
"#
    );
    let project = ComposeProject::up(&docker, PROJECT, &compose_file);
    let container = project.container(SERVICE);
    let name = container.name().to_owned();
    let kills = agent.wait_for_kills_where(
        |record| container.is_victim_of(record),
        LOOP_KILLS,
        Duration::from_secs(60),
    );
    let looped_at = Instant::now();
    assert_eq!(
        kills.len(),
        LOOP_KILLS,
        "expected {LOOP_KILLS} kills of container {name} as dockerd restarts it"
    );
    let third = &kills[LOOP_KILLS - 1];
    assert!(
        third
            .explanation
            .as_ref()
            .is_some_and(|explanation| explanation.restart_loop.is_some()),
        "the agent flags the loop at the third kill: {}",
        pretty(third)
    );

    let label = |alert: &Alert, name: &str| alert.labels.get(name).cloned().unwrap_or_default();
    let is_ours = |alert: &Alert, alertname: &str| {
        label(alert, "alertname") == alertname && label(alert, "container") == name
    };
    let alert = prometheus.wait_for(
        &format!("{ALERT} firing for container {name}"),
        Duration::from_secs(30),
        |prometheus| {
            prometheus
                .alerts()
                .into_iter()
                .find(|alert| is_ours(alert, ALERT) && alert.state == "firing")
        },
    );
    let took = looped_at.elapsed();
    println!(
        "{ALERT} firing {:.1} s after the agent reported the third kill (active since {:?}):\n{alert:#?}",
        took.as_secs_f64(),
        alert.active_at
    );
    assert_eq!(label(&alert, "severity"), "warning", "{alert:#?}");
    assert_eq!(label(&alert, "compose_project"), PROJECT, "{alert:#?}");
    assert_eq!(label(&alert, "compose_service"), SERVICE, "{alert:#?}");
    assert_eq!(
        label(&alert, "instance"),
        metrics_addr.to_string(),
        "{alert:#?}"
    );
    let description = alert
        .annotations
        .get("description")
        .map(String::as_str)
        .unwrap_or_default();
    assert!(
        description.contains(&format!("`oomtrace history --container {name}`")),
        "the alert should say what to run: {description}"
    );
    assert!(
        description.contains(&format!("(Compose service {PROJECT}/{SERVICE})")),
        "the alert should name the Compose service: {description}"
    );

    // The recording rule counts every kill, the first one included, though the counter was
    // created at 1 by it (which increase() alone does not see). dockerd goes on restarting the
    // container: take the project down, so that the count stops.
    let main_processes: Vec<Option<bool>> = kills
        .iter()
        .map(|kill| {
            kill.victim
                .names
                .container
                .as_ref()
                .and_then(|container| container.main_process)
        })
        .collect();
    println!("main_process of the first kills: {main_processes:?}");
    drop(container);
    drop(project);
    let recorded = format!("sum(oomtrace:oom_kills:increase1h{{container=\"{name}\"}})");
    let exposed = format!("sum(oomtrace_oom_kills_total{{container=\"{name}\"}})");
    let mut last = None;
    let counted = prometheus.wait_for(
        &format!("{recorded} to count every kill the agent counted ({exposed})"),
        Duration::from_secs(30),
        |prometheus| {
            let value = |query: &str| prometheus.query(query).first().map(sample_value);
            let now = (value(&recorded), value(&exposed));
            let settled = last == Some(now) && now.0.is_some() && now.0 == now.1;
            last = Some(now);
            settled.then_some(now.0)
        },
    );
    println!("{recorded} = {counted:?}, as the agent's own counters");
    assert!(counted >= Some(LOOP_KILLS as f64), "{counted:?}");
    // Each kill was of the container's main process: not the child-process alert.
    assert!(
        !prometheus
            .alerts()
            .iter()
            .any(|alert| is_ours(alert, "OomKillNonMainProcess")),
        "a main process's kill is not a child's: {:#?}",
        prometheus.alerts()
    );

    // The Grafana dashboard's queries, as Grafana would send them, on the same data.
    let dashboard = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/oomtrace.json");
    let panel_values = dashboard_values(&prometheus, &dashboard);
    for (title, values) in &panel_values {
        println!("dashboard panel {title:?}: {values:?}");
    }
    let value_of = |title: &str| {
        panel_values
            .iter()
            .find(|(panel, _)| panel == title)
            .and_then(|(_, values)| values.first().copied())
    };
    assert_eq!(value_of("Restart loops now"), Some(1.0));
    assert!(
        value_of("OOM kills") >= counted,
        "the OOM kills panel counts every kill: {:?}",
        value_of("OOM kills")
    );

    agent.stop();
}

/// The parts of a Grafana dashboard the test runs: its panels' titles and queries.
#[derive(Deserialize)]
struct Dashboard {
    panels: Vec<Panel>,
}

#[derive(Deserialize)]
struct Panel {
    #[serde(default)]
    title: String,
    /// Rows and text panels have none.
    targets: Option<Vec<Target>>,
}

#[derive(Deserialize)]
struct Target {
    #[serde(default)]
    expr: String,
}

/// Each panel's title and the values of its first query, each query of the dashboard run as
/// an instant query with its variables filled in as Grafana would (every job and node, the
/// last hour, one-minute steps); every query must succeed.
fn dashboard_values(prometheus: &Prometheus, dashboard: &Path) -> Vec<(String, Vec<f64>)> {
    let text = std::fs::read_to_string(dashboard)
        .unwrap_or_else(|err| panic!("reading {}: {err}", dashboard.display()));
    let dashboard: Dashboard = serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("the dashboard's panels and queries: {err}"));
    let mut panels = Vec::new();
    for panel in dashboard.panels {
        let Some(targets) = panel.targets else {
            continue;
        };
        let title = panel.title;
        let mut first = None;
        for target in targets {
            let expr = [
                ("$__range", "1h"),
                ("$__interval", "1m"),
                ("$job", ".*"),
                ("$instance", ".*"),
            ]
            .iter()
            .fold(target.expr, |expr, (variable, value)| {
                expr.replace(variable, value)
            });
            // Panics unless Prometheus accepts and evaluates the query.
            let values: Vec<f64> = prometheus.query(&expr).iter().map(sample_value).collect();
            first.get_or_insert(values);
        }
        panels.push((title, first.unwrap_or_default()));
    }
    panels
}
