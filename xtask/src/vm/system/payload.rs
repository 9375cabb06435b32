//! What one boot of the whole-system guest runs, on a second disk (label `oomtrace-payload`,
//! read-only): the guest runner (`xtask/vm/system/run.sh`), its `plan`, the static agent and
//! hog, deploy/'s unit and seccomp profile, the agent's image when it is deployed as a
//! container, and the test binaries, statically linked. The image stays as it was built; this
//! disk is written again for every boot, in a few seconds.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::Deployment;
use crate::{
    run::workspace_root,
    setup::{Env, run},
};

pub const LABEL: &str = "oomtrace-payload";
const RUNNER: &str = include_str!("../../../vm/system/run.sh");
/// deploy/ files the runner uses.
const DEPLOY_FILES: [&str; 2] = ["oomtrace.service", "seccomp.json"];
/// The guests are x86-64, whatever the host's default target.
const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// A test binary of the `tests` crate, linked statically.
pub struct TestBinary {
    /// The test's name (its file in tests/tests/).
    pub name: String,
    pub path: PathBuf,
}

/// The test binaries named, and the crate's programs they start by the path cargo compiled
/// into them (`CARGO_BIN_EXE_oomtrace-hog`): both built statically for the guest.
pub struct TestBuild {
    pub tests: Vec<TestBinary>,
    /// Programs the guest must find where the host built them.
    pub programs: Vec<PathBuf>,
}

/// `cargo test --no-run` of the named tests, statically linked (as the static agent is: the
/// build scripts stay host programs); their paths from cargo's JSON messages.
pub fn build_tests(env: &Env, names: &[&str]) -> anyhow::Result<TestBuild> {
    let mut command = env.cargo();
    command
        .args([
            "test",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .args(["--package", "oomtrace-tests", "--target", GUEST_TARGET])
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("RUSTFLAGS", "-C target-feature=+crt-static");
    for name in names {
        command.args(["--test", name]);
    }
    let output = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("starting {command:?}"))?;
    if !output.status.success() {
        bail!("building the tests for the guest failed: {}", output.status);
    }
    let build = artifacts(&String::from_utf8_lossy(&output.stdout))?;
    for name in names {
        if !build.tests.iter().any(|test| test.name == *name) {
            bail!("cargo built no test binary `{name}`");
        }
    }
    Ok(build)
}

/// Executables of `compiler-artifact` messages: tests by their target's name, binaries as
/// programs.
fn artifacts(messages: &str) -> anyhow::Result<TestBuild> {
    let mut build = TestBuild {
        tests: Vec::new(),
        programs: Vec::new(),
    };
    for line in messages.lines().filter(|line| line.starts_with('{')) {
        let message: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("cargo message {line:?}"))?;
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        let kinds = &message["target"]["kind"];
        let is = |kind: &str| {
            kinds
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == kind))
        };
        if is("test") {
            let name = message["target"]["name"]
                .as_str()
                .context("a test artifact without a name")?;
            build.tests.push(TestBinary {
                name: name.to_owned(),
                path: PathBuf::from(executable),
            });
        } else if is("bin") {
            build.programs.push(PathBuf::from(executable));
        }
    }
    Ok(build)
}

/// Everything one boot needs besides the image.
pub struct Contents<'a> {
    pub deployment: Deployment,
    pub agent: &'a Path,
    pub hog: &'a Path,
    /// `docker save` of the agent's image, for [`Deployment::Image`].
    pub image_archive: Option<&'a Path>,
    pub image_tag: &'a str,
    pub tests: &'a TestBuild,
    pub test_timeout_secs: u64,
}

