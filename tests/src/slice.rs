//! A systemd slice with a memory limit, as users of the systemd cgroup driver give a Compose
//! project a shared limit: a `[Slice]` unit with `MemoryMax=`, named as the `cgroup_parent` of
//! its services. The runtime puts each container's scope below it
//! (`/<name>.slice/docker-<id>.scope`), and systemd owns the cgroup: the limit is the unit's,
//! not a file the test writes.
//!
//! The unit is a runtime one (`/run/systemd/system`), stopped and removed on drop.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::run_checked;

/// A started slice unit with `MemoryMax=`; stopped and removed on drop.
pub struct SystemdSlice {
    /// `<name>.slice`: no `-`, which would make it a child of another slice.
    unit: String,
    file: PathBuf,
    limit_bytes: u64,
}

impl SystemdSlice {
    /// Whether this host runs systemd as PID 1 on the unified hierarchy, where runtimes use the
    /// systemd cgroup driver by default.
    pub fn host_has_systemd_on_cgroup2() -> bool {
        std::path::Path::new("/run/systemd/system").is_dir()
            && std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
    }

    /// A slice of the test's own, at the top of the tree.
    pub fn create(limit_bytes: u64) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unit = format!(
            "oomtracetest{}n{}.slice",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self::named(&unit, limit_bytes)
    }

    /// The slice `unit` (`a-b.slice` is `a.slice/a-b.slice`, as systemd nests them), e.g. a
    /// pod's, as the kubelet makes it with its limit.
    pub fn named(unit: &str, limit_bytes: u64) -> Self {
        let unit = unit.to_owned();
        let file = PathBuf::from("/run/systemd/system").join(&unit);
        let slice = Self {
            unit,
            file,
            limit_bytes,
        };
        fs::write(
            &slice.file,
            format!(
                "[Unit]\nDescription=oomtrace test slice\n\n[Slice]\nMemoryAccounting=yes\n\
                 MemoryMax={limit_bytes}\n"
            ),
        )
        .unwrap_or_else(|err| panic!("writing {}: {err}", slice.file.display()));
        run_checked(Command::new("systemctl").arg("daemon-reload"));
        run_checked(Command::new("systemctl").args(["start", &slice.unit]));
        let max = fs::read_to_string(slice.cgroup_dir().join("memory.max"))
            .unwrap_or_else(|err| panic!("reading {}'s memory.max: {err}", slice.unit));
        assert_eq!(
            max.trim(),
            limit_bytes.to_string(),
            "systemd set {}'s memory.max",
            slice.unit
        );
        slice
    }

    /// The unit's name, `<name>.slice`: what Compose's `cgroup_parent` takes.
    pub fn unit(&self) -> &str {
        &self.unit
    }

    /// The cgroup path as the kernel shows it: `/<name>.slice`, or `/a.slice/a-b.slice`.
    pub fn path(&self) -> String {
        slice_path(&self.unit)
    }

    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    pub fn cgroup_dir(&self) -> PathBuf {
        PathBuf::from(format!("/sys/fs/cgroup{}", self.path()))
    }
}

/// Where systemd puts slice `unit`'s cgroup: each `-` in its name opens a parent slice.
pub fn slice_path(unit: &str) -> String {
    let name = unit.strip_suffix(".slice").unwrap_or(unit);
    let mut path = String::new();
    for (end, _) in name.match_indices('-') {
        path.push_str(&format!("/{}.slice", &name[..end]));
    }
    path.push_str(&format!("/{unit}"));
    path
}

impl Drop for SystemdSlice {
    fn drop(&mut self) {
        // Stopping a slice stops the units in it: containers still running are killed.
        let _ = Command::new("systemctl")
            .args(["stop", &self.unit])
            .output();
        let _ = fs::remove_file(&self.file);
        let _ = Command::new("systemctl").arg("daemon-reload").output();
    }
}

#[cfg(test)]
mod tests {
    use super::slice_path;

    #[test]
    fn dashes_nest_slices() {
        assert_eq!(slice_path("shop.slice"), "/shop.slice");
        assert_eq!(
            slice_path("kubepods-burstable-pod1a_2b.slice"),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a_2b.slice"
        );
    }
}
