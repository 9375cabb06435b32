//! What the host needs to build and boot the guests, installed from Debian when missing.

use anyhow::Context as _;

use crate::setup::Apt;

/// qemu for x86 guests; a busybox that runs without a libc, since the guest has none; the keys
/// that sign the suites the guest kernels come from. (The initramfs is written by xtask itself,
/// so no `cpio` is needed.)
const TOOL_PACKAGES: [&str; 3] = [
    "qemu-system-x86",
    "busybox-static",
    "debian-archive-keyring",
];

pub fn install_tools(apt: &mut Apt) -> anyhow::Result<()> {
    apt.install_missing(&TOOL_PACKAGES)
        .context("installing what the VM tests need")
}
