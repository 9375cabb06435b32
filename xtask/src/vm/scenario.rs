//! Scenarios: a shell script the guest runs, and a check of what it printed.
//!
//! The protocol, between the guest's /init (`xtask/vm/init.sh`) and [`Report::parse`]:
//!
//! * /init runs `/scenarios/NAME.sh` in `/out` (also in `$OUT`), under a time limit. Every file
//!   the script leaves in `/out` becomes a section of that name. By convention `facts` holds
//!   `key=value` lines, `agent-json` the agent's stdout and `agent-log` its stderr.
//! * /init adds the facts `kernel` (`uname -r`), `scenario`, `scenario_status` (the script's
//!   exit status), `uptime_at_init` and `uptime_at_end`, and the section `kmsg` (dmesg).
//! * On the console, each section is a line `@@OOMTRACE-BEGIN NAME@@`, the file's lines, and
//!   `@@OOMTRACE-END NAME@@`; `@@OOMTRACE-DONE@@` follows the last one. The kernel's console
//!   logging is turned down first, so nothing interleaves.
//!
//! A new scenario is a script in `xtask/vm/scenarios/` plus an entry in [`SCENARIOS`].

mod host_oom;
mod kmsg;
mod lead_up;
mod memcg_oom;
pub mod oom_burst;
mod oom_group;

use std::{collections::BTreeMap, fmt::Write as _, str::FromStr, time::Duration};

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;

pub const INIT_MARKER: &str = "@@OOMTRACE-INIT@@";
pub const DONE_MARKER: &str = "@@OOMTRACE-DONE@@";
const BEGIN: (&str, &str) = ("@@OOMTRACE-BEGIN ", "@@");
const END: (&str, &str) = ("@@OOMTRACE-END ", "@@");
/// How much of a long section an error shows: its end, where the interesting part usually is.
const DUMP_TAIL_LINES: usize = 40;

pub struct Scenario {
    /// Also the script's name: `xtask/vm/scenarios/NAME.sh`.
    pub name: &'static str,
    pub script: &'static str,
    /// Judges the guest's report; the error says what was wrong.
    pub check: fn(&Report) -> anyhow::Result<()>,
}

pub const SCENARIOS: &[Scenario] = &[
    memcg_oom::SCENARIO,
    memcg_oom::KPROBE_SCENARIO,
    memcg_oom::NO_FUNCTION_TRACING_SCENARIO,
    oom_group::SCENARIO,
    host_oom::SCENARIO,
    oom_burst::SCENARIO,
    lead_up::SCENARIO,
];

/// Helpers every scenario script sources.
pub const LIB_SCRIPT: &str = include_str!("../../vm/scenarios/lib.sh");

pub fn select(filter: Option<&str>) -> anyhow::Result<Vec<&'static Scenario>> {
    let Some(filter) = filter else {
        return Ok(SCENARIOS.iter().collect());
    };
    match SCENARIOS.iter().find(|scenario| scenario.name == filter) {
        Some(scenario) => Ok(vec![scenario]),
        None => {
            let names: Vec<_> = SCENARIOS.iter().map(|scenario| scenario.name).collect();
            bail!(
                "no scenario {filter:?}; known scenarios: {}",
                names.join(", ")
            )
        }
    }
}

/// The sections a guest printed.
pub struct Report {
    sections: BTreeMap<String, String>,
    facts: BTreeMap<String, String>,
}

impl Report {
    pub fn parse(console: &str) -> anyhow::Result<Self> {
        let sections = parse_sections(console)?;
        let facts = match sections.get("facts") {
            Some(facts) => parse_facts(facts),
            None => bail!("the guest printed no `facts` section"),
        };
        Ok(Self { sections, facts })
    }

