//! The agent protects itself: it exists to report OOM kills, so it must not be one.

use std::io::ErrorKind;

/// Sets this process's `oom_score_adj`. -1000 (the default) means the OOM killer never picks
/// the agent. Lowering it needs CAP_SYS_RESOURCE; without it the agent still runs, and says so.
pub(crate) fn set_oom_score_adj(adj: i16) {
    match std::fs::write("/proc/self/oom_score_adj", adj.to_string()) {
        Ok(()) => log::debug!("oom_score_adj set to {adj}"),
        Err(err) if err.kind() == ErrorKind::PermissionDenied => log::warn!(
            "could not set this agent's oom_score_adj to {adj} (lowering it needs \
             CAP_SYS_RESOURCE): a host-wide OOM could pick the agent itself"
        ),
        Err(err) => log::warn!("could not set this agent's oom_score_adj to {adj}: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_it_is_always_allowed() {
        // Raising needs no privilege, so this works for any user; it only affects this test
        // process, which is fine to sacrifice first.
        let before: i16 = std::fs::read_to_string("/proc/self/oom_score_adj")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let raised = before.saturating_add(1).min(1000);
        set_oom_score_adj(raised);
        let after: i16 = std::fs::read_to_string("/proc/self/oom_score_adj")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(after, raised);
    }
}
