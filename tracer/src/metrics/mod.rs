//! Prometheus metrics (`--metrics-addr`): counts of OOM kills and SIGKILLs per container, of
//! what the agent lost or could not name, and the agent's build and tier.
//!
//! [`Metrics`] holds the counters; the metrics sink (`sink::metrics`) feeds them from the same
//! attributed events as the other sinks, and [`http`] serves them at `GET /metrics` in the
//! Prometheus text format. Fleet-wide collection is the cluster's Prometheus's job: each agent
//! only exposes its own host.

pub mod http;
pub mod labels;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use self::labels::{
    BuildLabels, FailureLabels, KillLabels, LabelBudget, MAX_LABEL_SETS, Names, SigkillLabels,
};
use crate::attribute::FailureReason;

/// The agent's counters, shared by the sink that feeds them and the server that shows them.
pub struct Metrics {
    registry: Registry,
    oom_kills: Family<KillLabels, Counter>,
    sigkills: Family<SigkillLabels, Counter>,
    attribution_failures: Family<FailureLabels, Counter>,
    build_info: Family<BuildLabels, Gauge>,
    kill_labels: Mutex<LabelBudget<KillLabels>>,
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
    /// without one).
    pub fn new(ringbuf_dropped: ReadCounter, history_write_errors: Arc<AtomicU64>) -> Self {
        Self::with_label_cap(ringbuf_dropped, history_write_errors, MAX_LABEL_SETS)
    }

    fn with_label_cap(
        ringbuf_dropped: ReadCounter,
        history_write_errors: Arc<AtomicU64>,
        cap: usize,
    ) -> Self {
        let mut registry = Registry::default();
        let oom_kills = Family::<KillLabels, Counter>::default();
        registry.register(
            "oomtrace_oom_kills",
            "OOM kills, by the victim's container, pod and namespace, whose memory ran out \
             (cgroup, host, unknown) and the capture tier",
            oom_kills.clone(),
        );
        let sigkills = Family::<SigkillLabels, Counter>::default();
        registry.register(
            "oomtrace_sigkills",
            "SIGKILLs other than the OOM killer's, by the target's container, pod and namespace \
             and whether the kernel or a process sent them",
            sigkills.clone(),
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
        Metrics {
            registry,
            oom_kills,
            sigkills,
            attribution_failures,
            build_info,
            kill_labels: Mutex::new(LabelBudget::new(cap)),
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

    pub fn oom_kill(&self, names: Names, domain_kind: &'static str, tier: &'static str) {
        let labels = lock(&self.kill_labels).admit(names, |names| KillLabels {
            container: names.container,
            pod: names.pod,
            namespace: names.namespace,
            domain_kind,
            tier,
        });
        self.oom_kills.get_or_create(&labels).inc();
    }

    pub fn sigkill(&self, names: Names, sender_kind: &'static str) {
        let labels = lock(&self.sigkill_labels).admit(names, |names| SigkillLabels {
            container: names.container,
            pod: names.pod,
            namespace: names.namespace,
            sender_kind,
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
