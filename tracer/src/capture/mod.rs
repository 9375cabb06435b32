//! Capture: load the eBPF programs into the running kernel, attach what the kernel allows, and
//! hand out the raw records they emit.
//!
//! The programs are tried from the most to the least capable; the outcome is the capture
//! [`Tier`], which the agent reports at startup and in every record.

pub mod btf;
mod fentry_probe;
pub mod offsets;
pub(crate) mod privileges;
pub(crate) mod prototype;
pub(crate) mod ringbuf;
pub mod tracefs;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Map, MapData, PerCpuArray},
    programs::{BtfTracePoint, FEntry, FExit, KProbe, ProgramError, RawTracePoint, TracePoint},
};
use aya_log::EbpfLogger;
use tracer_common::{KernelOffsets, OFFSET_ABSENT};

use self::prototype::TracepointArg;
use crate::decode::mark_victim::MarkVictimLayout;
use crate::decode::signal::SignalLayout;

/// The compiled programs, embedded so the agent is one self-contained binary.
#[cfg(feature = "ebpf")]
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/oomtrace"));
/// Built without the `ebpf` feature (the library's parsers only): there is nothing to load.
#[cfg(not(feature = "ebpf"))]
static EBPF_OBJECT: &[u8] = &[];

const TRACEPOINT_CATEGORY: &str = "oom";
const TRACEPOINT_NAME: &str = "mark_victim";
const SIGNAL_CATEGORY: &str = "signal";
const SIGNAL_NAME: &str = "signal_generate";

/// How much of an OOM kill this kernel lets oomtrace see, from least to most.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Tier {
    /// Only the classic tracepoints: victim pid (comm and memory where the kernel's tracepoint
    /// has them, the comm of its SIGKILL otherwise), the trigger's pid and cgroup2 id.
    TracepointOnly,
    /// The victim's task (its memory and cgroups) and the trigger's cgroups via BTF
    /// tracepoints (`mark_victim`'s, or the OOM killer's SIGKILL's), but no function tracing
    /// (no fentry, no kprobes).
    NoFunctionTracing,
    /// `oom_kill_process` is hooked too (fentry, or kprobe): the OOM domain, the victim it
    /// chose, the kernel's own badness score and the constraint are known, and kills group into
    /// incidents.
    Full,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::TracepointOnly => "tracepoint-only",
            Tier::NoFunctionTracing => "no-function-tracing",
            Tier::Full => "full",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How `oom_kill_process` is hooked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FunctionHook {
    /// fentry/fexit where the kernel allows BPF trampolines, else kprobe/kretprobe.
    Auto,
    /// fentry/fexit only.
    Fentry,
    /// kprobe/kretprobe only.
    Kprobe,
}

impl FunctionHook {
    pub fn as_str(self) -> &'static str {
        match self {
            FunctionHook::Auto => "auto",
            FunctionHook::Fentry => "fentry",
            FunctionHook::Kprobe => "kprobe",
        }
    }
}

/// What the user asked for.
#[derive(Clone, Copy, Debug)]
pub struct CaptureOptions {
    pub max_tier: Tier,
    pub function_hook: FunctionHook,
    /// The size of the `EVENTS` ring buffer: a power of two of at least a page.
    pub ringbuf_bytes: u32,
}

/// Which program reads the victim's `task_struct`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskHook {
    TpBtf,
    RawTp,
}

/// What was attached, and why that much.
#[derive(Debug)]
pub struct CapturePlan {
    pub tier: Tier,
    /// One sentence on why this tier and not a higher one.
    pub reason: String,
    /// What `mark_victim`'s BTF prototype passes first (`task` or, before 6.9, the pid as
    /// `int`); `None` without kernel BTF.
    pub mark_victim_arg: Option<TracepointArg>,
    /// Which program reads the victim's `task_struct` at `mark_victim`: none where the
    /// tracepoint passes only a pid.
    pub task_hook: Option<TaskHook>,
    /// `Fentry` or `Kprobe` in the full tier.
    pub function_hook: Option<FunctionHook>,
    /// How to decode the classic tracepoint's record on this kernel.
    pub layout: MarkVictimLayout,
    /// `enum oom_constraint` as this kernel numbers it.
    pub constraint_names: Vec<(u32, &'static str)>,
    /// How to decode `signal:signal_generate`, when SIGKILLs are traced.
    pub signal_layout: Option<SignalLayout>,
    /// Which program reads a SIGKILL target's `task_struct` (its cgroups, in the kernel).
    pub signal_task_hook: Option<TaskHook>,
}

impl CapturePlan {
    pub fn constraint_name(&self, value: u32) -> Option<&'static str> {
        self.constraint_names
            .iter()
            .find_map(|(number, name)| (*number == value).then_some(*name))
    }
}

