//! Fuzzes the BTF reader: the running kernel's `/sys/kernel/btf/vmlinux` is read at every start
//! to find struct offsets and tracepoint prototypes, and a kernel (or a file put in its place in
//! a test or a container) may hold anything. Whatever the bytes, parsing and every lookup the
//! agent makes end, with an answer or an error, never a panic, a loop or a read past the blob.
//!
//! Input: a BTF blob (the corpus starts from a small synthetic one).

#![no_main]

use libfuzzer_sys::fuzz_target;

use oomtrace::capture::btf::Btf;
use oomtrace::capture::offsets;

fuzz_target!(|data: &[u8]| {
    let Ok(btf) = Btf::parse(data) else {
        return;
    };
    for (structure, member) in [
        ("task_struct", "pid"),
        ("task_struct", "tgid"),
        ("task_struct", "comm"),
        ("task_struct", "cgroups"),
        ("css_set", "dfl_cgrp"),
        ("kernfs_node", "parent"),
        ("oom_control", "chosen"),
        ("mm_struct", "rss_stat"),
    ] {
        let _ = btf.member_offset(structure, member);
        let _ = btf.struct_size(structure);
        if let Some(id) = btf.struct_id(structure) {
            let _ = btf.shape(id);
            if let Some((_, member_type)) = btf.member(id, member) {
                let _ = btf.shape(member_type);
            }
        }
    }
    let _ = btf.function_pointer_params("btf_trace_mark_victim");
    let _ = btf.function_pointer_params("btf_trace_signal_generate");
    let _ = btf.enumerator_value("MEMCG_OOM");
    let _ = btf.enum_value("oom_constraint", "CONSTRAINT_MEMCG");
    let _ = btf.typedef_id("atomic_long_t");
    let _ = btf.func_id("oom_kill_process");
    let _ = offsets::resolve(&btf);
});
