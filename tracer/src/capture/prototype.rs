//! What a tracepoint hands its BTF programs, from the running kernel's own prototype of it
//! (`btf_trace_<name>`): a `tp_btf` program that reads an argument as a `task_struct *` on a
//! kernel that passes something else reads garbage, so the program is chosen from this, never
//! from the kernel version. `mark_victim` passes the victim's task since 6.9 (and in the stable
//! kernels it was backported to, such as Debian's 6.1 and later 5.10 updates), only its pid
//! before.

use std::fmt;

use super::btf::{Btf, Shape};

/// One argument of a tracepoint's `TP_PROTO`, as the kernel's BTF declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TracepointArg {
    /// `struct task_struct *`.
    Task,
    /// An integer of this many bytes, such as a pid.
    Int(u32),
    /// The kernel's BTF has no prototype for the tracepoint, or not this many arguments.
    Missing,
    /// Anything else, described.
    Other(String),
}

impl TracepointArg {
    /// One word for the startup record: `task`, `int`, `missing` or `other`.
    pub fn kind(&self) -> &'static str {
        match self {
            TracepointArg::Task => "task",
            TracepointArg::Int(_) => "int",
            TracepointArg::Missing => "missing",
            TracepointArg::Other(_) => "other",
        }
    }
}

impl fmt::Display for TracepointArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TracepointArg::Task => f.write_str("struct task_struct *"),
            TracepointArg::Int(size) => write!(f, "a {size}-byte integer"),
            TracepointArg::Missing => f.write_str("no such argument"),
            TracepointArg::Other(what) => f.write_str(what),
        }
    }
}

/// Argument `index` (0 is the first of `TP_PROTO`) of tracepoint `name`.
pub(crate) fn tracepoint_arg(btf: &Btf, name: &str, index: usize) -> TracepointArg {
    // The first parameter of `btf_trace_<name>` is the probe's own `void *` data.
    let Some(params) = btf.function_pointer_params(&format!("btf_trace_{name}")) else {
        return TracepointArg::Missing;
    };
    let Some(&param) = params.get(index + 1) else {
        return TracepointArg::Missing;
    };
    match btf.shape(param) {
        Some(Shape::Int { size }) => TracepointArg::Int(size),
        Some(Shape::Pointer { to }) => match btf.shape(to) {
            Some(Shape::Struct { name, .. }) if name == "task_struct" => TracepointArg::Task,
            Some(Shape::Struct { name, .. }) => TracepointArg::Other(format!("struct {name} *")),
            _ => TracepointArg::Other("a pointer to something else".to_owned()),
        },
        Some(Shape::Struct { name, .. }) => TracepointArg::Other(format!("struct {name}")),
        _ => TracepointArg::Other("an argument of another kind".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::btf::VmlinuxBtf;

    /// On the kernel the tests run on, both hooks the agent reads tasks from pass one.
    #[test]
    fn running_kernel() {
        let vmlinux = match VmlinuxBtf::open() {
            Ok(vmlinux) => vmlinux,
            Err(err) => return eprintln!("skipped: this kernel exposes no BTF ({err:#})"),
        };
        let btf = Btf::parse(vmlinux.bytes()).expect("the kernel's BTF parses");
        // TP_PROTO(int sig, struct kernel_siginfo *info, struct task_struct *task, ...), since 3.x.
        assert_eq!(
            tracepoint_arg(&btf, "signal_generate", 0),
            TracepointArg::Int(4)
        );
        assert_eq!(
            tracepoint_arg(&btf, "signal_generate", 2),
            TracepointArg::Task
        );
        assert_eq!(
            tracepoint_arg(&btf, "signal_generate", 9),
            TracepointArg::Missing
        );
        assert_eq!(
            tracepoint_arg(&btf, "no_such_tracepoint", 0),
            TracepointArg::Missing
        );
        let victim = tracepoint_arg(&btf, "mark_victim", 0);
        assert!(
            matches!(victim, TracepointArg::Task | TracepointArg::Int(4)),
            "mark_victim passes {victim}"
        );
    }
}
