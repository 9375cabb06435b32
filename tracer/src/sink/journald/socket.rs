//! journald's native protocol: one datagram per entry to `/run/systemd/journal/socket`, each
//! field `NAME=value\n`, or `NAME\n`, the value's length as 64-bit little endian, the value and
//! `\n` where the value holds a newline. An entry too large for a datagram goes in a sealed
//! memfd whose descriptor is the datagram (as `sd_journal_send` does).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where journald listens for native entries.
pub(crate) const SOCKET: &str = "/run/systemd/journal/socket";

/// How long a send may wait for journald's queue to have room: a stuck journal delays one
/// entry this much, and the entry is then logged on stderr instead.
const SEND_TIMEOUT: Duration = Duration::from_millis(500);

/// A field of an entry: a name journald accepts (upper-case letters, digits and `_`, not
/// starting with `_`, at most 64 bytes) and its value.
pub(crate) type Field = (&'static str, String);

/// An unbound datagram socket that sends to the journal.
pub(crate) struct JournalSocket {
    socket: UnixDatagram,
    path: PathBuf,
    /// Entries longer than this go in a memfd without trying a datagram first (tests set it
    /// low; the kernel's own limit, `EMSGSIZE`, applies otherwise).
    pub datagram_limit: usize,
}

impl JournalSocket {
    /// Fails, saying so, when nothing is there to receive: no journal on this host.
    pub(crate) fn connect(path: impl AsRef<Path>) -> io::Result<Self> {
        let path = path.as_ref().to_owned();
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        // A connected datagram socket learns at once that nobody listens.
        socket.connect(&path).map_err(|err| {
            io::Error::new(
                err.kind(),
                format!("no journal at {}: {err}", path.display()),
            )
        })?;
        Ok(JournalSocket {
            socket,
            path,
            datagram_limit: usize::MAX,
        })
    }

    /// Sends one entry.
    pub(crate) fn send(&self, fields: &[Field]) -> io::Result<()> {
        let entry = serialize(fields);
        if entry.len() <= self.datagram_limit {
            match self.socket.send(&entry) {
                Ok(_) => return Ok(()),
                // Too large for a datagram: the memfd below.
                Err(err) if matches!(err.raw_os_error(), Some(libc::EMSGSIZE | libc::ENOBUFS)) => {}
                // journald restarted: its socket is a new one at the same path.
                Err(err) if err.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    self.socket.connect(&self.path)?;
                    self.socket.send(&entry)?;
                    return Ok(());
                }
                Err(err) => return Err(err),
            }
        }
        self.send_memfd(&entry)
    }

    /// The entry in a sealed memfd, its descriptor the only content of the datagram.
    fn send_memfd(&self, entry: &[u8]) -> io::Result<()> {
        let memfd = sealed_memfd(entry)?;
        send_fd(&self.socket, memfd.as_raw_fd())
    }
}

/// The wire form of an entry.
pub(crate) fn serialize(fields: &[Field]) -> Vec<u8> {
    let mut entry = Vec::new();
    for (name, value) in fields {
        debug_assert!(is_field_name(name), "not a journal field name: {name}");
        entry.extend_from_slice(name.as_bytes());
        if value.contains('\n') {
            entry.push(b'\n');
            entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
            entry.extend_from_slice(value.as_bytes());
        } else {
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
        }
        entry.push(b'\n');
    }
    entry
}

