//! The descriptors the recorder keeps open: files read again and again, and the kernel's ways
//! of waking it (epoll over eventfds, inotify, pressure triggers and cgroupfs notifications).

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::time::Duration;

/// A cgroupfs or procfs file read through one descriptor with `pread` at offset 0, which makes
/// the kernel generate its text afresh: one system call per sample instead of three.
#[derive(Debug)]
pub(super) struct Reread {
    file: File,
}

/// Big enough for `memory.events`, `memory.pressure` and a number.
const BUFFER: usize = 512;

impl Reread {
    /// Never through a symlink and never waiting: cgroupfs and procfs hold neither symlinks
    /// nor FIFOs where the recorder reads, so one there is refused rather than followed.
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(path)?;
        Ok(Reread { file })
    }

    /// Opens a pressure file with a trigger written to it (`some <stall> <window>` in
    /// microseconds), which makes it poll `EPOLLPRI` when stalls pass the threshold; the same
    /// descriptor still reads the totals. Where the kernel refuses the trigger (before 6.5
    /// without CAP_SYS_RESOURCE), the file is opened for reading only, and `false` says so.
    pub(super) fn open_pressure(
        path: &Path,
        stall: Duration,
        window: Duration,
    ) -> io::Result<(Self, bool)> {
        let trigger = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .and_then(|mut file| {
                let spec = format!("some {} {}\0", stall.as_micros(), window.as_micros());
                file.write_all(spec.as_bytes())?;
                Ok(file)
            });
        match trigger {
            Ok(file) => Ok((Reread { file }, true)),
            Err(_) => Ok((Self::open(path)?, false)),
        }
    }

    pub(super) fn file(&self) -> &File {
        &self.file
    }

    pub(super) fn into_file(self) -> File {
        self.file
    }

    /// The file's text now; an error once its cgroup is gone (ENODEV).
    pub(super) fn read<T>(&self, parse: impl FnOnce(&str) -> Option<T>) -> io::Result<Option<T>> {
        let mut buffer = [0u8; BUFFER];
        let length = self.file.read_at(&mut buffer, 0)?;
        let text = std::str::from_utf8(&buffer[..length]).unwrap_or_default();
        Ok(parse(text))
    }

    /// The file's one number.
    pub(super) fn number(&self) -> io::Result<Option<u64>> {
        self.read(|text| text.trim().parse().ok())
    }
}

/// A file's one number, read once (open, read, close): for files read rarely.
pub(super) fn read_number(path: &Path) -> Option<u64> {
    Reread::open(path).ok()?.number().ok()?
}

/// Bytes of a flat-keyed file read at most: `memory.stat` holds about 50 short lines.
const TEXT_LIMIT: usize = 16 * 1024;

