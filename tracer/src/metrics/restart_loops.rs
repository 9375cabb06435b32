//! `oomtrace_restart_loop`: which containers are in an OOM restart loop right now.
//!
//! The explain stage flags a container at its 3rd OOM kill within the restart-loop window
//! (`--restart-loop-window`). The loop lasts while the kills go on: it ends once a whole
//! window passes without another kill of that container, and the gauge goes back to 0 then,
//! at the next scrape, with no timer in the agent. A container that loops again later is
//! flagged again by the explain stage, after as many kills as the first time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::labels::Names;

/// The containers flagged so far, by their (bounded) label set, with their last kill.
#[derive(Debug)]
pub(super) struct RestartLoops {
    /// The agent's `--restart-loop-window`.
    window: Duration,
    last_kills: HashMap<Names, Instant>,
}

impl RestartLoops {
    pub(super) fn new(window: Duration) -> Self {
        RestartLoops {
            window,
            last_kills: HashMap::new(),
        }
    }

    fn is_on(&self, last_kill: Instant, now: Instant) -> bool {
        now.saturating_duration_since(last_kill) <= self.window
    }

    /// An OOM kill of `names` at `now`; `flagged` when the explain stage flagged it as part of
    /// a restart loop.
    pub(super) fn kill(&mut self, names: &Names, flagged: bool, now: Instant) {
        let on = self
            .last_kills
            .get(names)
            .is_some_and(|last_kill| self.is_on(*last_kill, now));
        if flagged || on {
            self.last_kills.insert(names.clone(), now);
        }
    }

    /// Every container ever flagged, with 1 while its loop is on and 0 once it ended.
    pub(super) fn states(&self, now: Instant) -> impl Iterator<Item = (&Names, i64)> {
        self.last_kills
            .iter()
            .map(move |(names, last_kill)| (names, i64::from(self.is_on(*last_kill, now))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(6 * 3600);

    fn named(container: &str) -> Names {
        Names {
            container: container.to_owned(),
            ..Names::default()
        }
    }

    fn states(loops: &RestartLoops, now: Instant) -> Vec<(String, i64)> {
        let mut states: Vec<(String, i64)> = loops
            .states(now)
            .map(|(names, on)| (names.container.clone(), on))
            .collect();
        states.sort();
        states
    }

    #[test]
    fn a_loop_is_on_from_its_flag_until_a_window_passes_without_a_kill() {
        let start = Instant::now();
        let minutes = |m: u64| start + Duration::from_secs(m * 60);
        let mut loops = RestartLoops::new(WINDOW);
        loops.kill(&named("web"), false, minutes(0));
        loops.kill(&named("web"), false, minutes(1));
        assert_eq!(states(&loops, minutes(2)), [], "not flagged yet");
        loops.kill(&named("web"), true, minutes(2));
        assert_eq!(states(&loops, minutes(3)), [("web".to_owned(), 1)]);
        // Five hours later, no longer three kills in the window, but the kills go on.
        loops.kill(&named("web"), false, minutes(5 * 60));
        assert_eq!(
            states(&loops, minutes(5 * 60 + 6 * 60)),
            [("web".to_owned(), 1)],
            "a window after the last kill, to the minute"
        );
        assert_eq!(
            states(&loops, minutes(5 * 60 + 6 * 60 + 1)),
            [("web".to_owned(), 0)]
        );
        // A kill after the loop ended does not start it again: the explain stage's flag does.
        loops.kill(&named("web"), false, minutes(12 * 60));
        assert_eq!(states(&loops, minutes(12 * 60)), [("web".to_owned(), 0)]);
        loops.kill(&named("web"), true, minutes(13 * 60));
        assert_eq!(states(&loops, minutes(13 * 60)), [("web".to_owned(), 1)]);
    }

    #[test]
    fn containers_loop_on_their_own() {
        let start = Instant::now();
        let mut loops = RestartLoops::new(WINDOW);
        loops.kill(&named("web"), true, start);
        loops.kill(&named("db"), false, start);
        loops.kill(&named("db"), true, start + WINDOW);
        assert_eq!(
            states(&loops, start + WINDOW + Duration::from_secs(1)),
            [("db".to_owned(), 1), ("web".to_owned(), 0)]
        );
    }
}
