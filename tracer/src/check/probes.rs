//! Each thing `oomtrace check` looks at, asked the way `run` asks it, and said as a [`Check`].

use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::time::Duration;

use caps::Capability;

use super::{Check, Status};
use crate::attribute::runtime::RuntimeError;
use crate::attribute::{Asked, ConfiguredRuntime};
use crate::capture::prototype::TracepointArg;
use crate::capture::{KernelFacts, Tier, privileges};
use crate::cli::RunArgs;
use crate::observe::cgroupfs::{self, CgroupVersion, MemoryHierarchy};
use crate::record::agent::CaptureInfo;

/// How long one runtime may take to answer: a socket that never answers is said, not waited on.
const RUNTIME_TIMEOUT: Duration = Duration::from_secs(3);

/// The capabilities the deployments grant (README "Deploy"), and what each is for.
const WANTED: [(Capability, &str); 4] = [
    (Capability::CAP_BPF, "loading the programs"),
    (Capability::CAP_PERFMON, "attaching them"),
    (
        Capability::CAP_SYS_RESOURCE,
        "oom_score_adj -1000, so the OOM killer never picks the agent",
    ),
    (
        Capability::CAP_SYSLOG,
        "reading /dev/kmsg under kernel.dmesg_restrict",
    ),
];

/// The capabilities held; whether they are enough to load the programs.
pub(super) fn privileges(checks: &mut Vec<Check>) -> bool {
    let effective = std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(privileges::effective_capabilities)
        .unwrap_or(0);
    let held = |cap: Capability| effective & cap.bitmask() != 0;
    let names = |wanted: bool| -> Vec<String> {
        WANTED
            .iter()
            .filter(|(cap, _)| held(*cap) == wanted)
            .map(|(cap, _)| cap.to_string())
            .collect()
    };
    let (have, lack) = (names(true), names(false));
    let found = match (have.is_empty(), lack.is_empty()) {
        (_, true) => format!("{} held", have.join(", ")),
        (true, false) => format!("none of {} held", lack.join(", ")),
        (false, false) => format!("{} held; not {}", have.join(", "), lack.join(", ")),
    };
    let found = if held(Capability::CAP_SYS_ADMIN) {
        format!("{found}; CAP_SYS_ADMIN too (more than the agent needs)")
    } else {
        found
    };
    match privileges::check() {
        Ok(()) => {
            // CAP_SYS_ADMIN stands in for the others (as the kernel checks them), not for
            // CAP_SYS_RESOURCE.
            let covered = |cap: Capability| {
                held(cap) || cap != Capability::CAP_SYS_RESOURCE && held(Capability::CAP_SYS_ADMIN)
            };
            let missing: Vec<&str> = WANTED
                .iter()
                .filter(|(cap, _)| !covered(*cap))
                .map(|(_, what)| *what)
                .collect();
            let check = Check::new("privileges", "capabilities", Status::Ok, found);
            checks.push(match missing.as_slice() {
                [] => check,
                missing => Check {
                    status: Status::Limited,
                    ..check
                }
                .then(format!("without them: no {}", missing.join(", no "))),
            });
            true
        }
        Err(err) => {
            checks.push(Check::new(
                "privileges",
                "capabilities",
                Status::Failed,
                format!("{err:#}"),
            ));
            false
        }
    }
}

