//! The guests' initramfs, written as a `newc` cpio archive by hand: it is a few dozen lines
//! and needs neither `cpio` nor a staging directory. It is left uncompressed: gzip (8.5 MB to
//! 3.4 MB) made no difference to the time to /init under emulation that stood out of the noise.

use std::{
    collections::BTreeSet,
    fs,
    io::BufWriter,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use super::runner;
use crate::suite::{Suite, TestBinary};

/// Mounts, runs the tests named on the kernel command line with the guest runner, powers off.
const INIT: &str = include_str!("../../vm/init.sh");
/// Debian's busybox-static.
const BUSYBOX: &str = "/bin/busybox";
/// The guest runner's suite directory.
pub const SUITE_DIR: &str = "suite";

/// Mount points, the directories `busybox --install -s` fills, and the suite directory's.
const DIRECTORIES: [&str; 12] = [
    "bin",
    "sbin",
    "usr",
    "usr/bin",
    "usr/sbin",
    "dev",
    "proc",
    "sys",
    "tmp",
    SUITE_DIR,
    "suite/bin",
    "suite/tests",
];

/// A file or symbolic link beyond the standard contents, e.g. a peer tool's dynamic libraries
/// (bench/src/guest_peers.rs). Their parent directories are made as needed.
pub enum Extra {
    /// `guest` (relative to /) gets the contents of `host`, symbolic links followed.
    File {
        guest: String,
        host: PathBuf,
    },
    Symlink {
        guest: String,
        target: String,
    },
}

/// The standard contents (busybox, `/init`, the suite directory with `tests`) plus `extras`,
/// written to `path`.
pub fn write(
    suite: &Suite,
    tests: &[&TestBinary],
    extras: &[Extra],
    path: &Path,
) -> anyhow::Result<PathBuf> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut archive = Cpio::new(BufWriter::new(file));
    append_contents(&mut archive, suite, tests)
        .and_then(|()| append_extras(&mut archive, extras))
        .and_then(|()| archive.finish())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_owned())
}

fn append_extras<W: std::io::Write>(archive: &mut Cpio<W>, extras: &[Extra]) -> anyhow::Result<()> {
    // The kernel's unpacker makes no missing parent directory: every one gets its own entry.
    let mut made: BTreeSet<String> = DIRECTORIES.iter().map(|dir| (*dir).to_owned()).collect();
    let mut written = BTreeSet::new();
    for extra in extras {
        let guest = match extra {
            Extra::File { guest, .. } | Extra::Symlink { guest, .. } => guest,
        };
        // The same library can be reached by two paths (`/lib/…` and `/usr/lib/…`).
        if !written.insert(guest.as_str()) {
            continue;
        }
        for parent in parents(guest) {
            if made.insert(parent.to_owned()) {
                archive.directory(parent)?;
            }
        }
        match extra {
            Extra::File { guest, host } => {
                let contents =
                    fs::read(host).with_context(|| format!("reading {}", host.display()))?;
                archive.file(guest, executable_or_not(host), &contents)?;
            }
            Extra::Symlink { guest, target } => archive.symlink(guest, target)?,
        }
    }
    Ok(())
}

/// `a/b/c` → `a`, `a/b`.
fn parents(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/')
        .map(move |(index, _)| &path[..index])
}

fn executable_or_not(host: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = fs::metadata(host).is_ok_and(|meta| meta.permissions().mode() & 0o111 != 0);
    if executable { 0o755 } else { 0o644 }
}

fn append_contents(
    archive: &mut Cpio<BufWriter<fs::File>>,
    suite: &Suite,
    tests: &[&TestBinary],
) -> anyhow::Result<()> {
    for directory in DIRECTORIES {
        archive.directory(directory)?;
    }
    // The kernel opens it for init's stdio before any devtmpfs is mounted.
    archive.char_device("dev/console", 5, 1)?;
    archive.file("init", 0o755, INIT.as_bytes())?;
    let busybox = fs::read(BUSYBOX).with_context(|| format!("reading {BUSYBOX}"))?;
    archive.file("bin/busybox", 0o755, &busybox)?;
    archive.file(
        &format!("{SUITE_DIR}/run-tests.sh"),
        0o755,
        runner::RUNNER.as_bytes(),
    )?;
    for (name, binary) in runner::suite_files(suite, tests) {
        let contents = without_debug_info(&binary)?;
        archive.file(&format!("{SUITE_DIR}/{name}"), 0o755, &contents)?;
    }
    Ok(())
}