/// Whether the programs are attached, or only loaded: `oomtrace check` loads each program the
/// way `run` would, to hear the kernel's answer, and attaches none. The decision of the tier is
/// one, either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Attach,
    LoadOnly,
}

/// What the running kernel offers, read before anything is loaded: the tracepoints' formats in
/// tracefs and its BTF. Needs no capability but tracefs's (root's, mode 0700).
pub struct KernelFacts {
    /// Where tracefs is, and how to decode `oom:mark_victim` here: without it there is nothing
    /// to trace.
    pub mark_victim: Result<(std::path::PathBuf, MarkVictimLayout), String>,
    /// How to decode `signal:signal_generate`, for SIGKILLs.
    pub signal_layout: Result<SignalLayout, String>,
    kernel_btf: Result<KernelBtf, String>,
}

/// What the kernel's BTF says, for `oomtrace check`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BtfFacts {
    /// `task`, or `int` (the pid) before 6.9.
    pub mark_victim_arg: TracepointArg,
    pub missing_for_memory: Vec<String>,
    pub missing_for_oom_context: Vec<String>,
}

impl KernelFacts {
    /// Reads tracefs (mounting it where run would) and, unless `max_tier` needs none, BTF.
    pub fn read(max_tier: Tier) -> Self {
        let mark_victim = tracefs::tracefs_root()
            .and_then(|tracefs| {
                let format = tracefs::read_format(&tracefs, TRACEPOINT_CATEGORY, TRACEPOINT_NAME)?;
                let layout = MarkVictimLayout::from_format(&format).map_err(|err| {
                    anyhow!(
                        "cannot decode tracepoint {TRACEPOINT_CATEGORY}:{TRACEPOINT_NAME}: {err}"
                    )
                })?;
                Ok((tracefs, layout))
            })
            .map_err(|err| format!("{err:#}"));
        let signal_layout = match &mark_victim {
            Ok((tracefs, _)) => tracefs::read_format(tracefs, SIGNAL_CATEGORY, SIGNAL_NAME)
                .and_then(|format| Ok(SignalLayout::from_format(&format)?))
                .map_err(|err| format!("{err:#}")),
            Err(_) => Err("tracefs is not readable".to_owned()),
        };
        // Without BTF the task programs cannot know where anything is in `task_struct`.
        let kernel_btf = if max_tier < Tier::NoFunctionTracing {
            Err(format!("capped at {max_tier} by --max-tier"))
        } else {
            KernelBtf::read()
        };
        KernelFacts {
            mark_victim,
            signal_layout,
            kernel_btf,
        }
    }

    /// What BTF gives, or why there is none to use.
    pub fn btf(&self) -> Result<BtfFacts, &str> {
        match &self.kernel_btf {
            Ok(btf) => Ok(BtfFacts {
                mark_victim_arg: btf.mark_victim_arg.clone(),
                missing_for_memory: btf.resolved.missing_for_memory.clone(),
                missing_for_oom_context: btf.resolved.missing_for_oom_context.clone(),
            }),
            Err(why) => Err(why),
        }
    }
}

/// The loaded, attached programs. Dropping it detaches them.
pub struct Capture {
    ebpf: Ebpf,
    pub plan: CapturePlan,
}

impl Capture {
    /// Loads and attaches everything the running kernel allows, up to `max_tier`.
    pub fn attach(options: CaptureOptions) -> anyhow::Result<Self> {
        privileges::check()?;
        privileges::raise_memlock_limit();
        Self::load(KernelFacts::read(options.max_tier), options, Mode::Attach)
    }

