//! Which invocation of the OOM killer a kill belongs to, so that each invocation gets a snapshot
//! of its own moment and the kills of one `memory.oom.group` incident share one.
//!
//! Where `oom_kill_process` is hooked, the kernel says: the incident's id. Below that tier the
//! boundary is found from what the kernel gives with every victim: the trigger thread, the
//! capture time and the domain. One invocation marks all its victims from the trigger's thread,
//! in one loop that never sleeps; a second invocation by the same thread must first wait for a
//! victim of the first to exit. So kills by one trigger thread in one domain, each captured
//! within [`GROUP_GAP`] of the one before, are taken as one invocation; anything else starts a
//! new one.

use std::time::Duration;

use super::snapshot::Scope;

/// The largest gap between two victims of one invocation. Members of a `memory.oom.group`
/// are marked microseconds apart (tens of milliseconds where each kill's kernel log line goes
/// to a slow serial console); a new invocation by the same thread needs its earlier victim to
/// have exited first.
pub(crate) const GROUP_GAP: Duration = Duration::from_millis(50);

/// How many invocations are remembered: kills of invocations running at once on several CPUs
/// (in different domains) may arrive interleaved.
const REMEMBERED: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum InvocationKey {
    /// The kernel's own: the id of the `oom_kill_process` call.
    Incident(String),
    /// Inferred: the trigger's thread and the domain.
    Trigger { tid: u32, scope: Scope },
}

/// The recent invocations, each with what the first of its kills left (its snapshot).
pub(crate) struct Invocations<T> {
    recent: Vec<Recent<T>>,
}

struct Recent<T> {
    key: InvocationKey,
    /// The capture time of its latest kill.
    last_ktime_ns: u64,
    value: T,
}

impl<T: Clone> Invocations<T> {
    pub(crate) fn new() -> Self {
        Invocations { recent: Vec::new() }
    }

    /// What the invocation of a kill (`key`, captured at `ktime_ns`) already has, if the kill
    /// continues one; `None` when it starts a new invocation.
    pub(crate) fn continued(&mut self, key: &InvocationKey, ktime_ns: u64) -> Option<T> {
        let index = self.recent.iter().position(|recent| {
            recent.key == *key
                && match key {
                    InvocationKey::Incident(_) => true,
                    InvocationKey::Trigger { .. } => {
                        ktime_ns.abs_diff(recent.last_ktime_ns) <= GROUP_GAP.as_nanos() as u64
                    }
                }
        })?;
        let recent = &mut self.recent[index];
        recent.last_ktime_ns = recent.last_ktime_ns.max(ktime_ns);
        Some(recent.value.clone())
    }

    /// Remembers `value` for the invocation `key` (a kill of it captured at `ktime_ns`), unless
    /// it has a value already.
    pub(crate) fn keep(&mut self, key: InvocationKey, ktime_ns: u64, value: T) {
        if self.continued(&key, ktime_ns).is_none() {
            self.started(key, ktime_ns, value);
        }
    }

