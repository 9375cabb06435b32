//! `cargo xtask fuzz`: every cargo-fuzz target in fuzz/, each for a while (30 s by default:
//! what CI gives them; the README in fuzz/ gives the long runs).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::setup::{Env, run};

/// Pinned like bpf-linker: a newer release may need a newer Rust.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

#[derive(clap::Args)]
pub struct Options {
    /// How long each target runs.
    #[arg(long, default_value_t = 30)]
    seconds: u32,
    /// Only these targets (default: every `[[bin]]` of fuzz/Cargo.toml).
    #[arg(long = "target", value_name = "NAME")]
    targets: Vec<String>,
}

pub fn fuzz(env: &Env, options: Options) -> anyhow::Result<()> {
    let Options { seconds, targets } = options;
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    install_cargo_fuzz(env)?;
    let targets = if targets.is_empty() {
        targets_of(&fuzz_dir)?
    } else {
        targets
    };
    for target in &targets {
        // New inputs go to a scratch directory; the committed seeds stay as they are.
        let scratch = PathBuf::from(format!("/tmp/oomtrace-fuzz/{target}"));
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        println!("xtask: fuzzing {target} for {seconds} s");
        run(env
            .cargo()
            .current_dir(&fuzz_dir)
            // cargo-fuzz passes sanitizer flags only a nightly compiler takes.
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", target])
            .arg(&scratch)
            .arg(format!("corpus/{target}"))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-max_len=4096")
            .arg("-print_final_stats=1"))
        .with_context(|| {
            format!(
                "fuzz target {target} failed: its input is under fuzz/artifacts/{target}/ \
                 (see fuzz/README.md to replay it)"
            )
        })?;
    }
    println!(
        "xtask: {} fuzz targets ran {seconds} s each without a crash",
        targets.len()
    );
    Ok(())
}

fn install_cargo_fuzz(env: &Env) -> anyhow::Result<()> {
    let found = Command::new("cargo-fuzz")
        .arg("--version")
        .env("PATH", &env.path)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned());
    // "cargo-fuzz 0.13.2"
    if found
        .as_deref()
        .is_some_and(|version| version.split_whitespace().nth(1) == Some(CARGO_FUZZ_VERSION))
    {
        return Ok(());
    }
    run(env
        .cargo()
        .args(["install", "--locked", "--force"])
        .arg(format!("cargo-fuzz@{CARGO_FUZZ_VERSION}")))
    .context("installing cargo-fuzz")
}

/// The `name = "…"` of every `[[bin]]` table of fuzz/Cargo.toml.
fn targets_of(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let manifest_path = fuzz_dir.join("Cargo.toml");
    let manifest = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let targets = bin_names(&manifest);
    if targets.is_empty() {
        bail!("{} declares no [[bin]] targets", manifest_path.display());
    }
    Ok(targets)
}

fn bin_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(value) = line.strip_prefix("name") {
            let name = value
                .trim_start()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"');
            names.push(name.to_owned());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_the_bins_of_the_manifest() {
        let manifest = "[package]\nname = \"oomtrace-fuzz\"\n\n[dependencies]\nname = 1\n\n\
                        [[bin]]\nname = \"cgroup_path\"\npath = \"x.rs\"\n\n\
                        [[bin]]\nname = \"units\"\ntest = false\n";
        assert_eq!(bin_names(manifest), ["cgroup_path", "units"]);
    }

    #[test]
    fn the_real_manifest_has_targets() {
        let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let targets = targets_of(&fuzz_dir).expect("fuzz/Cargo.toml");
        assert!(targets.contains(&"cgroup_path".to_owned()), "{targets:?}");
    }
}
