//! Prometheus metrics (`--metrics-addr`): counts of OOM kills and SIGKILLs per container, of
//! host-wide OOMs per trigger, the restart loops going on, what the agent lost or could not
//! name, and the agent's build, tier and start. deploy/prometheus alerts on them.
//!
//! [`Metrics`] holds the counters; the metrics sink (`sink::metrics`) feeds them from the same
//! attributed events as the other sinks, and [`http`] serves them at `GET /metrics` in the
//! Prometheus text format. Fleet-wide collection is the cluster's Prometheus's job: each agent
//! only exposes its own host.

pub(crate) mod http;
pub(crate) mod labels;
mod restart_loops;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use self::labels::{
    BuildLabels, FailureLabels, FilledLabels, KillLabels, LabelBudget, MAX_LABEL_SETS, Names,
    SigkillLabels, TriggerLabels,
};
use self::restart_loops::RestartLoops;
use crate::attribute::FailureReason;

/// What the metrics count of one OOM kill.
#[derive(Clone, Debug, PartialEq)]
pub struct KillFacts {
    pub victim: Names,
    /// `cgroup`, `host` or `unknown`.
    pub domain_kind: &'static str,
    pub main_process: Option<bool>,
    pub tier: &'static str,
    /// Who set off the OOM, when the host as a whole ran out of memory.
    pub host_trigger: Option<TriggerLabels>,
    /// When the victim was killed, in seconds since the Unix epoch.
    pub unix_seconds: f64,
    /// Whether the explain stage flagged this kill as part of a restart loop.
    pub restart_loop: bool,
    /// What no process holds filled the limit, where that led the verdict: `tmpfs`,
    /// `page_cache` or `kernel`.
    pub filled_by: Option<&'static str>,
}

/// The agent's counters, shared by the sink that feeds them and the server that shows them.
pub struct Metrics {
    registry: Registry,
    oom_kills: Family<KillLabels, Counter>,
    filled: Family<FilledLabels, Counter>,
    host_oom_kills: Family<TriggerLabels, Counter>,
    last_kill: Family<Names, Gauge<f64, AtomicU64>>,
    restart_loops: Arc<Mutex<RestartLoops>>,
    sigkills: Family<SigkillLabels, Counter>,
    sigkills_rate_limited: Counter,
    attribution_failures: Family<FailureLabels, Counter>,
    build_info: Family<BuildLabels, Gauge>,
    kill_labels: Mutex<LabelBudget<KillLabels>>,
    filled_labels: Mutex<LabelBudget<FilledLabels>>,
    /// For the last kill's time and the restart loops, both by the victim's names alone.
    victim_labels: Mutex<LabelBudget<Names>>,
    trigger_labels: Mutex<LabelBudget<TriggerLabels>>,
    sigkill_labels: Mutex<LabelBudget<SigkillLabels>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// `ringbuf_dropped` reads the kernel's count of records lost to a full ring buffer, at
    /// each scrape; `history_write_errors` is the history store's count of failed writes (0
    /// without one); a restart loop ends once `restart_loop_window` passes without a kill.
    pub fn new(
        ringbuf_dropped: ReadCounter,
        history_write_errors: Arc<AtomicU64>,
        restart_loop_window: Duration,
    ) -> Self {
        Self::with_label_cap(
            ringbuf_dropped,
            history_write_errors,
            restart_loop_window,
            MAX_LABEL_SETS,
        )
    }

