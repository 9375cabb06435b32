//! Kernel struct offsets for the programs, resolved from the running kernel's BTF.

use tracer_common::{KernelOffsets, OFFSET_ABSENT};

use super::btf::{Btf, Shape, TypeId};

/// The offsets for the programs, and what the optional ones lack.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub offsets: KernelOffsets,
    /// The `oom_control`/`mem_cgroup` members this kernel's BTF lacks: any makes the
    /// oom_kill_process programs useless, so they are not attached.
    pub missing_for_oom_context: Vec<String>,
    /// What a task's memory cannot be read without on this kernel: its memory (RSS, uid,
    /// oom_score_adj) is then known only where the `mark_victim` tracepoint carries it.
    pub missing_for_memory: Vec<String>,
}

/// Resolves every offset the programs read.
///
/// Errors list the members this kernel lacks among those the `mark_victim` task programs cannot
/// do without; the memory controller (a kernel without `CONFIG_MEMCG`) and the oom_kill_process
/// members are optional.
pub fn resolve(btf: &Btf) -> Result<Resolved, MissingMembers> {
    let mut missing = Vec::new();
    let mut required = |struct_name: &'static str, members: &[&'static str]| {
        let found = members
            .iter()
            .find_map(|member| btf.member_offset(struct_name, member));
        found.unwrap_or_else(|| {
            missing.push(format!("{struct_name}.{}", members.join("|")));
            OFFSET_ABSENT
        })
    };
    let mut offsets = KernelOffsets {
        task_pid: required("task_struct", &["pid"]),
        task_tgid: required("task_struct", &["tgid"]),
        task_comm: required("task_struct", &["comm"]),
        task_cgroups: required("task_struct", &["cgroups"]),
        css_set_dfl_cgrp: required("css_set", &["dfl_cgrp"]),
        css_set_memory_css: OFFSET_ABSENT,
        css_cgroup: required("cgroup_subsys_state", &["cgroup"]),
        cgroup_kn: required("cgroup", &["kn"]),
        kernfs_node_id: required("kernfs_node", &["id"]),
        kernfs_node_name: required("kernfs_node", &["name"]),
        // Renamed to `__parent` in 6.15, when it became RCU-protected.
        kernfs_node_parent: required("kernfs_node", &["parent", "__parent"]),
        ..KernelOffsets::ABSENT
    };
    if !missing.is_empty() {
        return Err(MissingMembers(missing));
    }
    offsets.css_set_memory_css = memory_css_offset(btf).unwrap_or(OFFSET_ABSENT);
    // Optional: only the oom_kill_process programs read these.
    let mut missing_for_oom_context = Vec::new();
    let mut optional = |struct_name: &str, member: &str| {
        btf.member_offset(struct_name, member).unwrap_or_else(|| {
            missing_for_oom_context.push(format!("{struct_name}.{member}"));
            OFFSET_ABSENT
        })
    };
    offsets.oom_control_memcg = optional("oom_control", "memcg");
    offsets.oom_control_gfp_mask = optional("oom_control", "gfp_mask");
    offsets.oom_control_order = optional("oom_control", "order");
    offsets.oom_control_totalpages = optional("oom_control", "totalpages");
    offsets.oom_control_chosen = optional("oom_control", "chosen");
    offsets.oom_control_chosen_points = optional("oom_control", "chosen_points");
    offsets.oom_control_constraint = optional("oom_control", "constraint");
    offsets.mem_cgroup_css = optional("mem_cgroup", "css");
    // The namespace pid is a nicety (whether a victim is a container's main process, which
    // /proc also answers while the process lives): missing members only leave it unknown.
    let member = |struct_name: &str, member: &str| {
        btf.member_offset(struct_name, member)
            .unwrap_or(OFFSET_ABSENT)
    };
    offsets.task_thread_pid = member("task_struct", "thread_pid");
    offsets.pid_level = member("pid", "level");
    offsets.pid_numbers = member("pid", "numbers");
    offsets.upid_nr = member("upid", "nr");
    offsets.upid_size = btf.struct_size("upid").unwrap_or(OFFSET_ABSENT);
    let missing_for_memory = resolve_memory(btf, &mut offsets);
    Ok(Resolved {
        offsets,
        missing_for_oom_context,
        missing_for_memory,
    })
}

