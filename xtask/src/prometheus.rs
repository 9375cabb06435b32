//! Checks of deploy/prometheus and deploy/grafana, part of `lint`: the rules with `promtool
//! check rules`, their unit tests with `promtool test rules` (every alert firing and not
//! firing), the PrometheusRule form against the rules it is generated from, the Grafana
//! dashboard (its structure, and every query parsed by promtool), and that all of them and
//! docs/metrics.md name only metrics the agent really exposes, as its own registry lists them. Like the
//! other deploy checks, the unit tests first prove they can fail, on a deliberately broken copy.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{
    deploy::{describe, scratch_dir, write, yaml_files},
    run::workspace_root,
    setup::Apt,
};

/// Debian's `prometheus` brings `promtool`, and the server the integration test starts.
pub const PACKAGE: &str = "prometheus";
const RULES: &str = "deploy/prometheus/oomtrace-rules.yaml";
const RULE_TESTS: &str = "deploy/prometheus/tests";
const PROMETHEUS_RULE: &str = "deploy/prometheus/oomtrace-prometheusrule.yaml";
const DASHBOARD: &str = "deploy/grafana/oomtrace.json";
const DASHBOARD_README: &str = "deploy/grafana/README.md";
/// The user guide's page on metrics, whose table lists every metric the agent exposes.
const METRICS_DOC: &str = "docs/metrics.md";
/// The dashboard's data source variable: panels name no particular Prometheus.
const DATASOURCE: &str = "${datasource}";

/// What the PrometheusRule adds around the rules file's `groups:`.
const PROMETHEUS_RULE_HEADER: &str = "\
# Generated from oomtrace-rules.yaml by `cargo xtask generate`: edit that file, not this one.
#
# The same rules as a PrometheusRule, for the Prometheus Operator (kube-prometheus,
# kube-prometheus-stack). The operator loads the PrometheusRules its Prometheus's ruleSelector
# matches: add the labels yours selects on to metadata.labels (kube-prometheus-stack selects
# `release: <its Helm release>` unless told otherwise).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: oomtrace
  namespace: oomtrace
  labels:
    app.kubernetes.io/name: oomtrace
spec:
";

pub fn check() -> anyhow::Result<()> {
    install(&mut Apt::default())?;
    let root = workspace_root();
    let rules = read(&root.join(RULES))?;
    promtool_check_rules(&root.join(RULES))?;
    test_rules(&root, &rules)?;
    check_prometheus_rule(&root, &rules)?;
    check_dashboard(&root)?;
    check_metric_names(&root, &rules)
}

/// Installs Debian's prometheus when missing. Its package ships a service, which starts only
/// under an init system; the tests start their own server on a free loopback port and never
/// touch one that runs.
pub fn install(apt: &mut Apt) -> anyhow::Result<()> {
    apt.install_missing(&[PACKAGE])
        .context("installing Debian's prometheus (promtool, and the server the tests start)")?;
    for pid in running("prometheus") {
        println!(
            "xtask: note: a prometheus runs already (pid {pid}), e.g. the package's service; \
             the tests start their own and leave it alone"
        );
    }
    Ok(())
}

/// Writes the files generated from others.
pub fn generate() -> anyhow::Result<()> {
    let root = workspace_root();
    let rules = read(&root.join(RULES))?;
    let target = root.join(PROMETHEUS_RULE);
    fs::write(&target, prometheus_rule(&rules)?)
        .with_context(|| format!("writing {}", target.display()))?;
    println!("wrote {}", target.display());
    Ok(())
}

/// The PrometheusRule: the rules file from `groups:` on, as its `spec`.
fn prometheus_rule(rules: &str) -> anyhow::Result<String> {
    let groups = rules
        .lines()
        .position(|line| line == "groups:")
        .with_context(|| format!("{RULES} has no top-level `groups:`"))?;
    let mut text = PROMETHEUS_RULE_HEADER.to_owned();
    for line in rules.lines().skip(groups) {
        if !line.is_empty() {
            text.push_str("  ");
            text.push_str(line);
        }
        text.push('\n');
    }
    Ok(text)
}

