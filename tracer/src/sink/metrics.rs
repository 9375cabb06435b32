//! Feeds the Prometheus counters ([`crate::metrics`]) from the records. The ring buffer's
//! losses and the history store's failed writes are read at each scrape instead.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::Sink;
use crate::attribute::DomainKind;
use crate::metrics::Metrics;
use crate::metrics::labels::Names;
use crate::record::party;
use crate::record::{AgentStarted, OomKillRecord, SigkillRecord};

pub struct MetricsSink {
    metrics: Arc<Metrics>,
}

impl MetricsSink {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        MetricsSink { metrics }
    }

    /// Each cgroup named by its path only counts once per record, though it may be the
    /// victim's, the trigger's and the domain's at once.
    fn failures<'a>(&self, parties: impl IntoIterator<Item = &'a party::Names>) {
        let mut seen = BTreeSet::new();
        for attribution in parties
            .into_iter()
            .filter_map(|names| names.attribution.as_ref())
        {
            if let Some(reason) = attribution.reason
                && seen.insert(attribution.path.as_str())
            {
                self.metrics.attribution_failure(reason);
            }
        }
    }
}

impl Sink for MetricsSink {
    fn agent_started(&mut self, started: &AgentStarted) -> std::io::Result<()> {
        self.metrics.started(started.capture.tier.as_str());
        Ok(())
    }

    // An `oom_mark_exiting` (an exiting task given memory reserves) was marked, not killed:
    // the default ignores it.
    fn oom_kill(&mut self, kill: &OomKillRecord) -> std::io::Result<()> {
        self.metrics.oom_kill(
            Names::of(&kill.victim.names),
            kill.domain
                .as_ref()
                .map_or(DomainKind::Unknown, |domain| domain.kind)
                .as_str(),
            kill.capture.tier.map_or("unknown", |tier| tier.as_str()),
        );
        self.failures(
            [Some(&kill.victim), kill.trigger.as_ref()]
                .into_iter()
                .flatten()
                .map(|party| &party.names)
                .chain(kill.domain.as_ref().map(|domain| &domain.names)),
        );
        Ok(())
    }

    fn sigkill(&mut self, sigkill: &SigkillRecord) -> std::io::Result<()> {
        self.metrics.sigkill(
            Names::of(&sigkill.target.names),
            sigkill.sender.kind.as_str(),
        );
        self.failures([&sigkill.target.names, &sigkill.sender.party.names]);
        Ok(())
    }
}
