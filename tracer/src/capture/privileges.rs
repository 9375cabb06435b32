//! Which capabilities oomtrace needs, and when.
//!
//! Loading and attaching the programs needs CAP_BPF and CAP_PERFMON (CAP_SYS_ADMIN before 5.8,
//! when CAP_BPF did not exist); this is checked up front, so that a user missing one reads its
//! name instead of an EPERM from deep inside the loader. Once the programs are attached the
//! agent only reads a ring buffer it has mapped, world-readable `/proc` and cgroupfs files and
//! the runtime's socket, none of which needs a capability: [`drop_after_attach`] then gives up
//! every capability, except the one some kernels still ask for when a map is read (see there).

use std::io;

use anyhow::{Context as _, bail};
use caps::{CapSet, Capability, CapsHashSet};

/// Fails unless the effective capabilities allow loading tracing programs, naming what is
/// missing.
pub(crate) fn check() -> anyhow::Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let effective = effective_capabilities(&status).context("no CapEff in /proc/self/status")?;
    let kernel_has_cap_bpf = caps::runtime::thread_all_supported().contains(&Capability::CAP_BPF);
    match missing_for_tracing(effective, kernel_has_cap_bpf) {
        Ok(()) => Ok(()),
        Err(missing) => bail!("{}", missing_message(&missing, kernel_has_cap_bpf)),
    }
}

/// The `CapEff` bit set from the text of `/proc/<pid>/status`.
pub(crate) fn effective_capabilities(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Ok if `effective` may load and attach tracing programs; else the capabilities to add. A
/// kernel without CAP_BPF (before 5.8) accepts only CAP_SYS_ADMIN; a newer one also CAP_BPF with
/// CAP_PERFMON, which is what oomtrace asks for.
pub(crate) fn missing_for_tracing(
    effective: u64,
    kernel_has_cap_bpf: bool,
) -> Result<(), Vec<Capability>> {
    let has = |cap: Capability| effective & cap.bitmask() != 0;
    if has(Capability::CAP_SYS_ADMIN) {
        return Ok(());
    }
    if !kernel_has_cap_bpf {
        return Err(vec![Capability::CAP_SYS_ADMIN]);
    }
    let missing: Vec<Capability> = [Capability::CAP_BPF, Capability::CAP_PERFMON]
        .into_iter()
        .filter(|&cap| !has(cap))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing)
    }
}

fn missing_message(missing: &[Capability], kernel_has_cap_bpf: bool) -> String {
    let names = names(missing.iter().copied());
    if kernel_has_cap_bpf {
        format!(
            "missing capability {names}: oomtrace needs CAP_BPF (to load its eBPF programs) and \
             CAP_PERFMON (to attach them to tracepoints), or root; grant them with `--cap-add \
             BPF --cap-add PERFMON` (podman, docker), `AmbientCapabilities=CAP_BPF CAP_PERFMON` \
             (systemd) or `setcap cap_bpf,cap_perfmon,cap_sys_resource+ep oomtrace`"
        )
    } else {
        format!(
            "missing capability {names}: this kernel predates CAP_BPF (5.8), so loading eBPF \
             programs needs CAP_SYS_ADMIN; run oomtrace as root, or its container with \
             `--privileged`"
        )
    }
}

/// Why the kernel refused the programs despite the capabilities, when a seccomp filter is the
/// likely cause: the default profiles of podman and Docker allow bpf() and perf_event_open()
/// only with CAP_SYS_ADMIN. `error` is the loader's error text.
pub(crate) fn seccomp_hint(error: &str) -> Option<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let filtered = status
        .lines()
        .find_map(|line| line.strip_prefix("Seccomp:"))
        .is_some_and(|mode| mode.trim() != "0");
    (filtered && error.contains("Operation not permitted")).then_some(
        "a seccomp filter refused a bpf() call: container runtimes' default profiles allow \
         bpf() and perf_event_open() only with CAP_SYS_ADMIN; run the container with \
         `--security-opt seccomp=deploy/seccomp.json` (Kubernetes: see \
         deploy/kubernetes/02-daemonset.yaml)",
    )
}