/// Stages the contents in `dir/payload` and writes them to `dir/payload.img`.
pub fn write(contents: &Contents, dir: &Path) -> anyhow::Result<PathBuf> {
    let staging = dir.join("payload");
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    let root = workspace_root();
    let mut files: Vec<(PathBuf, String)> = vec![
        (contents.agent.to_owned(), "bin/oomtrace".to_owned()),
        (contents.hog.to_owned(), "bin/oomtrace-hog".to_owned()),
    ];
    for file in DEPLOY_FILES {
        files.push((root.join("deploy").join(file), format!("deploy/{file}")));
    }
    if let Some(archive) = contents.image_archive {
        files.push((archive.to_owned(), "image.tar".to_owned()));
    }
    for test in &contents.tests.tests {
        files.push((test.path.clone(), format!("tests/{}", test.name)));
    }
    for (index, program) in contents.tests.programs.iter().enumerate() {
        files.push((program.clone(), format!("programs/{index}")));
    }
    let mut bytes = 0;
    for (from, to) in &files {
        bytes += place(from, &staging.join(to))?;
    }
    write_text(&staging.join("run"), 0o755, RUNNER)?;
    write_text(&staging.join("plan"), 0o644, &plan(contents))?;

    let image = dir.join("payload.img");
    let _ = fs::remove_file(&image);
    // ext4's metadata and the runner's own files on top of the binaries.
    let size_mib = bytes / (1 << 20) * 11 / 10 + 64;
    run(Command::new("truncate")
        .arg(format!("--size={size_mib}M"))
        .arg(&image))?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", LABEL, "-d"])
        .arg(&staging)
        .arg(&image))
    .context("writing the payload disk")?;
    fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    Ok(image)
}

/// The runner's plan: shell variable assignments it sources.
fn plan(contents: &Contents) -> String {
    let mut plan =
        String::from("# Written by `cargo xtask vm --system` for xtask/vm/system/run.sh.\n");
    let _ = writeln!(plan, "DEPLOYMENT={}", contents.deployment.name());
    let _ = writeln!(plan, "IMAGE={}", shell_word(contents.image_tag));
    let names: Vec<&str> = contents
        .tests
        .tests
        .iter()
        .map(|test| test.name.as_str())
        .collect();
    let _ = writeln!(plan, "TESTS={}", shell_word(&names.join(" ")));
    let _ = writeln!(plan, "TEST_TIMEOUT={}", contents.test_timeout_secs);
    // Where the host built the crate's programs, which the tests start by that path.
    let links: Vec<String> = contents
        .tests
        .programs
        .iter()
        .enumerate()
        .map(|(index, program)| format!("programs/{index}:{}", program.display()))
        .collect();
    let _ = writeln!(plan, "PROGRAM_LINKS={}", shell_word(&links.join(" ")));
    // The tests' environment, as `cargo xtask test` sets it on the host.
    plan.push_str(
        "export OOMTRACE_BIN=$PAYLOAD/bin/oomtrace\n\
         export OOMTRACE_STATIC_BIN=$PAYLOAD/bin/oomtrace\n\
         export OOMTRACE_STATIC_HOG=$PAYLOAD/bin/oomtrace-hog\n\
         export OOMTRACE_HISTORY_DIR=/var/tmp/oomtrace-test-history\n",
    );
    plan
}

/// Single-quoted for the shell.
fn shell_word(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A hard link where the file system allows (the binaries are tens of MB), else a copy;
/// returns the size.
fn place(from: &Path, to: &Path) -> anyhow::Result<u64> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    }
    Ok(fs::metadata(to)
        .with_context(|| format!("reading {}", to.display()))?
        .len())
}

fn write_text(path: &Path, mode: u32, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_and_programs_come_out_of_cargos_messages() {
        let messages = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"oomtrace_tests"},"executable":null}
{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"oomtrace-hog"},"executable":"/t/debug/oomtrace-hog"}
{"reason":"compiler-artifact","target":{"kind":["test"],"name":"memcg_oom"},"executable":"/t/debug/deps/memcg_oom-0123"}
{"reason":"build-finished","success":true}"#;
        let build = artifacts(messages).unwrap();
        let tests: Vec<_> = build
            .tests
            .iter()
            .map(|test| (test.name.as_str(), test.path.to_str().unwrap()))
            .collect();
        assert_eq!(tests, [("memcg_oom", "/t/debug/deps/memcg_oom-0123")]);
        assert_eq!(build.programs, [PathBuf::from("/t/debug/oomtrace-hog")]);
    }

    #[test]
    fn plan_words_survive_the_shell() {
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