    /// Loads, and in [`Mode::Attach`] attaches, everything the kernel allows, up to `max_tier`:
    /// the plan says which tier that is, and why. Call [`privileges::check`] first.
    pub fn load(facts: KernelFacts, options: CaptureOptions, mode: Mode) -> anyhow::Result<Self> {
        let CaptureOptions {
            max_tier,
            function_hook,
            ringbuf_bytes,
        } = options;
        if EBPF_OBJECT.is_empty() {
            anyhow::bail!("this oomtrace was built without its eBPF programs (the `ebpf` feature)");
        }
        let KernelFacts {
            mark_victim,
            signal_layout,
            kernel_btf,
        } = facts;
        let (_, layout) = mark_victim.map_err(|err| anyhow!(err))?;
        for skipped in layout.skipped() {
            log::warn!("{TRACEPOINT_CATEGORY}:{TRACEPOINT_NAME}: {skipped}");
        }
        if let Ok(btf) = &kernel_btf
            && !btf.resolved.missing_for_memory.is_empty()
        {
            log::warn!(
                "the victim's memory is read only from the mark_victim tracepoint: kernel BTF \
                 lacks {}",
                btf.resolved.missing_for_memory.join(", ")
            );
        }
        let offsets = kernel_btf
            .as_ref()
            .map_or(KernelOffsets::ABSENT, |btf| btf.resolved.offsets);
        // SIGKILLs are an addition: without the tracepoint, OOM kills are still traced.
        let sig_offset = signal_layout
            .as_ref()
            .map_or(OFFSET_ABSENT, SignalLayout::sig_offset);

        // The programs carry no CO-RE relocations (offsets come as globals), so aya is given
        // no kernel BTF to relocate them against.
        let mut ebpf = loader_without_kernel_btf()
            .btf(None)
            .override_global("KERNEL_OFFSETS", &offsets, true)
            .override_global("SIGNAL_SIG_OFFSET", &sig_offset, true)
            .map_max_entries("EVENTS", ringbuf_bytes)
            .load(EBPF_OBJECT)
            .map_err(|err| {
                let err = anyhow::Error::new(err).context("loading oomtrace's eBPF object");
                match privileges::seccomp_hint(&format!("{err:#}")) {
                    Some(hint) => err.context(hint),
                    None => err,
                }
            })?;

        attach_tracepoint(&mut ebpf, mode)?;
        let signal_layout = signal_layout
            .and_then(|layout| {
                attach_signal_tracepoint(&mut ebpf, mode)
                    .map(|()| layout)
                    .map_err(|err| format!("{err:#}"))
            })
            .inspect_err(|err| {
                log::warn!("SIGKILLs other than the OOM killer's are not traced: {err}")
            });

        // The program that reads arg0 as the victim's task only where the kernel passes one.
        let task_hook = match &kernel_btf {
            Ok(btf) => match &btf.mark_victim_arg {
                TracepointArg::Task => attach_task_hook(
                    &mut ebpf,
                    btf.mark_victim,
                    TRACEPOINT_NAME,
                    "mark_victim",
                    mode,
                )
                .map_err(|err| format!("{err:#}")),
                other => Err(format!(
                    "mark_victim's BTF prototype passes {other}, not the victim's task_struct"
                )),
            },
            Err(reason) => Err(reason.clone()),
        };
        let hooked_function = match &kernel_btf {
            Ok(_) if max_tier < Tier::Full => Err(format!("capped at {max_tier} by --max-tier")),
            Ok(btf) => match btf.resolved.missing_for_oom_context.as_slice() {
                [] => attach_function_hooks(&mut ebpf, btf.oom_kill_process, function_hook, mode),
                missing => Err(format!("kernel BTF lacks {}", missing.join(", "))),
            },
            Err(reason) => Err(reason.clone()),
        };
        // The target's memory and cgroups, read before it can be reaped: where BTF gives the
        // offsets and the tracepoint passes the target's task.
        let signal_task_hook = match (&signal_layout, &kernel_btf) {
            (Ok(_), Ok(btf)) => match &btf.signal_target_arg {
                TracepointArg::Task => attach_task_hook(
                    &mut ebpf,
                    btf.signal_generate,
                    SIGNAL_NAME,
                    "signal_generate",
                    mode,
                )
                .map_err(|err| format!("{err:#}")),
                other => Err(format!(
                    "signal_generate's BTF prototype passes {other} as its third argument, \
                     not the target's task_struct"
                )),
            }
            .inspect_err(|err| {
                log::warn!(
                    "{err}; a SIGKILL's target is located from /proc, which misses processes \
                     reaped at once"
                )
            }),
            (Err(why), _) => Err(why.clone()),
            (_, Err(why)) => Err(why.clone()),
        };
        let (tier, reason) = decide_tier(
            hooked_function.as_ref().map(|(_, how)| how.as_str()),
            task_hook.as_ref().map(|_| ()),
            signal_task_hook.is_ok(),
        );
        let (mark_victim_arg, constraint_names) = match kernel_btf {
            Ok(btf) => (Some(btf.mark_victim_arg), btf.constraint_names),
            Err(_) => (None, Vec::new()),
        };
        let plan = CapturePlan {
            tier,
            reason,
            mark_victim_arg,
            task_hook: task_hook.ok(),
            function_hook: hooked_function.ok().map(|(hook, _)| hook),
            layout,
            constraint_names,
            signal_layout: signal_layout.ok(),
            signal_task_hook: signal_task_hook.ok(),
        };
        Ok(Capture { ebpf, plan })
    }