fn names(caps: impl Iterator<Item = Capability>) -> String {
    let mut names: Vec<String> = caps.map(|cap| cap.to_string()).collect();
    names.sort();
    names.join(", ")
}

/// Raises RLIMIT_MEMLOCK: kernels before 5.11 charge BPF maps against it.
pub(crate) fn raise_memlock_limit() {
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

/// While held, this process can open no file: RLIMIT_NOFILE's soft limit sits at the lowest
/// free descriptor, which is what the next `open` would get. Dropping it restores the limit.
/// For a library call that reads a file it has no use for (see `loader_without_kernel_btf`);
/// only while one thread runs, or another thread's `open` would fail too.
pub(crate) struct NoNewFiles {
    saved: Option<libc::rlimit>,
}

impl NoNewFiles {
    pub(crate) fn hold() -> Self {
        let mut saved = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut saved) } != 0 {
            return NoNewFiles { saved: None };
        }
        let lowest_free = match std::fs::File::open("/") {
            Ok(probe) => std::os::fd::AsRawFd::as_raw_fd(&probe),
            // No descriptor to spare already.
            Err(_) => return NoNewFiles { saved: None },
        };
        let held = libc::rlimit {
            rlim_cur: lowest_free as libc::rlim_t,
            rlim_max: saved.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we pass; lowering the soft limit is always allowed.
        let saved = (unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &held) } == 0).then_some(saved);
        NoNewFiles { saved }
    }
}

impl Drop for NoNewFiles {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: as in `hold`; the soft limit goes back to what it was, within the hard one.
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, saved) };
        }
    }
}