/// The offsets a task's memory is read with ([`tracer_common::TaskMemory`]); returns what
/// this kernel's BTF lacks of them, each of which leaves its part of the memory unread.
fn resolve_memory(btf: &Btf, offsets: &mut KernelOffsets) -> Vec<String> {
    let mut missing = Vec::new();
    let mut found = |what: &str, offset: Option<u32>| {
        offset.unwrap_or_else(|| {
            missing.push(what.to_owned());
            OFFSET_ABSENT
        })
    };
    offsets.task_mm = found("task_struct.mm", btf.member_offset("task_struct", "mm"));
    offsets.task_signal = found(
        "task_struct.signal",
        btf.member_offset("task_struct", "signal"),
    );
    offsets.task_real_cred = found(
        "task_struct.real_cred",
        btf.member_offset("task_struct", "real_cred"),
    );
    offsets.signal_oom_score_adj = found(
        "signal_struct.oom_score_adj (2 bytes)",
        sized_member(btf, "signal_struct", &["oom_score_adj"], 2),
    );
    // `kuid_t uid`, a struct of one `uid_t val`.
    offsets.cred_uid = found(
        "cred.uid.val (4 bytes)",
        sized_member(btf, "cred", &["uid", "val"], 4),
    );
    offsets.mm_total_vm = found(
        "mm_struct.total_vm (8 bytes)",
        sized_member(btf, "mm_struct", &["total_vm"], 8),
    );
    offsets.mm_pgtables_bytes = found(
        "mm_struct.pgtables_bytes",
        btf.struct_id("mm_struct")
            .and_then(|mm| btf.member(mm, "pgtables_bytes"))
            .and_then(|(offset, id)| offset.checked_add(counter_value(btf, id, 0)?)),
    );
    let counters = rss_counters(btf);
    let mut counter = |enumerator: &str| {
        let offset = counters.and_then(|(base, stride, len)| {
            let index = u32::try_from(btf.enumerator_value(enumerator)?).ok()?;
            (index < len).then(|| base.checked_add(index.checked_mul(stride)?))?
        });
        found(&format!("mm_struct.rss_stat[{enumerator}]"), offset)
    };
    offsets.mm_anon_pages = counter("MM_ANONPAGES");
    offsets.mm_file_pages = counter("MM_FILEPAGES");
    offsets.mm_shmem_pages = counter("MM_SHMEMPAGES");
    offsets.mm_swap_entries = counter("MM_SWAPENTS");
    missing
}

/// The offset of `path` (a member, then members of it) in `struct_name`, if the last one is an
/// integer of `size` bytes.
fn sized_member(btf: &Btf, struct_name: &str, path: &[&str], size: u32) -> Option<u32> {
    let mut id = btf.struct_id(struct_name)?;
    let mut offset = 0u32;
    for member in path {
        let (inner, member_id) = btf.member(id, member)?;
        offset = offset.checked_add(inner)?;
        id = member_id;
    }
    (btf.shape(id)? == Shape::Int { size }).then_some(offset)
}

/// Where in `mm_struct` the RSS counters are: the offset of the first one's 8-byte value, the
/// distance between them, and how many there are. Before 6.2 `rss_stat` is a `struct
/// mm_rss_stat` holding `atomic_long_t count[NR_MM_COUNTERS]`; since, an array of `struct
/// percpu_counter`, whose approximate `count` is what the kernel's own report reads.
fn rss_counters(btf: &Btf) -> Option<(u32, u32, u32)> {
    let (mut offset, mut id) = btf.member(btf.struct_id("mm_struct")?, "rss_stat")?;
    if let Shape::Struct { .. } = btf.shape(id)? {
        let (inner, array) = btf.member(id, "count")?;
        offset = offset.checked_add(inner)?;
        id = array;
    }
    let Shape::Array {
        element,
        element_size,
        len,
    } = btf.shape(id)?
    else {
        return None;
    };
    Some((
        offset.checked_add(counter_value(btf, element, 0)?)?,
        element_size,
        len,
    ))
}

/// The offset of a counter's 8-byte value inside its type: a plain `long`, an `atomic_long_t`
/// (`counter`) or a `percpu_counter` (`count`).
fn counter_value(btf: &Btf, id: TypeId, depth: usize) -> Option<u32> {
    match btf.shape(id)? {
        Shape::Int { size: 8 } => Some(0),
        Shape::Struct { .. } if depth < 4 => ["count", "counter"].into_iter().find_map(|member| {
            let (offset, inner) = btf.member(id, member)?;
            offset.checked_add(counter_value(btf, inner, depth + 1)?)
        }),
        _ => None,
    }
}

/// `enum oom_constraint` as this kernel numbers it.
pub fn oom_constraint_names(btf: &Btf) -> Vec<(u32, &'static str)> {
    [
        ("CONSTRAINT_NONE", "none"),
        ("CONSTRAINT_CPUSET", "cpuset"),
        ("CONSTRAINT_MEMORY_POLICY", "memory_policy"),
        ("CONSTRAINT_MEMCG", "memcg"),
    ]
    .into_iter()
    .filter_map(|(enumerator, name)| {
        let value = btf.enum_value("oom_constraint", enumerator)?;
        Some((u32::try_from(value).ok()?, name))
    })
    .collect()
}

/// `css_set.subsys[memory_cgrp_id]`: the slot index is an enum value that depends on which
/// controllers the kernel was built with.
fn memory_css_offset(btf: &Btf) -> Option<u32> {
    let subsys = btf.member_offset("css_set", "subsys")?;
    let memory_id = btf.enum_value("cgroup_subsys_id", "memory_cgrp_id")?;
    let slot = u32::try_from(memory_id).ok()?;
    subsys.checked_add(slot.checked_mul(size_of::<u64>() as u32)?)
}

