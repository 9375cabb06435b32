//! The host's journal: each kill, SIGKILL and pressure warning as one structured entry, so that
//! `journalctl OOMTRACE_CONTAINER=web` or `journalctl MESSAGE_ID=…` finds them, and
//! `journalctl -x` explains them (`deploy/oomtrace.catalog`). Used when the agent's stderr is
//! the journal (a systemd service), or when asked (`--log-target journald`); the log's other
//! lines still go to stderr.

pub(crate) mod entry;
pub(crate) mod socket;

use std::os::fd::AsFd as _;

use anyhow::Context as _;

use std::borrow::Cow;

use self::socket::{Field, JournalSocket};
use super::Sink;
use crate::cli::LogTarget;
use crate::escape::escape;
use crate::record::{Body, Record};

/// Writes the entries of kills, SIGKILLs and pressure warnings to journald.
pub(crate) struct JournaldSink {
    socket: JournalSocket,
}

impl JournaldSink {
    pub(crate) fn connect(path: &str) -> std::io::Result<Self> {
        Ok(JournaldSink {
            socket: JournalSocket::connect(path)?,
        })
    }

    /// The sink `--log-target` asks for, if any: `journald` fails without a journal; `auto`
    /// takes it when stderr is the journal, and says so when it cannot.
    pub(crate) fn for_target(target: LogTarget) -> anyhow::Result<Option<Self>> {
        match target {
            LogTarget::Stderr => Ok(None),
            LogTarget::Journald => Self::connect(socket::SOCKET)
                .map(Some)
                .context("--log-target journald"),
            LogTarget::Auto if stderr_is_journal() => match Self::connect(socket::SOCKET) {
                Ok(sink) => Ok(Some(sink)),
                Err(err) => {
                    log::warn!(
                        "stderr is the journal, but kills cannot be sent as entries of their \
                         own ({err}): they are logged as lines"
                    );
                    Ok(None)
                }
            },
            LogTarget::Auto => Ok(None),
        }
    }
}

impl Sink for JournaldSink {
    fn write(&mut self, record: &Record) -> std::io::Result<()> {
        let Some(fields) = entry_of(record) else {
            return Ok(());
        };
        self.socket.send(&fields).inspect_err(|_| {
            // Not lost: the line goes to stderr, and the agent says why the entry did not.
            if let Some((_, message)) = fields.first() {
                log::warn!("{message}");
            }
        })
    }
}

/// A record's entry, if it has one, every value escaped.
pub(crate) fn entry_of(record: &Record) -> Option<Vec<Field>> {
    let history = record.history.as_ref();
    let fields = match &record.body {
        Body::OomKill(kill) => entry::oom_kill(kill, false, history),
        Body::OomMarkExiting(marked) => entry::oom_kill(marked, true, history),
        Body::Sigkill(sigkill) => entry::sigkill(sigkill, history),
        Body::MemoryPressure(pressure) => entry::memory_pressure(pressure),
        // The agent's own state goes to its log (stderr), which a service's journal has.
        // An incident's kills are entries of their own, each with OOMTRACE_INCIDENT.
        Body::AgentStarted(_) | Body::AgentStopped(_) | Body::OomIncident(_) => return None,
    };
    Some(escaped(fields))
}

/// Every value by the one rule for printed lines ([`crate::escape`]): the protocol would carry
/// any bytes, but `journalctl` prints MESSAGE on terminals, `-o verbose` (which the catalog and
/// the docs point to) prints a field's newlines and bidi controls raw (systemd 252: a newline
/// in a value forges a field line), and `-o cat --output-fields` prints any value raw. A name is
/// selected as it is printed: `journalctl 'OOMTRACE_COMM=evil\x1b'`.
pub(crate) fn escaped(fields: Vec<Field>) -> Vec<Field> {
    fields
        .into_iter()
        .map(|(name, value)| match escape(&value) {
            Cow::Borrowed(_) => (name, value),
            Cow::Owned(escaped) => (name, escaped),
        })
        .collect()
}

/// Whether stderr is a stream to the journal: systemd sets `JOURNAL_STREAM` to its
/// `device:inode`, and a child that inherited the variable but not the stream must not think so.
pub fn stderr_is_journal() -> bool {
    is_stream(
        std::env::var_os("JOURNAL_STREAM").as_deref(),
        std::io::stderr().as_fd(),
    )
}

fn is_stream(journal_stream: Option<&std::ffi::OsStr>, fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let Some(stream) = journal_stream.and_then(|text| parse_stream(text.to_str()?)) else {
        return false;
    };
    device_and_inode(fd).is_ok_and(|found| found == stream)
}

/// `JOURNAL_STREAM`'s `device:inode`, both decimal.
fn parse_stream(text: &str) -> Option<(u64, u64)> {
    let (device, inode) = text.split_once(':')?;
    Some((device.parse().ok()?, inode.parse().ok()?))
}

fn device_and_inode(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<(u64, u64)> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a zeroed stat is valid, and fstat only writes it.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor and a valid buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((stat.st_dev, stat.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_is_device_and_inode() {
        assert_eq!(parse_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_stream("8:"), None);
        assert_eq!(parse_stream("garbage"), None);
    }

    /// What systemd gives a service: the variable names the very descriptor; one inherited
    /// by a process whose stderr went elsewhere names another.
    #[test]
    fn only_the_stream_the_variable_names_is_the_journal() {
        let dir = crate::history::tests::temp_dir();
        let stream = std::fs::File::create(dir.join("stream")).unwrap();
        let elsewhere = std::fs::File::create(dir.join("elsewhere")).unwrap();
        let (device, inode) = device_and_inode(stream.as_fd()).unwrap();
        let named = std::ffi::OsString::from(format!("{device}:{inode}"));
        assert!(is_stream(Some(&named), stream.as_fd()));
        assert!(!is_stream(Some(&named), elsewhere.as_fd()));
        assert!(!is_stream(None, stream.as_fd()));
        assert!(!is_stream(Some("x:y".as_ref()), stream.as_fd()));
    }
}