/// What [`drop_after_attach`] left this process.
#[derive(Debug)]
pub(crate) struct Retained {
    /// Still effective and permitted, each with why.
    pub kept: Vec<(Capability, &'static str)>,
    /// Given up from the effective and permitted sets.
    pub dropped: Vec<Capability>,
    /// Whether the bounding set was cut down to `kept` too (needs CAP_SETPCAP).
    pub bounding_dropped: bool,
}

impl Retained {
    /// One sentence for the startup log.
    pub(crate) fn describe(&self) -> String {
        let Retained {
            kept,
            dropped,
            bounding_dropped,
        } = self;
        let kept = if kept.is_empty() {
            "none".to_owned()
        } else {
            kept.iter()
                .map(|(cap, why)| format!("{cap} ({why})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Root holds some forty: name them only when they are a deployment's few.
        let dropped = match dropped.len() {
            0 => "none".to_owned(),
            1..=MAX_NAMED => names(dropped.iter().copied()),
            count => format!("all {count} others it held"),
        };
        let bounding = if *bounding_dropped {
            "the bounding set too"
        } else {
            "the bounding set left as it is (no CAP_SETPCAP), no_new_privs set so that no exec \
             can regain any"
        };
        format!(
            "capabilities after attach: keeping {kept}; dropped {dropped}, inheritable and \
             ambient cleared, {bounding}"
        )
    }
}

/// Past this many, the dropped capabilities are counted rather than named.
const MAX_NAMED: usize = 8;

/// Why CAP_BPF (or CAP_SYS_ADMIN) is kept where a map read needs it.
const MAP_READS_NEED_IT: &str = "this kernel checks it on every bpf() call, reading the \
     drop counter included (kernel.unprivileged_bpf_disabled before 5.19)";

/// Gives up every capability the attached agent does not need, from the effective, permitted,
/// inheritable and ambient sets, and from the bounding set where CAP_SETPCAP allows; sets
/// no_new_privs. Call it before any other thread exists: capabilities are per thread, and
/// threads started later inherit the caller's.
///
/// `read_map` performs one read of an eBPF map the agent keeps reading. Before 5.19, a kernel
/// with `kernel.unprivileged_bpf_disabled` set checks CAP_BPF (CAP_SYS_ADMIN before 5.8) on
/// every bpf() call, map reads included; so the read is tried without any capability first,
/// and the capability is kept only if the kernel refuses it.
pub(crate) fn drop_after_attach(read_map: impl Fn() -> io::Result<()>) -> anyhow::Result<Retained> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count);
    if threads > 1 {
        bail!(
            "cannot drop capabilities: {threads} threads are running, and each keeps its own; \
             they must be dropped before any thread starts"
        );
    }
    let permitted = caps::read(None, CapSet::Permitted).context("reading capabilities")?;
    caps::clear(None, CapSet::Effective).context("clearing the effective capabilities")?;
    let kept = match read_map() {
        Ok(()) => Vec::new(),
        Err(err) => match map_reading_capability(&permitted, &read_map) {
            Some(cap) => vec![(cap, MAP_READS_NEED_IT)],
            None => {
                log::warn!(
                    "reading an eBPF map without capabilities failed ({err}) and no capability \
                     helped: the drop counter may be unreadable"
                );
                Vec::new()
            }
        },
    };
    let kept_set: CapsHashSet = kept.iter().map(|&(cap, _)| cap).collect();

    // The bounding set first: cutting it needs CAP_SETPCAP, which goes with the rest below.
    let bounding_dropped = permitted.contains(&Capability::CAP_SETPCAP)
        && caps::raise(None, CapSet::Effective, Capability::CAP_SETPCAP).is_ok()
        && drop_bounding_except(&kept_set).is_ok();
    caps::set(None, CapSet::Effective, &kept_set).context("setting the effective capabilities")?;
    caps::set(None, CapSet::Permitted, &kept_set).context("setting the permitted capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("clearing the inheritable capabilities")?;
    caps::clear(None, CapSet::Ambient).context("clearing the ambient capabilities")?;
    // SAFETY: prctl with these arguments only sets a flag of this process.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error()).context("setting no_new_privs");
    }

    let mut dropped: Vec<Capability> = permitted.difference(&kept_set).copied().collect();
    dropped.sort_by_key(|cap| cap.index());
    Ok(Retained {
        kept,
        dropped,
        bounding_dropped,
    })
}

/// The capability that makes `read_map` work when nothing else does: CAP_BPF, or CAP_SYS_ADMIN
/// on a kernel without it. Raised in the effective set when found, lowered otherwise.
fn map_reading_capability(
    permitted: &CapsHashSet,
    read_map: &impl Fn() -> io::Result<()>,
) -> Option<Capability> {
    [Capability::CAP_BPF, Capability::CAP_SYS_ADMIN]
        .into_iter()
        .filter(|cap| permitted.contains(cap))
        .find(|&cap| {
            let works = caps::raise(None, CapSet::Effective, cap).is_ok() && read_map().is_ok();
            if !works {
                let _ = caps::drop(None, CapSet::Effective, cap);
            }
            works
        })
}

fn drop_bounding_except(kept: &CapsHashSet) -> Result<(), caps::errors::CapsError> {
    for cap in caps::read(None, CapSet::Bounding)? {
        if !kept.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the deployment grants (docs/deploy.md, deploy/): the two capabilities the agent
    /// cannot work without, the one it sets its `oom_score_adj` (and, before 5.11, its
    /// RLIMIT_MEMLOCK) with, and the one that opens the kernel log for the history's backfill
    /// where `kernel.dmesg_restrict` is set.
    const DEPLOYED: [Capability; 4] = [
        Capability::CAP_BPF,
        Capability::CAP_PERFMON,
        Capability::CAP_SYS_RESOURCE,
        Capability::CAP_SYSLOG,
    ];

    #[test]
    fn every_deployment_grants_the_same_capabilities() {
        let names: Vec<String> = DEPLOYED.iter().map(ToString::to_string).collect();
        let short: Vec<&str> = names
            .iter()
            .map(|name| name.trim_start_matches("CAP_"))
            .collect();
        let unit = include_str!("../../../deploy/oomtrace.service");
        for key in ["CapabilityBoundingSet=", "AmbientCapabilities="] {
            let line = unit
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in deploy/oomtrace.service"));
            assert_eq!(line, names.join(" "), "{key} in deploy/oomtrace.service");
        }
        let daemonset = include_str!("../../../deploy/kubernetes/02-daemonset.yaml");
        let add = format!("add: [\"{}\"]", short.join("\", \""));
        assert!(daemonset.contains(&add), "deploy/kubernetes: `{add}`");
        let guide = include_str!("../../../docs/deploy.md");
        let flags: String = short
            .iter()
            .map(|cap| format!(" --cap-add={cap}"))
            .collect();
        let flags = format!("--cap-drop=ALL{flags}");
        assert!(guide.contains(&flags), "docs/deploy.md: `{flags}`");
    }

    const BPF: u64 = 1 << 39;
    const PERFMON: u64 = 1 << 38;
    const SYS_ADMIN: u64 = 1 << 21;

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
        assert_eq!(missing_for_tracing(0x1ff_ffff_ffff, true), Ok(()), "root");
        assert_eq!(missing_for_tracing(SYS_ADMIN, true), Ok(()));
        assert_eq!(missing_for_tracing(BPF | PERFMON, true), Ok(()));
        assert_eq!(missing_for_tracing(SYS_ADMIN, false), Ok(()), "before 5.8");
    }

    #[test]
    fn each_missing_capability_is_named() {
        assert_eq!(
            missing_for_tracing(PERFMON, true),
            Err(vec![Capability::CAP_BPF])
        );
        assert_eq!(
            missing_for_tracing(BPF, true),
            Err(vec![Capability::CAP_PERFMON]),
            "CAP_BPF alone cannot attach tracing programs"
        );
        assert_eq!(
            missing_for_tracing(0, true),
            Err(vec![Capability::CAP_BPF, Capability::CAP_PERFMON])
        );
        assert_eq!(
            missing_for_tracing(BPF | PERFMON, false),
            Err(vec![Capability::CAP_SYS_ADMIN]),
            "a kernel before 5.8 knows neither"
        );
    }

    #[test]
    fn the_message_starts_with_what_is_missing() {
        let message = missing_message(&[Capability::CAP_PERFMON], true);
        assert!(
            message.starts_with("missing capability CAP_PERFMON:"),
            "{message}"
        );
        assert!(message.contains("--cap-add"), "{message}");
        let message = missing_message(&[Capability::CAP_SYS_ADMIN], false);
        assert!(
            message.starts_with("missing capability CAP_SYS_ADMIN:"),
            "{message}"
        );
        assert!(message.contains("--privileged"), "{message}");
    }

    #[test]
    fn the_log_line_says_what_is_kept_and_why() {
        let retained = Retained {
            kept: vec![(Capability::CAP_BPF, MAP_READS_NEED_IT)],
            dropped: vec![Capability::CAP_SYS_RESOURCE, Capability::CAP_PERFMON],
            bounding_dropped: false,
        };
        let line = retained.describe();
        assert!(
            line.starts_with("capabilities after attach: keeping CAP_BPF (this kernel checks"),
            "{line}"
        );
        assert!(
            line.contains("dropped CAP_PERFMON, CAP_SYS_RESOURCE,"),
            "{line}"
        );
        let none = Retained {
            kept: Vec::new(),
            dropped: Vec::new(),
            bounding_dropped: true,
        };
        assert!(none.describe().contains("keeping none; dropped none"));
        let root = Retained {
            kept: Vec::new(),
            dropped: caps::all().into_iter().collect(),
            bounding_dropped: true,
        };
        let line = root.describe();
        assert!(line.contains("keeping none; dropped all "), "{line}");
        assert!(line.ends_with("the bounding set too"), "{line}");
    }
}