/// A file's text, read once (open, read, close) and bounded: for `memory.stat`, read only when
/// its cgroup's usage moved.
pub(super) fn read_text(path: &Path) -> Option<String> {
    let file = Reread::open(path).ok()?.into_file();
    let mut buffer = vec![0u8; TEXT_LIMIT];
    let mut length = 0;
    while length < buffer.len() {
        match file.read_at(&mut buffer[length..], length as u64) {
            Ok(0) => break,
            Ok(read) => length += read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    // A line cut by the bound is left out.
    let text = String::from_utf8_lossy(&buffer[..length]);
    let whole = if length == buffer.len() {
        text.rsplit_once('\n').map_or("", |(whole, _)| whole)
    } else {
        &text
    };
    Some(whole.to_owned())
}

/// A non-blocking eventfd.
pub(super) fn eventfd() -> io::Result<File> {
    // SAFETY: eventfd has no memory-safety preconditions.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nothing else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Adds one to an eventfd's counter: wakes its poller.
pub(super) fn signal(eventfd: &File) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes the 8 bytes of `one`. A full counter (never, in practice) is no loss.
    unsafe {
        libc::write(eventfd.as_raw_fd(), one.as_ptr().cast(), one.len());
    }
}

/// Empties a non-blocking eventfd; whether anything was there.
pub(super) fn drain(file: &File) -> bool {
    let mut buffer = [0u8; 64];
    let mut any = false;
    // SAFETY: reads into a buffer of the length given.
    while unsafe { libc::read(file.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) } > 0 {
        any = true;
    }
    any
}

/// What the recorder learns from inotify about one directory it watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum DirEvent {
    /// A directory appeared in it (`mkdir`, or moved in): a new cgroup.
    Created { wd: i32, name: Vec<u8> },
    /// A directory in it went away (`rmdir`, or moved out).
    Removed { wd: i32, name: Vec<u8> },
    /// A file in it was written.
    Written { wd: i32, name: Vec<u8> },
    /// The watch ended: the directory itself is gone.
    Ignored { wd: i32 },
    /// The kernel's queue overflowed: events were lost.
    Overflow,
}

/// An inotify descriptor watching cgroup directories for new and removed children and for
/// writes to their files (`mkdir`, `rmdir` and `write(2)` in cgroupfs go through the VFS, which
/// notifies like any file system's).
#[derive(Debug)]
pub(super) struct Inotify {
    file: File,
}

impl Inotify {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: inotify_init1 has no memory-safety preconditions.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just created and is owned by nothing else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(Inotify { file })
    }

    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// Watches the directory at `path` for children made and removed; its watch descriptor.
    /// Not for writes to its files: a directory watched for those makes every read of a file in
    /// it (each sample) take the kernel's slower notification path.
    pub(super) fn watch_dir(&self, path: &Path) -> io::Result<i32> {
        let mask = libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_MOVED_FROM
            | libc::IN_MOVED_TO
            | libc::IN_ONLYDIR
            | libc::IN_DONT_FOLLOW;
        self.watch(path, mask)
    }

    /// Watches the file at `path` for writes; its watch descriptor.
    pub(super) fn watch_writes(&self, path: &Path) -> io::Result<i32> {
        self.watch(path, libc::IN_MODIFY | libc::IN_DONT_FOLLOW)
    }

    fn watch(&self, path: &Path, mask: u32) -> io::Result<i32> {
        let path = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `path` is a NUL-terminated string that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.file.as_raw_fd(), path.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Everything queued now.
    pub(super) fn read(&self) -> Vec<DirEvent> {
        let mut events = Vec::new();
        // Aligned for the kernel's `struct inotify_event`.
        let mut buffer = vec![0u64; 1024];
        loop {
            // SAFETY: reads into a buffer of the length given.
            let length = unsafe {
                libc::read(
                    self.file.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len() * 8,
                )
            };
            let Ok(length) = usize::try_from(length) else {
                return events;
            };
            if length == 0 {
                return events;
            }
            // SAFETY: the kernel wrote `length` bytes of the buffer.
            let bytes = unsafe { std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), length) };
            parse_events(bytes, &mut events);
        }
    }
}

/// `struct inotify_event`s: wd, mask, cookie, len, then `len` bytes of NUL-padded name.
fn parse_events(mut bytes: &[u8], events: &mut Vec<DirEvent>) {
    const HEADER: usize = 16;
    while bytes.len() >= HEADER {
        let field =
            |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
        let wd = field(0) as i32;
        let mask = field(4);
        let length = field(12) as usize;
        let Some(name) = bytes.get(HEADER..HEADER + length) else {
            return;
        };
        let name: Vec<u8> = name.iter().copied().take_while(|&byte| byte != 0).collect();
        bytes = &bytes[HEADER + length..];
        let is_dir = mask & libc::IN_ISDIR != 0;
        let event = if mask & libc::IN_Q_OVERFLOW != 0 {
            DirEvent::Overflow
        } else if mask & libc::IN_IGNORED != 0 {
            DirEvent::Ignored { wd }
        } else if is_dir && mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
            DirEvent::Created { wd, name }
        } else if is_dir && mask & (libc::IN_DELETE | libc::IN_MOVED_FROM) != 0 {
            DirEvent::Removed { wd, name }
        } else if !is_dir && mask & libc::IN_MODIFY != 0 {
            DirEvent::Written { wd, name }
        } else {
            continue;
        };
        events.push(event);
    }
}

/// An epoll instance: the recorder waits on every wake-up source at once, and the time of a
/// wait does not grow with the number of sources (a thousand limited cgroups have a thousand
/// triggers).
#[derive(Debug)]
pub(super) struct Epoll {
    file: File,
}

