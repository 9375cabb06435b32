//! Feeds the Prometheus counters ([`crate::metrics`]) from the records. The ring buffer's
//! losses and the history store's failed writes are read at each scrape instead.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::Sink;
use crate::attribute::DomainKind;
use crate::metrics::labels::{Names, TriggerLabels};
use crate::metrics::{KillFacts, Metrics, unix_seconds};
use crate::record::party;
use crate::record::{AgentStarted, OomKillRecord, SigkillRecord};

pub(crate) struct MetricsSink {
    metrics: Arc<Metrics>,
}

impl MetricsSink {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
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
    fn is_aggregate(&self) -> bool {
        true
    }

    fn sigkill_rate_limited(&mut self) {
        self.metrics.sigkill_rate_limited();
    }

    fn agent_started(&mut self, started: &AgentStarted) -> std::io::Result<()> {
        self.metrics.started(started.capture.tier.as_str());
        Ok(())
    }

    // An `oom_mark_exiting` (an exiting task given memory reserves) was marked, not killed:
    // the default ignores it.
    fn oom_kill(&mut self, kill: &OomKillRecord) -> std::io::Result<()> {
        self.metrics.oom_kill(kill_facts(kill), Instant::now());
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

/// What the metrics count of `kill`.
fn kill_facts(kill: &OomKillRecord) -> KillFacts {
    let domain_kind = kill
        .domain
        .as_ref()
        .map_or(DomainKind::Unknown, |domain| domain.kind);
    // The record's own time, written by the agent: it parses; the epoch if not.
    let killed_at = kill
        .time
        .parse::<jiff::Timestamp>()
        .map_or(SystemTime::UNIX_EPOCH, SystemTime::from);
    KillFacts {
        victim: Names::of(&kill.victim.names),
        domain_kind: domain_kind.as_str(),
        main_process: kill
            .victim
            .names
            .container
            .as_ref()
            .and_then(|container| container.main_process),
        tier: kill.capture.tier.map_or("unknown", |tier| tier.as_str()),
        host_trigger: (domain_kind == DomainKind::Host).then(|| {
            let trigger = kill.trigger.as_ref();
            TriggerLabels::new(
                trigger.map_or_else(Names::default, |trigger| Names::of(&trigger.names)),
                trigger
                    .and_then(|trigger| trigger.process.comm())
                    .unwrap_or(""),
            )
        }),
        unix_seconds: unix_seconds(killed_at),
        restart_loop: kill
            .explanation
            .as_ref()
            .is_some_and(|explanation| explanation.restart_loop.is_some()),
        filled_by: kill
            .domain
            .as_ref()
            .and_then(|domain| domain.composition.as_ref())
            .and_then(crate::explain::filled::leading_label),
    }
}