    fn with_label_cap(
        ringbuf_dropped: ReadCounter,
        history_write_errors: Arc<AtomicU64>,
        restart_loop_window: Duration,
        cap: usize,
    ) -> Self {
        let mut registry = Registry::default();
        let oom_kills = Family::<KillLabels, Counter>::default();
        registry.register(
            "oomtrace_oom_kills",
            "OOM kills, by the victim's container, pod, namespace and Compose service, whose \
             memory ran out (cgroup, host, unknown), whether the victim was its container's \
             main process (true, false, unknown) and the capture tier",
            oom_kills.clone(),
        );
        let filled = Family::<FilledLabels, Counter>::default();
        registry.register(
            "oomtrace_oom_kills_filled_by",
            "OOM kills whose limit was filled, a quarter of it or more, by memory no process \
             holds, which killing a process does not free: tmpfs files (tmpfs), page cache the \
             kernel could not reclaim (page_cache) or the kernel's own memory (kernel); by the \
             victim's container, pod, namespace and Compose service",
            filled.clone(),
        );
        let host_oom_kills = Family::<TriggerLabels, Counter>::default();
        registry.register(
            "oomtrace_host_oom_kills",
            "OOM kills where the host as a whole ran out of memory, by the container, pod, \
             namespace and command of the task that set the OOM off",
            host_oom_kills.clone(),
        );
        let last_kill = Family::<Names, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "oomtrace_last_oom_kill_timestamp_seconds",
            "When the last OOM kill in each container happened, in seconds since the Unix epoch",
            last_kill.clone(),
        );
        let restart_loops = Arc::new(Mutex::new(RestartLoops::new(restart_loop_window)));
        registry.register_collector(Box::new(RestartLoopGauge(Arc::clone(&restart_loops))));
        let sigkills = Family::<SigkillLabels, Counter>::default();
        registry.register(
            "oomtrace_sigkills",
            "SIGKILLs other than the OOM killer's, by the target's container, pod and namespace \
             and whether the kernel or a process sent them",
            sigkills.clone(),
        );
        let sigkills_rate_limited = Counter::default();
        registry.register(
            "oomtrace_sigkills_rate_limited",
            "SIGKILLs logged but not counted in oomtrace_sigkills nor stored in the history: \
             their sender sent more than 100 at once or 10 a second",
            sigkills_rate_limited.clone(),
        );
        registry.register_collector(Box::new(CounterOf {
            name: "oomtrace_ringbuf_dropped",
            help: "Records the kernel could not write to the ring buffer because it was full.",
            read: ringbuf_dropped,
        }));
        let attribution_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "oomtrace_attribution_failures",
            "Cgroups named by their path only, by why: unrecognised_path, no_runtime, \
             runtime_absent, runtime_error, timeout, unknown_container",
            attribution_failures.clone(),
        );
        // Every reason from the start, so a rate over it is defined before the first failure.
        for reason in FailureReason::ALL {
            let _ = attribution_failures.get_or_create(&FailureLabels {
                reason: reason.as_str(),
            });
        }
        registry.register_collector(Box::new(CounterOf {
            name: "oomtrace_history_write_errors",
            help: "Writes to the history store that failed.",
            read: Box::new(move || history_write_errors.load(Ordering::Relaxed)),
        }));
        let build_info = Family::<BuildLabels, Gauge>::default();
        registry.register(
            "oomtrace_build_info",
            "1, labelled with the agent's version and capture tier",
            build_info.clone(),
        );
        let start_time = Gauge::<f64, AtomicU64>::default();
        start_time.set(unix_seconds(SystemTime::now()));
        registry.register(
            "oomtrace_start_time_seconds",
            "When the agent started, in seconds since the Unix epoch",
            start_time,
        );
        Metrics {
            registry,
            oom_kills,
            filled,
            host_oom_kills,
            last_kill,
            restart_loops,
            sigkills,
            sigkills_rate_limited,
            attribution_failures,
            build_info,
            kill_labels: Mutex::new(LabelBudget::new(cap)),
            filled_labels: Mutex::new(LabelBudget::new(cap)),
            victim_labels: Mutex::new(LabelBudget::new(cap)),
            trigger_labels: Mutex::new(LabelBudget::new(cap)),
            sigkill_labels: Mutex::new(LabelBudget::new(cap)),
        }
    }

    /// The agent runs, in this tier.
    pub fn started(&self, tier: &'static str) {
        self.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                tier,
            })
            .set(1);
    }

    /// One OOM kill, at `now` on the agent's monotonic clock (the restart loops' clock).
    pub fn oom_kill(&self, kill: KillFacts, now: Instant) {
        let KillFacts {
            victim,
            domain_kind,
            main_process,
            tier,
            host_trigger,
            unix_seconds,
            restart_loop,
            filled_by,
        } = kill;
        let labels = KillLabels {
            names: victim.clone(),
            domain_kind,
            main_process: labels::main_process(main_process),
            tier,
        };
        let labels = lock(&self.kill_labels).admit(labels.clone(), || KillLabels {
            names: Names::other(),
            ..labels
        });
        self.oom_kills.get_or_create(&labels).inc();
        if let Some(filled_by) = filled_by {
            let labels = FilledLabels {
                names: victim.clone(),
                filled_by,
            };
            let labels = lock(&self.filled_labels).admit(labels, || FilledLabels {
                names: Names::other(),
                filled_by,
            });
            self.filled.get_or_create(&labels).inc();
        }

        let victim = lock(&self.victim_labels).admit(victim, Names::other);
        self.last_kill.get_or_create(&victim).set(unix_seconds);
        lock(&self.restart_loops).kill(&victim, restart_loop, now);

        if let Some(trigger) = host_trigger {
            let trigger = lock(&self.trigger_labels)
                .admit(trigger, || TriggerLabels::new(Names::other(), ""));
            self.host_oom_kills.get_or_create(&trigger).inc();
        }
    }

    /// A SIGKILL not counted: its sender was flooding.
    pub fn sigkill_rate_limited(&self) {
        self.sigkills_rate_limited.inc();
    }

    pub fn sigkill(&self, names: Names, sender_kind: &'static str) {
        let labels = lock(&self.sigkill_labels).admit(SigkillLabels { names, sender_kind }, || {
            SigkillLabels {
                names: Names::other(),
                sender_kind,
            }
        });
        self.sigkills.get_or_create(&labels).inc();
    }

    pub fn attribution_failure(&self, reason: FailureReason) {
        self.attribution_failures
            .get_or_create(&FailureLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail, nor can the metrics registered above.
        if let Err(err) =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
        {
            log::error!("encoding the metrics: {err}");
        }
        text
    }
}

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// The name of every metric the agent exposes, as a scraper sees it (counters with `_total`):
/// what deploy/prometheus and deploy/grafana may query (`cargo xtask lint` checks them).
pub fn exposed_names() -> BTreeSet<String> {
    let metrics = Metrics::new(Box::new(|| 0), Arc::new(AtomicU64::new(0)), Duration::ZERO);
    // One event of each kind, so that every family has a sample to show.
    metrics.started("full");
    metrics.oom_kill(
        KillFacts {
            victim: Names::default(),
            domain_kind: "host",
            main_process: None,
            tier: "full",
            host_trigger: Some(TriggerLabels::new(Names::default(), "")),
            unix_seconds: 0.0,
            restart_loop: true,
            filled_by: Some("tmpfs"),
        },
        Instant::now(),
    );
    metrics.sigkill(Names::default(), "process");
    metrics
        .encode()
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|line| line.split(' ').next())
        .map(str::to_owned)
        .collect()
}