impl Epoll {
    pub(super) fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory-safety preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just created and is owned by nothing else.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(Epoll { file })
    }

    /// Wakes on `events` (`EPOLLIN`, `EPOLLPRI`) of `file`, saying `token`. A closed descriptor
    /// leaves the set by itself.
    pub(super) fn add(&self, file: &File, events: libc::c_int, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: `event` is a valid epoll_event for the duration of the call.
        let added = unsafe {
            libc::epoll_ctl(
                self.file.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                file.as_raw_fd(),
                &mut event,
            )
        };
        if added < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout_ms`; the tokens and events of what is ready.
    pub(super) fn wait(&self, ready: &mut Vec<(u64, u32)>, timeout_ms: i32) -> io::Result<()> {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
        // SAFETY: `events` holds 64 entries for the kernel to fill.
        let count = unsafe {
            libc::epoll_wait(
                self.file.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                timeout_ms,
            )
        };
        let Ok(count) = usize::try_from(count) else {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::Interrupted => Ok(()),
                _ => Err(err),
            };
        };
        ready.extend(events[..count].iter().map(|event| {
            let libc::epoll_event { events, u64 } = *event;
            (u64, events)
        }));
        Ok(())
    }
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
    fn an_eventfd_wakes_epoll_once_per_signal_burst() {
        let fd = eventfd().unwrap();
        let epoll = Epoll::new().unwrap();
        epoll.add(&fd, libc::EPOLLIN, 7).unwrap();
        let mut ready = Vec::new();
        epoll.wait(&mut ready, 0).unwrap();
        assert!(ready.is_empty());
        signal(&fd);
        signal(&fd);
        epoll.wait(&mut ready, 1000).unwrap();
        assert_eq!(
            ready.iter().map(|&(token, _)| token).collect::<Vec<_>>(),
            [7]
        );
        assert!(drain(&fd));
        assert!(!drain(&fd));
        ready.clear();
        epoll.wait(&mut ready, 0).unwrap();
        assert!(ready.is_empty());
    }

    #[test]
    fn inotify_sees_directories_come_and_go_and_files_written() {
        let dir = std::env::temp_dir().join(format!("oomtrace-inotify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.join("memory.current"), "0\n").unwrap();
        let inotify = Inotify::new().unwrap();
        let wd = inotify.watch_dir(&dir).unwrap();
        let limit_wd = inotify.watch_writes(&dir.join("memory.max")).unwrap();
        assert!(inotify.read().is_empty());
        std::fs::create_dir(dir.join("child")).unwrap();
        std::fs::write(dir.join("memory.max"), "100\n").unwrap();
        // Other files' writes (and reads) are nothing the recorder is told of.
        std::fs::write(dir.join("memory.current"), "5\n").unwrap();
        std::fs::remove_dir(dir.join("child")).unwrap();
        let events = inotify.read();
        let child = b"child".to_vec();
        assert_eq!(
            events,
            [
                DirEvent::Created {
                    wd,
                    name: child.clone()
                },
                DirEvent::Written {
                    wd: limit_wd,
                    name: Vec::new()
                },
                DirEvent::Removed { wd, name: child },
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let events = inotify.read();
        assert!(events.contains(&DirEvent::Ignored { wd }));
        assert!(events.contains(&DirEvent::Ignored { wd: limit_wd }));
    }

    #[test]
    fn events_are_parsed_however_the_names_are_padded() {
        let mut bytes = Vec::new();
        let mut event = |wd: i32, mask: u32, name: &[u8], padded: usize| {
            bytes.extend(wd.to_ne_bytes());
            bytes.extend(mask.to_ne_bytes());
            bytes.extend(0u32.to_ne_bytes());
            bytes.extend((padded as u32).to_ne_bytes());
            bytes.extend(name);
            bytes.extend(std::iter::repeat_n(0, padded - name.len()));
        };
        event(3, libc::IN_CREATE | libc::IN_ISDIR, b"pod1", 16);
        event(3, libc::IN_MODIFY, b"memory.limit_in_bytes", 32);
        event(-1, libc::IN_Q_OVERFLOW, b"", 0);
        event(4, libc::IN_ACCESS, b"ignored", 8);
        let mut events = Vec::new();
        parse_events(&bytes, &mut events);
        assert_eq!(
            events,
            [
                DirEvent::Created {
                    wd: 3,
                    name: b"pod1".to_vec()
                },
                DirEvent::Written {
                    wd: 3,
                    name: b"memory.limit_in_bytes".to_vec()
                },
                DirEvent::Overflow,
            ]
        );
        // A truncated event is not read past.
        let mut short = Vec::new();
        parse_events(&bytes[..20], &mut short);
        assert!(short.is_empty());
    }
}
