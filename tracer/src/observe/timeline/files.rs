//! The descriptors the recorder keeps open: files read again and again, and the kernel's ways
//! of waking it (eventfd, inotify).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt as _;
use std::path::Path;

/// A cgroupfs or procfs file read through one descriptor with `pread` at offset 0, which makes
/// the kernel generate its text afresh: one system call per sample instead of three.
#[derive(Debug)]
pub struct Reread {
    file: File,
}

/// Big enough for `memory.events`, `memory.pressure` and a number.
const BUFFER: usize = 512;

impl Reread {
    pub fn open(path: &Path) -> io::Result<Self> {
        Ok(Reread {
            file: File::open(path)?,
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The file's text now; an error once its cgroup is gone (ENODEV).
    pub fn read<T>(&self, parse: impl FnOnce(&str) -> Option<T>) -> io::Result<Option<T>> {
        let mut buffer = [0u8; BUFFER];
        let length = self.file.read_at(&mut buffer, 0)?;
        let text = std::str::from_utf8(&buffer[..length]).unwrap_or_default();
        Ok(parse(text))
    }

    /// The file's one number.
    pub fn number(&self) -> io::Result<Option<u64>> {
        self.read(|text| text.trim().parse().ok())
    }
}

/// A non-blocking eventfd.
pub fn eventfd() -> io::Result<File> {
    // SAFETY: eventfd has no memory-safety preconditions.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nothing else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Adds one to an eventfd's counter: wakes its poller.
pub fn signal(eventfd: &File) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes the 8 bytes of `one`. A full counter (never, in practice) is no loss.
    unsafe {
        libc::write(eventfd.as_raw_fd(), one.as_ptr().cast(), one.len());
    }
}

/// Empties a non-blocking eventfd or inotify descriptor; whether anything was there.
pub fn drain(file: &File) -> bool {
    let mut buffer = [0u8; 4096];
    let mut any = false;
    // SAFETY: reads into a buffer of the length given.
    while unsafe { libc::read(file.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) } > 0 {
        any = true;
    }
    any
}

/// An inotify descriptor told of directories created in `dirs`: new cgroups (`mkdir` in
/// cgroupfs goes through the VFS, which notifies). Directories that cannot be watched are
/// skipped.
pub fn inotify(dirs: impl Iterator<Item = std::path::PathBuf>) -> io::Result<File> {
    // SAFETY: inotify_init1 has no memory-safety preconditions.
    let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nothing else.
    let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    for dir in dirs {
        let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        unsafe {
            libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_CREATE | libc::IN_ONLYDIR);
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_procfs_file_reads_afresh_each_time() {
        let stat = Reread::open(Path::new("/proc/self/stat")).unwrap();
        let first = stat.read(|text| Some(text.to_owned())).unwrap().unwrap();
        let again = stat.read(|text| Some(text.to_owned())).unwrap().unwrap();
        assert!(first.starts_with(&std::process::id().to_string()));
        assert_eq!(first.split(' ').next(), again.split(' ').next());
    }

    #[test]
    fn an_eventfd_wakes_once_per_signal_burst() {
        let fd = eventfd().unwrap();
        assert!(!drain(&fd));
        signal(&fd);
        signal(&fd);
        assert!(drain(&fd));
        assert!(!drain(&fd));
    }

    #[test]
    fn inotify_sees_a_new_directory() {
        let dir = std::env::temp_dir().join(format!("oomtrace-inotify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let watch = inotify(std::iter::once(dir.clone())).unwrap();
        assert!(!drain(&watch));
        std::fs::create_dir(dir.join("child")).unwrap();
        assert!(drain(&watch));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
