//! A service killed at its `MemoryMax=`, as systemd runs one on a host with systemd as PID 1:
//! a transient unit (`systemd-run`) in `system.slice`, whose cgroup systemd owns. Stopped and
//! forgotten on drop, also when it failed.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::{command_output, run_checked};

/// Each look is a `systemctl` run, slow under emulation.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A transient `.service` running one command under a memory limit.
pub struct TransientService {
    unit: String,
}

impl TransientService {
    /// Starts `command` with `args` as `<name>.service` with `MemoryMax=limit_bytes`.
    pub fn start(name: &str, limit_bytes: u64, command: &Path, args: &[&str]) -> Self {
        let service = Self {
            unit: format!("{name}.service"),
        };
        run_checked(
            Command::new("systemd-run")
                .arg("--quiet")
                .arg(format!("--unit={}", service.unit))
                .arg(format!("--property=MemoryMax={limit_bytes}"))
                .arg("--property=MemorySwapMax=0")
                .arg(command)
                .args(args),
        );
        service
    }

    /// `<name>.service`.
    pub fn unit(&self) -> &str {
        &self.unit
    }

    /// Its cgroup as the kernel shows it.
    pub fn cgroup_path(&self) -> String {
        format!("/system.slice/{}", self.unit)
    }

    /// `systemctl show --property=NAME --value`.
    pub fn property(&self, name: &str) -> String {
        let output = command_output(Command::new("systemctl").args([
            "show",
            "--value",
            &format!("--property={name}"),
            &self.unit,
        ]));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// The pid systemd started as its main process (kept after it exited); panics if none
    /// within `timeout`.
    pub fn main_pid(&self, timeout: Duration) -> u32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(pid) = self.property("ExecMainPID").parse::<u32>()
                && pid != 0
            {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "{} has no main pid after {timeout:?}: {}",
                self.unit,
                self.property("StatusText")
            );
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for TransientService {
    fn drop(&mut self) {
        let _ = Command::new("systemctl")
            .args(["stop", &self.unit])
            .output();
        let _ = Command::new("systemctl")
            .args(["reset-failed", &self.unit])
            .output();
    }
}
