//! The whole-system guest's disk image: Debian 12 as users' Docker hosts and Kubernetes nodes
//! run it (systemd as PID 1 on the unified cgroup hierarchy; Docker Engine and Compose;
//! containerd with its CRI and the systemd cgroup driver; podman with netavark and crun), with
//! Debian's cloud kernel and its initrd taken out of it for qemu's `-kernel`.
//!
//! Built from Debian's packages with debootstrap and apt in a chroot, then written into an ext4
//! file system by `mkfs.ext4 -d` (no loop device). It is kept under
//! `target/vm/system/image-<recipe hash>/` and rebuilt only when the recipe changes: this file
//! and the files under `system-guest/guest/rootfs/`, which are hashed. Boots never write to it:
//! each gets a copy-on-write overlay.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail, ensure};

use xtask::setup::{Apt, is_root, run};
use xtask::vm::mirror::{self, Mirrors};

/// Debian 12, as most Docker hosts on Debian run it.
const SUITE: &str = "bookworm";

/// The system (`debootstrap --variant=minbase --include`), without recommends: systemd as init
/// with udev and D-Bus (runc's and podman's systemd cgroup drivers talk to systemd over it);
/// Docker Engine, Compose 1.29 and the containerd and runc they run on; podman with the network
/// stack its configuration requires (netavark) and crun; busybox for the test images; and the
/// little a test needs besides (`ip`, `modprobe`, `ps`).
const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "dbus",
    "docker.io",
    "docker-compose",
    "containerd",
    "runc",
    "podman",
    "netavark",
    "crun",
    "conmon",
    "busybox-static",
    "iproute2",
    "kmod",
    "procps",
];

/// Installed in the chroot once the security updates are in its sources: Debian's cloud kernel,
/// the smallest that boots under qemu with what containers need as modules, and the tools that
/// write its initrd.
const KERNEL_PACKAGES: &[&str] = &["linux-image-cloud-amd64", "initramfs-tools"];

/// The disk's size: the system takes about 700 MB, the tests' images and containers the rest.
/// Sparse, so unused space costs nothing on the host.
const DISK_SIZE: &str = "4G";
const DISK_LABEL: &str = "oomtrace-guest";

/// Copied over the system: fstab and hostname, containerd's configuration, and the unit that
/// makes a boot a test run (it runs the payload disk's runner). Part of the recipe's hash.
const ROOTFS_FILES: &[(&str, u32, &str)] = &[
    (
        "etc/fstab",
        0o644,
        include_str!("../guest/rootfs/etc/fstab"),
    ),
    (
        "etc/hostname",
        0o644,
        include_str!("../guest/rootfs/etc/hostname"),
    ),
    (
        "etc/containerd/config.toml",
        0o644,
        include_str!("../guest/rootfs/etc/containerd/config.toml"),
    ),
    (
        "etc/systemd/system/oomtrace-guest-run.service",
        0o644,
        include_str!("../guest/rootfs/etc/systemd/system/oomtrace-guest-run.service"),
    ),
    (
        "usr/local/sbin/oomtrace-guest-run",
        0o755,
        include_str!("../guest/rootfs/usr/local/sbin/oomtrace-guest-run"),
    ),
];

/// Units enabled besides those the packages enable (docker, containerd, podman.socket).
const ENABLED_UNITS: &[&str] = &["oomtrace-guest-run.service"];

/// This file: a change to how the image is built is a change of the recipe.
const RECIPE_SOURCE: &str = include_str!("image.rs");

/// A built image, ready to boot.
pub struct Image {
    pub disk: PathBuf,
    pub vmlinuz: PathBuf,
    pub initrd: PathBuf,
    /// `uname -r` of its kernel.
    pub kernel_version: String,
}

