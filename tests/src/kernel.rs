//! What the running kernel allows, looked at by the tests themselves: what a test expects of
//! the agent's capture tier comes from here, never from the agent's own claim.
//!
//! The same test binaries run on the developer's or CI's host and in the kernel matrix's guests
//! (`cargo xtask vm`); each asks the kernel it runs on.

use std::fs;
use std::path::Path;

use oomtrace::capture::Tier;
use oomtrace::record::kill::CapturePart;
use oomtrace::record::{AgentStarted, OomKillRecord};

use crate::{pretty, tracefs};

const BTF: &str = "/sys/kernel/btf/vmlinux";
/// The kprobe PMU (4.17+), through which kprobes are created; older kernels have only tracefs's
/// `kprobe_events`.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";
const OOM_KILL_PROCESS: &str = "oom_kill_process";

/// How a test asks the agent to hook `oom_kill_process` (`--function-hook`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// Not forced: fentry where the kernel allows it, else kprobe.
    Auto,
    Kprobe,
}

/// What the kernel offers the agent, read from the kernel's own files.
#[derive(Clone, Debug)]
pub struct KernelLook {
    /// `uname -r`.
    pub release: String,
    /// The kernel's BTF: without it only the classic tracepoints can be read.
    pub btf: bool,
    /// kprobes can be created (`CONFIG_KPROBES`).
    pub kprobes: bool,
    /// Function tracing of `oom_kill_process` is allowed to this process: ftrace lists it among
    /// the functions it can trace. fentry programs need the same ftrace site; a kernel, a
    /// security module or a sandbox that denies reading the list denies those too.
    pub traceable_oom_kill_process: bool,
    /// The fields of the `oom:mark_victim` tracepoint, from its live `format` file.
    pub mark_victim_fields: Vec<String>,
    /// The memory controller is on cgroup v2 (not v1, as on a hybrid host).
    pub memory_cgroup_v2: bool,
}

/// What the agent should say it runs, given the kernel and the options a test passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpectedCapture {
    pub tier: Tier,
    /// `fentry` or `kprobe` in the full tier; none below it.
    pub function_hook: Option<&'static str>,
}

impl KernelLook {
    /// Looks now (tracefs is mounted first if it is not).
    pub fn now() -> Self {
        let tracing = tracefs::ensure_mounted();
        let traceable_oom_kill_process =
            fs::read_to_string(tracing.join("available_filter_functions")).is_ok_and(|list| {
                list.lines()
                    .any(|line| line.split_whitespace().next() == Some(OOM_KILL_PROCESS))
            });
        let format_path = tracing.join("events/oom/mark_victim/format");
        let format = fs::read_to_string(&format_path)
            .unwrap_or_else(|err| panic!("reading {}: {err}", format_path.display()));
        Self {
            release: release(),
            btf: Path::new(BTF).exists(),
            kprobes: Path::new(KPROBE_PMU).exists() || tracing.join("kprobe_events").exists(),
            traceable_oom_kill_process,
            mark_victim_fields: format_fields(&format),
            memory_cgroup_v2: crate::cgroup::memory_controller_is_v2(),
        }
    }

    /// The tier and hook the agent should run with `--max-tier max_tier` (none: the agent's
    /// default, the most it can) and `hook`.
    pub fn expected(&self, max_tier: Option<Tier>, hook: Hook) -> ExpectedCapture {
        let function_hook = match hook {
            _ if !self.btf => None,
            Hook::Auto if self.traceable_oom_kill_process => Some("fentry"),
            Hook::Auto | Hook::Kprobe if self.kprobes => Some("kprobe"),
            Hook::Auto | Hook::Kprobe => None,
        };
        let possible = match (self.btf, function_hook) {
            (false, _) => Tier::TracepointOnly,
            (true, Some(_)) => Tier::Full,
            (true, None) => Tier::NoFunctionTracing,
        };
        let tier = max_tier.map_or(possible, |max| possible.min(max));
        ExpectedCapture {
            tier,
            function_hook: function_hook.filter(|_| tier == Tier::Full),
        }
    }

    /// Whether `mark_victim` carries only the pid, as before 6.9 (and its stable backports):
    /// its BTF prototype then passes only the pid too, not the task (the two came together).
    pub fn mark_victim_pid_only(&self) -> bool {
        self.mark_victim_fields == ["pid"]
    }

