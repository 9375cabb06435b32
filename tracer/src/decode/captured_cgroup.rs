//! Cgroup paths rebuilt from the names the kernel captured, leaf first.

use tracer_common::{CGROUP_PATH_DEPTH, CgroupCapture, cgroup_flags};

use super::c_string;

/// A cgroup as captured at the moment of the kill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupRef {
    /// The kernfs id: the cgroup directory's inode number.
    pub id: u64,
    /// The path from the hierarchy root, e.g. `/libpod_parent/libpod-3f2a…`. When `truncated`,
    /// it starts with `…/` because the hierarchy was deeper than the kernel walk.
    pub path: String,
    pub truncated: bool,
    /// A kernel read failed: the id or the upper part of the path may be missing.
    pub incomplete: bool,
}

impl CgroupRef {
    /// `None` when the kernel did not get as far as the cgroup.
    pub fn from_capture(capture: &CgroupCapture) -> Option<Self> {
        let CgroupCapture {
            id,
            flags,
            depth,
            names,
        } = capture;
        if flags & cgroup_flags::PRESENT == 0 {
            return None;
        }
        let truncated = flags & cgroup_flags::TRUNCATED != 0;
        let incomplete = flags & cgroup_flags::READ_FAILED != 0;
        // The kernel wrote `depth`; trust it only as far as the array goes.
        let depth = (*depth as usize).min(CGROUP_PATH_DEPTH);
        let components: Vec<String> = names[..depth].iter().rev().map(|n| c_string(n)).collect();
        let path = match (truncated || incomplete, components.is_empty()) {
            (false, true) => "/".to_owned(),
            (false, false) => format!("/{}", components.join("/")),
            (true, _) => format!("…/{}", components.join("/")),
        };
        Some(CgroupRef {
            id: *id,
            path,
            truncated,
            incomplete,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::tests::cgroup_capture;

    #[test]
    fn root_cgroup_is_slash() {
        let cgroup = CgroupRef::from_capture(&cgroup_capture(1, &[])).unwrap();
        assert_eq!(cgroup.path, "/");
        assert_eq!(cgroup.id, 1);
    }

    #[test]
    fn names_are_reversed_into_a_path() {
        let leaf_first = [
            "cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope",
            "kubepods-burstable-pod7d3e1c1a_2b4f_4a8e_9c1d_5e6f7a8b9c0d.slice",
            "kubepods-burstable.slice",
            "kubepods.slice",
        ];
        let cgroup = CgroupRef::from_capture(&cgroup_capture(77, &leaf_first)).unwrap();
        assert_eq!(
            cgroup.path,
            "/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod7d3e1c1a_2b4f_4a8e_9c1d_5e6f7a8b9c0d.slice/\
             cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope"
        );
        assert!(!cgroup.truncated && !cgroup.incomplete);
    }

    #[test]
    fn truncated_and_failed_walks_say_so() {
        let mut capture = cgroup_capture(5, &["leaf", "mid"]);
        capture.flags |= cgroup_flags::TRUNCATED;
        let cgroup = CgroupRef::from_capture(&capture).unwrap();
        assert_eq!(cgroup.path, "…/mid/leaf");
        assert!(cgroup.truncated);

        let mut capture = cgroup_capture(5, &["leaf"]);
        capture.flags |= cgroup_flags::READ_FAILED;
        assert!(CgroupRef::from_capture(&capture).unwrap().incomplete);

        capture.flags = cgroup_flags::READ_FAILED;
        assert_eq!(CgroupRef::from_capture(&capture), None);
    }

    #[test]
    fn a_depth_past_the_array_is_clamped() {
        let mut capture = cgroup_capture(5, &["a"]);
        capture.depth = u32::MAX;
        let cgroup = CgroupRef::from_capture(&capture).unwrap();
        assert!(cgroup.path.ends_with("/a"));
    }
}
