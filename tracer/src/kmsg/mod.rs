//! The kernel log (`/dev/kmsg`): its own account of the OOM kills since boot, including those
//! from before oomtrace started.
//!
//! [`parse`] turns records into typed kills (pure, fuzzed, shared with the integration tests
//! and xtask); [`read`] reads every record the kernel still holds.

pub(crate) mod backfill;
pub(crate) mod follow;
pub mod parse;
pub(crate) mod read;
pub mod report;

pub use self::read::{KernelLogKills, read_since_boot};

/// At startup: what the kernel log says about OOM kills from before oomtrace started, logged
/// in one line and returned for the history.
pub fn kills_since_boot() -> Option<KernelLogKills> {
    let found = match read_since_boot() {
        Ok(found) => found,
        Err(err) => {
            let hint = if err.kind() == std::io::ErrorKind::PermissionDenied {
                " (with kernel.dmesg_restrict set, reading it needs CAP_SYSLOG)"
            } else {
                ""
            };
            log::warn!("kernel log: {err}{hint}; earlier OOM kills are not read");
            return None;
        }
    };
    let KernelLogKills {
        kills,
        records,
        overwritten,
        kills_over_cap,
        stopped_early,
    } = &found;
    let mut summary = format!(
        "kernel log: {} OOM kills in {records} records",
        kills.len() as u64 + kills_over_cap
    );
    if let Some(last) = kills.back() {
        let scope = last.scope.map_or("an", parse::OomScope::as_str);
        summary.push_str(&format!(
            "; the last: pid {} ({}) {:.1} s after boot, {scope} OOM",
            last.pid,
            last.comm,
            last.usec as f64 / 1e6
        ));
        if let Some(memcg) = last.task_memcg() {
            summary.push_str(&format!(", in {memcg}"));
        }
        if let Some(memcg) = last.oom_memcg() {
            summary.push_str(&format!(", at the limit of {memcg}"));
        }
    }
    if *kills_over_cap > 0 {
        summary.push_str(&format!(
            "; only the newest {} are kept, {kills_over_cap} older ones were dropped",
            kills.len()
        ));
    }
    if *overwritten > 0 {
        summary.push_str(&format!(
            "; the kernel overwrote records {overwritten} times while they were read"
        ));
    }
    if *stopped_early {
        summary.push_str("; stopped reading with records still coming");
    }
    log::info!("{summary}");
    Some(found)
}

/// At startup, while the capabilities are held: the kernel log opened at its end, for each
/// kill's report of the domain's memory ([`follow_reports`] starts reading it); why not, where it
/// cannot be read.
pub fn open_for_reports() -> Result<follow::KernelLog, String> {
    follow::KernelLog::open().map_err(|err| {
        let hint = if err.kind() == std::io::ErrorKind::PermissionDenied {
            " (with kernel.dmesg_restrict set, reading it needs CAP_SYSLOG)"
        } else {
            ""
        };
        let why = format!("{}: {err}{hint}", read::KMSG);
        log::warn!(
            "kernel log: {why}; what filled a limit is read from memory.stat as each kill \
             arrives instead"
        );
        why
    })
}

/// Once the capabilities are dropped (a thread started before would keep them): reads the
/// opened log on a thread of its own.
pub fn follow_reports(
    opened: Result<follow::KernelLog, String>,
) -> Result<follow::KernelLog, String> {
    let log = opened?;
    match log.follow() {
        Ok(()) => {
            log::info!("kernel log: followed for each OOM kill's report of what filled the limit");
            Ok(log)
        }
        Err(err) => {
            let why = format!("starting its reader: {err}");
            log::warn!("kernel log: {why}; what filled a limit is read from memory.stat instead");
            Err(why)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
