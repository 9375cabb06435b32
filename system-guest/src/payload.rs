//! What one boot of the whole-system guest runs, on a second disk (label `oomtrace-payload`,
//! read-only, mounted at [`MOUNT`]): this guest's own script (`system-guest/guest/run.sh`, which
//! deploys the agent and then calls the suite's runner) and its `plan`; the suite directory of
//! the guest runner ([`runner::suite_files`], under `suite/`); deploy/'s unit, catalog and
//! seccomp profile; and the agent's image when it is deployed as a container. The image stays
//! as it was built; this disk is written again for every boot, in a few seconds.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::Deployment;
use xtask::{
    run::workspace_root,
    setup::run,
    suite::{Suite, TestBinary},
    vm::runner,
};

/// Where the image's oomtrace-guest-run script mounts the disk (system-guest/guest/rootfs/).
const MOUNT: &str = "/run/oomtrace-payload";
/// The label it mounts it by.
const LABEL: &str = "oomtrace-payload";
const SUITE_DIR: &str = "suite";
const SCRIPT: &str = include_str!("../guest/run.sh");
/// deploy/ files the script installs or passes to Docker.
const DEPLOY_FILES: [&str; 3] = ["oomtrace.service", "oomtrace.catalog", "seccomp.json"];

/// Everything one boot needs besides the image.
pub struct Contents<'a> {
    pub deployment: Deployment,
    pub suite: &'a Suite,
    /// The binaries of `tests`.
    pub binaries: &'a [&'a TestBinary],
    /// `NAME[:FILTER]`, in the order they run.
    pub tests: &'a [String],
    pub test_timeout_secs: u64,
    /// `docker save` of the agent's image, for [`Deployment::Image`].
    pub image_archive: Option<&'a Path>,
    pub image_tag: &'a str,
}

/// Stages the contents in `dir/payload` and writes them to `dir/payload.img`.
pub fn write(contents: &Contents, dir: &Path) -> anyhow::Result<PathBuf> {
    let staging = dir.join("payload");
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    let root = workspace_root();
    let mut files: Vec<(String, PathBuf)> = runner::suite_files(contents.suite, contents.binaries)
        .into_iter()
        .map(|(path, file)| (format!("{SUITE_DIR}/{path}"), file))
        .collect();
    for file in DEPLOY_FILES {
        files.push((format!("deploy/{file}"), root.join("deploy").join(file)));
    }
    if let Some(archive) = contents.image_archive {
        files.push(("image.tar".to_owned(), archive.to_owned()));
    }
    let mut bytes = 0;
    for (to, from) in &files {
        bytes += place(from, &staging.join(to))?;
    }
    write_text(
        &staging.join(SUITE_DIR).join("run-tests.sh"),
        0o755,
        runner::RUNNER,
    )?;
    write_text(&staging.join("run"), 0o755, SCRIPT)?;
    write_text(&staging.join("plan"), 0o644, &plan(contents))?;

    let image = dir.join("payload.img");
    let _ = fs::remove_file(&image);
    // ext4's metadata and the scripts on top of the binaries.
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

/// The script's plan: shell it sources.
fn plan(contents: &Contents) -> String {
    let mut plan =
        String::from("# Written by `cargo xtask vm --system` for system-guest/guest/run.sh.\n");
    let _ = writeln!(plan, "DEPLOYMENT={}", contents.deployment.name());
    let _ = writeln!(plan, "IMAGE={}", shell_word(contents.image_tag));
    let dir = format!("{MOUNT}/{SUITE_DIR}");
    let command: Vec<String> =
        runner::runner_args(&dir, contents.test_timeout_secs, contents.tests)
            .iter()
            .map(|word| shell_word(word))
            .collect();
    let _ = writeln!(plan, "run_tests() {{ {}; }}", command.join(" "));
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
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_calls_the_suites_runner_on_the_payload_disk() {
        let suite = Suite {
            agent: PathBuf::from("/t/oomtrace"),
            hog: PathBuf::from("/t/oomtrace-hog"),
            tests: Vec::new(),
        };
        let tests = ["docker_oom".to_owned(), "memcg_oom:kprobes".to_owned()];
        let plan = plan(&Contents {
            deployment: Deployment::Unit,
            suite: &suite,
            binaries: &[],
            tests: &tests,
            test_timeout_secs: 600,
            image_archive: None,
            image_tag: "localhost/oomtrace:0.1.0",
        });
        assert!(plan.contains("DEPLOYMENT=unit\n"), "{plan}");
        assert!(
            plan.contains("IMAGE='localhost/oomtrace:0.1.0'\n"),
            "{plan}"
        );
        assert!(
            plan.contains(
                "run_tests() { 'sh' '/run/oomtrace-payload/suite/run-tests.sh' \
                 '/run/oomtrace-payload/suite' '600' 'docker_oom' 'memcg_oom:kprobes'; }\n"
            ),
            "{plan}"
        );
    }

    #[test]
    fn plan_words_survive_the_shell() {
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
    }
}