/// tracefs, the tracepoints' formats, the kernel's BTF.
pub(super) fn kernel_facts(facts: &KernelFacts, checks: &mut Vec<Check>) {
    let tracepoint = "tracepoint oom:mark_victim";
    checks.push(match &facts.mark_victim {
        Ok((tracefs, layout)) => {
            let fields = layout.fields_present();
            let found = format!("in {}: {}", tracefs.display(), fields.join(", "));
            if fields.len() > 1 {
                Check::new("mark_victim", tracepoint, Status::Ok, found)
            } else {
                Check::new("mark_victim", tracepoint, Status::Limited, found).then(
                    "before 6.9 it carries only the pid: the victim's name and memory come from \
                     the BTF programs, or its SIGKILL",
                )
            }
        }
        Err(why) => Check::new("mark_victim", tracepoint, Status::Failed, why.clone())
            .then("nothing to trace: every tier needs this tracepoint"),
    });
    checks.push(match facts.btf() {
        Ok(btf) => {
            let mut found = format!(
                "{}: mark_victim passes {}",
                crate::capture::btf::VMLINUX_BTF_PATH,
                match &btf.mark_victim_arg {
                    TracepointArg::Task => "the victim's task".to_owned(),
                    TracepointArg::Int(_) => "only the pid (before 6.9)".to_owned(),
                    other => other.to_string(),
                }
            );
            let mut lacks = btf.missing_for_memory.clone();
            lacks.extend(btf.missing_for_oom_context.iter().cloned());
            if lacks.is_empty() {
                Check::new("btf", "kernel BTF", Status::Ok, found)
            } else {
                found.push_str(&format!("; lacks {}", lacks.join(", ")));
                Check::new("btf", "kernel BTF", Status::Limited, found)
            }
        }
        Err(why) => Check::new("btf", "kernel BTF", Status::Limited, why).then(format!(
            "tier {} at most: no cgroups of the victim or the trigger, no OOM domain",
            Tier::TracepointOnly
        )),
    });
    if let Err(why) = &facts.signal_layout {
        checks.push(
            Check::new(
                "sigkill",
                "tracepoint signal:signal_generate",
                Status::Limited,
                why.clone(),
            )
            .then("SIGKILLs other than the OOM killer's are not traced"),
        );
    }
}

/// What loading the programs gave.
pub(super) fn capture(capture: &CaptureInfo, checks: &mut Vec<Check>) {
    let name = "oom_kill_process";
    checks.push(match &capture.function_hook {
        Some(hook) => Check::new(name, name, Status::Ok, format!("hooked by {hook}")),
        None => Check::new(
            name,
            name,
            Status::Limited,
            "not hooked (see the tier's reason)",
        )
        .then(
            "whose limit was hit is inferred from the memory counters; badness is estimated; \
             kills are not grouped into incidents",
        ),
    });
    let victim = capture.victim_source();
    checks.push(
        if capture.task_hook.is_some() || capture.sigkill_task_hook.is_some() {
            Check::new("victim_task", "the victim's task", Status::Ok, victim)
        } else {
            Check::new("victim_task", "the victim's task", Status::Limited, victim)
                .then("no cgroups, and only what the tracepoint carries of the victim")
        },
    );
    if capture.sigkill {
        let how = match &capture.sigkill_task_hook {
            Some(hook) => format!("the target read in the kernel ({hook})"),
            None => "the target's cgroups read from /proc".to_owned(),
        };
        checks.push(Check::new(
            "sigkill",
            "tracepoint signal:signal_generate",
            Status::Ok,
            format!("every SIGKILL is traced, {how}"),
        ));
    }
}

/// `/dev/kmsg`, as the agent reads it at startup.
pub(super) fn kernel_log(checks: &mut Vec<Check>) {
    let name = "kernel log (/dev/kmsg)";
    checks.push(match crate::kmsg::read_since_boot() {
        Ok(found) => Check::new(
            "kernel_log",
            name,
            Status::Ok,
            format!(
                "readable: {} OOM kills in its {} records",
                found.kills.len() as u64 + found.kills_over_cap,
                found.records
            ),
        )
        .then("kills from before the agent started are stored in the history"),
        Err(err) => {
            let hint = if err.kind() == ErrorKind::PermissionDenied {
                " (with kernel.dmesg_restrict set, reading it needs CAP_SYSLOG)"
            } else {
                ""
            };
            Check::new("kernel_log", name, Status::Limited, format!("{err}{hint}"))
                .then("kills from before the agent started are not recovered")
        }
    });
}

