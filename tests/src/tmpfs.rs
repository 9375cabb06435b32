//! Memory no process maps: a tmpfs of the test's own, filled from inside a memory cgroup by a
//! process that then exits. Its pages stay charged to the cgroup (field notes §4e).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use oomtrace::record::OomKillRecord;
use oomtrace::record::composition::{Composition, TmpfsKind, TmpfsMount};

use crate::{MemoryCgroup, pretty};

/// A tmpfs mounted for the test; unmounted (which frees its pages) and removed when dropped.
pub struct ScratchTmpfs {
    dir: PathBuf,
    mounted: bool,
}

impl ScratchTmpfs {
    /// A tmpfs of `size` (`mount`'s `size=`, e.g. `256m`) on a fresh directory under `/tmp`.
    pub fn mount(size: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("oomtrace-tmpfs-{}", std::process::id()));
        Self::mount_at(dir, size)
    }

    /// A tmpfs of `size` on `dir`, made if missing (removed when dropped if empty).
    pub fn mount_at(dir: PathBuf, size: &str) -> Self {
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|err| panic!("creating {}: {err}", dir.display()));
        let mut tmpfs = ScratchTmpfs {
            dir,
            mounted: false,
        };
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&tmpfs.dir)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a tmpfs on {}",
            tmpfs.dir.display()
        );
        tmpfs.mounted = true;
        tmpfs
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `mib` MiB to `name` in it by a `dd` in `cgroup`, which has exited on return: the
    /// pages are charged to the cgroup and stay charged.
    pub fn fill_from(&self, cgroup: &MemoryCgroup, name: &str, mib: u64) {
        let file = self.dir.join(name);
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "read go && exec dd if=/dev/zero of='{}' bs=1M count={mib} status=none",
                file.display()
            ))
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawning dd");
        cgroup.add(child.id());
        child
            .stdin
            .take()
            .expect("dd's stdin")
            .write_all(b"go\n")
            .expect("releasing dd");
        let status = child.wait().expect("waiting for dd");
        assert!(
            status.success(),
            "dd of {mib} MiB into {}: {status}",
            file.display()
        );
    }
}

impl Drop for ScratchTmpfs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `100 MiB`, `5.4 MiB`: a size in MiB as the verdict says it (whole from 10 up, one decimal
/// below, no trailing zero).
pub fn mib(bytes: u64) -> String {
    let value = bytes as f64 / (1 << 20) as f64;
    let text = if value >= 9.95 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    };
    format!("{} MiB", text.strip_suffix(".0").unwrap_or(&text))
}

/// Whether `bytes` is within 10 % of `expected`.
pub fn within_ten_percent(bytes: u64, expected: u64) -> bool {
    bytes.abs_diff(expected) * 10 <= expected
}

/// The composition of the kill's domain; a panic showing the record without one.
pub fn composition_of(kill: &OomKillRecord) -> &Composition {
    kill.domain
        .as_ref()
        .and_then(|domain| domain.composition.as_ref())
        .unwrap_or_else(|| panic!("no composition in {}", pretty(kill)))
}

/// The kill's verdict; a panic showing the record without one.
pub fn verdict_of(kill: &OomKillRecord) -> &str {
    &kill
        .explanation
        .as_ref()
        .unwrap_or_else(|| panic!("no explanation in {}", pretty(kill)))
        .verdict
}

/// Asserts that `written` bytes of shared memory no process maps filled the kill's domain, and
/// that the container's `--tmpfs` (or Compose `tmpfs:`) mount at `mount_point`, of `size_bytes`,
/// is named as the container's (`owner`); returns the mount.
pub fn assert_container_tmpfs<'a>(
    kill: &'a OomKillRecord,
    written: u64,
    mount_point: &str,
    size_bytes: u64,
    owner: &str,
) -> &'a TmpfsMount {
    let context = pretty(kill);
    let composition = composition_of(kill);
    let not_in = composition.not_in_processes;
    assert!(
        within_ten_percent(not_in.shmem_bytes, written),
        "shared memory no process maps {}, not the {written} bytes written, in {context}",
        not_in.shmem_bytes
    );
    let Some(mount) = composition
        .tmpfs
        .iter()
        .find(|mount| mount.mount_point == mount_point)
    else {
        panic!("the container's {mount_point} is not named in {context}");
    };
    assert_eq!(mount.kind, TmpfsKind::ContainerTmpfs, "{context}");
    assert_eq!(mount.size_bytes, Some(size_bytes), "{context}");
    assert_eq!(
        mount.names.container_name(),
        Some(owner),
        "the mount's owner, in {context}"
    );
    mount
}

/// Asserts that the verdict leads with the tmpfs files no process maps that filled the limit of
/// `limit_bytes`, in the record's own figure (`The limit of 128 MiB was filled by 100 MiB of
/// tmpfs files`), and says each of `said`; prints it and returns it.
pub fn assert_tmpfs_leads<'a>(kill: &'a OomKillRecord, limit_bytes: u64, said: &[&str]) -> &'a str {
    let not_in = composition_of(kill).not_in_processes;
    let verdict = verdict_of(kill);
    println!("verdict: {verdict}");
    let lead = format!(
        "The limit of {} was filled by {} of tmpfs files",
        mib(limit_bytes),
        mib(not_in.shmem_bytes)
    );
    assert!(
        verdict.starts_with(&lead),
        "verdict does not start with {lead:?}: {verdict}"
    );
    for said in said {
        assert!(
            verdict.contains(said),
            "verdict does not say {said:?}: {verdict}"
        );
    }
    verdict
}
