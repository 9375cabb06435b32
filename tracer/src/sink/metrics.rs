//! Feeds the Prometheus counters ([`crate::metrics`]) from the attributed events. The ring
//! buffer's losses and the history store's failed writes are read at each scrape instead.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::{Context, Sink, Totals};
use crate::attribute::{AttributedKill, AttributedSigkill, Attribution, DomainKind};
use crate::incident::OomIncident;
use crate::metrics::labels::{Names, TriggerLabels, domain_kind};
use crate::metrics::{KillFacts, Metrics, unix_seconds};

pub struct MetricsSink {
    metrics: Arc<Metrics>,
}

impl MetricsSink {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        MetricsSink { metrics }
    }

    /// Each cgroup named by its path only counts once per event, though it may be the victim's,
    /// the trigger's and the domain's at once.
    fn failures<'a>(&self, parties: impl IntoIterator<Item = Option<&'a Attribution>>) {
        let mut seen = BTreeSet::new();
        for attribution in parties.into_iter().flatten() {
            if let Some(warning) = &attribution.warning
                && seen.insert(attribution.path.as_str())
            {
                self.metrics.attribution_failure(warning.reason);
            }
        }
    }
}

impl Sink for MetricsSink {
    fn started(&mut self, context: &Context<'_>) -> std::io::Result<()> {
        self.metrics.started(context.plan.tier.as_str());
        Ok(())
    }

    fn oom_kill(&mut self, kill: &AttributedKill, context: &Context<'_>) -> std::io::Result<()> {
        // An exiting task given memory reserves was marked, not killed.
        if kill.kill.marked_without_kill {
            return Ok(());
        }
        self.metrics
            .oom_kill(kill_facts(kill, context), Instant::now());
        self.failures([
            kill.victim.as_ref(),
            kill.trigger.as_ref(),
            kill.domain.attribution.as_ref(),
        ]);
        Ok(())
    }

    fn oom_incident(&mut self, _: &OomIncident, _: &Context<'_>) -> std::io::Result<()> {
        Ok(())
    }

    fn sigkill(&mut self, sigkill: &AttributedSigkill, _: &Context<'_>) -> std::io::Result<()> {
        self.metrics.sigkill(
            Names::of(sigkill.target.as_ref()),
            sigkill.sigkill.sender_kind.as_str(),
        );
        self.failures([sigkill.target.as_ref(), sigkill.sender.as_ref()]);
        Ok(())
    }

    fn stopped(&mut self, _: &Totals, _: &Context<'_>) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the metrics count of `kill`.
fn kill_facts(kill: &AttributedKill, context: &Context<'_>) -> KillFacts {
    let killed_at = SystemTime::from(context.clock.wall_time(kill.kill.ktime_ns));
    KillFacts {
        victim: Names::of(kill.victim.as_ref()),
        domain_kind: domain_kind(kill.domain.kind),
        main_process: kill.main_process,
        tier: context.plan.tier.as_str(),
        host_trigger: (kill.domain.kind == DomainKind::Host).then(|| {
            TriggerLabels::new(
                Names::of(kill.trigger.as_ref()),
                &kill.kill.trigger.task.comm,
            )
        }),
        unix_seconds: unix_seconds(killed_at),
        restart_loop: kill
            .explanation
            .as_ref()
            .is_some_and(|explanation| explanation.flags.restart_loop.is_some()),
    }
}