    /// Starts forwarding the programs' `aya-log` messages; keep the logger alive and flush it
    /// when its descriptor is readable.
    pub fn logger(&mut self) -> Option<EbpfLogger<&'static dyn log::Log>> {
        EbpfLogger::init(&mut self.ebpf)
            .inspect_err(|err| log::warn!("eBPF log messages unavailable: {err}"))
            .ok()
    }

    /// The records' ring buffer, to be read by a [`ringbuf::RecordDrain`].
    pub fn records(&mut self) -> anyhow::Result<Map> {
        self.ebpf
            .take_map("EVENTS")
            .context("eBPF object has no EVENTS map")
    }

    /// The per-CPU counter of records the kernel could not reserve room for.
    pub fn drop_counter(&mut self) -> anyhow::Result<DropCounter> {
        let map = self
            .ebpf
            .take_map("DROPPED")
            .context("eBPF object has no DROPPED map")?;
        Ok(DropCounter {
            map: PerCpuArray::try_from(map)?,
            last: AtomicU64::new(0),
            read_at_ns: AtomicU64::new(0),
        })
    }
}

/// The tier, and one sentence on why not a higher one, from what each program's load (and
/// attach) said: `oom_kill_process`'s hooks (how, or why not), the task program at
/// `mark_victim` (why not), and whether the SIGKILL's task program loaded.
fn decide_tier(
    function_hooks: Result<&str, &String>,
    mark_victim_task: Result<(), &String>,
    sigkill_task: bool,
) -> (Tier, String) {
    match (function_hooks, mark_victim_task, sigkill_task) {
        (Ok(how), _, _) => (Tier::Full, how.to_owned()),
        (Err(why), Ok(()), _) => (Tier::NoFunctionTracing, format!("oom_kill_process: {why}")),
        // The OOM killer's SIGKILL to its victim names it as well.
        (Err(why), Err(task_why), true) => (
            Tier::NoFunctionTracing,
            format!(
                "oom_kill_process: {why}; mark_victim: {task_why}; the victim's task is read \
                 from the OOM killer's SIGKILL"
            ),
        ),
        (_, Err(why), false) => (Tier::TracepointOnly, why.clone()),
    }
}

/// Records lost in the kernel because the ring buffer was full.
/// Records the kernel could not put in the ring (it was full), summed over the CPUs. Every
/// record carries the count, and reading it is a system call: a read is reused for
/// [`REREAD_AFTER_NS`], so that a flood of records does not pay one each.
pub struct DropCounter {
    map: PerCpuArray<MapData, u64>,
    last: AtomicU64,
    /// CLOCK_MONOTONIC nanoseconds of the last read; 0 before the first.
    read_at_ns: AtomicU64,
}

/// How long a read of the drop counter is reused: a record is written milliseconds after the
/// kernel captured it anyway, so its count is as of about then.
const REREAD_AFTER_NS: u64 = 10_000_000;

impl DropCounter {
    /// The count, read at most [`REREAD_AFTER_NS`] ago.
    pub fn total(&self) -> u64 {
        let now = crate::clock::monotonic_ns();
        let read_at = self.read_at_ns.load(Ordering::Acquire);
        if read_at != 0 && now.saturating_sub(read_at) < REREAD_AFTER_NS {
            return self.last.load(Ordering::Acquire);
        }
        let total = self.read_now();
        self.last.store(total, Ordering::Release);
        self.read_at_ns.store(now.max(1), Ordering::Release);
        total
    }

