//! Pressure stall information: `/proc/pressure/memory` and a cgroup's `memory.pressure`. The
//! totals (microseconds during which some, or all, non-idle tasks stalled on memory) are read
//! at every sample; their growth over an interval is the share of it spent stalled. A trigger
//! written to the file makes it pollable: it wakes the recorder when stalls pass a threshold
//! within a window, so that it samples fast exactly when memory runs short.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

/// The trigger's window. Kernels since 6.5 let processes without CAP_SYS_RESOURCE (the agent,
/// once attached) create triggers whose window is a multiple of 2 s.
pub(crate) const TRIGGER_WINDOW: Duration = Duration::from_secs(2);
/// Stalls within the window that wake the recorder: 5 % of the time.
pub(crate) const TRIGGER_STALL: Duration = Duration::from_millis(100);

/// The cumulative stall totals of one pressure file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub some_us: u64,
    pub full_us: u64,
}

/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=479` and the same for `full`. `full` is
/// absent from the host's CPU file only; a missing line counts as 0.
pub(crate) fn parse(text: &str) -> Option<Totals> {
    let mut totals = None::<Totals>;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let kind = fields.next();
        let total = fields
            .find_map(|field| field.strip_prefix("total="))
            .and_then(|total| total.parse::<u64>().ok());
        let (Some(kind), Some(total)) = (kind, total) else {
            continue;
        };
        let entry = totals.get_or_insert_default();
        match kind {
            "some" => entry.some_us = total,
            "full" => entry.full_us = total,
            _ => {}
        }
    }
    totals
}

/// Opens `path` with a trigger on it; the file then polls `POLLPRI` when the trigger fires.
pub(crate) fn trigger(path: &Path) -> std::io::Result<File> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let spec = format!(
        "some {} {}\0",
        TRIGGER_STALL.as_micros(),
        TRIGGER_WINDOW.as_micros()
    );
    file.write_all(spec.as_bytes())?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_read_from_both_lines() {
        let text = "some avg10=1.50 avg60=0.20 avg300=0.00 total=479\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=345\n";
        assert_eq!(
            parse(text),
            Some(Totals {
                some_us: 479,
                full_us: 345
            })
        );
        assert_eq!(
            parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n"),
            Some(Totals {
                some_us: 7,
                full_us: 0
            })
        );
        assert_eq!(parse("garbage\n"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn this_kernel_has_memory_pressure_or_says_why_not() {
        match std::fs::read_to_string("/proc/pressure/memory") {
            Ok(text) => assert!(parse(&text).is_some(), "{text}"),
            // CONFIG_PSI off, or psi=0 on the command line.
            Err(err) => println!("no /proc/pressure/memory here: {err}"),
        }
    }
}
