//! The test suite's binaries, built once and run everywhere: on this host (`cargo xtask test`)
//! and in the kernel matrix's guests (`cargo xtask vm`), as aya runs its integration tests.
//!
//! Everything is linked statically for x86-64: the guests have no libc, nor has the agent's
//! container image. The test binaries and the hog come from one `cargo test --no-run` of the
//! tests crate (dev profile); the agent is the release build users run, linked the same way.
//! Each scenario is a test in `tests/tests/`; what a test needs of its machine is set through
//! its environment ([`TestEnv`]), the same on the host and in a guest.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{
    run::{target_dir, workspace_root},
    setup::{Env, is_root, run},
};

/// The guests are x86-64, whatever the host's default target.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
const TESTS_PACKAGE: &str = "oomtrace-tests";
const HOG: &str = "oomtrace-hog";

pub struct Suite {
    /// The release agent.
    pub agent: PathBuf,
    pub hog: PathBuf,
    /// One binary per file of `tests/tests/`, and the tests crate's own unit tests.
    pub tests: Vec<TestBinary>,
}

pub struct TestBinary {
    /// The file's name in `tests/tests/` (`memcg_oom`), or `oomtrace_tests` for the unit tests.
    pub name: String,
    pub path: PathBuf,
}

impl Suite {
    /// The test binaries named `names`, in that order; an error names any that is missing.
    pub fn select(&self, names: &[&str]) -> anyhow::Result<Vec<&TestBinary>> {
        names
            .iter()
            .map(|name| {
                self.tests
                    .iter()
                    .find(|test| test.name == *name)
                    .with_context(|| format!("the tests crate has no test file {name}.rs"))
            })
            .collect()
    }
}

/// Builds the static agent, then the tests crate's test binaries and hog.
pub fn build(env: &Env) -> anyhow::Result<Suite> {
    let started = Instant::now();
    let agent = build_static_agent(env)?;
    let (hog, tests) = build_tests(env)?;
    println!(
        "xtask: the suite's static binaries are built ({} test binaries, {} s)",
        tests.len(),
        started.elapsed().as_secs()
    );
    Ok(Suite { agent, hog, tests })
}

/// The agent, statically linked with its eBPF object embedded: for the privileged tests, the
/// guests, and the container image (`cargo xtask image`, deploy/Containerfile).
pub fn build_static_agent(env: &Env) -> anyhow::Result<PathBuf> {
    run(static_cargo(env, "build").args(["--release", "--package", "tracer", "--bin", "oomtrace"]))
        .context("building the static agent")?;
    let agent = target_dir().join(TARGET).join("release/oomtrace");
    require_static(&agent)?;
    Ok(agent)
}

/// The hog as the suite builds it (statically linked, dev profile): for the container images
/// of the privileged tests and of the bench, which have no libc.
pub fn build_static_hog(env: &Env) -> anyhow::Result<PathBuf> {
    run(static_cargo(env, "build").args(["--package", TESTS_PACKAGE, "--bin", HOG]))
        .context("building the static hog")?;
    let hog = target_dir().join(TARGET).join("debug").join(HOG);
    require_static(&hog)?;
    Ok(hog)
}

/// `cargo test --no-run` of the tests crate: the paths of its test binaries and of the hog,
/// from cargo's own account of what it built.
fn build_tests(env: &Env) -> anyhow::Result<(PathBuf, Vec<TestBinary>)> {
    let mut cargo = static_cargo(env, "test");
    cargo
        .args(["--no-run", "--package", TESTS_PACKAGE])
        .args(["--message-format", "json-render-diagnostics"])
        .stdout(Stdio::piped());
    let mut child = cargo
        .spawn()
        .with_context(|| format!("starting {cargo:?}"))?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut hog = None;
    let mut tests = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's messages")?;
        let Some(artifact) = Artifact::parse(&line) else {
            continue;
        };
        match (artifact.kind.as_str(), artifact.test) {
            ("bin", false) if artifact.name == HOG => hog = Some(artifact.executable),
            // The scenarios, and the unit tests of the crate's library and of the hog.
            (_, true) => tests.push(TestBinary {
                name: artifact.name,
                path: artifact.executable,
            }),
            _ => {}
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        bail!("{cargo:?} failed: {status}");
    }
    let hog = hog.context("cargo built no hog")?;
    require_static(&hog)?;
    for test in &tests {
        require_static(&test.path)?;
    }
    tests.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((hog, tests))
}

/// An executable cargo reported building: a `compiler-artifact` message with an executable.
struct Artifact {
    /// The target's first kind: `bin`, `test`, `lib`...
    kind: String,
    name: String,
    /// A test harness: a `test` target, or a `lib` or `bin` built with its unit tests.
    test: bool,
    executable: PathBuf,
}