    /// The count as the kernel has it now: for the totals the agent stops with.
    pub fn read_now(&self) -> u64 {
        self.map
            .get(&0, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or_else(|err| {
                log::warn!("reading the drop counter: {err}");
                0
            })
    }

    /// One read of the counter, with the kernel's own error: to find out whether reading it
    /// needs a capability (see [`privileges::drop_after_attach`]).
    pub fn try_read(&self) -> std::io::Result<()> {
        match self.map.get(&0, 0) {
            Ok(_) => Ok(()),
            Err(aya::maps::MapError::SyscallError(err)) => Err(err.io_error),
            Err(other) => Err(std::io::Error::other(other)),
        }
    }
}

/// What the loader needs from the running kernel's BTF, read once and let go of before
/// anything is loaded: the programs' struct offsets, the kernel's names for
/// `enum oom_constraint`, what the tracepoints' prototypes pass, and the type ids the BTF
/// programs attach to.
struct KernelBtf {
    resolved: offsets::Resolved,
    constraint_names: Vec<(u32, &'static str)>,
    /// `mark_victim`'s first argument: the victim's task, or (before 6.9) its pid.
    mark_victim_arg: TracepointArg,
    /// `signal_generate`'s third argument: the target's task.
    signal_target_arg: TracepointArg,
    /// `btf_trace_mark_victim`, for tp_btf.
    mark_victim: Option<u32>,
    /// `btf_trace_signal_generate`, for tp_btf.
    signal_generate: Option<u32>,
    /// For fentry and fexit.
    oom_kill_process: Option<u32>,
}

impl KernelBtf {
    fn read() -> Result<Self, String> {
        let vmlinux =
            btf::VmlinuxBtf::open().map_err(|err| format!("no usable kernel BTF: {err:#}"))?;
        let btf = btf::Btf::parse(vmlinux.bytes()).map_err(|err| {
            format!(
                "no usable kernel BTF: parsing {}: {err}",
                btf::VMLINUX_BTF_PATH
            )
        })?;
        let resolved =
            offsets::resolve(&btf).map_err(|missing| format!("no usable kernel BTF: {missing}"))?;
        Ok(KernelBtf {
            resolved,
            constraint_names: offsets::oom_constraint_names(&btf),
            mark_victim_arg: prototype::tracepoint_arg(&btf, TRACEPOINT_NAME, 0),
            signal_target_arg: prototype::tracepoint_arg(&btf, SIGNAL_NAME, 2),
            mark_victim: btf.typedef_id(&format!("btf_trace_{TRACEPOINT_NAME}")),
            signal_generate: btf.typedef_id(&format!("btf_trace_{SIGNAL_NAME}")),
            oom_kill_process: btf.func_id(OOM_KILL_PROCESS),
        })
    }
}

/// aya's loader, without the copy of the kernel's BTF that `EbpfLoader::new` reads and parses
/// by itself (some 13 MiB at startup, for nothing here: aya issue #1172, open in 0.14). It
/// reads it with a plain `open`: with no file descriptor to spare for that one call, the read
/// fails and the loader starts without it. The agent is still one thread here.
fn loader_without_kernel_btf() -> EbpfLoader<'static> {
    let _no_new_files = privileges::NoNewFiles::hold();
    EbpfLoader::new()
}

/// A BTF for aya that names one attach point (see [`btf::attach_point`]).
fn attach_point(name: &str, kind: btf::AttachKind, id: Option<u32>) -> anyhow::Result<aya::Btf> {
    let id = known_id(name, id)?;
    btf::attach_point(name, kind, id).with_context(|| format!("describing {name} for aya"))
}

/// The kernel's BTF id of `name`, which the programs attached to it need.
fn known_id(name: &str, id: Option<u32>) -> anyhow::Result<u32> {
    id.with_context(|| format!("the kernel's BTF has no {name}"))
}

/// The classic tracepoint is the floor: without it there is nothing to report.
fn attach_tracepoint(ebpf: &mut Ebpf, mode: Mode) -> anyhow::Result<()> {
    let program: &mut TracePoint = program(ebpf, "mark_victim")?;
    let what = format!("mark_victim (tracepoint {TRACEPOINT_CATEGORY}:{TRACEPOINT_NAME})");
    program.load().map_err(|err| rejected(&what, err))?;
    if mode == Mode::Attach {
        program
            .attach(TRACEPOINT_CATEGORY, TRACEPOINT_NAME)
            .map_err(|err| rejected(&what, err))?;
    }
    Ok(())
}

/// `signal:signal_generate`, filtered to SIGKILL in the kernel.
fn attach_signal_tracepoint(ebpf: &mut Ebpf, mode: Mode) -> anyhow::Result<()> {
    let program: &mut TracePoint = program(ebpf, "signal_generate")?;
    let what = format!("signal_generate (tracepoint {SIGNAL_CATEGORY}:{SIGNAL_NAME})");
    program.load().map_err(|err| rejected(&what, err))?;
    if mode == Mode::Attach {
        program
            .attach(SIGNAL_CATEGORY, SIGNAL_NAME)
            .map_err(|err| rejected(&what, err))?;
    }
    Ok(())
}

/// The programs that see a tracepoint's `task_struct` argument: `{program}_btf` as tp_btf
/// where the kernel allows it, `{program}_raw` as raw_tp otherwise. For `mark_victim` that is
/// the victim, for `signal_generate` the signal's target.
fn attach_task_hook(
    ebpf: &mut Ebpf,
    attach_id: Option<u32>,
    tracepoint: &str,
    program_prefix: &str,
    mode: Mode,
) -> anyhow::Result<TaskHook> {
    let tp_btf = (|| {
        let name = format!("{program_prefix}_btf");
        let what = format!("{name} (tp_btf {tracepoint})");
        let btf = attach_point(
            &format!("btf_trace_{tracepoint}"),
            btf::AttachKind::Typedef,
            attach_id,
        )?;
        let program: &mut BtfTracePoint = program(ebpf, &name)?;
        program
            .load(tracepoint, &btf)
            .map_err(|err| rejected(&what, err))?;
        if mode == Mode::Attach {
            program.attach().map_err(|err| rejected(&what, err))?;
        }
        anyhow::Ok(())
    })();
    let tp_btf_error = match tp_btf {
        Ok(()) => return Ok(TaskHook::TpBtf),
        Err(err) => err,
    };
    log::warn!("{tp_btf_error:#}; falling back to raw_tp");
    let name = format!("{program_prefix}_raw");
    let what = format!("{name} (raw_tp {tracepoint})");
    let program: &mut RawTracePoint = program(ebpf, &name)?;
    program.load().map_err(|err| rejected(&what, err))?;
    if mode == Mode::Attach {
        program
            .attach(tracepoint)
            .map_err(|err| rejected(&what, err))?;
    }
    Ok(TaskHook::RawTp)
}

/// Hooks entry and return of `oom_kill_process`. Returns the hook and a sentence on how.
fn attach_function_hooks(
    ebpf: &mut Ebpf,
    attach_id: Option<u32>,
    choice: FunctionHook,
    mode: Mode,
) -> Result<(FunctionHook, String), String> {
    let mut fentry = || attach_fentry_pair(ebpf, attach_id, mode).map_err(|err| format!("{err:#}"));
    match choice {
        FunctionHook::Fentry => fentry().map(|()| {
            (
                FunctionHook::Fentry,
                "oom_kill_process hooked by fentry/fexit".into(),
            )
        }),
        FunctionHook::Kprobe => attach_kprobe_pair(ebpf, mode)
            .map(|()| {
                (
                    FunctionHook::Kprobe,
                    "oom_kill_process hooked by kprobe/kretprobe (as asked)".into(),
                )
            })
            .map_err(|err| format!("{err:#}")),
        FunctionHook::Auto => match fentry() {
            Ok(()) => Ok((
                FunctionHook::Fentry,
                "oom_kill_process hooked by fentry/fexit".into(),
            )),
            Err(fentry_error) => match attach_kprobe_pair(ebpf, mode) {
                Ok(()) => Ok((
                    FunctionHook::Kprobe,
                    format!("oom_kill_process hooked by kprobe/kretprobe; fentry: {fentry_error}"),
                )),
                Err(kprobe_error) => {
                    Err(format!("fentry: {fentry_error}; kprobe: {kprobe_error:#}"))
                }
            },
        },
    }
}

const OOM_KILL_PROCESS: &str = "oom_kill_process";

/// fentry and fexit, both or neither: without the exit, incidents would never end.
fn attach_fentry_pair(ebpf: &mut Ebpf, attach_id: Option<u32>, mode: Mode) -> anyhow::Result<()> {
    match fentry_probe::ask(known_id(OOM_KILL_PROCESS, attach_id)?) {
        fentry_probe::Answer::Loads => {}
        fentry_probe::Answer::Denied(err) => {
            anyhow::bail!("the kernel denies fentry programs at {OOM_KILL_PROCESS}: {err}")
        }
        fentry_probe::Answer::Undecided(err) => log::debug!(
            "a minimal fentry program at {OOM_KILL_PROCESS} was refused ({err}); trying the real one"
        ),
    }
    let btf = &attach_point(OOM_KILL_PROCESS, btf::AttachKind::Func, attach_id)?;
    let what = "oom_kill_process_fentry (fentry oom_kill_process)";
    let entry: &mut FEntry = program(ebpf, "oom_kill_process_fentry")?;
    entry
        .load(OOM_KILL_PROCESS, btf)
        .map_err(|err| rejected(what, err))?;
    if mode == Mode::Attach {
        entry.attach().map_err(|err| rejected(what, err))?;
    }
    let exit = (|| {
        let what = "oom_kill_process_fexit (fexit oom_kill_process)";
        let exit: &mut FExit = program(ebpf, "oom_kill_process_fexit")?;
        exit.load(OOM_KILL_PROCESS, btf)
            .map_err(|err| rejected(what, err))?;
        if mode == Mode::Attach {
            exit.attach().map_err(|err| rejected(what, err))?;
        }
        anyhow::Ok(())
    })();
    if exit.is_err() {
        let entry: &mut FEntry = program(ebpf, "oom_kill_process_fentry")?;
        let _ = entry.unload();
    }
    exit
}

/// kprobe and kretprobe, both or neither.
fn attach_kprobe_pair(ebpf: &mut Ebpf, mode: Mode) -> anyhow::Result<()> {
    // aya creates kprobes through the perf PMU, or tracefs on kernels before 4.17.
    let pmu = std::path::Path::new("/sys/bus/event_source/devices/kprobe");
    let tracefs_events = std::path::Path::new("/sys/kernel/tracing/kprobe_events");
    if !pmu.exists() && !tracefs_events.exists() {
        anyhow::bail!(
            "this kernel has no kprobes ({} and {} are missing: CONFIG_KPROBES is off)",
            pmu.display(),
            tracefs_events.display()
        );
    }
    let what = "oom_kill_process_kprobe (kprobe oom_kill_process)";
    let entry: &mut KProbe = program(ebpf, "oom_kill_process_kprobe")?;
    entry.load().map_err(|err| rejected(what, err))?;
    if mode == Mode::Attach {
        entry
            .attach(OOM_KILL_PROCESS, 0)
            .map_err(|err| rejected(what, err))?;
    }
    let exit = (|| {
        let what = "oom_kill_process_kretprobe (kretprobe oom_kill_process)";
        let exit: &mut KProbe = program(ebpf, "oom_kill_process_kretprobe")?;
        exit.load().map_err(|err| rejected(what, err))?;
        if mode == Mode::Attach {
            exit.attach(OOM_KILL_PROCESS, 0)
                .map_err(|err| rejected(what, err))?;
        }
        anyhow::Ok(())
    })();
    if exit.is_err() {
        let entry: &mut KProbe = program(ebpf, "oom_kill_process_kprobe")?;
        let _ = entry.unload();
    }
    exit
}

fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let program = ebpf
        .program_mut(name)
        .with_context(|| format!("eBPF object has no program {name}"))?;
    Ok(program.try_into()?)
}

