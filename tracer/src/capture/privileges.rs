//! Whether this process may load and attach the programs, checked up front so the user gets one
//! clear sentence instead of an EPERM from deep inside the loader.

use anyhow::{Context as _, bail};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Fails unless the effective capabilities allow loading tracing programs: CAP_BPF with
/// CAP_PERFMON (5.8+), or CAP_SYS_ADMIN.
pub fn check() -> anyhow::Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let effective = effective_capabilities(&status).context("no CapEff in /proc/self/status")?;
    if !can_trace(effective) {
        bail!(
            "oomtrace needs root, or the capabilities CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN on \
             kernels before 5.8), to load its eBPF programs; run it with sudo or grant them, e.g. \
             `setcap cap_bpf,cap_perfmon,cap_sys_admin+ep oomtrace`"
        );
    }
    Ok(())
}

/// The `CapEff` bit set from the text of `/proc/<pid>/status`.
pub fn effective_capabilities(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

pub fn can_trace(effective: u64) -> bool {
    let has = |cap: u32| effective & (1 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// Raises RLIMIT_MEMLOCK: kernels before 5.11 charge BPF maps against it.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass and nothing else.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff() {
        let status = "Name:\tbash\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                      CapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\n";
        assert_eq!(effective_capabilities(status), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_capabilities("Name:\tx\n"), None);
        assert_eq!(effective_capabilities("CapEff:\tzz\n"), None);
    }

    #[test]
    fn root_bpf_perfmon_and_sys_admin_can_trace() {
        assert!(can_trace(0x1ff_ffff_ffff), "root");
        assert!(can_trace(1 << CAP_SYS_ADMIN));
        assert!(can_trace((1 << CAP_BPF) | (1 << CAP_PERFMON)));
        assert!(
            !can_trace(1 << CAP_BPF),
            "CAP_BPF alone cannot attach tracing programs"
        );
        assert!(!can_trace(0), "an unprivileged user");
    }
}