impl Artifact {
    fn parse(line: &str) -> Option<Self> {
        let message: serde_json::Value = serde_json::from_str(line).ok()?;
        if message.get("reason")?.as_str()? != "compiler-artifact" {
            return None;
        }
        let target = message.get("target")?;
        Some(Self {
            kind: target.get("kind")?.get(0)?.as_str()?.to_owned(),
            name: target.get("name")?.as_str()?.to_owned(),
            test: message.get("profile")?.get("test")?.as_bool()?,
            executable: PathBuf::from(message.get("executable")?.as_str()?),
        })
    }
}

/// `cargo SUBCOMMAND` for the guests' target, linking statically. With an explicit `--target`,
/// RUSTFLAGS reaches only the target's crates, not build scripts: the agent's build script
/// (which builds the eBPF object) stays an ordinary host program.
fn static_cargo(env: &Env, subcommand: &str) -> Command {
    let mut cargo = env.cargo();
    cargo
        .args([subcommand, "--target", TARGET])
        // Would take precedence over RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", "-C target-feature=+crt-static");
    cargo
}

/// What a test binary gets from its runner, on the host and in the guests alike: where the
/// agent and the hog are, and where histories go. See `tests/src/lib.rs`.
pub struct TestEnv<'a> {
    pub agent: &'a Path,
    pub hog: &'a Path,
    pub history_dir: &'a Path,
}

impl TestEnv<'_> {
    pub fn vars(&self) -> [(&'static str, &Path); 5] {
        [
            ("OOMTRACE_BIN", self.agent),
            // The agent's container image wants it static: it is.
            ("OOMTRACE_STATIC_BIN", self.agent),
            ("OOMTRACE_HOG", self.hog),
            ("OOMTRACE_STATIC_HOG", self.hog),
            // The agents' history files, and the history commands' (`$OOMTRACE_BIN history`).
            ("OOMTRACE_HISTORY_DIR", self.history_dir),
        ]
    }
}

/// Runs every test binary on this host, one after the other (through `sudo -E` when not root),
/// each with `--show-output`: what a scenario prints (e.g. podman's own OOMKilled next to
/// oomtrace's answer) is part of the record of the run, passing or not. Runs them all, then
/// fails if any did.
pub fn run_on_host(suite: &Suite) -> anyhow::Result<()> {
    let history_dir = target_dir().join("oomtrace-test-history");
    let vars = TestEnv {
        agent: &suite.agent,
        hog: &suite.hog,
        history_dir: &history_dir,
    };
    // Where `cargo test` runs them: the package's directory.
    let package_dir = workspace_root().join("tests");
    let mut failed = Vec::new();
    let started = Instant::now();
    for test in &suite.tests {
        let mut command = if is_root() {
            Command::new(&test.path)
        } else {
            let mut sudo = Command::new("sudo");
            sudo.arg("-E").arg(&test.path);
            sudo
        };
        command
            .arg("--show-output")
            .envs(vars.vars())
            .current_dir(&package_dir);
        println!("xtask test: {}", test.name);
        let status = command
            .status()
            .with_context(|| format!("starting {command:?}"))?;
        if !status.success() {
            println!("xtask test: {} FAILED ({status})", test.name);
            failed.push(test.name.as_str());
        }
    }
    println!(
        "xtask test: {} test binaries in {} s",
        suite.tests.len(),
        started.elapsed().as_secs()
    );
    if !failed.is_empty() {
        bail!(
            "{} of {} test binaries failed: {}",
            failed.len(),
            suite.tests.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// A dynamically linked program fails in the guest (or a container) with a bare "not found";
/// say why here.
fn require_static(binary: &Path) -> anyhow::Result<()> {
    let elf = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    match has_interpreter(&elf) {
        Some(false) => Ok(()),
        Some(true) => bail!(
            "{} is dynamically linked, but the guests (and the images) have no libc",
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
        let cargo = std::fs::read(env!("CARGO")).unwrap();
        assert_eq!(has_interpreter(&cargo), Some(true));
        assert_eq!(has_interpreter(b"\x7fELF\x02\x01 too short"), None);
        assert_eq!(has_interpreter(b"#!/bin/sh"), None);
    }

    #[test]
    fn artifacts_are_read_from_cargos_messages() {
        let line = r#"{"reason":"compiler-artifact","package_id":"x","target":{"kind":["test"],"crate_types":["bin"],"name":"memcg_oom","src_path":"/w/tests/tests/memcg_oom.rs"},"profile":{"test":true},"features":[],"filenames":["/w/target/x/debug/deps/memcg_oom-1"],"executable":"/w/target/x/debug/deps/memcg_oom-1","fresh":true}"#;
        let artifact = Artifact::parse(line).unwrap();
        assert_eq!(
            (
                artifact.kind.as_str(),
                artifact.name.as_str(),
                artifact.test
            ),
            ("test", "memcg_oom", true)
        );
        assert_eq!(
            artifact.executable,
            Path::new("/w/target/x/debug/deps/memcg_oom-1")
        );
        let library = line.replace(
            r#""executable":"/w/target/x/debug/deps/memcg_oom-1","#,
            r#""executable":null,"#,
        );
        assert!(Artifact::parse(&library).is_none());
        assert!(Artifact::parse(r#"{"reason":"build-finished","success":true}"#).is_none());
    }
}