/// Names the program and gives the kernel's reason: the errno and the verifier's last words.
fn rejected(what: &str, err: ProgramError) -> anyhow::Error {
    rejected_under(what, err, perf_event_paranoid())
}

/// `kernel.perf_event_paranoid`, if it reads as a number.
fn perf_event_paranoid() -> Option<i32> {
    let path = std::path::Path::new("/proc/sys/kernel");
    let bytes =
        crate::confined::read(path, std::path::Path::new("perf_event_paranoid"), 64).ok()?;
    String::from_utf8_lossy(&bytes).trim().parse().ok()
}

/// As [`rejected`], given `kernel.perf_event_paranoid`: Debian's and Ubuntu's kernels default
/// it to 3, where their own patch refuses `perf_event_open` to a process without
/// CAP_SYS_ADMIN, CAP_PERFMON or not (checked on Debian 12's 6.1 kernel). Attaching a
/// tracepoint opens a perf event, so a least-privileged agent fails there; the bare EACCES
/// would not say why.
fn rejected_under(what: &str, err: ProgramError, paranoid: Option<i32>) -> anyhow::Error {
    if let ProgramError::SyscallError(aya::sys::SyscallError { call, io_error }) = &err
        && call.starts_with("perf_event_open")
        && io_error.raw_os_error() == Some(libc::EACCES)
        && let Some(level @ 3..) = paranoid
    {
        return anyhow!(
            "attaching program {what} failed: perf_event_open: {io_error}: \
             kernel.perf_event_paranoid is {level}, at which this kernel lets only CAP_SYS_ADMIN \
             open perf events, and attaching a tracepoint opens one; set \
             kernel.perf_event_paranoid=2 (the mainline default, where CAP_PERFMON suffices) or \
             grant CAP_SYS_ADMIN (see deploy/oomtrace.service)"
        );
    }
    match err {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            if tail.is_empty() {
                anyhow!("the kernel rejected program {what}: {io_error} (empty verifier log)")
            } else {
                anyhow!(
                    "the kernel rejected program {what}: {io_error}; verifier: {}",
                    tail.join(" | ")
                )
            }
        }
        other => anyhow::Error::new(other).context(format!("attaching program {what} failed")),
    }
}