fn check_prometheus_rule(root: &Path, rules: &str) -> anyhow::Result<()> {
    let committed = read(&root.join(PROMETHEUS_RULE))?;
    if committed != prometheus_rule(rules)? {
        bail!(
            "{PROMETHEUS_RULE} differs from what {RULES} generates: run `cargo xtask generate` \
             and commit the result"
        );
    }
    println!("deploy: {PROMETHEUS_RULE} matches {RULES}");
    Ok(())
}

fn promtool_check_rules(file: &Path) -> anyhow::Result<()> {
    let output = promtool(&["check", "rules"], &[file.to_owned()])?;
    if !output.status.success() {
        bail!(
            "promtool check rules {}: {}",
            file.display(),
            describe(&output)
        );
    }
    Ok(())
}

/// `promtool test rules` on every test file, after proving that a broken rule fails them; and
/// every alert has a case where it fires and one where it does not.
fn test_rules(root: &Path, rules: &str) -> anyhow::Result<()> {
    let tests = yaml_files(&root.join(RULE_TESTS))?;
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect();
    if alerts.is_empty() {
        bail!("{RULES} has no alerts");
    }
    let mut cases = Vec::new();
    for test in &tests {
        cases.extend(alert_cases(&read(test)?));
    }
    for alert in &alerts {
        for (firing, what) in [(true, "fires"), (false, "does not fire")] {
            if !cases.contains(&(alert.to_string(), firing)) {
                bail!("no case in {RULE_TESTS} where {alert} {what}");
            }
        }
    }
    for (alert, _) in &cases {
        if !alerts.contains(&alert.as_str()) {
            bail!("{RULE_TESTS} tests an alert {RULES} does not have: {alert}");
        }
    }

    // The tests refer to the rules as ../oomtrace-rules.yaml: a copy keeps that layout.
    let broken = scratch_dir()?.join("prometheus").join("broken-rules");
    let broken_rule = "expr: oomtrace_restart_loop == 1";
    if !rules.contains(broken_rule) {
        bail!("{RULES} has no `{broken_rule}` to break");
    }
    write(
        &broken.join("oomtrace-rules.yaml"),
        &rules.replacen(broken_rule, "expr: oomtrace_restart_loop == 2", 1),
    )?;
    for test in &tests {
        let name = test.file_name().context("a test file without a name")?;
        write(&broken.join("tests").join(name), &read(test)?)?;
    }
    let broken_tests: Vec<PathBuf> = tests
        .iter()
        .filter_map(|test| Some(broken.join("tests").join(test.file_name()?)))
        .collect();
    let refused = promtool(&["test", "rules"], &broken_tests)?;
    // promtool names the failing cases on stderr.
    if refused.status.success() || !describe(&refused).contains("alertname: OomKillRestartLoop") {
        bail!(
            "promtool test rules passed with a broken OomKillRestartLoop: the tests prove \
             nothing ({})",
            describe(&refused)
        );
    }

    let output = promtool(&["test", "rules"], &tests)?;
    if !output.status.success() {
        bail!("promtool test rules: {}", describe(&output));
    }
    let firing = cases.iter().filter(|(_, firing)| *firing).count();
    println!(
        "deploy: promtool test rules passed: {} alerts, {firing} cases firing and {} not",
        alerts.len(),
        cases.len() - firing
    );
    Ok(())
}

/// The (alert, fires) cases of a `promtool test rules` file: an `alertname:` followed by
/// `exp_alerts: []` does not fire; followed by a list of alerts, it fires.
fn alert_cases(text: &str) -> Vec<(String, bool)> {
    let mut cases = Vec::new();
    let mut alert: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname: ") {
            alert = Some(name.trim().to_owned());
        } else if let Some(expected) = line.strip_prefix("exp_alerts:")
            && let Some(name) = alert.take()
        {
            let none: String = expected.split_whitespace().collect();
            cases.push((name, none != "[]"));
        }
    }
    cases
}