/// Struct members the running kernel's BTF does not have.
#[derive(Debug)]
pub struct MissingMembers(pub Vec<String>);

impl std::fmt::Display for MissingMembers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kernel BTF lacks {}", self.0.join(", "))
    }
}

impl std::error::Error for MissingMembers {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolution against the BTF of the kernel these tests run on: what the agent will do.
    #[test]
    fn resolves_every_offset_on_the_running_kernel() {
        let vmlinux = match super::super::btf::VmlinuxBtf::open() {
            Ok(vmlinux) => vmlinux,
            Err(err) => {
                eprintln!("skipped: this kernel exposes no BTF ({err:#})");
                return;
            }
        };
        let btf = Btf::parse(vmlinux.bytes()).expect("kernel BTF parses");
        let Resolved {
            offsets,
            missing_for_oom_context,
            missing_for_memory,
        } = resolve(&btf).expect("running kernel has every required member");
        let KernelOffsets {
            task_pid,
            task_tgid,
            task_comm,
            task_cgroups,
            css_set_dfl_cgrp,
            css_set_memory_css,
            css_cgroup,
            cgroup_kn,
            kernfs_node_id,
            kernfs_node_name,
            kernfs_node_parent,
            oom_control_memcg,
            oom_control_gfp_mask,
            oom_control_order,
            oom_control_totalpages,
            oom_control_chosen,
            oom_control_chosen_points,
            oom_control_constraint,
            mem_cgroup_css,
            task_thread_pid,
            pid_level,
            pid_numbers,
            upid_nr,
            upid_size,
            task_mm,
            task_signal,
            task_real_cred,
            signal_oom_score_adj,
            cred_uid,
            mm_total_vm,
            mm_pgtables_bytes,
            mm_anon_pages,
            mm_file_pages,
            mm_shmem_pages,
            mm_swap_entries,
        } = offsets;
        assert_eq!(missing_for_memory, Vec::<String>::new());
        for offset in [task_mm, task_signal, task_real_cred] {
            assert_eq!(offset % 8, 0, "a pointer in task_struct at {offset}");
        }
        assert!(signal_oom_score_adj < 4096 && cred_uid < 64, "{offsets:?}");
        // The four RSS counters are evenly spaced, in `enum { MM_FILEPAGES, MM_ANONPAGES,
        // MM_SWAPENTS, MM_SHMEMPAGES }` order, after total_vm and pgtables_bytes's neighbours.
        let stride = mm_anon_pages - mm_file_pages;
        assert!(stride == 8 || stride >= 16, "stride {stride}");
        assert_eq!(mm_swap_entries, mm_file_pages + 2 * stride);
        assert_eq!(mm_shmem_pages, mm_file_pages + 3 * stride);
        for offset in [mm_total_vm, mm_pgtables_bytes, mm_file_pages] {
            assert_eq!(offset % 8, 0, "an 8-byte counter in mm_struct at {offset}");
        }
        for offset in [task_thread_pid, pid_level, pid_numbers, upid_nr] {
            assert_ne!(offset, OFFSET_ABSENT, "the namespace pid's members");
        }
        // struct upid { int nr; struct pid_namespace *ns; }
        assert_eq!((upid_nr, upid_size), (0, 16));
        // `pid_t pid; pid_t tgid;` have been adjacent in task_struct since 2.6.
        assert_eq!(task_tgid, task_pid + 4);
        assert_ne!(task_comm, OFFSET_ABSENT);
        assert_ne!(task_cgroups, OFFSET_ABSENT);
        for offset in [
            css_set_dfl_cgrp,
            css_cgroup,
            cgroup_kn,
            kernfs_node_id,
            kernfs_node_name,
            kernfs_node_parent,
        ] {
            assert_ne!(offset, OFFSET_ABSENT);
            assert_eq!(offset % 4, 0, "misaligned offset {offset}");
        }
        // Every kernel since 4.6 has these members of oom_control.
        assert_eq!(missing_for_oom_context, Vec::<String>::new());
        for offset in [
            oom_control_memcg,
            oom_control_gfp_mask,
            oom_control_order,
            oom_control_totalpages,
            oom_control_chosen,
            oom_control_chosen_points,
            oom_control_constraint,
        ] {
            assert!(
                offset < 256,
                "oom_control is a small struct, got offset {offset}"
            );
        }
        assert_eq!(mem_cgroup_css, 0, "css leads struct mem_cgroup");
        let names = oom_constraint_names(&btf);
        assert_eq!(names.len(), 4, "{names:?}");
        assert!(names.contains(&(3, "memcg")), "{names:?}");
        // The `css` struct is the first member of `struct cgroup`, its `cgroup` pointer first in
        // the css; the memory slot lies past the start of the `subsys` array.
        let subsys = btf.member_offset("css_set", "subsys").unwrap();
        if std::path::Path::new("/sys/fs/cgroup/memory").exists()
            || std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
                .is_ok_and(|c| c.contains("memory"))
        {
            assert!(css_set_memory_css >= subsys);
            assert_eq!((css_set_memory_css - subsys) % 8, 0);
        }
    }
}