/// Seconds since the Unix epoch; 0 for a time before it.
pub fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

/// `oomtrace_restart_loop`, worked out at each scrape: a loop ends when a window passes
/// without a kill, whether or not anything else happens.
#[derive(Debug)]
struct RestartLoopGauge(Arc<Mutex<RestartLoops>>);

impl Collector for RestartLoopGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(
            "oomtrace_restart_loop",
            "1 while the container is in an OOM restart loop: flagged at its 3rd OOM kill \
             within the restart-loop window, 0 once a whole window passed without another",
            None,
            MetricType::Gauge,
        )?;
        let now = Instant::now();
        for (names, on) in lock(&self.0).states(now) {
            ConstGauge::new(on).encode(metric.encode_family(names)?)?;
        }
        Ok(())
    }
}

/// Reads a counter another part of the agent keeps.
pub type ReadCounter = Box<dyn Fn() -> u64 + Send + Sync>;

/// A counter read at each scrape.
struct CounterOf {
    name: &'static str,
    help: &'static str,
    read: ReadCounter,
}

impl std::fmt::Debug for CounterOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CounterOf")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Collector for CounterOf {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let counter = ConstCounter::new((self.read)());
        let metric =
            encoder.encode_descriptor(self.name, self.help, None, counter.metric_type())?;
        counter.encode(metric)
    }
}

#[cfg(test)]
mod tests;
