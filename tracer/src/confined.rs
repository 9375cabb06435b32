//! Reading files the agent does not own, under a directory it was pointed at (a runtime's data
//! root): nothing outside that directory, no symlink, nothing but regular files, never blocked.
//!
//! Whoever can write under a runtime's data root (a compromised runtime, a careless mount) could
//! otherwise make the agent read a FIFO (its `open` waits for a writer forever, and with it the
//! agent), or a symlink to a root-only file whose content would then reach a log line. So a file
//! is resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (Linux 5.6), or on older
//! kernels by a walk that opens each component with `O_NOFOLLOW`; it is first opened `O_PATH`
//! (which opens nothing for reading) and `fstat`ed, and only a regular file is then opened for
//! reading, `O_NONBLOCK`, and checked to be the same file.

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a file under a root was not read. Says what kind of file or error, never its content.
#[derive(Debug)]
pub(crate) enum Refused {
    /// Nothing at that path.
    NotFound,
    /// A symlink on the way, or the path leaves the root.
    Symlink,
    /// A FIFO, socket, device or directory.
    NotRegular(&'static str),
    /// More than the limit.
    TooLarge(u64),
    /// The system said no (permissions, I/O).
    Io(io::Error),
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::NotFound => write!(f, "not found"),
            Refused::Symlink => write!(f, "a symlink or outside its root, not followed"),
            Refused::NotRegular(kind) => write!(f, "a {kind}, not a regular file: not read"),
            Refused::TooLarge(limit) => write!(f, "larger than {limit} bytes"),
            Refused::Io(err) => write!(f, "{err}"),
        }
    }
}

impl From<io::Error> for Refused {
    fn from(err: io::Error) -> Self {
        match err.raw_os_error() {
            Some(libc::ENOENT) => Refused::NotFound,
            // ELOOP: a symlink with RESOLVE_NO_SYMLINKS or O_NOFOLLOW; EXDEV: out of the root
            // with RESOLVE_BENEATH; ENOTDIR: a symlink where a directory was expected.
            Some(libc::ELOOP | libc::EXDEV) => Refused::Symlink,
            _ => Refused::Io(err),
        }
    }
}

/// The whole of `relative` under `root`, at most `limit` bytes.
pub(crate) fn read(root: &Path, relative: &Path, limit: u64) -> Result<Vec<u8>, Refused> {
    read_open(open(root, relative)?, limit)
}

/// The rest of an open file, at most `limit` bytes.
pub(crate) fn read_open(file: File, limit: u64) -> Result<Vec<u8>, Refused> {
    let mut data = Vec::new();
    file.take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(Refused::TooLarge(limit));
    }
    Ok(data)
}

/// `relative` under `root`, opened for reading if it is a regular file.
pub(crate) fn open(root: &Path, relative: &Path) -> Result<File, Refused> {
    if relative.is_absolute()
        || relative
            .components()
            .any(|part| !matches!(part, Component::Normal(_)))
    {
        return Err(Refused::Symlink);
    }
    // The root itself is the operator's word: it may be a symlink.
    let root = open_at(libc::AT_FDCWD, root, libc::O_PATH | libc::O_DIRECTORY)?;
    let path = resolve(&root, relative, libc::O_PATH)?;
    let before = regular(&path)?;
    let file = resolve(
        &root,
        relative,
        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
    )?;
    let after = regular(&file)?;
    if (before.st_dev, before.st_ino) != (after.st_dev, after.st_ino) {
        // Replaced in between: what is there now passed the same checks.
        log::trace!("{}: replaced while opened", relative.display());
    }
    Ok(File::from(file))
}

/// Whether `openat2` is known to be missing (before Linux 5.6, or denied by a seccomp filter).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

fn resolve(root: &OwnedFd, relative: &Path, flags: libc::c_int) -> Result<OwnedFd, Refused> {
    let flags = flags | libc::O_NOFOLLOW;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        match openat2_beneath(root, relative, flags) {
            Err(err) if matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            result => return Ok(result?),
        }
    }
    walk(root, relative, flags)
}

/// `openat2` as its own struct: libc's `open_how` cannot be built outside libc.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn openat2_beneath(root: &OwnedFd, relative: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = c_path(relative)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: `path` and `how` outlive the call, which reads `size_of::<OpenHow>()` bytes.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    owned(fd as libc::c_int)
}

