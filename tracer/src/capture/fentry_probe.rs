//! Whether the kernel lets this process load an fentry program at all, asked before aya is.
//!
//! aya finds an fentry program's attach point by name in a BTF of its own, and the one
//! [`super::btf::attach_point`] makes for `oom_kill_process` holds as many types as the
//! function's id: on 6.18 some 98,000, which take aya 10 ms and 9 MiB to parse, the largest
//! part of the agent's startup time and of its startup peak. Hosts that deny fentry (a security
//! module, a seccomp profile) would pay that for a program the kernel refuses anyway. A
//! two-instruction fentry program at the same function id costs one `bpf()` call and no
//! memory, and the kernel refuses it for the same reason.

use std::{ffi::c_char, io, mem};

use aya_obj::generated::{
    bpf_attach_type::BPF_TRACE_FENTRY, bpf_attr, bpf_cmd::BPF_PROG_LOAD,
    bpf_prog_type::BPF_PROG_TYPE_TRACING,
};

/// `r0 = 0; exit`, as the kernel's `struct bpf_insn`: opcode, registers, offset, immediate.
const RETURN_ZERO: [[u8; 8]; 2] = [
    // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm 0.
    [0xb7, 0, 0, 0, 0, 0, 0, 0],
    // BPF_JMP | BPF_EXIT.
    [0x95, 0, 0, 0, 0, 0, 0, 0],
];
/// fentry programs may call GPL-only helpers, so the kernel asks for a compatible license.
const LICENSE: &[u8] = b"GPL\0";

/// What the kernel says to an fentry program at the function with BTF type `func_id`.
pub(super) enum Answer {
    /// The kernel would load it: go on with the real program.
    Loads,
    /// The kernel denies it to this process (EPERM or EACCES): the real program would be
    /// denied too.
    Denied(io::Error),
    /// Refused for another reason, which the real program, with its BTF, may not share (an
    /// old kernel's EINVAL, for one): let the real attempt decide, and explain.
    Undecided(io::Error),
}

pub(super) fn ask(func_id: u32) -> Answer {
    // SAFETY: bpf_attr is plain data; all zeros is the kernel's "not given" for every field.
    let mut attr: bpf_attr = unsafe { mem::zeroed() };
    // SAFETY: writing fields of the BPF_PROG_LOAD member of a zeroed union.
    let load = unsafe { &mut attr.__bindgen_anon_3 };
    load.prog_type = BPF_PROG_TYPE_TRACING as u32;
    load.expected_attach_type = BPF_TRACE_FENTRY as u32;
    load.attach_btf_id = func_id;
    load.insn_cnt = RETURN_ZERO.len() as u32;
    load.insns = RETURN_ZERO.as_ptr() as u64;
    load.license = LICENSE.as_ptr() as u64;
    for (to, from) in load.prog_name.iter_mut().zip(b"oomtrace_probe") {
        *to = *from as c_char;
    }
    // SAFETY: the kernel reads `attr` and the instructions and license it points to, all of
    // which outlive the call, and writes nothing into this process's memory (no log buffer).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD as libc::c_int,
            &attr as *const bpf_attr,
            mem::size_of::<bpf_attr>() as libc::c_uint,
        )
    };
    if fd >= 0 {
        // SAFETY: the kernel just gave this descriptor to us, and nothing else holds it.
        unsafe { libc::close(fd as libc::c_int) };
        return Answer::Loads;
    }
    refused(io::Error::last_os_error())
}

/// What a refusal says of the real program: a denial applies to any program of the type.
fn refused(err: io::Error) -> Answer {
    match err.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => Answer::Denied(err),
        _ => Answer::Undecided(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_denial_stands_for_the_real_program() {
        for errno in [libc::EPERM, libc::EACCES] {
            let answer = refused(io::Error::from_raw_os_error(errno));
            assert!(matches!(answer, Answer::Denied(_)), "errno {errno}");
        }
        // An old kernel's EINVAL, ENOTSUPP (524) where the JIT has no trampolines, E2BIG where
        // bpf_attr is larger than the kernel knows: the real attempt decides.
        for errno in [libc::EINVAL, 524, libc::E2BIG, libc::ENOENT] {
            let answer = refused(io::Error::from_raw_os_error(errno));
            assert!(matches!(answer, Answer::Undecided(_)), "errno {errno}");
        }
    }

    #[test]
    fn the_program_returns_zero() {
        // The kernel's struct bpf_insn: opcode, dst/src registers, offset, immediate.
        let [mov, exit] = RETURN_ZERO;
        assert_eq!(
            mov[0],
            (aya_obj::generated::BPF_ALU64 | aya_obj::generated::BPF_MOV) as u8
        );
        assert_eq!(
            exit[0],
            (aya_obj::generated::BPF_JMP | aya_obj::generated::BPF_EXIT) as u8
        );
        assert!(mov[1..].iter().chain(&exit[1..]).all(|&byte| byte == 0));
    }
}
