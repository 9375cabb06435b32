//! The container tests' image, for every runtime: a rootfs of the static busybox (with a
//! symlink per applet, so `sh`, `sleep` and `echo` are on PATH) and the static hog, as a
//! tarball each runtime imports (`podman import`, `docker import`), or as an OCI image layout
//! archive of that one layer for runtimes that import images (`ctr images import`). No registry
//! is reachable, and no Dockerfile builder is needed.

use std::fs::{self, File};
use std::hash::{DefaultHasher, Hasher as _};
use std::io::Read as _;
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::{command_output, run_checked, static_hog_binary};

/// Where the image holds the hog; on the default PATH too.
pub const HOG_IN_IMAGE: &str = "/usr/local/bin/oomtrace-hog";
/// Debian's busybox-static (a dynamically linked busybox would find no libc in the image).
const BUSYBOX: &str = "/bin/busybox";
/// Bump when the image's layout changes, so existing images are rebuilt.
const LAYOUT_VERSION: &[u8] = b"oomtrace-hog image v1";

/// The image's content, ready to import; its directory is removed on drop.
pub(crate) struct RootfsTarball {
    dir: PathBuf,
    path: PathBuf,
}

impl RootfsTarball {
    /// A fingerprint of what the image would hold (both binaries and the layout): a rebuilt hog
    /// gets a new one. Checks first that both binaries can run in an image without a libc.
    pub(crate) fn fingerprint() -> String {
        let (busybox, hog) = binaries();
        let read = |path: &Path| {
            fs::read(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
        };
        let mut hasher = DefaultHasher::new();
        for part in [LAYOUT_VERSION.to_vec(), read(&busybox), read(&hog)] {
            hasher.write_usize(part.len());
            hasher.write(&part);
        }
        format!("{:016x}", hasher.finish())
    }

    /// Writes the rootfs and packs it, in a directory of its own under the temporary
    /// directory (`purpose` tells test processes' directories apart).
    pub(crate) fn build(purpose: &str) -> Self {
        let (busybox, hog) = binaries();
        let dir = std::env::temp_dir().join(format!(
            "oomtrace-test-image-{purpose}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&dir);
        let rootfs = dir.join("rootfs");
        write_rootfs(&rootfs, &busybox, &hog);
        let path = dir.join("rootfs.tar");
        let mut tar = Command::new("tar");
        tar.arg("--create")
            .arg("--file")
            .arg(&path)
            .arg("--directory")
            .arg(&rootfs)
            .args(["--numeric-owner", "--owner=0", "--group=0", "."]);
        run_checked(&mut tar);
        RootfsTarball { dir, path }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RootfsTarball {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// An OCI image layout archive at `archive` holding one image per `(name, command)`, all of
/// the one uncompressed layer `rootfs`: what containerd's `ctr images import` reads.
pub(crate) fn oci_archive(rootfs: &RootfsTarball, images: &[(&str, &[&str])], archive: &Path) {
    let layout = archive.with_extension("layout");
    let _ = fs::remove_dir_all(&layout);
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap_or_else(|err| panic!("creating {}: {err}", blobs.display()));
    // A blob is named by its digest.
    let add_blob = |from: &Path| -> (String, u64) {
        let digest = sha256(from);
        let size = fs::metadata(from)
            .unwrap_or_else(|err| panic!("{}: {err}", from.display()))
            .len();
        fs::copy(from, blobs.join(&digest))
            .unwrap_or_else(|err| panic!("copying {} into the layout: {err}", from.display()));
        (format!("sha256:{digest}"), size)
    };
    let add_json = |value: serde_json::Value| {
        let staged = layout.join("staged.json");
        fs::write(&staged, value.to_string()).unwrap_or_else(|err| panic!("a blob: {err}"));
        let blob = add_blob(&staged);
        let _ = fs::remove_file(&staged);
        blob
    };
    let (layer, layer_size) = add_blob(rootfs.path());
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|(name, command)| {
            let (config, config_size) = add_json(json!({
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": command, "Env": ["PATH=/usr/local/bin:/bin"]},
                "rootfs": {"type": "layers", "diff_ids": [layer]},
            }));
            let (manifest, manifest_size) = add_json(json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config,
                    "size": config_size,
                },
                "layers": [{
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer,
                    "size": layer_size,
                }],
            }));
            json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest,
                "size": manifest_size,
                "annotations": {"io.containerd.image.name": name},
            })
        })
        .collect();
    let write = |name: &str, value: serde_json::Value| {
        fs::write(layout.join(name), value.to_string())
            .unwrap_or_else(|err| panic!("writing {name}: {err}"));
    };
    write(
        "index.json",
        json!({"schemaVersion": 2, "manifests": manifests}),
    );
    write("oci-layout", json!({"imageLayoutVersion": "1.0.0"}));
    run_checked(
        Command::new("tar")
            .arg("--create")
            .arg("--file")
            .arg(archive)
            .arg("--directory")
            .arg(&layout)
            .args(["--numeric-owner", "--owner=0", "--group=0", "."]),
    );
    let _ = fs::remove_dir_all(&layout);
}