/// What journald accepts from a client as a field name.
pub(crate) fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn sealed_memfd(content: &[u8]) -> io::Result<OwnedFd> {
    let name = CString::new("oomtrace-journal-entry").expect("no NUL");
    // SAFETY: a valid name; the flags ask for a descriptor of our own.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just created, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = File::from(fd);
    file.write_all(content)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
    // SAFETY: fcntl on a descriptor we own.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

/// `sendmsg` with the descriptor as `SCM_RIGHTS` and no data.
fn send_fd(socket: &UnixDatagram, fd: std::os::fd::RawFd) -> io::Result<()> {
    const FD_SIZE: u32 = std::mem::size_of::<std::os::fd::RawFd>() as u32;
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(FD_SIZE) } as usize;
    // u64 words: aligned as cmsghdr needs.
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: zeroed msghdr is valid; the pointers set below outlive the call.
    let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
    message.msg_control = control.as_mut_ptr().cast();
    message.msg_controllen = space as _;
    // SAFETY: the control buffer holds one header with room for one descriptor.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&message);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(FD_SIZE) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<std::os::fd::RawFd>(), fd);
    }
    // SAFETY: a connected socket, a message whose buffers are valid for the call.
    let sent = unsafe { libc::sendmsg(socket.as_raw_fd(), &message, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_with_a_newline_is_sent_with_its_length() {
        let entry = serialize(&[
            ("MESSAGE", "one line".to_owned()),
            ("OOMTRACE_VERDICT", "two\nlines".to_owned()),
        ]);
        let mut expected = b"MESSAGE=one line\nOOMTRACE_VERDICT\n".to_vec();
        expected.extend_from_slice(&9u64.to_le_bytes());
        expected.extend_from_slice(b"two\nlines\n");
        assert_eq!(entry, expected);
    }

    #[test]
    fn field_names_are_what_journald_takes() {
        assert!(is_field_name("OOMTRACE_CONTAINER"));
        assert!(is_field_name("MESSAGE_ID"));
        for bad in ["", "_PID", "lower", "1ST", "WITH-DASH", &"X".repeat(65)] {
            assert!(!is_field_name(bad), "{bad}");
        }
    }

    /// A journal that is not there is said at once, not on the first kill.
    #[test]
    fn no_journal_is_an_error_at_connect() {
        let dir = crate::history::tests::temp_dir();
        let err = JournalSocket::connect(dir.join("socket")).err().unwrap();
        assert!(err.to_string().contains("no journal at"), "{err}");
    }

    /// A receiving socket stands in for journald: a small entry arrives as a datagram, a large
    /// one as a sealed memfd holding the same bytes.
    #[test]
    fn a_large_entry_goes_in_a_sealed_memfd() {
        let dir = crate::history::tests::temp_dir();
        let path = dir.join("journal.socket");
        let journal = UnixDatagram::bind(&path).unwrap();
        let mut sender = JournalSocket::connect(&path).unwrap();
        let fields = [("MESSAGE", "hello".to_owned())];
        sender.send(&fields).unwrap();
        let mut buffer = [0u8; 256];
        let len = journal.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..len], b"MESSAGE=hello\n");

        sender.datagram_limit = 4;
        sender.send(&fields).unwrap();
        let fd = receive_fd(&journal);
        // SAFETY: F_GET_SEALS on a descriptor we received.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        assert_eq!(seals & libc::F_SEAL_WRITE, libc::F_SEAL_WRITE, "sealed");
        let mut content = String::new();
        let mut file = File::from(fd);
        std::io::Seek::rewind(&mut file).unwrap();
        std::io::Read::read_to_string(&mut file, &mut content).unwrap();
        assert_eq!(content, "MESSAGE=hello\n");
    }

    fn receive_fd(socket: &UnixDatagram) -> OwnedFd {
        const FD_SIZE: u32 = std::mem::size_of::<std::os::fd::RawFd>() as u32;
        // SAFETY: as in send_fd.
        let space = unsafe { libc::CMSG_SPACE(FD_SIZE) } as usize;
        let mut control = vec![0u64; space.div_ceil(8)];
        let mut data = [0u8; 16];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: zeroed msghdr is valid; buffers outlive the call.
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = &mut iov;
        message.msg_iovlen = 1;
        message.msg_control = control.as_mut_ptr().cast();
        message.msg_controllen = space as _;
        // SAFETY: a bound socket and valid buffers.
        let received = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut message, 0) };
        assert_eq!(received, 0, "no data, only the descriptor");
        // SAFETY: the kernel filled one SCM_RIGHTS header.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&message);
            assert!(!header.is_null());
            assert_eq!((*header).cmsg_type, libc::SCM_RIGHTS);
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<std::os::fd::RawFd>());
            OwnedFd::from_raw_fd(fd)
        }
    }
}