#[cfg(test)]
mod tests {
    use aya::programs::ProgramError;
    use aya_obj::VerifierLog;

    use super::{Tier, decide_tier, rejected, rejected_under};

    /// One decision for `run` and `check`: what each program's load said makes the tier.
    #[test]
    fn the_tier_follows_what_the_kernel_accepted() {
        let denied = "fentry: denied; kprobe: none".to_owned();
        let no_task = "no usable kernel BTF".to_owned();
        assert_eq!(
            decide_tier(Ok("hooked by fentry"), Err(&no_task), false),
            (Tier::Full, "hooked by fentry".to_owned())
        );
        assert_eq!(
            decide_tier(Err(&denied), Ok(()), true),
            (
                Tier::NoFunctionTracing,
                "oom_kill_process: fentry: denied; kprobe: none".to_owned()
            )
        );
        let (tier, reason) = decide_tier(Err(&denied), Err(&no_task), true);
        assert_eq!(tier, Tier::NoFunctionTracing);
        assert!(reason.ends_with("the victim's task is read from the OOM killer's SIGKILL"));
        assert_eq!(
            decide_tier(Err(&denied), Err(&no_task), false),
            (Tier::TracepointOnly, no_task.clone())
        );
    }

    #[test]
    fn a_rejection_names_the_program_and_the_kernels_reason() {
        let err = rejected(
            "mark_victim_btf (tp_btf mark_victim)",
            ProgramError::LoadError {
                io_error: std::io::Error::from_raw_os_error(libc::EACCES),
                verifier_log: VerifierLog::new(
                    "0: R1=ctx() R10=fp0\n1: (79) r6 = *(u64 *)(r1 +0)\n\
                     invalid bpf_context access off=0 size=8\n\
                     processed 2 insns (limit 1000000)\n"
                        .into(),
                ),
            },
        );
        let message = format!("{err:#}");
        assert!(!message.contains('\n'), "one line: {message}");
        assert!(message.starts_with("the kernel rejected program mark_victim_btf"));
        assert!(message.contains("Permission denied"), "{message}");
        assert!(message.contains("invalid bpf_context access"), "{message}");
    }

