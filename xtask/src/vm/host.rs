//! What the host needs to build and boot the guests, installed from Debian when missing.

use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::setup::{Apt, run};

/// qemu for x86 guests; a busybox that runs without a libc, since the guest has none.
/// (The initramfs is written by xtask itself, so no `cpio` is needed.)
const TOOL_PACKAGES: [&str; 2] = ["qemu-system-x86", "busybox-static"];

pub fn install_tools(apt: &mut Apt) -> anyhow::Result<()> {
    apt.install_missing(&TOOL_PACKAGES)
        .context("installing what the VM tests need")
}

/// What the VM tests ask of apt beyond installing.
impl Apt {
    /// Package names matching an extended regular expression, from the local package lists.
    pub fn search_names(&self, regex: &str) -> anyhow::Result<Vec<String>> {
        let mut command = Command::new("apt-cache");
        command.args(["search", "--names-only", regex]);
        let output = command
            .output()
            .with_context(|| format!("starting {command:?}"))?;
        if !output.status.success() {
            bail!(
                "{command:?} failed: {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        // "name - description"
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .map(str::to_owned)
            .collect())
    }

    /// `apt-get download` into `dir`: the .deb only, without installing it.
    pub fn download(&self, package: &str, dir: &Path) -> anyhow::Result<()> {
        // The target directory is not the sandbox user's to write: download as root (apt
        // warns and does so anyway otherwise).
        run(Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root", package])
            .current_dir(dir))
    }
}