    /// Records the start of a new invocation, forgetting the oldest past [`REMEMBERED`].
    pub(crate) fn started(&mut self, key: InvocationKey, ktime_ns: u64, value: T) {
        // A key seen again after its gap is a new invocation: the old one is over.
        self.recent.retain(|recent| recent.key != key);
        if self.recent.len() == REMEMBERED {
            let oldest = self
                .recent
                .iter()
                .enumerate()
                .min_by_key(|(_, recent)| recent.last_ktime_ns)
                .map(|(index, _)| index);
            if let Some(oldest) = oldest {
                self.recent.swap_remove(oldest);
            }
        }
        self.recent.push(Recent {
            key,
            last_ktime_ns: ktime_ns,
            value,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn trigger(tid: u32, scope: &str) -> InvocationKey {
        InvocationKey::Trigger {
            tid,
            scope: Scope::Cgroup(scope.to_owned()),
        }
    }

    /// Records each kill the way the observer does: a new snapshot (its number) unless the
    /// kill continues an invocation. Returns the snapshot each kill got.
    fn snapshots(kills: &[(InvocationKey, u64)]) -> Vec<u32> {
        let mut invocations = Invocations::new();
        let mut taken = 0;
        kills
            .iter()
            .map(
                |(key, ktime_ns)| match invocations.continued(key, *ktime_ns) {
                    Some(snapshot) => snapshot,
                    None => {
                        taken += 1;
                        invocations.started(key.clone(), *ktime_ns, taken);
                        taken
                    }
                },
            )
            .collect()
    }

    #[test]
    fn the_kills_of_one_incident_share_a_snapshot_whatever_their_spacing() {
        let one = InvocationKey::Incident("100-7".to_owned());
        let two = InvocationKey::Incident("900-7".to_owned());
        assert_eq!(
            snapshots(&[
                (one.clone(), 100),
                (one.clone(), 100 + 300 * MS),
                (one, 100 + 2_000 * MS),
                (two, 100 + 2_001 * MS),
            ]),
            [1, 1, 1, 2]
        );
    }

    #[test]
    fn a_group_kill_from_one_trigger_shares_a_snapshot() {
        let key = trigger(7, "/pod");
        let kills: Vec<_> = (0..100).map(|i| (key.clone(), i * MS / 10)).collect();
        assert_eq!(snapshots(&kills), vec![1; 100]);
    }

    /// A restart loop: each start of the container is a new process and triggers its own OOM.
    #[test]
    fn kills_0_4_s_apart_are_separate_invocations() {
        assert_eq!(
            snapshots(&[
                (trigger(10, "/parent"), 0),
                (trigger(11, "/parent"), 400 * MS),
                (trigger(12, "/parent"), 800 * MS),
            ]),
            [1, 2, 3]
        );
        // The same trigger thread again, once its earlier victim is gone: a new invocation.
        assert_eq!(
            snapshots(&[
                (trigger(10, "/parent"), 0),
                (trigger(10, "/parent"), 400 * MS),
            ]),
            [1, 2]
        );
    }

    #[test]
    fn the_gap_is_counted_from_the_latest_kill_of_the_invocation() {
        let key = trigger(7, "/pod");
        let step = GROUP_GAP.as_nanos() as u64 - 1;
        assert_eq!(
            snapshots(&[
                (key.clone(), 0),
                (key.clone(), step),
                (key.clone(), 2 * step),
                (key, 3 * step + GROUP_GAP.as_nanos() as u64 + 1),
            ]),
            [1, 1, 1, 2]
        );
    }

    #[test]
    fn the_same_trigger_in_another_domain_is_another_invocation() {
        assert_eq!(
            snapshots(&[
                (trigger(7, "/a"), 0),
                (trigger(7, "/b"), MS),
                (
                    InvocationKey::Trigger {
                        tid: 7,
                        scope: Scope::Host
                    },
                    2 * MS
                ),
            ]),
            [1, 2, 3]
        );
    }

    /// Two invocations in different domains at once, their kills arriving interleaved.
    #[test]
    fn interleaved_invocations_each_keep_their_snapshot() {
        let a = InvocationKey::Incident("1-1".to_owned());
        let b = InvocationKey::Incident("2-2".to_owned());
        assert_eq!(
            snapshots(&[(a.clone(), 0), (b.clone(), 1), (a, 2), (b, 3)]),
            [1, 2, 1, 2]
        );
    }

    #[test]
    fn only_a_few_invocations_are_remembered() {
        let kills: Vec<_> = (0..=REMEMBERED as u32)
            .map(|i| (InvocationKey::Incident(i.to_string()), u64::from(i)))
            .chain([(InvocationKey::Incident("0".to_owned()), 99)])
            .collect();
        let taken = snapshots(&kills);
        // The first was forgotten to make room: its late kill gets a snapshot of its own.
        assert_eq!(taken.last(), Some(&(REMEMBERED as u32 + 2)));
    }
}