    pub fn section(&self, name: &str) -> anyhow::Result<&str> {
        self.sections
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("the guest printed no `{name}` section"))
    }

    pub fn fact<T>(&self, key: &str) -> anyhow::Result<T>
    where
        T: FromStr,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        let value = self
            .facts
            .get(key)
            .with_context(|| format!("no fact `{key}` in the guest's facts"))?;
        value
            .parse()
            .with_context(|| format!("fact `{key}={value}`"))
    }

    /// The agent's JSON lines, in order.
    pub fn agent_records(&self) -> anyhow::Result<Records> {
        self.section("agent-json")?
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line).with_context(|| format!("agent output line {line:?}"))
            })
            .collect::<anyhow::Result<_>>()
            .map(Records)
    }

    /// What every scenario must get right: the kernel booted is the one meant, and the script
    /// ran to its end.
    pub fn check_common(&self, kernel_version: &str) -> anyhow::Result<()> {
        let booted: String = self.fact("kernel")?;
        ensure!(
            booted == kernel_version,
            "the guest runs kernel {booted}, not {kernel_version}"
        );
        let status: i32 = self.fact("scenario_status")?;
        ensure!(
            status == 0,
            "the scenario script failed with status {status}{}",
            if status == 143 {
                " (its time limit)"
            } else {
                ""
            }
        );
        Ok(())
    }

    /// The capture tier the agent announced, if it started.
    pub fn tier(&self) -> Option<String> {
        let records = self.agent_records().ok()?;
        let started = records.of_kind("agent_started").into_iter().next()?;
        Some(field(started, "capture.tier").ok()?.as_str()?.to_owned())
    }

    /// The scenario script's run time, by the guest's clock.
    pub fn scenario_time(&self) -> Option<Duration> {
        let start: f64 = self.fact("uptime_at_init").ok()?;
        let end: f64 = self.fact("uptime_at_end").ok()?;
        Duration::try_from_secs_f64(end - start).ok()
    }

    /// Every section, long ones cut to their end: the context of a failed check.
    pub fn dump(&self) -> String {
        let mut text = String::from("what the guest reported:");
        for (name, contents) in &self.sections {
            let lines: Vec<&str> = contents.lines().collect();
            let start = lines.len().saturating_sub(DUMP_TAIL_LINES);
            let _ = write!(text, "\n--- {name}");
            if start > 0 {
                let _ = write!(text, " (last {DUMP_TAIL_LINES} of {} lines)", lines.len());
            }
            text.push_str(" ---");
            for line in &lines[start..] {
                text.push('\n');
                text.push_str(line);
            }
        }
        text
    }
}

fn parse_sections(console: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut sections = BTreeMap::new();
    let mut open: Option<(String, String)> = None;
    for line in console.lines().map(|line| line.trim_end_matches('\r')) {
        match open.take() {
            None => {
                if let Some(name) = marker(line, BEGIN) {
                    open = Some((name.to_owned(), String::new()));
                }
            }
            Some((name, contents)) if marker(line, END) == Some(name.as_str()) => {
                sections.insert(name, contents);
            }
            Some((name, mut contents)) => {
                contents.push_str(line);
                contents.push('\n');
                open = Some((name, contents));
            }
        }
    }
    if let Some((name, _)) = open {
        bail!("the console ends inside section `{name}`");
    }
    Ok(sections)
}

fn marker<'a>(line: &'a str, (prefix, suffix): (&str, &str)) -> Option<&'a str> {
    line.strip_prefix(prefix)?.strip_suffix(suffix)
}

fn parse_facts(facts: &str) -> BTreeMap<String, String> {
    facts
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect()
}

pub struct Records(Vec<Value>);

impl Records {
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.0
            .iter()
            .filter(|record| record["kind"] == kind)
            .collect()
    }

    /// The agent's `agent_started` record.
    pub fn started(&self) -> anyhow::Result<&Value> {
        self.of_kind("agent_started")
            .first()
            .copied()
            .context("no agent_started record")
    }

    /// The one record of `kind`; an error if there are none or more.
    pub fn only(&self, kind: &str) -> anyhow::Result<&Value> {
        match self.of_kind(kind).as_slice() {
            [only] => Ok(only),
            all => bail!("expected exactly one `{kind}` record, got {}", all.len()),
        }
    }
}

/// The value at a dotted path, e.g. `victim.process.pid`.
pub fn field<'a>(record: &'a Value, path: &str) -> anyhow::Result<&'a Value> {
    path.split('.').try_fold(record, |value, key| {
        value
            .get(key)
            .with_context(|| format!("no `{path}` in record {record}"))
    })
}

/// Fails unless the value at `path` is `expected`.
pub fn expect_field(record: &Value, path: &str, expected: impl Into<Value>) -> anyhow::Result<()> {
    let expected = expected.into();
    let actual = field(record, path)?;
    ensure!(
        *actual == expected,
        "`{path}` is {actual}, expected {expected}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "[    0.1] boot noise\r\n\
        @@OOMTRACE-BEGIN facts@@\r\n\
        hog_pid=42\r\n\
        kernel=6.1.0-1-cloud-amd64\r\n\
        @@OOMTRACE-END facts@@\r\n\
        @@OOMTRACE-BEGIN agent-json@@\r\n\
        {\"kind\":\"agent_started\",\"capture\":{\"tier\":\"no-function-tracing\"}}\r\n\
        @@OOMTRACE-END agent-json@@\r\n\
        @@OOMTRACE-DONE@@\r\n";

    #[test]
    fn sections_and_facts_come_out_of_the_console() {
        let report = Report::parse(CONSOLE).unwrap();
        assert_eq!(report.fact::<u32>("hog_pid").unwrap(), 42);
        assert_eq!(report.tier().as_deref(), Some("no-function-tracing"));
        assert!(report.section("kmsg").is_err());
    }

    #[test]
    fn a_cut_off_section_is_an_error() {
        let cut = &CONSOLE[..CONSOLE.find("@@OOMTRACE-END agent-json").unwrap()];
        let err = Report::parse(cut).err().unwrap();
        assert!(format!("{err}").contains("agent-json"), "{err}");
    }
}