/// The image of the current recipe: the cached one, or built now (replacing older ones).
pub fn prepare(system_dir: &Path) -> anyhow::Result<Image> {
    let dir = system_dir.join(format!("image-{:016x}", recipe_hash()));
    if let Some(image) = find(&dir)? {
        println!("vm: system image {} (cached)", dir.display());
        return Ok(image);
    }
    ensure!(
        is_root(),
        "building the system image needs root (debootstrap, chroot, mounting /proc)"
    );
    Apt::default().install_missing(&["debootstrap", "qemu-utils", "e2fsprogs", "systemd"])?;
    verify_units(&system_dir.join("verify"))?;
    remove_other_images(system_dir, &dir)?;
    let started = Instant::now();
    build(system_dir, &dir)
        .with_context(|| format!("building the system image in {}", dir.display()))?;
    let image = find(&dir)?.context("the build left no complete image")?;
    let size = allocated_bytes(&image.disk)?;
    println!(
        "vm: system image built in {} s: {} ({} MB on disk), kernel {}",
        started.elapsed().as_secs(),
        image.disk.display(),
        size >> 20,
        image.kernel_version
    );
    Ok(image)
}

/// The recipe's hash: what it installs, the files it adds, and how it builds.
fn recipe_hash() -> u64 {
    let mut fields: Vec<&[u8]> = vec![SUITE.as_bytes()];
    fields.extend(
        PACKAGES
            .iter()
            .chain(KERNEL_PACKAGES)
            .map(|package| package.as_bytes()),
    );
    let modes: Vec<[u8; 4]> = ROOTFS_FILES
        .iter()
        .map(|(_, mode, _)| mode.to_le_bytes())
        .collect();
    for ((path, _, contents), mode) in ROOTFS_FILES.iter().zip(&modes) {
        fields.extend([path.as_bytes(), mode.as_slice(), contents.as_bytes()]);
    }
    fields.push(RECIPE_SOURCE.as_bytes());
    fnv1a(&fields)
}

