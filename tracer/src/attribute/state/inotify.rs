//! inotify on tokio: the state readers wake when a runtime writes its state, never on a timer.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::Path;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// A watch's handle, as `inotify_add_watch` returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Watch(i32);

/// One event: which watch, what happened (`IN_*` bits), and to which entry of a watched
/// directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    pub watch: Watch,
    pub mask: u32,
    pub name: Option<OsString>,
}

impl Event {
    pub(crate) fn is(&self, bits: u32) -> bool {
        self.mask & bits != 0
    }
}

pub(crate) struct Inotify {
    fd: AsyncFd<OwnedFd>,
    pending: VecDeque<Event>,
}

/// Room for many events per read; the kernel never splits one.
const BUFFER: usize = 16 * 1024;

impl Inotify {
    /// Needs a tokio runtime with IO enabled.
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: no pointers; the result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the AsyncFd owns the descriptor, so it stays open until the AsyncFd has
        // deregistered it.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE)? };
        Ok(Inotify {
            fd,
            pending: VecDeque::new(),
        })
    }

    pub(crate) fn add(&self, path: &Path, mask: u32) -> io::Result<Watch> {
        let path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
        // SAFETY: `path` is NUL-terminated and outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Watch(wd))
    }

    /// Stops a watch; one the kernel dropped already (its inode is gone) is no error.
    pub(crate) fn remove(&self, watch: Watch) {
        // SAFETY: no pointers.
        unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), watch.0) };
    }

    /// The next event, waiting for one.
    pub(crate) async fn next(&mut self) -> io::Result<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(event);
            }
            self.fill().await?;
        }
    }

    /// The next event if one is already there: for draining a burst without waiting.
    pub(crate) fn next_ready(&mut self) -> io::Result<Option<Event>> {
        if self.pending.is_empty() {
            let mut buffer = vec![0u8; BUFFER];
            match read(self.fd.get_ref(), &mut buffer) {
                Ok(len) => self.pending.extend(parse(&buffer[..len])),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
        Ok(self.pending.pop_front())
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut buffer = vec![0u8; BUFFER];
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| read(fd.get_ref(), &mut buffer)) {
                Ok(Ok(len)) => {
                    self.pending.extend(parse(&buffer[..len]));
                    return Ok(());
                }
                Ok(Err(err)) => return Err(err),
                Err(_would_block) => continue,
            }
        }
    }
}

fn read(fd: &OwnedFd, buffer: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the buffer is valid for its length.
    let len = unsafe { libc::read(fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len()) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len as usize)
}

/// `struct inotify_event { int wd; u32 mask; u32 cookie; u32 len; char name[len]; }`, repeated;
/// the name is NUL-padded. What does not add up ends the parse.
fn parse(mut bytes: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    while bytes.len() >= 16 {
        let field = |at: usize| {
            u32::from_ne_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let (wd, mask, len) = (field(0) as i32, field(4), field(12) as usize);
        let Some(name) = bytes.get(16..16 + len) else {
            break;
        };
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        events.push(Event {
            watch: Watch(wd),
            mask,
            name: (!name.is_empty()).then(|| OsString::from_vec(name.to_vec())),
        });
        bytes = &bytes[16 + len..];
    }
    events
}

/// An event's entry name as UTF-8, if it is.
pub(crate) fn name_str(event: &Event) -> Option<&str> {
    event.name.as_deref().and_then(OsStr::to_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(wd: i32, mask: u32, name: &str) -> Vec<u8> {
        let padded = name.len().div_ceil(16) * 16;
        let mut bytes = Vec::new();
        bytes.extend(wd.to_ne_bytes());
        bytes.extend(mask.to_ne_bytes());
        bytes.extend(0u32.to_ne_bytes());
        bytes.extend((padded as u32).to_ne_bytes());
        bytes.extend(name.as_bytes());
        bytes.resize(bytes.len() + padded - name.len(), 0);
        bytes
    }

    #[test]
    fn parses_a_burst_of_events() {
        let mut bytes = raw(1, libc::IN_CREATE | libc::IN_ISDIR, "c0ffee");
        bytes.extend(raw(2, libc::IN_MOVED_TO, "config.v2.json"));
        bytes.extend(raw(1, libc::IN_IGNORED, ""));
        let events = parse(&bytes);
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].watch, Watch(1));
        assert!(events[0].is(libc::IN_ISDIR));
        assert_eq!(name_str(&events[0]), Some("c0ffee"));
        assert_eq!(name_str(&events[1]), Some("config.v2.json"));
        assert_eq!(events[2].name, None);
        // Cut short: the whole events before the cut are kept.
        assert_eq!(parse(&bytes[..bytes.len() - 3]).len(), 2);
    }

    #[tokio::test]
    async fn a_file_written_and_renamed_into_a_watched_directory_is_seen() {
        let dir = std::env::temp_dir().join(format!("oomtrace-inotify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut inotify = Inotify::new().unwrap();
        let watch = inotify
            .add(&dir, libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE)
            .unwrap();
        // As Docker writes config.v2.json: a temporary file, renamed over the old one.
        std::fs::write(dir.join(".tmp-config"), b"{}").unwrap();
        std::fs::rename(dir.join(".tmp-config"), dir.join("config.v2.json")).unwrap();
        let first = inotify.next().await.unwrap();
        assert_eq!(
            (first.watch, name_str(&first)),
            (watch, Some(".tmp-config"))
        );
        let second = inotify.next().await.unwrap();
        assert!(second.is(libc::IN_MOVED_TO));
        assert_eq!(name_str(&second), Some("config.v2.json"));
        assert_eq!(inotify.next_ready().unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
