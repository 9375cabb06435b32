//! Kernel struct offsets for the programs, resolved from the running kernel's BTF.

use tracer_common::{KernelOffsets, OFFSET_ABSENT};

use super::btf::Btf;

/// The offsets for the programs, and what the optional ones lack.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub offsets: KernelOffsets,
    /// The `oom_control`/`mem_cgroup` members this kernel's BTF lacks: any makes the
    /// oom_kill_process programs useless, so they are not attached.
    pub missing_for_oom_context: Vec<String>,
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
    Ok(Resolved {
        offsets,
        missing_for_oom_context,
    })
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
        } = offsets;
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
