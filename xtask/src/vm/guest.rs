//! The programs that run in the guest. It has no libc, so everything is linked statically.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{
    run::target_dir,
    setup::{Env, run},
};

/// The guests are x86-64, whatever the host's default target.
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";
/// Debian's busybox-static.
const BUSYBOX: &str = "/bin/busybox";

pub struct Binaries {
    pub busybox: PathBuf,
    pub agent: PathBuf,
    pub hog: PathBuf,
}

pub fn build_binaries(env: &Env) -> anyhow::Result<Binaries> {
    let started = Instant::now();
    let binaries = Binaries {
        busybox: PathBuf::from(BUSYBOX),
        agent: build_static_agent(env)?,
        hog: build_static_hog(env)?,
    };
    require_static(&binaries.busybox)?;
    println!(
        "vm: static guest binaries built ({} s)",
        started.elapsed().as_secs()
    );
    Ok(binaries)
}

/// The agent, statically linked with its eBPF object embedded: for the guests, and for the
/// container image (`cargo xtask image`, deploy/Containerfile), neither of which has a libc.
pub fn build_static_agent(env: &Env) -> anyhow::Result<PathBuf> {
    build_static(env, "tracer", "oomtrace")?;
    let agent = release_dir().join("oomtrace");
    require_static(&agent)?;
    Ok(agent)
}

/// The memory hog, statically linked: for the guests, and for the container image of the
/// privileged tests (`OOMTRACE_STATIC_HOG`), neither of which has a libc. Containers run on the
/// host's architecture; that is the guests' x86-64 on every machine this project runs on.
pub fn build_static_hog(env: &Env) -> anyhow::Result<PathBuf> {
    build_static(env, "oomtrace-tests", "oomtrace-hog")?;
    let hog = release_dir().join("oomtrace-hog");
    require_static(&hog)?;
    Ok(hog)
}

fn release_dir() -> PathBuf {
    target_dir().join(GUEST_TARGET).join("release")
}

/// With an explicit `--target`, RUSTFLAGS reaches only the target's crates, not build scripts:
/// the agent's build script (which builds the eBPF object) stays an ordinary host program.
fn build_static(env: &Env, package: &str, bin: &str) -> anyhow::Result<()> {
    run(env
        .cargo()
        .args(["build", "--release", "--package", package, "--bin", bin])
        .args(["--target", GUEST_TARGET])
        // Would take precedence over RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", "-C target-feature=+crt-static"))
    .with_context(|| format!("building a static {bin} for the guest"))
}

/// A dynamically linked program fails in the guest (or a container) with a bare "not found";
/// say why here.
fn require_static(binary: &Path) -> anyhow::Result<()> {
    let elf = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    match has_interpreter(&elf) {
        Some(false) => Ok(()),
        Some(true) => bail!(
            "{} is dynamically linked, but the guest (and the images) has no libc",
            binary.display()
        ),
        None => bail!(
            "{} is not a 64-bit little-endian ELF file",
            binary.display()
        ),
    }
}

/// Whether a program header asks for a dynamic loader (PT_INTERP); None if not an ELF64 LE file.
fn has_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    let table = usize::try_from(u64_at(0x20)?).ok()?;
    let entry_size = usize::from(u16_at(0x36)?);
    let entries = usize::from(u16_at(0x38)?);
    for index in 0..entries {
        if u32_at(table.checked_add(index.checked_mul(entry_size)?)?)? == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_cargo_is_dynamic_and_garbage_is_not_elf() {
        let cargo = fs::read(env!("CARGO")).unwrap();
        assert_eq!(has_interpreter(&cargo), Some(true));
        assert_eq!(has_interpreter(b"\x7fELF\x02\x01 too short"), None);
        assert_eq!(has_interpreter(b"#!/bin/sh"), None);
    }
}