/// systemd ignores a line it does not understand, with a warning in the guest's journal that no
/// one reads (the runner's power-off was once lost that way): `systemd-analyze verify` checks
/// the units first, and any word from it fails the build before it starts. The programs they
/// start are not in this machine's root, so the checked copies start /bin/true.
fn verify_units(scratch: &Path) -> anyhow::Result<()> {
    for (path, _, contents) in ROOTFS_FILES
        .iter()
        .filter(|(path, ..)| path.ends_with(".service"))
    {
        let name = Path::new(path)
            .file_name()
            .context("a unit without a name")?;
        let copy = scratch.join(name);
        let checkable: String = contents
            .lines()
            .map(|line| match line.starts_with("ExecStart=") {
                true => "ExecStart=/bin/true",
                false => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        write_file(&copy, 0o644, &checkable)?;
        let output = xtask::deploy::verify(&copy)?;
        let _ = fs::remove_dir_all(scratch);
        if !output.status.success() || !output.stdout.is_empty() || !output.stderr.is_empty() {
            bail!(
                "systemd-analyze verify system-guest/guest/rootfs/{path}: {}",
                xtask::deploy::describe(&output)
            );
        }
    }
    Ok(())
}

/// FNV-1a (64 bits) over fields, each ended by a NUL: stable across Rust releases, unlike
/// `DefaultHasher`, and `["ab", "c"]` differs from `["a", "bc"]`.
fn fnv1a(fields: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for field in fields {
        for byte in field.iter().chain(b"\0") {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// The image in `dir`, if a build finished there (the disk is renamed into place last).
fn find(dir: &Path) -> anyhow::Result<Option<Image>> {
    let disk = dir.join("disk.img");
    let version_file = dir.join("kernel-version");
    if !disk.is_file() || !version_file.is_file() {
        return Ok(None);
    }
    let kernel_version = fs::read_to_string(&version_file)
        .with_context(|| format!("reading {}", version_file.display()))?
        .trim()
        .to_owned();
    Ok(Some(Image {
        vmlinuz: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        disk,
        kernel_version,
    }))
}

/// One image is enough: older recipes' images (about 800 MB each) go.
fn remove_other_images(system_dir: &Path, keep: &Path) -> anyhow::Result<()> {
    let Ok(entries) = fs::read_dir(system_dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        let is_image = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with("image-"));
        if is_image && path != keep {
            println!(
                "vm: removing the system image of an older recipe, {}",
                path.display()
            );
            remove_tree(&path)?;
        }
    }
    Ok(())
}

fn build(system_dir: &Path, dir: &Path) -> anyhow::Result<()> {
    let build_dir = system_dir.join("build");
    remove_tree(&build_dir)?;
    remove_tree(dir)?;
    let rootfs = build_dir.join("rootfs");
    fs::create_dir_all(&build_dir).with_context(|| format!("creating {}", build_dir.display()))?;
    let debs = system_dir.join("debs");
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let mirrors = Mirrors::of_host()?;
    let proxy = mirror::apt_http_proxy();

    let step = Instant::now();
    let mut debootstrap = Command::new("debootstrap");
    debootstrap
        .arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        // The packages stay for the next recipe: only what changed is downloaded again.
        .arg("--cache-dir")
        .arg(&debs)
        .arg(SUITE)
        .arg(&rootfs)
        .arg(&mirrors.archive);
    if let Some(proxy) = &proxy {
        debootstrap.env("http_proxy", proxy);
    }
    run(&mut debootstrap).with_context(|| {
        format!(
            "debootstrap of Debian {SUITE} from {} (its log: {})",
            mirrors.archive,
            rootfs.join("debootstrap/debootstrap.log").display()
        )
    })?;
    println!(
        "vm: system image: Debian {SUITE} from {} ({} s)",
        mirrors.archive,
        step.elapsed().as_secs()
    );

    let step = Instant::now();
    install_kernel(&rootfs, &mirrors, proxy.as_deref())?;
    println!(
        "vm: system image: security updates and the kernel ({} s)",
        step.elapsed().as_secs()
    );

    for (path, mode, contents) in ROOTFS_FILES {
        write_file(&rootfs.join(path), *mode, contents)?;
    }
    run(Command::new("systemctl")
        .arg(format!("--root={}", rootfs.display()))
        .arg("enable")
        .args(ENABLED_UNITS))?;
    // debootstrap copied the host's; the guest has no network to resolve names on.
    write_file(&rootfs.join("etc/resolv.conf"), 0o644, "")?;

    let step = Instant::now();
    let kernel_version = take_kernel(&rootfs, &build_dir)?;
    let disk = build_dir.join("disk.img");
    run(Command::new("truncate").args(["-s", DISK_SIZE]).arg(&disk))?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", DISK_LABEL, "-d"])
        .arg(&rootfs)
        .arg(&disk))?;
    println!(
        "vm: system image: the disk written ({} s)",
        step.elapsed().as_secs()
    );
    fs::write(
        build_dir.join("kernel-version"),
        format!("{kernel_version}\n"),
    )
    .context("writing the kernel version")?;
    remove_tree(&rootfs)?;
    fs::rename(&build_dir, dir)
        .with_context(|| format!("renaming {} to {}", build_dir.display(), dir.display()))
}

/// In the chroot: the suite's updates and security updates, as any installed host has them,
/// then the kernel. No service may start in a chroot (policy-rc.d says so to invoke-rc.d).
fn install_kernel(rootfs: &Path, mirrors: &Mirrors, proxy: Option<&str>) -> anyhow::Result<()> {
    let sources = format!(
        "deb {archive} {SUITE} main\n\
         deb {archive} {SUITE}-updates main\n\
         deb {security} {SUITE}-security main\n",
        archive = mirrors.archive,
        security = mirrors.security,
    );
    write_file(&rootfs.join("etc/apt/sources.list"), 0o644, &sources)?;
    let policy = rootfs.join("usr/sbin/policy-rc.d");
    write_file(&policy, 0o755, "#!/bin/sh\nexit 101\n")?;
    let proc_mount = Mount::proc(rootfs)?;
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let mut command = Command::new("chroot");
        command
            .arg(rootfs)
            .arg("apt-get")
            .args(["-q", "-y", "--no-install-recommends"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(args);
        if let Some(proxy) = proxy {
            command.args(["-o", &format!("Acquire::http::Proxy={proxy}")]);
        }
        run(&mut command)
    };
    apt(&["update"])?;
    apt(&["upgrade"])?;
    apt(&[&["install"], KERNEL_PACKAGES].concat())?;
    apt(&["clean"])?;
    drop(proc_mount);
    fs::remove_file(&policy).with_context(|| format!("removing {}", policy.display()))?;
    // The package lists are 80 MB the guest never reads.
    let lists = rootfs.join("var/lib/apt/lists");
    remove_tree(&lists)?;
    fs::create_dir_all(lists.join("partial")).context("recreating apt's lists directory")
}

/// The kernel and its initrd, out of /boot, for qemu's `-kernel` and `-initrd`; returns the
/// kernel's version.
fn take_kernel(rootfs: &Path, build_dir: &Path) -> anyhow::Result<String> {
    let boot = rootfs.join("boot");
    let mut version = None;
    for entry in fs::read_dir(&boot).with_context(|| format!("reading {}", boot.display()))? {
        let name = entry?.file_name();
        if let Some(found) = name.to_str().and_then(|name| name.strip_prefix("vmlinuz-")) {
            ensure!(
                version.is_none(),
                "more than one kernel in {}",
                boot.display()
            );
            version = Some(found.to_owned());
        }
    }
    let version = version.with_context(|| format!("no vmlinuz-* in {}", boot.display()))?;
    for (from, to) in [
        (format!("vmlinuz-{version}"), "vmlinuz"),
        (format!("initrd.img-{version}"), "initrd.img"),
    ] {
        fs::copy(boot.join(&from), build_dir.join(to))
            .with_context(|| format!("copying {from} out of {}", boot.display()))?;
    }
    Ok(version)
}

fn write_file(path: &Path, mode: u32, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// /proc mounted in the chroot, unmounted on drop, also when a step fails.
struct Mount(PathBuf);

impl Mount {
    fn proc(rootfs: &Path) -> anyhow::Result<Self> {
        let target = rootfs.join("proc");
        run(Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(&target))?;
        Ok(Self(target))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(err) = run(Command::new("umount").arg(&self.0)) {
            eprintln!("vm: warning: {err:#}");
        }
    }
}

/// Removes a tree that a chroot may have used: a mount left inside it by an interrupted build
/// (/proc, debootstrap's /sys) is unmounted first, since removing files through it would reach
/// the host's.
fn remove_tree(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let path = path
        .canonicalize()
        .with_context(|| format!("resolving {}", path.display()))?;
    // Deepest first.
    let mut mounts = mounts_under(&path)?;
    mounts.sort_by_key(|mount| std::cmp::Reverse(mount.components().count()));
    for mount in &mounts {
        run(Command::new("umount").arg("--lazy").arg(mount))?;
    }
    let left = mounts_under(&path)?;
    if !left.is_empty() {
        bail!(
            "not removing {}: still mounted inside it: {left:?}",
            path.display()
        );
    }
    fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))
}

fn mounts_under(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mountinfo =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(mount_points(&mountinfo)
        .into_iter()
        .filter(|mount| mount.starts_with(path))
        .collect())
}

/// The mount points of `/proc/self/mountinfo` (its fifth field, with `\040`-style escapes).
fn mount_points(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|escaped| PathBuf::from(unescape_octal(escaped)))
        .collect()
}

fn unescape_octal(escaped: &str) -> String {
    let mut out = Vec::with_capacity(escaped.len());
    let bytes = escaped.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let octal = bytes.get(index + 1..index + 4).filter(|digits| {
            bytes[index] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d))
        });
        match octal {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                index += 4;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Blocks allocated, not the sparse file's length.
fn allocated_bytes(path: &Path) -> anyhow::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(meta.blocks() * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped() {
        let mountinfo = "36 35 98:0 / /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
            37 36 0:4 / /work/target/vm/system/build/rootfs/proc rw - proc proc rw\n";
        assert_eq!(
            mount_points(mountinfo),
            [
                PathBuf::from("/mnt/with space"),
                PathBuf::from("/work/target/vm/system/build/rootfs/proc")
            ]
        );
    }

    #[test]
    fn the_hash_tells_fields_apart() {
        // An empty field is one NUL byte, whose FNV-1a is well known.
        assert_eq!(fnv1a(&[b""]), 0xaf63_bd4c_8601_b7df);
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        assert_ne!(fnv1a(&[b"etc/fstab", b"x"]), fnv1a(&[b"etc/fstab", b"y"]));
    }
}