/// Which cgroup hierarchies hold the memory controller.
pub(super) fn cgroups(checks: &mut Vec<Check>) {
    let cgroup2 = cgroupfs::find_cgroup2();
    checks.push(match (MemoryHierarchy::find(), cgroup2) {
        (Some(memory), cgroup2) => {
            let found = match (memory.version, cgroup2) {
                (CgroupVersion::V2, _) => format!("cgroup v2 at {}", memory.root.display()),
                (CgroupVersion::V1, Some(unified)) => format!(
                    "hybrid: the memory controller on cgroup v1 at {}, cgroup2 at {}",
                    memory.root.display(),
                    unified.display()
                ),
                (CgroupVersion::V1, None) => {
                    format!(
                        "cgroup v1: the memory controller at {}",
                        memory.root.display()
                    )
                }
            };
            Check::new("cgroups", "memory cgroups", Status::Ok, found)
        }
        (None, _) => Check::new(
            "cgroups",
            "memory cgroups",
            Status::Limited,
            "no memory controller is mounted",
        )
        .then("no limit is inferred, and no snapshot or timeline is taken"),
    });
}

/// What wakes the memory timeline's recorder here, and whether `run` would refuse its options.
pub(super) fn timeline(args: &RunArgs, checks: &mut Vec<Check>) {
    let name = "memory timeline";
    if args.timeline.0.is_zero() {
        checks.push(if args.warn_pressure {
            Check::new(
                "timeline",
                name,
                Status::Failed,
                "off (--timeline 0), and --warn-pressure needs it",
            )
        } else {
            Check::new("timeline", name, Status::Absent, "off (--timeline 0)")
        });
        return;
    }
    let memory = MemoryHierarchy::find();
    let mechanisms = crate::observe::timeline::mechanisms(memory.as_ref());
    let status = if mechanisms.pressure_trigger.is_ok() {
        Status::Ok
    } else {
        Status::Limited
    };
    let check = Check::new("timeline", name, status, mechanisms.describe());
    checks.push(match &mechanisms.pressure_trigger {
        Ok(()) => check,
        Err(_) => check.then("host-wide pressure does not make the recorder sample faster"),
    });
}

/// Each runtime `run` would watch, connected once.
pub(super) async fn runtimes(args: &RunArgs, checks: &mut Vec<Check>) {
    for ConfiguredRuntime { runtime, asked } in args.attribution().runtimes() {
        let connected = tokio::time::timeout(RUNTIME_TIMEOUT, runtime.connect())
            .await
            .unwrap_or_else(|_| {
                Err(RuntimeError::Unavailable(format!(
                    "no answer within {} s",
                    RUNTIME_TIMEOUT.as_secs()
                )))
            });
        let check = match connected {
            Ok(()) => {
                let listed = tokio::time::timeout(RUNTIME_TIMEOUT, runtime.list()).await;
                let found = match listed {
                    Ok(Ok(containers)) => format!("found: {} containers", containers.len()),
                    Ok(Err(err)) => format!("found; listing its containers: {err}"),
                    Err(_) => "found; it did not list its containers in time".to_owned(),
                };
                Check::new("runtime", runtime.describe(), Status::Ok, found)
            }
            Err(RuntimeError::Absent(why)) if asked == Asked::Default => {
                Check::new("runtime", runtime.describe(), Status::Absent, why)
            }
            Err(err) => Check::new(
                "runtime",
                runtime.describe(),
                Status::Limited,
                err.to_string(),
            )
            .then("its containers are named from their cgroup paths"),
        };
        runtime.disconnect();
        checks.push(check);
    }
}

/// Whether the history file can be written, without creating it.
pub(super) fn history(args: &RunArgs, checks: &mut Vec<Check>) {
    let name = "history";
    if args.no_history {
        checks.push(Check::new(
            "history",
            name,
            Status::Absent,
            "off (--no-history)",
        ));
        return;
    }
    let path = &args.history;
    let check = match writable(path) {
        Ok(found) => Check::new("history", name, Status::Ok, found),
        Err(why) => Check::new("history", name, Status::Limited, why)
            .then("kills are logged and written out, but not stored for `oomtrace history`"),
    };
    checks.push(check);
}