fn check_dashboard(root: &Path) -> anyhow::Result<()> {
    let text = read(&root.join(DASHBOARD))?;
    let dashboard: Value =
        serde_json::from_str(&text).with_context(|| format!("{DASHBOARD} is not valid JSON"))?;
    for key in ["title", "uid"] {
        if dashboard[key].as_str().is_none_or(str::is_empty) {
            bail!("{DASHBOARD} has no {key}");
        }
    }
    let variables = dashboard["templating"]["list"]
        .as_array()
        .context("the dashboard has no templating.list")?;
    if !variables.iter().any(|variable| {
        variable["name"] == "datasource"
            && variable["type"] == "datasource"
            && variable["query"] == "prometheus"
    }) {
        bail!("{DASHBOARD} needs a `datasource` variable of Prometheus data sources");
    }

    let mut panels = Vec::new();
    collect_panels(&dashboard["panels"], &mut panels);
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    let mut queries = Vec::new();
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or_default();
        let id = panel["id"].as_u64().context("a panel without an id")?;
        if !ids.insert(id) {
            bail!("{DASHBOARD}: panel id {id} is used twice");
        }
        if title.is_empty() || !titles.insert(title) {
            bail!("{DASHBOARD}: panel {id} has an empty or repeated title `{title}`");
        }
        if panel["type"] == "row" {
            continue;
        }
        if panel["description"].as_str().is_none_or(str::is_empty) {
            bail!("{DASHBOARD}: panel `{title}` does not say what it answers (description)");
        }
        let targets = panel["targets"].as_array().map_or(&[][..], Vec::as_slice);
        if targets.is_empty() {
            bail!("{DASHBOARD}: panel `{title}` has no queries");
        }
        for source in std::iter::once(&panel["datasource"])
            .chain(targets.iter().map(|target| &target["datasource"]))
        {
            if source["uid"] != DATASOURCE {
                bail!("{DASHBOARD}: panel `{title}` should query {DATASOURCE}, not {source}");
            }
        }
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            if expr.is_empty() {
                bail!("{DASHBOARD}: panel `{title}` has a query without an expr");
            }
            queries.push((title.to_owned(), expr.to_owned()));
        }
    }

    // promtool parses PromQL in rules: each query becomes one, its variables filled in.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (index, (title, expr)) in queries.iter().enumerate() {
        let expr = [
            ("$__rate_interval", "5m"),
            ("$__interval", "5m"),
            ("$__range", "1d"),
            ("$job", ".*"),
            ("$instance", ".*"),
        ]
        .iter()
        .fold(expr.clone(), |expr, (variable, value)| {
            expr.replace(variable, value)
        });
        if expr.contains('$') {
            bail!("{DASHBOARD}: panel `{title}` uses a variable this check does not know: {expr}");
        }
        rules.push_str(&format!(
            "      # {title}\n      - record: dashboard_query_{index}\n        expr: {}\n",
            serde_json::to_string(&expr)?
        ));
    }
    let parsed = scratch_dir()?
        .join("prometheus")
        .join("dashboard-queries.yaml");
    write(&parsed, &rules)?;
    promtool_check_rules(&parsed).with_context(|| format!("the queries of {DASHBOARD}"))?;

    let readme = read(&root.join(DASHBOARD_README))?;
    panels.retain(|panel| panel["type"] != "row");
    for panel in &panels {
        let title = panel["title"].as_str().unwrap_or_default();
        if !readme.contains(&format!("**{title}**")) {
            bail!("{DASHBOARD_README} does not describe the panel **{title}**");
        }
    }
    println!(
        "deploy: {DASHBOARD}: {} panels, each described, {} queries parsed by promtool",
        panels.len(),
        queries.len()
    );
    Ok(())
}

