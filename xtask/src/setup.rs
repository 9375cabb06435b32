//! Installs what building the eBPF programs needs, from Debian and crates.io only, and only
//! what is missing:
//!
//! * a Rust toolchain with the `core` library sources (`-Z build-std=core` for the bpf target):
//!   nightly with `rust-src` where a developer has it, else Debian's `rustc-web`, `cargo-web` and
//!   `rust-web-src`, linked into rustup as `bpf-debian`;
//! * `bpf-linker`, built against the LLVM major of that toolchain;
//! * for the privileged tests, a container runtime and a static busybox ([`install_test_tools`]).

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// What `tracer/build.rs` looks for; keep the two in step.
pub const DEBIAN_TOOLCHAIN: &str = "bpf-debian";
const BPF_LINKER_VERSION: &str = "0.13.0";
const DEBIAN_RUST_PACKAGES: [&str; 3] = ["rustc-web", "cargo-web", "rust-web-src"];

/// The environment the other tasks run cargo in.
pub struct Env {
    /// PATH with cargo's bin directory first, so the installed bpf-linker is found.
    pub path: std::ffi::OsString,
}

impl Env {
    pub fn cargo(&self) -> Command {
        let mut cargo = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cargo.env("PATH", &self.path);
        cargo
    }
}

/// Installs whatever is missing; a no-op when everything is there.
pub fn setup() -> anyhow::Result<Env> {
    let path = path_with_cargo_bin()?;
    let mut apt = Apt::default();
    let toolchain = match find_toolchain() {
        Some(toolchain) => toolchain,
        None => install_debian_toolchain(&mut apt)?,
    };
    let llvm_major = llvm_major(&toolchain)?;
    match bpf_linker_version(&path) {
        Some(version) if version == BPF_LINKER_VERSION => {}
        found => install_bpf_linker(&mut apt, &path, llvm_major, found.as_deref())?,
    }
    eprintln!(
        "xtask: eBPF toolchain `{toolchain}` (LLVM {llvm_major}), bpf-linker {BPF_LINKER_VERSION}"
    );
    Ok(Env { path })
}

fn path_with_cargo_bin() -> anyhow::Result<std::ffi::OsString> {
    let cargo_home = match env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => PathBuf::from(env::var_os("HOME").context("HOME is not set")?).join(".cargo"),
    };
    let mut dirs = vec![cargo_home.join("bin")];
    dirs.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
    Ok(env::join_paths(dirs)?)
}

/// Nightly with `rust-src` first (a developer's usual setup), then the Debian toolchain.
fn find_toolchain() -> Option<String> {
    ["nightly", DEBIAN_TOOLCHAIN]
        .into_iter()
        .find(|toolchain| has_library_sources(toolchain))
        .map(str::to_owned)
}

fn has_library_sources(toolchain: &str) -> bool {
    rustc_output(toolchain, &["--print", "sysroot"]).is_some_and(|sysroot| {
        Path::new(sysroot.trim())
            .join("lib/rustlib/src/rust/library/core/Cargo.toml")
            .exists()
    })
}

fn rustc_output(toolchain: &str, args: &[&str]) -> Option<String> {
    let output = Command::new("rustup")
        .args(["run", toolchain, "rustc"])
        .args(args)
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

fn install_debian_toolchain(apt: &mut Apt) -> anyhow::Result<String> {
    let sources = Path::new("/usr/lib/rustlib/src/rust/library/core/Cargo.toml");
    if !sources.exists() {
        apt.install(&DEBIAN_RUST_PACKAGES).context(
            "no toolchain with the Rust library sources: install nightly with \
             `rustup toolchain install nightly --component rust-src`, or on Debian \
             `apt-get install rustc-web cargo-web rust-web-src`",
        )?;
    }
    run(Command::new("rustup").args(["toolchain", "link", DEBIAN_TOOLCHAIN, "/usr"]))?;
    if !has_library_sources(DEBIAN_TOOLCHAIN) {
        bail!("linked /usr as `{DEBIAN_TOOLCHAIN}` but its rustc does not see the library sources");
    }
    Ok(DEBIAN_TOOLCHAIN.to_owned())
}

/// bpf-linker reads the bitcode rustc writes, so it must use the same LLVM major.
fn llvm_major(toolchain: &str) -> anyhow::Result<u32> {
    let verbose = rustc_output(toolchain, &["-vV"])
        .with_context(|| format!("running `rustup run {toolchain} rustc -vV`"))?;
    verbose
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|version| version.split('.').next()?.parse().ok())
        .with_context(|| format!("no LLVM version in `rustc -vV` of {toolchain}"))
}

fn bpf_linker_version(path: &std::ffi::OsStr) -> Option<String> {
    let output = Command::new("bpf-linker")
        .arg("--version")
        .env("PATH", path)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "bpf-linker 0.13.0"
    text.split_whitespace().nth(1).map(str::to_owned)
}

