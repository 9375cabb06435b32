//! Builds the eBPF programs (`tracer-ebpf`) so that the agent can embed the object.
//!
//! The programs need a Rust toolchain that can build `core` for the bpf target, i.e. one with
//! the library sources, plus `bpf-linker`. `cargo xtask setup` installs both; this script only
//! finds them and says exactly what is missing otherwise. Without the `ebpf` feature (the
//! library alone, for the fuzz targets, the privileged tests and xtask) it builds nothing.

fn main() -> anyhow::Result<()> {
    #[cfg(feature = "ebpf")]
    ebpf::build()?;
    Ok(())
}

#[cfg(feature = "ebpf")]
mod ebpf {
    use std::{
        env,
        path::{Path, PathBuf},
        process::Command,
    };

    use anyhow::{Context as _, bail};
    use aya_build::{Package, Toolchain};

    /// The toolchain `cargo xtask setup` links from Debian's `rustc-web`, `cargo-web` and
    /// `rust-web-src` packages.
    const DEBIAN_TOOLCHAIN: &str = "bpf-debian";
    const TOOLCHAIN_OVERRIDE: &str = "OOMTRACE_EBPF_TOOLCHAIN";

    pub fn build() -> anyhow::Result<()> {
        println!("cargo:rerun-if-env-changed={TOOLCHAIN_OVERRIDE}");
        let toolchain = match env::var(TOOLCHAIN_OVERRIDE) {
            Ok(toolchain) => toolchain,
            Err(_) => find_toolchain()?,
        };
        if toolchain == DEBIAN_TOOLCHAIN {
            // A stable compiler: allow `-Z build-std=core` (aya-build reads this variable).
            // SAFETY: build scripts are single-threaded.
            unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
        }
        if which_in_path("bpf-linker").is_none() {
            bail!("bpf-linker is not on PATH: run `cargo xtask setup` to install it");
        }
        // The agent's `[profile.release]` (opt-level "s", LTO) is for a small executable; the
        // programs are built at opt-level 3 without LTO, so that their helpers are inlined: with
        // them out of line, Linux 6.1's verifier refuses the BTF tracepoint programs (EACCES).
        // SAFETY: build scripts are single-threaded.
        unsafe {
            env::set_var("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3");
            env::set_var("CARGO_PROFILE_RELEASE_LTO", "false");
        }
        let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
        let ebpf_dir = manifest_dir.join("../tracer-ebpf");
        let ebpf_dir = ebpf_dir.to_str().context("non-UTF-8 path to tracer-ebpf")?;
        aya_build::build_ebpf(
            [Package {
                name: "tracer-ebpf",
                root_dir: ebpf_dir,
                ..Default::default()
            }],
            Toolchain::Custom(&toolchain),
        )
    }

    /// Nightly with `rust-src` where a developer has it, else the Debian toolchain.
    fn find_toolchain() -> anyhow::Result<String> {
        for toolchain in ["nightly", DEBIAN_TOOLCHAIN] {
            if has_library_sources(toolchain) {
                return Ok(toolchain.to_owned());
            }
        }
        bail!(
            "no Rust toolchain here can build oomtrace's eBPF programs: they need the `core` library \
             sources. Run `cargo xtask setup` (installs Debian's rustc-web, cargo-web and \
             rust-web-src and links them as `{DEBIAN_TOOLCHAIN}`), or `rustup toolchain install \
             nightly --component rust-src`, or set {TOOLCHAIN_OVERRIDE} to a toolchain that has them"
        )
    }

    fn has_library_sources(toolchain: &str) -> bool {
        let Ok(output) = Command::new("rustup")
            .args(["run", toolchain, "rustc", "--print", "sysroot"])
            .output()
        else {
            return false;
        };
        let sysroot = String::from_utf8_lossy(&output.stdout);
        output.status.success()
            && Path::new(sysroot.trim())
                .join("lib/rustlib/src/rust/library/core/Cargo.toml")
                .exists()
    }

    fn which_in_path(program: &str) -> Option<PathBuf> {
        env::split_paths(&env::var_os("PATH")?)
            .map(|dir| dir.join(program))
            .find(|path| path.is_file())
    }
}