/// The binary's contents without its debug sections (`strip --strip-debug`: the same code,
/// its symbols kept for backtraces): a test binary's line tables are two thirds of its 22 MB,
/// and the guest holds the initramfs in its memory. Unstripped if `strip` fails.
fn without_debug_info(binary: &Path) -> anyhow::Result<Vec<u8>> {
    let stripped =
        std::env::temp_dir().join(format!("oomtrace-vm-stripped-{}", std::process::id()));
    let status = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(binary)
        .status();
    let contents = match status {
        Ok(status) if status.success() => fs::read(&stripped),
        _ => {
            eprintln!(
                "vm: warning: `strip --strip-debug {}` failed; the guest gets it whole",
                binary.display()
            );
            fs::read(binary)
        }
    };
    let _ = fs::remove_file(&stripped);
    contents.with_context(|| format!("reading {}", binary.display()))
}

/// A `newc` ("070701") cpio writer: what the kernel's initramfs unpacker reads.
struct Cpio<W> {
    out: W,
    next_inode: u32,
}

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;
const S_IFLNK: u32 = 0o120000;

impl<W: std::io::Write> Cpio<W> {
    fn new(out: W) -> Self {
        Self { out, next_inode: 1 }
    }

    fn directory(&mut self, name: &str) -> anyhow::Result<()> {
        self.entry(name, S_IFDIR | 0o755, (0, 0), &[])
    }

    fn file(&mut self, name: &str, permissions: u32, contents: &[u8]) -> anyhow::Result<()> {
        self.entry(name, S_IFREG | permissions, (0, 0), contents)
    }

    fn symlink(&mut self, name: &str, target: &str) -> anyhow::Result<()> {
        self.entry(name, S_IFLNK | 0o777, (0, 0), target.as_bytes())
    }

    fn char_device(&mut self, name: &str, major: u32, minor: u32) -> anyhow::Result<()> {
        self.entry(name, S_IFCHR | 0o600, (major, minor), &[])
    }

    /// The trailer entry, then the buffered writer flushed.
    fn finish(mut self) -> anyhow::Result<()> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        self.out.flush()?;
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        (rdev_major, rdev_minor): (u32, u32),
        contents: &[u8],
    ) -> anyhow::Result<()> {
        let size = u32::try_from(contents.len())
            .with_context(|| format!("{name} is too large for a cpio archive"))?;
        let name_size = u32::try_from(name.len() + 1).context("file name too long")?;
        let inode = self.next_inode;
        self.next_inode += 1;
        let nlink = if mode & S_IFMT == S_IFDIR { 2 } else { 1 };
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor,
        // rdevminor, namesize, check. Owner root, and a fixed mtime so that the image only
        // changes when its contents do; "070701" has no checksum.
        let fields = [
            inode, mode, 0, 0, nlink, 0, size, 0, 0, rdev_major, rdev_minor, name_size, 0,
        ];
        let mut header = String::from("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.pad(header.len() + name.len() + 1)?;
        self.out.write_all(contents)?;
        self.pad(contents.len())?;
        Ok(())
    }

    /// Headers and file data each start on a 4-byte boundary.
    fn pad(&mut self, written: usize) -> anyhow::Result<()> {
        let padding = (4 - written % 4) % 4;
        self.out.write_all(&[0; 3][..padding])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_entry_is_padded_to_four_bytes() {
        let mut archive = Cpio::new(Vec::new());
        archive.file("init", 0o755, b"#!").unwrap();
        let bytes = archive.out;
        // 110-byte header, "init\0" padded to 116, two bytes of data padded to 120.
        assert_eq!(bytes.len(), 120);
        assert!(bytes.starts_with(b"07070100000001000081ed"));
        assert_eq!(&bytes[110..116], b"init\0\0");
        assert_eq!(&bytes[116..], b"#!\0\0");
    }

    #[test]
    fn extras_get_their_parent_directories_once_and_symlinks_their_target() {
        let mut archive = Cpio::new(Vec::new());
        let extras = [
            Extra::Symlink {
                guest: "usr/lib/x/a.so".to_owned(),
                target: "b.so".to_owned(),
            },
            Extra::Symlink {
                guest: "usr/lib/x/c.so".to_owned(),
                target: "b.so".to_owned(),
            },
            Extra::Symlink {
                guest: "lib64".to_owned(),
                target: "usr/lib64".to_owned(),
            },
        ];
        append_extras(&mut archive, &extras).unwrap();
        let text = String::from_utf8_lossy(&archive.out).into_owned();
        // usr is a standard directory; usr/lib and usr/lib/x are made, each once.
        assert_eq!(text.matches("usr/lib\0").count(), 1);
        assert_eq!(text.matches("usr/lib/x\0").count(), 1);
        assert!(!text.contains("usr\0"));
        // A symlink's mode is 0120777, its data its target.
        assert!(text.contains("0000a1ff"));
        let link = text.find("usr/lib/x/a.so\0").unwrap();
        let after_name = &text[link + "usr/lib/x/a.so".len()..];
        assert!(after_name.trim_start_matches('\0').starts_with("b.so"));
        assert_eq!(parents("a/b/c").collect::<Vec<_>>(), ["a", "a/b"]);
    }
}