/// `Ok(what was found)` if the agent could open `path` for writing, or create it. Opened as
/// `run` opens it: never through a symlink (someone else's link could point the agent's writes
/// at any file), non-blocking (a FIFO swapped in must not hang the check), and only a regular
/// file.
fn writable(path: &Path) -> Result<String, String> {
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    match opened {
        Ok(file) => match file.metadata() {
            Ok(meta) if meta.is_file() => Ok(format!("{} exists and is writable", path.display())),
            Ok(_) => Err(format!("{} is not a regular file", path.display())),
            Err(err) => Err(format!("{}: {err}", path.display())),
        },
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => Err(format!(
            "{} is a symbolic link, which the agent does not follow: give --history the file \
             itself",
            path.display()
        )),
        // A FIFO without a reader, a directory: not a file the history can be.
        Err(err) if matches!(err.raw_os_error(), Some(libc::ENXIO | libc::EISDIR)) => {
            Err(format!("{} is not a regular file", path.display()))
        }
        Err(err) if err.kind() == ErrorKind::NotFound => {
            let dir = path
                .ancestors()
                .skip(1)
                .find(|dir| dir.is_dir())
                .unwrap_or(Path::new("/"));
            match access_writable(dir) {
                Ok(()) => Ok(format!(
                    "{} will be created (in {}, writable)",
                    path.display(),
                    dir.display()
                )),
                Err(err) => Err(format!(
                    "{} cannot be created: {}: {err}",
                    path.display(),
                    dir.display()
                )),
            }
        }
        Err(err) => Err(format!("{}: {err}", path.display())),
    }
}

/// `faccessat(W_OK, AT_EACCESS)`: the effective ids' right to write, and a read-only mount.
fn access_writable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    // SAFETY: a valid NUL-terminated path; faccessat only reads it.
    let result =
        unsafe { libc::faccessat(libc::AT_FDCWD, path.as_ptr(), libc::W_OK, libc::AT_EACCESS) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Where kills are logged: entries in the journal, or lines on stderr.
pub(super) fn log_target(args: &RunArgs, checks: &mut Vec<Check>) {
    use crate::sink::journald::{JournaldSink, socket::SOCKET};
    let name = "the journal";
    checks.push(match JournaldSink::for_target(args.log_target) {
        Ok(Some(_)) => Check::new(
            "log_target",
            name,
            Status::Ok,
            format!("kills, SIGKILLs and warnings go to {SOCKET} as entries of their own"),
        ),
        Ok(None) => Check::new(
            "log_target",
            name,
            Status::Absent,
            "kills, SIGKILLs and warnings are log lines on stderr",
        ),
        Err(err) => Check::new("log_target", name, Status::Failed, format!("{err:#}")),
    });
}

/// Whether `--metrics-addr` can be bound; `run` stops if it cannot.
pub(super) fn metrics(args: &RunArgs, checks: &mut Vec<Check>) {
    let Some(addr) = args.metrics_addr else {
        return;
    };
    let name = format!("metrics at http://{addr}/metrics");
    checks.push(match std::net::TcpListener::bind(addr) {
        Ok(_) => Check::new("metrics", name, Status::Ok, "the address can be bound"),
        Err(err) => Check::new(
            "metrics",
            name,
            Status::Failed,
            format!("binding it: {err}"),
        ),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_history_is_checked_without_being_created() {
        let dir = crate::history::tests::temp_dir();
        let path = dir.join("sub/oomtrace.db");
        let found = writable(&path).unwrap();
        assert!(found.contains("will be created"), "{found}");
        assert!(!dir.join("sub").exists(), "nothing is created");
        std::fs::write(dir.join("file.db"), b"").unwrap();
        assert!(writable(&dir.join("file.db")).unwrap().contains("writable"));
        // As run opens it: never through a link.
        std::os::unix::fs::symlink(dir.join("file.db"), dir.join("link.db")).unwrap();
        let refused = writable(&dir.join("link.db")).unwrap_err();
        assert!(refused.contains("symbolic link"), "{refused}");
        assert!(writable(&dir).unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn a_fifo_as_the_history_is_said_not_waited_on() {
        let dir = crate::history::tests::temp_dir();
        let fifo = dir.join("fifo.db");
        let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        assert!(writable(&fifo).unwrap_err().contains("not a regular file"));
    }
}