/// The same without `openat2`: each directory opened `O_NOFOLLOW` under the one before. The
/// components are plain names (checked above), so nothing can climb out.
fn walk(root: &OwnedFd, relative: &Path, flags: libc::c_int) -> Result<OwnedFd, Refused> {
    let parts: Vec<_> = relative.components().collect();
    let Some((last, dirs)) = parts.split_last() else {
        return Err(Refused::NotRegular("directory"));
    };
    let mut dir: Option<OwnedFd> = None;
    for part in dirs {
        let at = dir.as_ref().unwrap_or(root).as_raw_fd();
        let next = open_at(
            at,
            Path::new(part.as_os_str()),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        )
        .map_err(|err| match err.raw_os_error() {
            // A symlink opened O_PATH|O_NOFOLLOW|O_DIRECTORY fails with ENOTDIR.
            Some(libc::ENOTDIR) => Refused::Symlink,
            _ => Refused::from(err),
        })?;
        dir = Some(next);
    }
    let at = dir.as_ref().unwrap_or(root).as_raw_fd();
    Ok(open_at(at, Path::new(last.as_os_str()), flags)?)
}

fn open_at(at: libc::c_int, path: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let path = c_path(path)?;
    // SAFETY: a valid C string; the returned descriptor is owned below.
    owned(unsafe { libc::openat(at, path.as_ptr(), flags | libc::O_CLOEXEC) })
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))
}

/// The descriptor's `stat`, if it is a regular file.
fn regular(fd: &OwnedFd) -> Result<libc::stat, Refused> {
    // SAFETY: an all-zero stat is valid, and fstat fills it.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a valid out pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error().into());
    }
    match stat.st_mode & libc::S_IFMT {
        libc::S_IFREG => Ok(stat),
        libc::S_IFIFO => Err(Refused::NotRegular("FIFO")),
        libc::S_IFSOCK => Err(Refused::NotRegular("socket")),
        libc::S_IFCHR | libc::S_IFBLK => Err(Refused::NotRegular("device")),
        libc::S_IFDIR => Err(Refused::NotRegular("directory")),
        libc::S_IFLNK => Err(Refused::Symlink),
        _ => Err(Refused::NotRegular("special file")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("oomtrace-confined-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("root/sub")).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn mkfifo(path: &Path) {
        let path = c_path(path).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    /// Both ways of resolving: `openat2`, then the walk older kernels get.
    fn both(check: impl Fn()) {
        check();
        NO_OPENAT2.store(true, Ordering::Relaxed);
        check();
        NO_OPENAT2.store(false, Ordering::Relaxed);
    }

    #[test]
    fn a_regular_file_under_the_root_is_read() {
        let scratch = Scratch::new("regular");
        let root = scratch.0.join("root");
        std::fs::write(root.join("sub/a.json"), b"{}").unwrap();
        both(|| {
            assert_eq!(read(&root, Path::new("sub/a.json"), 2).unwrap(), b"{}");
            assert!(matches!(
                read(&root, Path::new("sub/a.json"), 1),
                Err(Refused::TooLarge(1))
            ));
            assert!(matches!(
                read(&root, Path::new("sub/none"), 10),
                Err(Refused::NotFound)
            ));
        });
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let scratch = Scratch::new("fifo");
        let root = scratch.0.join("root");
        mkfifo(&root.join("sub/config.v2.json"));
        both(|| {
            let err = read(&root, Path::new("sub/config.v2.json"), 10).unwrap_err();
            assert!(matches!(err, Refused::NotRegular("FIFO")), "{err}");
        });
        assert!(matches!(
            read(&root, Path::new("sub"), 10),
            Err(Refused::NotRegular("directory"))
        ));
    }

    #[test]
    fn symlinks_are_not_followed_in_or_out_of_the_root() {
        let scratch = Scratch::new("symlink");
        let root = scratch.0.join("root");
        let secret = scratch.0.join("secret");
        std::fs::write(&secret, b"{\"ID\":\"the secret\"}").unwrap();
        std::os::unix::fs::symlink(&secret, root.join("sub/out")).unwrap();
        std::fs::write(root.join("inside"), b"{}").unwrap();
        std::os::unix::fs::symlink("../inside", root.join("sub/in")).unwrap();
        std::os::unix::fs::symlink(&scratch.0, root.join("up")).unwrap();
        both(|| {
            for path in [
                "sub/out",
                "sub/in",
                "up/secret",
                "../secret",
                "sub/../../secret",
            ] {
                let err = read(&root, Path::new(path), 100).unwrap_err();
                assert!(matches!(err, Refused::Symlink), "{path}: {err}");
                assert!(!err.to_string().contains("secret"), "{err}");
            }
            assert!(matches!(read(&root, &secret, 100), Err(Refused::Symlink)));
        });
        // The root itself may be a symlink: the operator named it.
        let link = scratch.0.join("root-link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        assert_eq!(read(&link, Path::new("inside"), 10).unwrap(), b"{}");
    }
}