/// The rules, their tests and the dashboard query only metrics the agent exposes or the rules
/// record, and the metrics table of docs/metrics.md lists exactly those the agent exposes: a renamed
/// metric cannot leave an alert or a panel silently empty.
fn check_metric_names(root: &Path, rules: &str) -> anyhow::Result<()> {
    let exposed = oomtrace::metrics::exposed_names();
    let recorded: BTreeSet<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- record: "))
        .collect();
    let mut files = vec![root.join(RULES), root.join(DASHBOARD)];
    files.extend(yaml_files(&root.join(RULE_TESTS))?);
    for file in &files {
        let text = read(file)?;
        let unknown: Vec<&str> = metric_names(&text)
            .into_iter()
            .filter(|name| !exposed.contains(*name) && !recorded.contains(name))
            .collect();
        if !unknown.is_empty() {
            bail!(
                "{} queries metrics the agent does not expose: {unknown:?}; it exposes {exposed:?}",
                file.display()
            );
        }
    }
    let metrics_doc = read(&root.join(METRICS_DOC))?;
    let documented: BTreeSet<String> = metrics_doc
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|line| line.split('`').next())
        .filter(|name| name.starts_with("oomtrace_"))
        .map(str::to_owned)
        .collect();
    if documented != exposed {
        bail!("{METRICS_DOC}'s metrics table lists {documented:?}; the agent exposes {exposed:?}");
    }
    println!(
        "deploy: the rules, their tests and the dashboard query only the agent's {} metrics \
         and {} recorded ones; {METRICS_DOC} lists them",
        exposed.len(),
        recorded.len()
    );
    Ok(())
}

/// The metric names in `text`: `oomtrace_…` (the agent's) and `oomtrace:…` (recorded by rules).
fn metric_names(text: &str) -> BTreeSet<&str> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("oomtrace") {
        let after = &text[start..];
        let end = after.find(|c: char| !is_name(c)).unwrap_or(after.len());
        let name = &after[..end];
        let preceded = text[..start].chars().next_back().is_some_and(is_name);
        let named = ["oomtrace_", "oomtrace:"]
            .iter()
            .any(|prefix| name.len() > prefix.len() && name.starts_with(prefix));
        if !preceded && named {
            names.insert(name);
        }
    }
    names
}

/// Every panel, rows' nested ones included.
fn collect_panels<'a>(panels: &'a Value, into: &mut Vec<&'a Value>) {
    for panel in panels.as_array().map_or(&[][..], Vec::as_slice) {
        into.push(panel);
        collect_panels(&panel["panels"], into);
    }
}

/// `promtool <command…> <files…>`.
fn promtool(command: &[&str], files: &[PathBuf]) -> anyhow::Result<Output> {
    Command::new("promtool")
        .args(command)
        .args(files)
        .output()
        .context("running promtool (from Debian's prometheus package)")
}

/// Pids of running processes with this command name.
fn running(comm: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|name| name.trim() == comm)
        })
        .collect()
}

fn read(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_read_from_each_alertname_and_its_expected_alerts() {
        let text = "
    alert_rule_test:
      - eval_time: 1m
        alertname: A
        exp_alerts: []
      - eval_time: 2m
        alertname: A
        exp_alerts:
          - exp_labels:
              alertname: not a case
      - eval_time: 3m
        alertname: B
        exp_alerts: [ ]
";
        assert_eq!(
            alert_cases(text),
            [
                ("A".to_owned(), false),
                ("A".to_owned(), true),
                ("B".to_owned(), false)
            ]
        );
    }

    #[test]
    fn metric_names_are_found_in_queries_and_nothing_else() {
        let text = r#"sum(increase(oomtrace_oom_kills_total{job="x"}[5m])) or
            oomtrace:oom_kills:increase1h, "title": "oomtrace: OOM kills", not_oomtrace_x,
            localhost/oomtrace:0.1.0 oomtrace::sink"#;
        assert_eq!(
            metric_names(text).into_iter().collect::<Vec<_>>(),
            [
                "oomtrace:0",
                "oomtrace::sink",
                "oomtrace:oom_kills:increase1h",
                "oomtrace_oom_kills_total"
            ]
        );
    }

    #[test]
    fn the_prometheus_rule_holds_the_groups_as_its_spec() {
        let rules = "# a header comment\ngroups:\n  - name: g\n    rules:\n      - record: r\n        expr: |\n          a\n\n          or b\n";
        let generated = prometheus_rule(rules).unwrap();
        let spec = generated.strip_prefix(PROMETHEUS_RULE_HEADER).unwrap();
        assert_eq!(
            spec,
            "  groups:\n    - name: g\n      rules:\n        - record: r\n          expr: |\n            a\n\n            or b\n"
        );
        assert!(prometheus_rule("rules: []\n").is_err());
    }
}
