//! Reads every record `/dev/kmsg` still holds, from the oldest, without waiting for new ones.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek as _, SeekFrom};
use std::os::unix::fs::OpenOptionsExt as _;

use super::parse::{KillAssembler, KmsgKill};

pub(crate) const KMSG: &str = "/dev/kmsg";

/// The kills kept from one read: the newest, when there are more.
pub(crate) const MAX_KILLS: usize = 10_000;

/// A bound on the records read in one go, far above what the kernel's buffer holds (a record
/// takes at least a few dozen bytes of a buffer of at most a few MiB), so that a kernel
/// logging faster than it is read cannot keep the reader going forever.
const MAX_RECORDS: u64 = 4_000_000;

/// One read returns one whole record; a buffer shorter than the record fails with EINVAL. The
/// kernel's records are at most 8 KiB with their continuation lines.
const RECORD_BUFFER: usize = 16 * 1024;

/// The OOM kills the kernel log holds, and how complete that is.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct KernelLogKills {
    /// Oldest first.
    pub kills: VecDeque<KmsgKill>,
    /// Records read.
    pub records: u64,
    /// Times the kernel overwrote records before they were read (`EPIPE`); what they said is
    /// lost.
    pub overwritten: u64,
    /// Kills dropped, oldest first, past [`MAX_KILLS`].
    pub kills_over_cap: u64,
    /// Stopped at [`MAX_RECORDS`] with records still coming.
    pub stopped_early: bool,
}

/// Every OOM kill the kernel log holds since boot (or since its buffer wrapped).
pub fn read_since_boot() -> io::Result<KernelLogKills> {
    let mut kmsg = open()?;
    read_kills(&mut kmsg, MAX_KILLS)
}

/// Opens `/dev/kmsg` non-blocking at its oldest record. `SEEK_SET` 0, not `SEEK_DATA`: the
/// latter starts after what `dmesg --clear` cleared, and a cleared kill is still a kill.
fn open() -> io::Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(KMSG)
        .map_err(|err| io::Error::new(err.kind(), format!("opening {KMSG}: {err}")))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|err| io::Error::new(err.kind(), format!("seeking {KMSG} to its start: {err}")))?;
    Ok(file)
}

/// Reads records from `source` (one per `read`, as `/dev/kmsg` hands them) until it has no
/// more (`EAGAIN`), keeping the newest `cap` kills.
pub(crate) fn read_kills(source: &mut impl Read, cap: usize) -> io::Result<KernelLogKills> {
    let mut buffer = vec![0u8; RECORD_BUFFER];
    let mut assembler = KillAssembler::new();
    let mut found = KernelLogKills::default();
    loop {
        if found.records == MAX_RECORDS {
            found.stopped_early = true;
            break;
        }
        let len = match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(len) => len,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            // Records were overwritten before this read: the kernel moved on to the oldest it
            // still has. A report cut in two pairs nothing across the gap.
            Err(err) if err.raw_os_error() == Some(libc::EPIPE) => {
                found.overwritten += 1;
                assembler = KillAssembler::new();
                continue;
            }
            Err(err) => return Err(io::Error::new(err.kind(), format!("reading {KMSG}: {err}"))),
        };
        found.records += 1;
        let Some(kill) = assembler.push_record(&buffer[..len]) else {
            continue;
        };
        if cap == 0 {
            found.kills_over_cap += 1;
            continue;
        }
        if found.kills.len() == cap {
            found.kills.pop_front();
            found.kills_over_cap += 1;
        }
        found.kills.push_back(kill);
    }
    Ok(found)
}