    /// Panics unless `kill` was joined from the parts this kernel offers: the task at
    /// `mark_victim` where the kernel passes one; else the OOM killer's SIGKILL and, in the
    /// full tier for the victim it chose (`chosen`: not the other members of a group kill),
    /// `oc->chosen`; the tracepoint's own fields either way. Whether the kernel passes the task
    /// comes from the tracepoint's live format (its memory fields and the task argument came
    /// together, in 6.9 and its backports), and the agent's `agent_started` must say the same.
    pub fn assert_victim_parts(&self, started: &AgentStarted, kill: &OomKillRecord, chosen: bool) {
        let capture = &started.capture;
        assert_eq!(
            capture.tracepoint_fields,
            self.mark_victim_fields,
            "the tracepoint's fields, as its format file lists them:\n{}",
            pretty(started)
        );
        let passes_task = !self.mark_victim_pid_only();
        assert_eq!(
            capture.mark_victim_argument.as_deref(),
            Some(if passes_task { "task" } else { "int" }),
            "mark_victim's argument on a kernel whose tracepoint has fields {:?}:\n{}",
            self.mark_victim_fields,
            pretty(started)
        );
        let parts = &kill.capture.parts;
        let has = |part| parts.contains(&part);
        let full = capture.tier == Tier::Full;
        if passes_task {
            assert!(
                has(CapturePart::Tracepoint) && has(CapturePart::Task),
                "parts {parts:?} on a kernel passing the task: {}",
                pretty(kill)
            );
        } else {
            assert!(
                has(CapturePart::Tracepoint)
                    && has(CapturePart::Sigkill)
                    && has(CapturePart::Chosen) == (chosen && full)
                    && !has(CapturePart::Task),
                "parts {parts:?} on a kernel passing only the pid: {}",
                pretty(kill)
            );
        }
    }

    /// Whether the kernel is at least `major.minor`.
    pub fn at_least(&self, wanted: (u32, u32)) -> bool {
        release_at_least(&self.release, wanted)
    }
}

fn release() -> String {
    let mut uts: libc::utsname = {
        // SAFETY: utsname is plain arrays of bytes; all zeros is a valid value.
        unsafe { std::mem::zeroed() }
    };
    // SAFETY: uname writes into the struct it is given, which lives across the call.
    let result = unsafe { libc::uname(&mut uts) };
    assert_eq!(result, 0, "uname: {}", std::io::Error::last_os_error());
    let bytes: Vec<u8> = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The field names of a tracepoint `format` file, without the `common_` ones.
fn format_fields(format: &str) -> Vec<String> {
    format
        .lines()
        .filter_map(|line| line.trim().strip_prefix("field:"))
        .filter_map(|field| {
            let declaration = field.split(';').next()?;
            let name = declaration.trim().rsplit([' ', '*']).next()?;
            // `char comm[16]`, and `__data_loc char[] comm`.
            let name = name.split('[').next()?;
            Some(name.to_owned())
        })
        .filter(|name| !name.is_empty() && !name.starts_with("common_"))
        .collect()
}

/// Whether `uname -r` (e.g. `6.1.0-57-cloud-amd64`) is at least `(major, minor)`.
fn release_at_least(release: &str, wanted: (u32, u32)) -> bool {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) >= wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(btf: bool, kprobes: bool, traceable: bool) -> KernelLook {
        KernelLook {
            release: "6.1.0-57-cloud-amd64".to_owned(),
            btf,
            kprobes,
            traceable_oom_kill_process: traceable,
            mark_victim_fields: vec!["pid".to_owned()],
            memory_cgroup_v2: true,
        }
    }

    #[test]
    fn the_expected_tier_follows_what_the_kernel_allows_and_the_options_cap() {
        let full = ExpectedCapture {
            tier: Tier::Full,
            function_hook: Some("fentry"),
        };
        assert_eq!(look(true, true, true).expected(None, Hook::Auto), full);
        assert_eq!(
            look(true, true, true).expected(None, Hook::Kprobe),
            ExpectedCapture {
                function_hook: Some("kprobe"),
                ..full
            }
        );
        // This machine: fentry denied, no kprobes.
        let no_function_tracing = ExpectedCapture {
            tier: Tier::NoFunctionTracing,
            function_hook: None,
        };
        assert_eq!(
            look(true, false, false).expected(None, Hook::Auto),
            no_function_tracing
        );
        assert_eq!(
            look(true, true, true).expected(Some(Tier::NoFunctionTracing), Hook::Auto),
            no_function_tracing
        );
        assert_eq!(
            look(false, true, true).expected(None, Hook::Auto),
            ExpectedCapture {
                tier: Tier::TracepointOnly,
                function_hook: None,
            }
        );
    }

    #[test]
    fn format_fields_are_named_without_the_common_ones() {
        let format = "name: mark_victim\nID: 440\nformat:\n\
            \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
            \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
            \tfield:int pid;\toffset:8;\tsize:4;\tsigned:1;\n\
            \tfield:__data_loc char[] comm;\toffset:12;\tsize:4;\tsigned:0;\n\
            \tfield:unsigned long total_vm;\toffset:16;\tsize:8;\tsigned:0;\n\
            \tfield:char name[16];\toffset:24;\tsize:16;\tsigned:0;\n\n\
            print fmt: \"pid=%d\", REC->pid\n";
        assert_eq!(
            format_fields(format),
            ["pid", "comm", "total_vm", "name"].map(str::to_owned)
        );
    }

    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(release_at_least("6.1.0-57-cloud-amd64", (5, 19)));
        assert!(release_at_least("5.19.0", (5, 19)));
        assert!(!release_at_least("5.15.0-91-generic", (5, 19)));
        assert!(!release_at_least("garbage", (5, 19)));
    }
}
