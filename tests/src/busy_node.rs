//! A busy node's limited cgroups, for the memory timeline's tests: many memory cgroups with a
//! limit each, each with a small process, and one chosen cgroup whose process waits to grow.

use crate::{Hog, MemoryCgroup, hog_binary};

/// `count` memory cgroups with a limit each. All but the first hold a small process; the
/// first's process (the grower, returned beside it) waits for [`Hog::release`], so its cgroup
/// is among the emptiest when the agent starts.
pub struct BusyNode {
    /// The first is the chosen one, the grower's.
    pub cgroups: Vec<MemoryCgroup>,
    small: Vec<Hog>,
}

impl BusyNode {
    /// Each of the others holds `small_mib` (`--max-mib`), and the grower, once released, grows
    /// at `grower_mib_per_second` (`--mib-per-second`).
    pub fn start(
        count: usize,
        limit_bytes: u64,
        small_mib: &str,
        grower_mib_per_second: &str,
    ) -> (Self, Hog) {
        assert!(count >= 2, "a busy node needs the chosen cgroup and others");
        let hog_binary = hog_binary();
        let cgroups: Vec<MemoryCgroup> = (0..count)
            .map(|_| MemoryCgroup::create(limit_bytes))
            .collect();
        let small = cgroups[1..]
            .iter()
            .map(|cgroup| {
                let mut hog =
                    Hog::spawn_with(&hog_binary, cgroup, &["--hold", "--max-mib", small_mib]);
                hog.wait_holding();
                hog
            })
            .collect();
        let grower = Hog::spawn_held_with(
            &hog_binary,
            &cgroups[0],
            &["--mib-per-second", grower_mib_per_second],
        );
        (BusyNode { cgroups, small }, grower)
    }

    /// The grower's cgroup path.
    pub fn chosen_path(&self) -> String {
        self.cgroups[0].path()
    }

    /// Stops the small processes and removes every cgroup (on drop too, if a test fails
    /// first); the grower is the test's.
    pub fn remove(self) {
        let BusyNode { cgroups, small } = self;
        drop(small);
        for mut cgroup in cgroups {
            cgroup.remove();
        }
    }
}
