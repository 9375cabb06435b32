//! Checks of deploy/, part of `lint`: the Kubernetes manifests against the Kubernetes API's
//! schemas, and the systemd unit with `systemd-analyze verify`. Each check first proves it can
//! fail, on a deliberately broken copy, so a validator that accepts anything is caught.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context as _, bail};

use crate::{
    run::{target_dir, workspace_root},
    setup::{Apt, run},
};

/// From PyPI: validates offline, with the schemas it bundles.
const VALIDATOR: &str = "kubernetes-validate";
const VALIDATOR_VERSION: &str = "1.37.0";
/// The Kubernetes release whose schemas the manifests are checked against.
const KUBERNETES_VERSION: &str = "1.37.0";
/// `systemd-analyze` comes with systemd.
const SYSTEMD_PACKAGE: &str = "systemd";

pub fn check() -> anyhow::Result<()> {
    let validator = install_validator(&mut Apt::default())?;
    check_kubernetes(&validator)?;
    check_systemd_unit()?;
    Ok(())
}

/// Installs what the checks need, when missing: the validator in a virtualenv of its own under
/// target/tools (Debian's Python refuses `pip install` outside one), and systemd-analyze.
pub fn install_validator(apt: &mut Apt) -> anyhow::Result<PathBuf> {
    apt.install_missing(&[SYSTEMD_PACKAGE])
        .context("installing systemd-analyze")?;
    let venv = target_dir().join("tools").join(VALIDATOR);
    let validator = venv.join("bin").join(VALIDATOR);
    if installed_version(&venv).as_deref() == Some(VALIDATOR_VERSION) {
        return Ok(validator);
    }
    if run(Command::new("python3").args(["-m", "venv"]).arg(&venv)).is_err() {
        // Debian's python3 has venv only with this package.
        apt.install(&["python3-venv"])?;
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .context("creating a virtualenv for the Kubernetes validator")?;
    }
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet"])
        .arg(format!("{VALIDATOR}=={VALIDATOR_VERSION}")))
    .with_context(|| format!("installing {VALIDATOR} from PyPI"))?;
    Ok(validator)
}

fn installed_version(venv: &Path) -> Option<String> {
    let output = Command::new(venv.join("bin/pip"))
        .args(["show", VALIDATOR])
        .output()
        .ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("Version: "))
        .map(str::to_owned)
}

fn check_kubernetes(validator: &Path) -> anyhow::Result<()> {
    let dir = workspace_root().join("deploy/kubernetes");
    let manifests = yaml_files(&dir)?;

    // A DaemonSet with a misspelt field must be refused, or the validator proves nothing.
    let daemonset = dir.join("02-daemonset.yaml");
    let text = fs::read_to_string(&daemonset)
        .with_context(|| format!("reading {}", daemonset.display()))?;
    let broken_text = text.replacen("hostPID: true", "hostPid: true", 1);
    if broken_text == text {
        bail!("{} has no `hostPID: true` to break", daemonset.display());
    }
    let broken = scratch_dir()?.join("broken-daemonset.yaml");
    fs::write(&broken, broken_text).with_context(|| format!("writing {}", broken.display()))?;
    let refused = validate(validator, &[broken])?;
    if refused.status.success() || !String::from_utf8_lossy(&refused.stdout).contains("hostPid") {
        bail!(
            "{VALIDATOR} accepted a DaemonSet with an unknown field `hostPid`: it does not \
             validate ({})",
            describe(&refused)
        );
    }

    let output = validate(validator, &manifests)?;
    if !output.status.success() || !output.stderr.is_empty() {
        bail!(
            "deploy/kubernetes does not validate against Kubernetes {KUBERNETES_VERSION}: {}",
            describe(&output)
        );
    }
    println!(
        "deploy: {} manifests valid for Kubernetes {KUBERNETES_VERSION} ({VALIDATOR} --strict)",
        manifests.len()
    );
    Ok(())
}

fn validate(validator: &Path, files: &[PathBuf]) -> anyhow::Result<Output> {
    Command::new(validator)
        .args([
            "--strict",
            "--quiet",
            "--kubernetes-version",
            KUBERNETES_VERSION,
        ])
        .args(files)
        .output()
        .with_context(|| format!("running {}", validator.display()))
}

/// `systemd-analyze verify` warns about unknown keys and bad values but still exits 0: any
/// output fails the check. The unit starts /usr/local/bin/oomtrace, which verify requires to
/// exist; the checked copy starts /bin/true instead.
fn check_systemd_unit() -> anyhow::Result<()> {
    let unit = workspace_root().join("deploy/oomtrace.service");
    let text = fs::read_to_string(&unit).with_context(|| format!("reading {}", unit.display()))?;
    let installed = "ExecStart=/usr/local/bin/oomtrace ";
    if !text.contains(installed) {
        bail!("{} should start `{installed}…`", unit.display());
    }
    let checkable = text.replacen(installed, "ExecStart=/bin/true ", 1);
    let dir = scratch_dir()?;

    let broken = dir.join("broken").join("oomtrace.service");
    write(
        &broken,
        &checkable.replacen("ProtectHome=yes", "ProtectHome=maybe", 1),
    )?;
    let refused = verify(&broken)?;
    if refused.status.success() && refused.stderr.is_empty() {
        bail!("systemd-analyze verify found nothing wrong with `ProtectHome=maybe`");
    }

    let copy = dir.join("unit").join("oomtrace.service");
    write(&copy, &checkable)?;
    let output = verify(&copy)?;
    if !output.status.success() || !output.stderr.is_empty() || !output.stdout.is_empty() {
        bail!(
            "systemd-analyze verify {}: {}",
            unit.display(),
            describe(&output)
        );
    }
    println!("deploy: {} passes systemd-analyze verify", unit.display());
    Ok(())
}

pub fn verify(unit: &Path) -> anyhow::Result<Output> {
    Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .context("running systemd-analyze (from Debian's systemd package)")
}

/// The `*.yaml` files in `dir`, sorted; at least one.
pub fn yaml_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no YAML files in {}", dir.display());
    }
    Ok(files)
}

/// Where the checks write their deliberately broken copies.
pub fn scratch_dir() -> anyhow::Result<PathBuf> {
    let dir = target_dir().join("deploy-check");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// A command's status and output, for an error message.
pub fn describe(output: &Output) -> String {
    format!(
        "{}; {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout).trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    )
}