fn install_bpf_linker(
    apt: &mut Apt,
    path: &std::ffi::OsStr,
    llvm_major: u32,
    found: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(found) = found {
        eprintln!("xtask: bpf-linker {found} found, {BPF_LINKER_VERSION} wanted: reinstalling");
    }
    let llvm_dir = PathBuf::from(format!("/usr/lib/llvm-{llvm_major}"));
    if !llvm_dir.join("bin/llvm-config").exists() {
        apt.install(&[
            &format!("llvm-{llvm_major}-dev"),
            &format!("libpolly-{llvm_major}-dev"),
            "libzstd-dev",
            "zlib1g-dev",
        ])
        .with_context(|| {
            format!(
                "bpf-linker needs LLVM {llvm_major}'s development files (llvm-config) in {}",
                llvm_dir.display()
            )
        })?;
    }
    let mut dirs = vec![llvm_dir.join("bin")];
    dirs.extend(env::split_paths(path));
    run(
        Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["install", "--locked", "--force"])
            .arg(format!("bpf-linker@{BPF_LINKER_VERSION}"))
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{llvm_major}"))
            .env("PATH", env::join_paths(dirs)?),
    )
    .context("building bpf-linker")
}

/// What the privileged container tests (tests/tests/container_*.rs, docker_*.rs, compose_*.rs,
/// runtime_restart.rs) need.
/// Installed with `--no-install-recommends`, which is all they use:
///
/// * `podman`: the container runtime whose containers they OOM-kill, and whose Docker-compatible
///   API (`podman system service`) the agent asks for names. Its dependencies bring `conmon`,
///   `crun` and a network stack (`containernetworking-plugins`, unused: the tests run containers
///   with `--network none`). Its recommends are not needed: `uidmap`, `slirp4netns` and
///   `fuse-overlayfs` serve rootless podman (the tests are root), `buildah` builds images (the
///   tests `podman import` a tarball), `catatonit` is for `--init`.
/// * `busybox-static`: the userland of the test image (`sh`, `sleep`, `echo`), which has no libc.
/// * `docker.io`: the real Docker Engine (`dockerd`, Debian's `docker` client, and the
///   `containerd` and `runc` it runs containers with), which the Docker tests start themselves
///   (no systemd is needed; apt does not start it). Its recommends are not needed: `apparmor`,
///   `cgroupfs-mount` (the tests' hosts mount cgroups), `git` and `xz-utils` (for `docker
///   build` contexts; the tests `docker import` a tarball), `needrestart`.
/// * `docker-compose`: Compose 1.29 (file format 2.4, with `restart:` and `cgroup_parent:`), as
///   most Docker hosts on Debian run it, for the Compose tests.
/// * `prometheus` ([`crate::prometheus::install`]): the server the alerting test starts on
///   loopback, and `promtool` for `lint`.
/// * `containerd` and `runc` (which `docker.io` brings too): Kubernetes' runtime, which the CRI
///   tests run privately (their own socket and state, no kubelet, no CNI) and create pods in
///   over the CRI, as a kubelet does.
const TEST_PACKAGES: [&str; 6] = [
    "podman",
    "busybox-static",
    "docker.io",
    "docker-compose",
    "containerd",
    "runc",
];

/// Installs what the privileged tests need beyond the toolchain, when missing.
pub fn install_test_tools(apt: &mut Apt) -> anyhow::Result<()> {
    apt.install_missing(&TEST_PACKAGES)
        .context("installing what the container tests need")?;
    crate::prometheus::install(apt)
}

/// apt-get, with `update` run once per xtask run, before the first install (or, in the VM
/// tests, when a package is not found).
#[derive(Default)]
pub struct Apt {
    updated: bool,
}

impl Apt {
    pub fn install(&mut self, packages: &[&str]) -> anyhow::Result<()> {
        self.update()
            .with_context(|| format!("installing {}", packages.join(" ")))?;
        run(Command::new("apt-get")
            // Another apt on the machine (a colleague's setup) holds the lock for a while.
            .args(["-o", "DPkg::Lock::Timeout=300"])
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    }

    /// Installs those of `packages` that dpkg does not know as installed; a no-op if none.
    pub fn install_missing(&mut self, packages: &[&str]) -> anyhow::Result<()> {
        let missing: Vec<&str> = packages
            .iter()
            .copied()
            .filter(|package| !is_installed(package))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        self.install(&missing)
    }

    /// Refreshes the package lists once; returns whether this call did it.
    pub fn update(&mut self) -> anyhow::Result<bool> {
        if self.updated {
            return Ok(false);
        }
        if !Path::new("/usr/bin/apt-get").exists() {
            bail!("apt-get is not available: install the packages by hand");
        }
        if !is_root() {
            bail!("apt-get needs root: run this task as root, or install the packages with sudo");
        }
        run(Command::new("apt-get").args(["update", "-q"]))?;
        self.updated = true;
        Ok(true)
    }
}

/// Asks dpkg rather than looking for binaries: a dynamically linked `busybox` package also
/// installs /bin/busybox, and that one cannot run without a libc (in a VM guest or an image).
pub fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["--show", "--showformat=${db:Status-Status}", package])
        .output()
        .is_ok_and(|output| output.status.success() && output.stdout == b"installed")
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|uids| uids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Runs a command with inherited output; a failure names the command.
pub fn run(command: &mut Command) -> anyhow::Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed: {status}");
    }
    Ok(())
}
