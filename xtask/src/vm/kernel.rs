//! The guest kernels: Debian kernel packages of several suites, fetched with `apt-get download`
//! through each suite's own package lists ([`SuiteApt`]) and unpacked under
//! `target/vm/kernels/<package>/`, where later runs find them.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::apt::SuiteApt;
use crate::setup::run;

/// A family of kernel packages; the newest package in its suite's lists is tested.
pub struct KernelPackage {
    /// What `--kernel` matches against: the version exactly, or part of the name.
    pub name: &'static str,
    pub version: &'static str,
    /// The Debian suites whose packages are candidates.
    pub suites: &'static [&'static str],
    /// Package names, with `*` for the numbers that change with every stable update.
    pub package: &'static str,
}

/// The kernels the agent is tested on, besides the host's own. The cloud flavour is the
/// smallest that boots under qemu; `-unsigned` is the plain image, without the shim-signing
/// wrapper package.
pub const KERNELS: &[KernelPackage] = &[
    // Debian 11 as its last point release (11.11) installs it: 5.10.223, whose `mark_victim`
    // tracepoint and BTF prototype carry only the victim's pid, as on most 5.x kernels (Ubuntu
    // 20.04/22.04's 5.4/5.15, RHEL 8/9). bullseye-security's later 5.10 kernels have the task
    // argument and the memory fields backported (5.10.251 runs every scenario in tier `full`
    // with them), so it is left out here: the pid-only kernel is the one worth testing.
    KernelPackage {
        name: "debian-5.10-cloud",
        version: "5.10",
        suites: &["bullseye"],
        package: "linux-image-5.10.0-*-cloud-amd64-unsigned",
    },
    // Debian 12's LTS kernel: fentry and kprobes work, cgroup v2 only, and the `mark_victim`
    // tracepoint has the memory fields backported.
    KernelPackage {
        name: "debian-6.1-cloud",
        version: "6.1",
        suites: &["bookworm", "bookworm-security"],
        package: "linux-image-6.1.0-*-cloud-amd64-unsigned",
    },
    // Debian 13's LTS kernel, whose ABI names carry the full upstream version.
    KernelPackage {
        name: "debian-6.12-cloud",
        version: "6.12",
        suites: &["trixie", "trixie-security"],
        package: "linux-image-6.12.*+deb13-cloud-amd64-unsigned",
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

/// The kernels whose version is `filter` (so `6.1` is not also 6.12), else those whose name
/// contains it; all without a filter.
pub fn select(filter: Option<&str>) -> anyhow::Result<Vec<&'static KernelPackage>> {
    let Some(filter) = filter else {
        return Ok(KERNELS.iter().collect());
    };
    let exact: Vec<_> = KERNELS
        .iter()
        .filter(|kernel| kernel.version == filter)
        .collect();
    let selected: Vec<_> = if exact.is_empty() {
        KERNELS
            .iter()
            .filter(|kernel| kernel.name.contains(filter))
            .collect()
    } else {
        exact
    };
    if selected.is_empty() {
        let names: Vec<_> = KERNELS.iter().map(|kernel| kernel.name).collect();
        bail!(
            "no kernel matches {filter:?}; known kernels: {}",
            names.join(", ")
        );
    }
    Ok(selected)
}

/// The newest package of the family, downloaded and unpacked unless it already is.
pub fn fetch(
    apt: &mut SuiteApt,
    family: &KernelPackage,
    kernels_dir: &Path,
) -> anyhow::Result<Kernel> {
    if !apt.has_lists() {
        apt.update()?;
    }
    match fetch_newest(apt, family, kernels_dir) {
        Ok(kernel) => Ok(kernel),
        // Stale package lists name packages the mirror no longer has, or none at all.
        Err(err) => match apt.update() {
            Ok(true) => fetch_newest(apt, family, kernels_dir)
                .context("again after refreshing the package lists"),
            _ => Err(err),
        },
    }
    .with_context(|| {
        format!(
            "fetching kernel {} ({} from Debian {})",
            family.name,
            family.package,
            apt.suites()
        )
    })
}

/// The newest package of the family that the mirror serves: a mirror may name packages in its
/// lists that its pool lacks (404), and then the next older one is taken, with a warning.
fn fetch_newest(
    apt: &SuiteApt,
    family: &KernelPackage,
    kernels_dir: &Path,
) -> anyhow::Result<Kernel> {
    let packages = newest_first(apt.search_names(&name_regex(family.package))?);
    if packages.is_empty() {
        bail!("no package matches {} in the package lists", family.package);
    }
    let mut unavailable = Vec::new();
    for package in packages.iter().take(MAX_CANDIDATES) {
        match fetch_package(apt, package, kernels_dir) {
            Ok(kernel) => {
                if !unavailable.is_empty() {
                    println!(
                        "vm: warning: the mirror does not serve {}; took {package} instead",
                        unavailable.join(", ")
                    );
                }
                return Ok(kernel);
            }
            Err(err) => {
                eprintln!("vm: {package}: {err:#}");
                unavailable.push(package.clone());
            }
        }
    }
    bail!(
        "none of the {} newest packages could be downloaded: {}",
        unavailable.len(),
        unavailable.join(", ")
    )
}

/// How many packages of a family are tried, newest first, before giving up.
const MAX_CANDIDATES: usize = 6;
/// A package the mirror did not serve is not asked for again for this long.
const UNAVAILABLE_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// One package, from the cache or downloaded and unpacked.
fn fetch_package(apt: &SuiteApt, package: &str, kernels_dir: &Path) -> anyhow::Result<Kernel> {
    let dir = kernels_dir.join(package);
    let root = dir.join("root");
    if let Some(kernel) = find_vmlinuz(package, &root)? {
        return Ok(kernel);
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let deb = match find_deb(&dir)? {
        Some(deb) => deb,
        None => {
            let marker = dir.join("unavailable");
            let recently = fs::metadata(&marker)
                .and_then(|meta| meta.modified())
                .is_ok_and(|when| when.elapsed().is_ok_and(|age| age < UNAVAILABLE_FOR));
            if recently {
                bail!(
                    "the mirror did not serve it (noted in {})",
                    marker.display()
                );
            }
            if let Err(err) = apt.download(package, &dir) {
                fs::write(&marker, format!("{err:#}\n"))
                    .with_context(|| format!("writing {}", marker.display()))?;
                return Err(err);
            }
            find_deb(&dir)?
                .with_context(|| format!("apt-get download left no .deb in {}", dir.display()))?
        }
    };
    unpack(&deb, &root)?;
    find_vmlinuz(package, &root)?
        .with_context(|| format!("{} holds no boot/vmlinuz-*", deb.display()))
}

/// The kernel headers Debian builds with `version` (`uname -r`), for tools that compile against
/// them: `linux-headers-<version>` and the `-common` package it depends on, unpacked together
/// under `headers_dir/<version>/root` unless they already are.
pub fn fetch_headers(
    apt: &mut SuiteApt,
    version: &str,
    headers_dir: &Path,
) -> anyhow::Result<PathBuf> {
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
            apt.download_fresh(&package, &download)
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

/// By the numbers in the names, so that ABI 100 comes before ABI 99.
fn newest_first(mut packages: Vec<String>) -> Vec<String> {
    packages.sort_by_key(|name| std::cmp::Reverse(numbers(name)));
    packages
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
        let packages = [
            "linux-image-6.1.0-99-cloud",
            "linux-image-6.1.0-100-cloud",
            "linux-image-6.1.0-7-cloud",
        ];
        assert_eq!(
            newest_first(packages.map(str::to_owned).to_vec()),
            [
                "linux-image-6.1.0-100-cloud",
                "linux-image-6.1.0-99-cloud",
                "linux-image-6.1.0-7-cloud"
            ]
        );
        // Debian 13's names carry the upstream version: 6.12.118 is newer than 6.12.96.
        let trixie = [
            "linux-image-6.12.96+deb13-cloud",
            "linux-image-6.12.118+deb13-cloud",
        ];
        assert_eq!(
            newest_first(trixie.map(str::to_owned).to_vec())[0],
            "linux-image-6.12.118+deb13-cloud"
        );
    }

    #[test]
    fn a_version_selects_only_that_kernel() {
        let names = |filter| -> Vec<&str> {
            select(filter)
                .unwrap()
                .iter()
                .map(|kernel| kernel.name)
                .collect()
        };
        assert_eq!(names(Some("6.1")), ["debian-6.1-cloud"]);
        assert_eq!(names(Some("6.12")), ["debian-6.12-cloud"]);
        assert_eq!(
            names(Some("debian-6.1")),
            ["debian-6.1-cloud", "debian-6.12-cloud"]
        );
        assert_eq!(names(None).len(), KERNELS.len());
        assert!(select(Some("4.19")).is_err());
    }
}