    #[test]
    fn a_perf_event_refused_at_paranoid_3_says_what_to_change() {
        let refused = || {
            ProgramError::SyscallError(aya::sys::SyscallError {
                call: "perf_event_open_trace_point",
                io_error: std::io::Error::from_raw_os_error(libc::EACCES),
            })
        };
        // As the unit of deploy/ failed on Debian 12 (6.1.0-57-cloud-amd64, paranoid 3).
        let message = format!(
            "{:#}",
            rejected_under(
                "mark_victim (tracepoint oom:mark_victim)",
                refused(),
                Some(3)
            )
        );
        assert!(
            message
                .starts_with("attaching program mark_victim (tracepoint oom:mark_victim) failed"),
            "{message}"
        );
        assert!(message.contains("Permission denied"), "{message}");
        assert!(
            message.contains("kernel.perf_event_paranoid is 3"),
            "{message}"
        );
        assert!(
            message.contains("kernel.perf_event_paranoid=2"),
            "{message}"
        );
        // At the mainline levels the kernel's reason is another: no hint.
        let message = format!("{:#}", rejected_under("mark_victim", refused(), Some(2)));
        assert!(!message.contains("paranoid"), "{message}");
        let message = format!("{:#}", rejected_under("mark_victim", refused(), None));
        assert!(!message.contains("paranoid"), "{message}");
    }

    #[test]
    fn an_empty_verifier_log_is_said_plainly() {
        let err = rejected(
            "mark_victim",
            ProgramError::LoadError {
                io_error: std::io::Error::from_raw_os_error(libc::EPERM),
                verifier_log: VerifierLog::new(String::new()),
            },
        );
        assert_eq!(
            err.to_string(),
            "the kernel rejected program mark_victim: Operation not permitted (os error 1) \
             (empty verifier log)"
        );
    }
}
