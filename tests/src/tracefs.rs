//! tracefs, where the tests read the kernel's tracepoint formats and traceable functions, and
//! which the agent's container gets bind-mounted from the host.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run_checked;

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// `/sys/kernel/tracing`, mounted first if it is not, as the agent mounts it on a host: the
/// agent's container only bind-mounts the host's (docs/deploy.md), and another test may have
/// unmounted it. Says so when it mounts it; leaves it mounted, as the agent does.
pub fn ensure_mounted() -> PathBuf {
    let root = PathBuf::from(TRACEFS);
    if !is_mounted(&root) {
        run_checked(Command::new("mount").args(["-t", "tracefs", "nodev", TRACEFS]));
        assert!(
            is_mounted(&root),
            "mounted tracefs at {TRACEFS}, yet it has no events/ directory"
        );
        println!(
            "tracefs was not mounted at {TRACEFS}: mounted it there, as the agent does on a host"
        );
    }
    root
}

fn is_mounted(root: &Path) -> bool {
    root.join("events").is_dir()
}