/// `sha256sum`'s digest of a file, in hex.
fn sha256(path: &Path) -> String {
    let output = command_output(Command::new("sha256sum").arg(path));
    assert!(output.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no digest of {}", path.display()))
        .to_owned()
}

/// The static busybox and the static hog; panics, saying how to get them, unless both are
/// statically linked.
fn binaries() -> (PathBuf, PathBuf) {
    let hog = static_hog_binary();
    let busybox = PathBuf::from(BUSYBOX);
    require_static(
        &busybox,
        "install Debian's busybox-static (`cargo xtask setup`)",
    );
    require_static(
        &hog,
        "build it with `-C target-feature=+crt-static`, as `cargo xtask test` does",
    );
    (busybox, hog)
}

fn write_rootfs(rootfs: &Path, busybox: &Path, hog: &Path) {
    let mkdir = |relative: &str, mode: u32| {
        let dir = rootfs.join(relative);
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("creating {}: {err}", dir.display()));
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|err| panic!("chmod {}: {err}", dir.display()));
    };
    // Mount points podman fills, and a /tmp.
    for dir in ["bin", "usr/local/bin", "dev", "proc", "sys", "etc", "root"] {
        mkdir(dir, 0o755);
    }
    mkdir("tmp", 0o1777);
    let copy = |from: &Path, to: &str| {
        fs::copy(from, rootfs.join(to))
            .unwrap_or_else(|err| panic!("copying {} into the image: {err}", from.display()));
    };
    copy(busybox, "bin/busybox");
    copy(hog, HOG_IN_IMAGE.trim_start_matches('/'));

    let output = command_output(Command::new(busybox).arg("--list"));
    assert!(
        output.status.success(),
        "`{} --list` failed: {}",
        busybox.display(),
        output.status
    );
    for applet in String::from_utf8_lossy(&output.stdout).split_whitespace() {
        if applet != "busybox" {
            let link = rootfs.join("bin").join(applet);
            symlink("busybox", &link)
                .unwrap_or_else(|err| panic!("linking {}: {err}", link.display()));
        }
    }
}

/// The image has no libc: a dynamically linked program in it fails with a bare "not found".
fn require_static(binary: &Path, remedy: &str) {
    let mut header = Vec::new();
    File::open(binary)
        .and_then(|file| file.take(64 * 1024).read_to_end(&mut header))
        .unwrap_or_else(|err| panic!("reading {}: {err}; {remedy}", binary.display()));
    match has_interpreter(&header) {
        Some(false) => {}
        Some(true) => panic!(
            "{} is dynamically linked, but the test image has no libc: {remedy}",
            binary.display()
        ),
        None => panic!(
            "{} is not a 64-bit little-endian ELF program: {remedy}",
            binary.display()
        ),
    }
}

/// Whether an ELF64 LE program asks for a dynamic loader (PT_INTERP); `None` if `elf` (its
/// first bytes) does not parse as one.
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
