//! `oomtrace check`: what this host gives oomtrace, and what follows, without attaching anything.
//! The first thing to run on a node before rolling out the agent, and on the one node where it
//! behaves differently.
//!
//! It takes `run`'s options and asks what `run` would ask, through the same code: each program
//! is loaded (and unloaded) by the capture stage in its load-only mode, so the tier and its
//! reason are the very ones `run` reports in `agent_started`; the runtimes are the ones the
//! attribute stage would watch, each connected once, after the capabilities are dropped as
//! `run` drops them. Nothing is attached, no history is created, no port stays bound.

mod probes;
pub mod table;

use serde::{Deserialize, Serialize};

use crate::capture::{Capture, CaptureOptions, KernelFacts, Mode, Tier, privileges};
use crate::cli::RunArgs;
use crate::record::agent::CaptureInfo;

/// The answer, as `--format json` writes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Whether `oomtrace run` with these options would trace OOM kills here.
    pub can_trace: bool,
    /// What `run` would attach, and why that much: `agent_started`'s `capture`, to the letter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureInfo>,
    /// Why nothing could be loaded, when nothing could.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture_error: Option<String>,
    /// Each thing looked at, in the order a reader needs them.
    pub checks: Vec<Check>,
}

/// One thing looked at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// A stable name for tooling: `privileges`, `mark_victim` (tracefs and the tracepoint),
    /// `btf`, `oom_kill_process`, `victim_task`, `sigkill`, `kernel_log`, `cgroups`,
    /// `timeline`, `runtime`, `history`, `log_target`, `metrics`.
    pub id: String,
    /// What, for people: `kernel BTF`, `the Docker API at /var/run/docker.sock`.
    pub name: String,
    pub status: Status,
    /// What was found.
    pub found: String,
    /// What follows for oomtrace's answers, where that is not obvious.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consequence: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// There, and used in full.
    Ok,
    /// There in part, or not there: oomtrace runs and knows less.
    Limited,
    /// Not on this host, and nothing asked for it: nothing is lost.
    Absent,
    /// `run` would stop here.
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Limited => "limited",
            Status::Absent => "absent",
            Status::Failed => "failed",
        }
    }
}

impl Check {
    fn new(id: &str, name: impl Into<String>, status: Status, found: impl Into<String>) -> Self {
        Check {
            id: id.to_owned(),
            name: name.into(),
            status,
            found: found.into(),
            consequence: None,
        }
    }

    fn then(mut self, consequence: impl Into<String>) -> Self {
        self.consequence = Some(consequence.into());
        self
    }
}

/// Looks at everything `run` with `args` would use.
pub async fn check(args: &RunArgs) -> Report {
    let mut checks = Vec::new();
    let privileged = probes::privileges(&mut checks);
    let facts = KernelFacts::read(args.max_tier);
    probes::kernel_facts(&facts, &mut checks);
    let loadable = privileged && facts.mark_victim.is_ok();
    let (capture, capture_error) = if loadable {
        privileges::raise_memlock_limit();
        let options = CaptureOptions {
            max_tier: args.max_tier,
            function_hook: args.function_hook,
            ringbuf_bytes: args.ringbuf_size.0,
        };
        // Loaded, never attached; dropped (unloaded) at once.
        match Capture::load(facts, options, Mode::LoadOnly) {
            Ok(capture) => (
                Some(crate::record::build::capture_info(&capture.plan)),
                None,
            ),
            Err(err) => (None, Some(format!("{err:#}"))),
        }
    } else {
        let why = match &facts.mark_victim {
            Err(why) => why.clone(),
            Ok(_) => "the capabilities to load eBPF programs are missing".to_owned(),
        };
        (None, Some(why))
    };
    if let Some(capture) = &capture {
        probes::capture(capture, &mut checks);
    }
    // Read with the capabilities, as `run` reads them before it drops them.
    probes::kernel_log(&mut checks);
    probes::cgroups(&mut checks);
    probes::timeline(args, &mut checks);
    // `run` drops every capability once attached, then connects to the runtimes, opens the
    // history and binds the metrics address: so does the check, to get the same answers (a
    // socket root may use only with CAP_DAC_OVERRIDE, a port below 1024).
    if privileged && let Err(err) = privileges::drop_after_attach(|| Ok(())) {
        checks.push(
            Check::new(
                "privileges",
                "capabilities after attach",
                Status::Limited,
                format!("{err:#}"),
            )
            .then("what follows was looked at with the capabilities run drops"),
        );
    }
    probes::runtimes(args, &mut checks).await;
    probes::history(args, &mut checks);
    probes::log_target(args, &mut checks);
    probes::metrics(args, &mut checks);
    let can_trace = capture.is_some() && !checks.iter().any(|check| check.status == Status::Failed);
    Report {
        can_trace,
        capture,
        capture_error,
        checks,
    }
}

/// The tier in words, for the table's first line.
pub fn tier_words(tier: Tier) -> &'static str {
    match tier {
        Tier::Full => "everything: the OOM domain, the victim chosen, the kernel's badness",
        Tier::NoFunctionTracing => {
            "victim and trigger with their cgroups and memory; whose limit was hit is inferred"
        }
        Tier::TracepointOnly => "the victim's pid (and what the tracepoint carries); no cgroups",
    }
}
