//! The guest kernels: Debian kernel packages, fetched with `apt-get download` and unpacked
//! under `target/vm/kernels/<package>/`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::setup::run;

use crate::setup::Apt;

/// A family of kernel packages; the newest package in the package lists is tested.
pub struct KernelPackage {
    /// What `--kernel` matches against.
    pub name: &'static str,
    /// Package names, with `*` for the ABI number that changes with every stable update.
    pub package: &'static str,
}

/// The kernels the agent is tested on, besides the host's own.
pub const KERNELS: &[KernelPackage] = &[
    // Debian 12's LTS kernel: fentry and kprobes work, cgroup v2 only, and the `mark_victim`
    // tracepoint has the memory fields backported. `-unsigned` is the plain image, without the
    // shim-signing wrapper package. The cloud flavour is the smallest that boots under qemu.
    KernelPackage {
        name: "debian-6.1-cloud",
        package: "linux-image-6.1.0-*-cloud-amd64-unsigned",
    },
];

/// A kernel ready to boot.
pub struct Kernel {
    /// The Debian package it came from.
    pub package: String,
    /// `uname -r`, from the image's file name, e.g. `6.1.0-56-cloud-amd64`.
    pub version: String,
    pub vmlinuz: PathBuf,
}

pub fn select(filter: Option<&str>) -> anyhow::Result<Vec<&'static KernelPackage>> {
    let selected: Vec<_> = KERNELS
        .iter()
        .filter(|kernel| filter.is_none_or(|filter| kernel.name.contains(filter)))
        .collect();
    if selected.is_empty() {
        let names: Vec<_> = KERNELS.iter().map(|kernel| kernel.name).collect();
        bail!(
            "no kernel matches {:?}; known kernels: {}",
            filter.unwrap_or_default(),
            names.join(", ")
        );
    }
    Ok(selected)
}

/// The newest package of the family, downloaded and unpacked unless it already is.
pub fn fetch(apt: &mut Apt, family: &KernelPackage, kernels_dir: &Path) -> anyhow::Result<Kernel> {
    match fetch_newest(apt, family, kernels_dir) {
        Ok(kernel) => Ok(kernel),
        // Stale package lists name packages the mirror no longer has, or none at all.
        Err(err) => match apt.update() {
            Ok(true) => fetch_newest(apt, family, kernels_dir)
                .context("again after refreshing the package lists"),
            _ => Err(err),
        },
    }
    .with_context(|| format!("fetching kernel {} ({})", family.name, family.package))
}

fn fetch_newest(apt: &Apt, family: &KernelPackage, kernels_dir: &Path) -> anyhow::Result<Kernel> {
    let package = newest(apt.search_names(&name_regex(family.package))?)
        .with_context(|| format!("no package matches {} in the package lists", family.package))?;
    let dir = kernels_dir.join(&package);
    let root = dir.join("root");
    if let Some(kernel) = find_vmlinuz(&package, &root)? {
        return Ok(kernel);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let deb = match find_deb(&dir)? {
        Some(deb) => deb,
        None => {
            apt.download(&package, &dir)?;
            find_deb(&dir)?
                .with_context(|| format!("apt-get download left no .deb in {}", dir.display()))?
        }
    };
    unpack(&deb, &root)?;
    find_vmlinuz(&package, &root)?
        .with_context(|| format!("{} holds no boot/vmlinuz-*", deb.display()))
}

/// The kernel headers Debian builds with `version` (`uname -r`), for tools that compile against
/// them: `linux-headers-<version>` and the `-common` package it depends on, unpacked together
/// under `headers_dir/<version>/root` unless they already are.
pub fn fetch_headers(apt: &mut Apt, version: &str, headers_dir: &Path) -> anyhow::Result<PathBuf> {
    let dir = headers_dir.join(version);
    let root = dir.join("root");
    if root.join("usr/src").is_dir() {
        return Ok(root);
    }
    let common = common_headers_package(version)
        .with_context(|| format!("no Debian headers package name for kernel {version}"))?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let partial = root.with_extension("partial");
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    for package in [format!("linux-headers-{version}"), common] {
        let download = dir.join(&package);
        fs::create_dir_all(&download)
            .with_context(|| format!("creating {}", download.display()))?;
        if find_deb(&download)?.is_none() {
            apt.download(&package, &download)
                .or_else(|err| match apt.update() {
                    Ok(true) => apt.download(&package, &download),
                    _ => Err(err),
                })
                .with_context(|| format!("downloading {package}"))?;
        }
        let deb = find_deb(&download)?
            .with_context(|| format!("apt-get download left no .deb in {}", download.display()))?;
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
    }
    fs::rename(&partial, &root)
        .with_context(|| format!("renaming {} to {}", partial.display(), root.display()))?;
    Ok(root)
}

/// `6.1.0-57-cloud-amd64` → `linux-headers-6.1.0-57-common`.
fn common_headers_package(version: &str) -> Option<String> {
    let mut parts = version.split('-');
    let (release, abi) = (parts.next()?, parts.next()?);
    abi.parse::<u32>().ok()?;
    Some(format!("linux-headers-{release}-{abi}-common"))
}

/// `linux-image-6.1.0-*-cloud-amd64-unsigned` → `^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$`.
fn name_regex(pattern: &str) -> String {
    let parts: Vec<String> = pattern
        .split('*')
        .map(|literal| literal.replace('.', r"\.").replace('+', r"\+"))
        .collect();
    format!("^{}$", parts.join("[0-9]+"))
}

/// By the numbers in the name, so that ABI 100 comes after ABI 99.
fn newest(packages: Vec<String>) -> Option<String> {
    packages.into_iter().max_by_key(|name| numbers(name))
}

fn numbers(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|digits| digits.parse().ok())
        .collect()
}

fn find_deb(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|extension| extension == "deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Unpacks into a temporary directory first, so that an interrupted run leaves no half
/// unpacked tree that a later run would take for a finished one.
fn unpack(deb: &Path, root: &Path) -> anyhow::Result<()> {
    let partial = root.with_extension("partial");
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&partial))?;
    fs::rename(&partial, root)
        .with_context(|| format!("renaming {} to {}", partial.display(), root.display()))
}

fn find_vmlinuz(package: &str, root: &Path) -> anyhow::Result<Option<Kernel>> {
    let boot = root.join("boot");
    if !boot.is_dir() {
        return Ok(None);
    }
    let entries = fs::read_dir(&boot).with_context(|| format!("reading {}", boot.display()))?;
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
            continue;
        };
        if let Some(version) = name.strip_prefix("vmlinuz-") {
            return Ok(Some(Kernel {
                package: package.to_owned(),
                version: version.to_owned(),
                vmlinuz: path.clone(),
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_regex_escapes_dots_and_matches_the_abi() {
        assert_eq!(
            name_regex("linux-image-6.1.0-*-cloud-amd64-unsigned"),
            r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$"
        );
    }

    #[test]
    fn the_common_headers_package_drops_the_flavour() {
        assert_eq!(
            common_headers_package("6.1.0-57-cloud-amd64").as_deref(),
            Some("linux-headers-6.1.0-57-common")
        );
        assert_eq!(common_headers_package("6.18.44-fc-v595"), None);
    }

    #[test]
    fn newest_compares_numbers_not_text() {
        let packages = ["linux-image-6.1.0-99-cloud", "linux-image-6.1.0-100-cloud"];
        assert_eq!(
            newest(packages.map(str::to_owned).to_vec()).as_deref(),
            Some("linux-image-6.1.0-100-cloud")
        );
    }
}
