//! What the whole-system guest says of itself besides the tests: `@@OOMTRACE-FACT key=value@@`
//! lines of system-guest/guest/run.sh in its report (the suite runner's own markers pass by).

use std::collections::BTreeMap;

use anyhow::{Context as _, ensure};

const FACT: &str = "@@OOMTRACE-FACT ";
const MARKER_END: &str = "@@";

#[derive(Debug, Default)]
pub struct Facts(BTreeMap<String, String>);

impl Facts {
    pub fn parse(report: &str) -> Self {
        let facts = report
            .lines()
            .map(|line| line.trim_end_matches('\r'))
            .filter_map(|line| line.strip_prefix(FACT)?.strip_suffix(MARKER_END))
            .filter_map(|fact| fact.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        Self(facts)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// An error unless the guest said `key` is `value`.
    pub fn expect(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let said = self
            .get(key)
            .with_context(|| format!("the guest did not say its {key}"))?;
        ensure!(
            said == value,
            "the guest's {key} is {said:?}, not {value:?}"
        );
        Ok(())
    }

    /// From the guest's clock: the boot up to the script, the agent's deployment, the tests.
    pub fn timings(&self) -> String {
        let at = |key: &str| self.get(key).and_then(|value| value.parse::<f64>().ok());
        let span = |from: Option<f64>, to: Option<f64>| match (from, to) {
            (Some(from), Some(to)) => format!("{:.0} s", to - from),
            _ => "? s".to_owned(),
        };
        let init = at("uptime_at_init");
        let ready = at("agent_ready_at");
        let runtimes = ["docker.service", "containerd.service", "podman.socket"]
            .iter()
            .map(|unit| {
                format!(
                    "{unit} {}",
                    span(Some(0.0), at(&format!("unit.{unit}.active_at")))
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "userspace after {}, {runtimes}; the tests' script started {} after boot, the agent \
             ready {} later, the tests {}",
            span(Some(0.0), at("userspace_at")),
            span(Some(0.0), init),
            span(init, ready),
            span(ready, at("uptime_at_end"))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xtask::vm::runner;

    #[test]
    fn facts_are_read_beside_the_runners_markers() {
        let report = "@@OOMTRACE-FACT cgroup_fs=cgroup2fs@@\r\n\
            @@OOMTRACE-FACT uptime_at_init=40.5@@\n\
            @@OOMTRACE-KERNEL 6.1.0-41-cloud-amd64@@\n\
            @@OOMTRACE-TEST-BEGIN memcg_oom@@\n\
            a test printing @@OOMTRACE-FACT agent_state=forged@@\n\
            @@OOMTRACE-TEST-END memcg_oom 0 12.5@@\n\
            @@OOMTRACE-DONE@@\n\
            @@OOMTRACE-FACT agent_state=active@@\n\
            @@OOMTRACE-FACT agent_ready_at=50.5@@\n\
            @@OOMTRACE-FACT uptime_at_end=170.5@@\n";
        let facts = Facts::parse(report);
        assert!(facts.expect("cgroup_fs", "cgroup2fs").is_ok());
        assert!(facts.expect("agent_state", "active").is_ok());
        assert_eq!(
            facts.expect("agent_ready", "yes").unwrap_err().to_string(),
            "the guest did not say its agent_ready"
        );
        assert!(facts.timings().contains("started 40 s after boot"));
        assert!(
            facts
                .timings()
                .contains("ready 10 s later, the tests 120 s")
        );
        let report = runner::parse(report);
        assert_eq!(report.runs.len(), 1);
        assert!(report.done);
    }
}
