//! Patterns across kills that one kill alone does not show: a container OOM-killed again and
//! again (`restart: always` hides that), and one trigger behind host-wide OOMs that kill
//! different victims each time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Kills remembered, whatever the window: memory stays bounded.
const MAX_REMEMBERED: usize = 4096;
/// A container killed this often within the window is in a restart loop.
pub(crate) const RESTART_LOOP_KILLS: u32 = 3;

/// What one kill adds to the history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The victim's container, by name: a restarted container gets a new id, not a new name.
    pub victim_container: Option<String>,
    /// The victim as a person would name it (container, else comm).
    pub victim: String,
    /// Set for host-wide OOMs only: who triggered it (container name, else comm).
    pub host_wide_trigger: Option<String>,
    /// The runtime's restart count of the victim's container at the kill, when it says.
    pub restart_count: Option<u32>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Flags {
    /// Kills of the same container within the window, this one included, when at least
    /// [`RESTART_LOOP_KILLS`].
    pub restart_loop: Option<u32>,
    /// Host-wide OOMs with this trigger and different victims within the window, this one
    /// included, when at least two.
    pub recurring_trigger: Option<u32>,
    /// With a restart loop, what the runtime did in it: how often it restarted the container
    /// since the loop's first kill in the window (its restart count then and now), and over
    /// how long.
    pub restarts: Option<Restarts>,
}

/// The runtime's restarts of a container between two of its kills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Restarts {
    pub count: u32,
    pub over: Duration,
}

pub(crate) struct Patterns {
    window: Duration,
    history: VecDeque<(Instant, Seen)>,
}

impl Patterns {
    pub(crate) fn new(window: Duration) -> Self {
        Patterns {
            window,
            history: VecDeque::new(),
        }
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Remembers `seen` and says which patterns it completes.
    pub(crate) fn record(&mut self, seen: Seen, now: Instant) -> Flags {
        while let Some((at, _)) = self.history.front() {
            if now.duration_since(*at) > self.window || self.history.len() >= MAX_REMEMBERED {
                self.history.pop_front();
            } else {
                break;
            }
        }
        let earlier: Vec<&(Instant, Seen)> = match &seen.victim_container {
            Some(name) => self
                .history
                .iter()
                .filter(|(_, old)| old.victim_container.as_ref() == Some(name))
                .collect(),
            None => Vec::new(),
        };
        let restart_loop = seen.victim_container.as_ref().and_then(|_| {
            let kills = u32::try_from(earlier.len() + 1).unwrap_or(u32::MAX);
            (kills >= RESTART_LOOP_KILLS).then_some(kills)
        });
        let restarts = restart_loop.and_then(|_| {
            let (first_at, first) = earlier.first()?;
            let count = seen.restart_count?.checked_sub(first.restart_count?)?;
            Some(Restarts {
                count,
                over: now.saturating_duration_since(*first_at),
            })
        });
        let recurring_trigger = seen.host_wide_trigger.as_ref().and_then(|trigger| {
            let mut victims: Vec<&str> = self
                .history
                .iter()
                .filter(|(_, old)| old.host_wide_trigger.as_ref() == Some(trigger))
                .map(|(_, old)| old.victim.as_str())
                .collect();
            victims.push(&seen.victim);
            victims.sort_unstable();
            victims.dedup();
            let count = u32::try_from(victims.len()).unwrap_or(u32::MAX);
            (count >= 2).then_some(count)
        });
        self.history.push_back((now, seen));
        Flags {
            restart_loop,
            recurring_trigger,
            restarts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_container(name: &str) -> Seen {
        Seen {
            victim_container: Some(name.to_owned()),
            victim: name.to_owned(),
            host_wide_trigger: None,
            restart_count: None,
        }
    }

    fn host_wide(victim: &str, trigger: &str) -> Seen {
        Seen {
            victim_container: Some(victim.to_owned()),
            victim: victim.to_owned(),
            host_wide_trigger: Some(trigger.to_owned()),
            restart_count: None,
        }
    }

    #[test]
    fn the_third_kill_of_a_container_is_a_restart_loop() {
        let start = Instant::now();
        let mut patterns = Patterns::new(Duration::from_secs(6 * 3600));
        let at = |minutes: u64| start + Duration::from_secs(minutes * 60);
        assert_eq!(
            patterns.record(in_container("web"), at(0)).restart_loop,
            None
        );
        assert_eq!(
            patterns.record(in_container("db"), at(1)).restart_loop,
            None
        );
        assert_eq!(
            patterns.record(in_container("web"), at(10)).restart_loop,
            None
        );
        assert_eq!(
            patterns.record(in_container("web"), at(20)).restart_loop,
            Some(3)
        );
        assert_eq!(
            patterns.record(in_container("web"), at(30)).restart_loop,
            Some(4)
        );
    }

    #[test]
    fn a_loop_says_how_often_the_runtime_restarted_it_in_between() {
        let start = Instant::now();
        let mut patterns = Patterns::new(Duration::from_secs(6 * 3600));
        let restarted = |count: u32| Seen {
            restart_count: Some(count),
            ..in_container("db")
        };
        let at = |millis: u64| start + Duration::from_millis(millis);
        assert_eq!(patterns.record(restarted(5), at(0)).restarts, None);
        assert_eq!(patterns.record(restarted(6), at(400)).restarts, None);
        let third = patterns.record(restarted(7), at(1_700));
        assert_eq!(
            third.restarts,
            Some(Restarts {
                count: 2,
                over: Duration::from_millis(1_700)
            })
        );
        // A runtime that does not count, or a count that went back (a manual start resets
        // Docker's): nothing is claimed.
        assert_eq!(
            patterns.record(in_container("db"), at(2_000)).restarts,
            None
        );
        assert_eq!(patterns.record(restarted(0), at(2_500)).restarts, None);
    }

    #[test]
    fn kills_outside_the_window_are_forgotten() {
        let start = Instant::now();
        let mut patterns = Patterns::new(Duration::from_secs(3600));
        patterns.record(in_container("web"), start);
        patterns.record(in_container("web"), start + Duration::from_secs(10));
        let later = start + Duration::from_secs(3 * 3600);
        assert_eq!(
            patterns.record(in_container("web"), later).restart_loop,
            None
        );
    }

    #[test]
    fn one_trigger_behind_host_wide_ooms_with_different_victims_recurs() {
        let start = Instant::now();
        let mut patterns = Patterns::new(Duration::from_secs(6 * 3600));
        let first = patterns.record(host_wide("db", "builder"), start);
        assert_eq!(first.recurring_trigger, None);
        // The same victim again is a restart loop's business, not a new victim.
        let same = patterns.record(host_wide("db", "builder"), start + Duration::from_secs(60));
        assert_eq!(same.recurring_trigger, None);
        let other = patterns.record(
            host_wide("cache", "builder"),
            start + Duration::from_secs(120),
        );
        assert_eq!(other.recurring_trigger, Some(2));
        // A limit hit inside a container is not host-wide: it does not count.
        let contained = patterns.record(in_container("cache"), start + Duration::from_secs(180));
        assert_eq!(contained.recurring_trigger, None);
    }

    #[test]
    fn memory_is_bounded() {
        let start = Instant::now();
        let mut patterns = Patterns::new(Duration::from_secs(u64::MAX / 4));
        for i in 0..MAX_REMEMBERED + 100 {
            patterns.record(in_container(&format!("c{i}")), start);
        }
        assert!(patterns.history.len() <= MAX_REMEMBERED);
    }
}
