//! Which tmpfs mounts hold a domain's shared memory: its containers' `/dev/shm` and tmpfs
//! mounts, its pods' memory-backed `emptyDir` volumes, or, for a cgroup of the host's own, the
//! host's tmpfs mounts.
//!
//! The runtimes mount some of them in the host's mount namespace, where their use is read with
//! `statvfs`: Docker's `/dev/shm` with `--ipc shareable` (`…/containers/<id>/mounts/shm`; in
//! Docker's default `private` IPC mode it is the container's own mount), podman's and CRI-O's
//! (`…/overlay-containers/<id>/userdata/shm`), containerd's pod sandbox's
//! (`…/sandboxes/<id>/shm`) and the kubelet's `emptyDir` (`…/pods/<uid>/volumes/
//! kubernetes.io~empty-dir/<name>`). A container's own `--tmpfs` mounts exist only in its
//! mount namespace: listed from `/proc/<pid>/mountinfo` (readable by anyone), their use
//! read through `/proc/<pid>/root` where the agent may (it needs the same capabilities as the
//! container's process, or `CAP_SYS_PTRACE`), and said to be unknown otherwise.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use super::cgroupfs::MemoryHierarchy;
use crate::cgroup_path::{self, PathKind};

/// Cgroups visited below the domain, at most, and how deep.
const MAX_CGROUPS: usize = 256;
const MAX_DEPTH: usize = 4;
/// Containers whose mount namespace is looked into, at most.
const MAX_CONTAINERS: usize = 16;
/// Mounts kept, biggest first.
const MAX_MOUNTS: usize = 16;
/// A tmpfs of the host is a candidate from this much use.
const HOST_MOUNT_FROM_BYTES: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TmpfsKind {
    /// A container's `/dev/shm`, or its pod sandbox's.
    Shm,
    /// A container's own tmpfs mount.
    ContainerTmpfs,
    /// A Kubernetes `emptyDir` with `medium: Memory`.
    EmptyDir,
    /// A tmpfs in the host's mount namespace.
    Host,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TmpfsMount {
    /// As its container sees it, else as the host does.
    pub mount_point: String,
    pub kind: TmpfsKind,
    pub host_path: Option<String>,
    pub volume: Option<String>,
    pub used_bytes: Option<u64>,
    pub size_bytes: Option<u64>,
    /// A pod's volume, or its sandbox's `/dev/shm`: they stay when the container restarts.
    pub outlives_container: bool,
    /// The cgroup of its owner (a container, a pod), to name it by.
    pub owner: Option<String>,
}

/// The mounts found, and why some may be missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Found {
    pub mounts: Vec<TmpfsMount>,
    pub unknown: Option<String>,
}

/// One line of a `mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MountLine {
    pub mount_id: u64,
    /// `major:minor`: the superblock, the same in every namespace that mounts it.
    pub device: String,
    pub mount_point: String,
    pub read_only: bool,
    pub fstype: String,
    /// tmpfs's `size=` option: how much it may hold.
    pub size_bytes: Option<u64>,
}

/// `36 25 0:31 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory`.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<MountLine> {
    text.lines()
        .filter_map(|line| {
            let (mount, filesystem) = line.split_once(" - ")?;
            let fields: Vec<&str> = mount.split(' ').collect();
            let options = fields.get(5)?;
            let mut filesystem = filesystem.split(' ');
            let fstype = filesystem.next()?.to_owned();
            let super_options = filesystem.nth(1).unwrap_or_default();
            Some(MountLine {
                mount_id: fields.first()?.parse().ok()?,
                device: (*fields.get(2)?).to_owned(),
                mount_point: super::cgroupfs::unescape_mountinfo(fields.get(4)?),
                read_only: options.split(',').any(|option| option == "ro"),
                fstype,
                size_bytes: super_options
                    .split(',')
                    .find_map(|option| option.strip_prefix("size="))
                    .and_then(tmpfs_size),
            })
        })
        .collect()
}

/// tmpfs's `size=` as mountinfo shows it: `262144k` (the kernel writes kibibytes), or a plain
/// number of bytes.
fn tmpfs_size(text: &str) -> Option<u64> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let number: u64 = digits.parse().ok()?;
    let shift = match unit {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

/// What a host path says a tmpfs belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostTmpfs {
    /// `…/containers/<id>/mounts/shm` (Docker), `…/overlay-containers/<id>/userdata/shm`
    /// (podman, CRI-O).
    ContainerShm {
        id: String,
    },
    /// `…/sandboxes/<id>/shm` (containerd's CRI).
    SandboxShm {
        id: String,
    },
    /// `…/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>` (the kubelet).
    EmptyDir {
        pod_uid: String,
        volume: String,
    },
    Other,
}

pub(crate) fn classify(path: &str) -> HostTmpfs {
    let parts: Vec<&str> = path.split('/').collect();
    let hex64 = |part: &str| part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit());
    for window in parts.windows(4) {
        match window {
            ["containers", id, "mounts", "shm"] | ["overlay-containers", id, "userdata", "shm"]
                if hex64(id) =>
            {
                return HostTmpfs::ContainerShm {
                    id: id.to_ascii_lowercase(),
                };
            }
            _ => {}
        }
    }
    for window in parts.windows(3) {
        if let ["sandboxes", id, "shm"] = window
            && hex64(id)
        {
            return HostTmpfs::SandboxShm {
                id: id.to_ascii_lowercase(),
            };
        }
    }
    for window in parts.windows(5) {
        if let ["pods", uid, "volumes", "kubernetes.io~empty-dir", volume] = window
            && !uid.is_empty()
            && !volume.is_empty()
        {
            return HostTmpfs::EmptyDir {
                pod_uid: uid.replace('_', "-"),
                volume: (*volume).to_owned(),
            };
        }
    }
    HostTmpfs::Other
}

/// The containers and pods a domain holds, with their cgroups.
#[derive(Debug, Default)]
struct Owners {
    /// `(container id, its cgroup)`, the domain's and every one below it.
    containers: Vec<(String, String)>,
    /// `(pod uid, its cgroup)`.
    pods: Vec<(String, String)>,
}

impl Owners {
    fn of(memory: &MemoryHierarchy, domain: &str) -> Self {
        let mut owners = Owners::default();
        let mut visited = 0;
        owners.walk(memory, domain, 0, &mut visited);
        // A pod's sandbox (its `/dev/shm`) is a sibling of its containers.
        let pods: Vec<String> = owners.pods.iter().map(|(_, path)| path.clone()).collect();
        for pod in pods {
            if !domain.starts_with(&pod) || domain == pod {
                continue;
            }
            for child in memory.children(&pod) {
                owners.add(&child);
            }
        }
        owners
    }

    fn walk(&mut self, memory: &MemoryHierarchy, path: &str, depth: usize, visited: &mut usize) {
        if *visited >= MAX_CGROUPS {
            return;
        }
        *visited += 1;
        self.add(path);
        if depth < MAX_DEPTH {
            for child in memory.children(path) {
                self.walk(memory, &child, depth + 1, visited);
            }
        }
    }

    fn add(&mut self, path: &str) {
        let identity = cgroup_path::parse(path);
        if let Some(pod) = identity.pod {
            let pod_path = pod_cgroup(path, &pod.uid).unwrap_or_else(|| path.to_owned());
            if !self.pods.iter().any(|(uid, _)| *uid == pod.uid) {
                self.pods.push((pod.uid, pod_path));
            }
        }
        if identity.kind == PathKind::Container
            && let Some(container) = identity.container
            && !self.containers.iter().any(|(id, _)| *id == container.id)
        {
            self.containers.push((container.id, path.to_owned()));
        }
    }

    fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.pods.is_empty()
    }
}

/// The pod's own cgroup on a container's path: up to its `pod<uid>` component.
fn pod_cgroup(path: &str, uid: &str) -> Option<String> {
    let flat: String = uid.chars().filter(|c| *c != '-' && *c != '_').collect();
    let mut end = 0;
    for component in path.split('/').skip(1) {
        end += component.len() + 1;
        let component_flat: String = component
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect();
        if component_flat.contains(&flat) {
            return Some(path[..end].to_owned());
        }
    }
    None
}

/// What the finder reads of the running system.
pub(crate) trait Mounts {
    /// The agent's own `mountinfo`: the host's mount namespace, where it runs on the host.
    fn own(&self) -> String;
    /// A process's `mountinfo`, its mount namespace's.
    fn of_process(&self, pid: u32) -> Option<String>;
    /// `(used, size)` of the filesystem at `path`.
    fn usage(&self, path: &Path) -> (Option<u64>, Option<u64>);
}

/// A mount table of 20,000 mounts of 200 bytes each; a larger one is not read.
const MOUNTINFO_LIMIT: u64 = 4 << 20;

/// `/proc` and `statvfs`.
pub(crate) struct Live;

impl Mounts for Live {
    fn own(&self) -> String {
        // `/proc/self` is a symlink, which a confined read does not follow.
        self.of_process(std::process::id()).unwrap_or_default()
    }

    fn of_process(&self, pid: u32) -> Option<String> {
        let relative = Path::new(&pid.to_string()).join("mountinfo");
        let bytes = crate::confined::read(Path::new("/proc"), &relative, MOUNTINFO_LIMIT).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn usage(&self, path: &Path) -> (Option<u64>, Option<u64>) {
        usage(path)
    }
}

/// Whose tmpfs mounts may hold the shared memory of the cgroup at `domain` (`None`: the host).
pub(crate) fn find(memory: Option<&MemoryHierarchy>, domain: Option<&str>) -> Found {
    find_in(&Live, memory, domain)
}

pub(crate) fn find_in(
    system: &impl Mounts,
    memory: Option<&MemoryHierarchy>,
    domain: Option<&str>,
) -> Found {
    let host_mounts = parse_mountinfo(&system.own());
    let owners = match (memory, domain) {
        (Some(memory), Some(domain)) => Owners::of(memory, domain),
        _ => Owners::default(),
    };
    let mut found = Found::default();
    let mut seen_devices = BTreeSet::new();
    // The containers' own view first: their mount points are the names their users know.
    let mut unreadable = Vec::new();
    if let Some(memory) = memory {
        let own_root = host_mounts
            .iter()
            .find(|m| m.mount_point == "/")
            .map(|m| m.mount_id);
        for (_, cgroup) in owners.containers.iter().take(MAX_CONTAINERS) {
            let Some(pid) = memory.procs(cgroup).first().copied() else {
                continue;
            };
            let Some(text) = system.of_process(pid) else {
                continue;
            };
            let lines = parse_mountinfo(&text);
            if lines
                .iter()
                .find(|m| m.mount_point == "/")
                .map(|m| m.mount_id)
                == own_root
            {
                continue;
            }
            for line in lines {
                if !is_workload_tmpfs(&line) || !seen_devices.insert(line.device.clone()) {
                    continue;
                }
                let host = host_mounts
                    .iter()
                    .find(|host| host.fstype == "tmpfs" && host.device == line.device);
                let mount = match host {
                    Some(host) => {
                        let (kind, volume, outlives) = host_kind(&host.mount_point);
                        let (used_bytes, size_bytes) = system.usage(Path::new(&host.mount_point));
                        TmpfsMount {
                            mount_point: line.mount_point.clone(),
                            kind: if kind == TmpfsKind::Host {
                                TmpfsKind::ContainerTmpfs
                            } else {
                                kind
                            },
                            host_path: Some(host.mount_point.clone()),
                            volume,
                            used_bytes,
                            size_bytes,
                            outlives_container: outlives,
                            owner: Some(owner_of(&owners, &host.mount_point, cgroup)),
                        }
                    }
                    None => {
                        let inside = format!("/proc/{pid}/root{}", line.mount_point);
                        let (used_bytes, size_bytes) = system.usage(Path::new(&inside));
                        let size_bytes = size_bytes.or(line.size_bytes);
                        if used_bytes.is_none() {
                            unreadable.push(line.mount_point.clone());
                        }
                        TmpfsMount {
                            mount_point: line.mount_point.clone(),
                            kind: if line.mount_point == "/dev/shm" {
                                TmpfsKind::Shm
                            } else {
                                TmpfsKind::ContainerTmpfs
                            },
                            host_path: None,
                            volume: None,
                            used_bytes,
                            size_bytes,
                            outlives_container: false,
                            owner: Some(cgroup.clone()),
                        }
                    }
                };
                found.mounts.push(mount);
            }
        }
    }
    // Then what the host mounted for them, whether or not a process of theirs is left.
    for host in host_mounts.iter().filter(|m| m.fstype == "tmpfs") {
        if seen_devices.contains(&host.device) {
            continue;
        }
        let owner = match classify(&host.mount_point) {
            HostTmpfs::ContainerShm { id } | HostTmpfs::SandboxShm { id } => owners
                .containers
                .iter()
                .find(|(known, _)| *known == id)
                .map(|(_, cgroup)| cgroup.clone()),
            HostTmpfs::EmptyDir { pod_uid, .. } => owners
                .pods
                .iter()
                .find(|(uid, _)| *uid == pod_uid)
                .map(|(_, cgroup)| cgroup.clone()),
            HostTmpfs::Other => None,
        };
        let (kind, volume, outlives) = host_kind(&host.mount_point);
        let candidate = match (&owner, kind) {
            (Some(_), _) => true,
            // The host's own tmpfs mounts, for a domain that is no container's or pod's.
            (None, TmpfsKind::Host) => owners.is_empty(),
            (None, _) => false,
        };
        if !candidate {
            continue;
        }
        let (used_bytes, size_bytes) = system.usage(Path::new(&host.mount_point));
        if owner.is_none() && used_bytes.is_none_or(|used| used < HOST_MOUNT_FROM_BYTES) {
            continue;
        }
        seen_devices.insert(host.device.clone());
        found.mounts.push(TmpfsMount {
            mount_point: match kind {
                TmpfsKind::Shm => "/dev/shm".to_owned(),
                _ => host.mount_point.clone(),
            },
            kind,
            // The host's own mount point is its mount point already.
            host_path: (kind != TmpfsKind::Host).then(|| host.mount_point.clone()),
            volume,
            used_bytes,
            size_bytes,
            outlives_container: outlives,
            owner,
        });
    }
    // Biggest first; those whose use is unknown last.
    found.mounts.sort_by_key(|mount| {
        (
            mount.used_bytes.is_none(),
            std::cmp::Reverse(mount.used_bytes),
        )
    });
    found.mounts.truncate(MAX_MOUNTS);
    found.unknown = if !unreadable.is_empty() {
        Some(format!(
            "the use of {} cannot be read from outside its container's mount namespace \
             (that needs CAP_SYS_PTRACE)",
            unreadable.join(", ")
        ))
    } else if found.mounts.is_empty() {
        Some(
            "no tmpfs mount of the domain was found: the pages may be memfd, SysV or shared \
             anonymous memory, or a mount of a container that is gone"
                .to_owned(),
        )
    } else {
        None
    };
    found
}

/// The owner to name a mount the host sees by: the container or pod its path names, else the
/// container whose mount namespace showed it.
fn owner_of(owners: &Owners, host_path: &str, seen_in: &str) -> String {
    let by_path = match classify(host_path) {
        HostTmpfs::EmptyDir { pod_uid, .. } => owners
            .pods
            .iter()
            .find(|(uid, _)| *uid == pod_uid)
            .map(|(_, cgroup)| cgroup.clone()),
        _ => None,
    };
    by_path.unwrap_or_else(|| seen_in.to_owned())
}

/// The kind, volume name and lifetime of a tmpfs by its host path.
fn host_kind(host_path: &str) -> (TmpfsKind, Option<String>, bool) {
    match classify(host_path) {
        HostTmpfs::ContainerShm { .. } => (TmpfsKind::Shm, None, false),
        HostTmpfs::SandboxShm { .. } => (TmpfsKind::Shm, None, true),
        HostTmpfs::EmptyDir { volume, .. } => (TmpfsKind::EmptyDir, Some(volume), true),
        HostTmpfs::Other => (TmpfsKind::Host, None, false),
    }
}

/// A writable tmpfs a workload may fill: not the runtime's `/dev`, nor the masks it lays over
/// `/proc` and `/sys`.
fn is_workload_tmpfs(line: &MountLine) -> bool {
    line.fstype == "tmpfs"
        && !line.read_only
        && line.mount_point != "/dev"
        && !line.mount_point.starts_with("/proc/")
        && !line.mount_point.starts_with("/sys/")
        && line.mount_point != "/sys"
}

/// `(used, size)` of the filesystem at `path`, where `statvfs` may.
fn usage(path: &Path) -> (Option<u64>, Option<u64>) {
    let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
        return (None, None);
    };
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a valid C string and a buffer of the right type for statvfs to fill.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return (None, None);
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    let block = stat.f_frsize.max(1);
    let size = stat.f_blocks.saturating_mul(block);
    let used = stat
        .f_blocks
        .saturating_sub(stat.f_bfree)
        .saturating_mul(block);
    (Some(used), Some(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9c0d1e4b5a6978877665544332211000ffeeddccbbaa9988776655443322";

    #[test]
    fn host_paths_name_what_the_runtimes_mounted() {
        assert_eq!(
            classify(&format!("/var/lib/docker/containers/{ID}/mounts/shm")),
            HostTmpfs::ContainerShm { id: ID.to_owned() }
        );
        assert_eq!(
            classify(&format!(
                "/var/lib/containers/storage/overlay-containers/{ID}/userdata/shm"
            )),
            HostTmpfs::ContainerShm { id: ID.to_owned() }
        );
        assert_eq!(
            classify(&format!(
                "/run/containerd/io.containerd.grpc.v1.cri/sandboxes/{ID}/shm"
            )),
            HostTmpfs::SandboxShm { id: ID.to_owned() }
        );
        assert_eq!(
            classify(
                "/var/lib/kubelet/pods/0f1e2d3c-4b5a-6978-8877-665544332211/volumes/\
                 kubernetes.io~empty-dir/cache"
            ),
            HostTmpfs::EmptyDir {
                pod_uid: "0f1e2d3c-4b5a-6978-8877-665544332211".to_owned(),
                volume: "cache".to_owned()
            }
        );
        for other in [
            "/dev/shm",
            "/run",
            "/var/lib/docker/containers/short/mounts/shm",
            "/var/lib/kubelet/pods//volumes/kubernetes.io~empty-dir/",
            "",
        ] {
            assert_eq!(classify(other), HostTmpfs::Other, "{other}");
        }
    }

    #[test]
    fn mountinfo_lines_give_device_mount_point_and_type() {
        let text = "\
22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/a
23 22 0:22 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
24 23 0:23 / /dev/shm rw,nosuid,nodev - tmpfs shm rw,size=262144k
25 22 0:24 / /scratch\\040dir rw,relatime - tmpfs tmpfs rw,size=131072k
26 22 0:25 / /proc/acpi ro,relatime - tmpfs tmpfs ro
garbage line
";
        let lines = parse_mountinfo(text);
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[2].device, "0:23");
        assert_eq!(lines[3].mount_point, "/scratch dir");
        assert_eq!(lines[2].size_bytes, Some(256 * MIB));
        assert_eq!(lines[4].size_bytes, None);
        assert_eq!(tmpfs_size("1g"), Some(1 << 30));
        assert_eq!(tmpfs_size("12345"), Some(12_345));
        assert_eq!(tmpfs_size("10%"), None);
        let workload: Vec<&str> = lines
            .iter()
            .filter(|line| is_workload_tmpfs(line))
            .map(|line| line.mount_point.as_str())
            .collect();
        assert_eq!(workload, ["/dev/shm", "/scratch dir"]);
    }

    #[test]
    fn a_pods_cgroup_is_found_on_its_containers_path() {
        let uid = "0f1e2d3c-4b5a-6978-8877-665544332211";
        assert_eq!(
            pod_cgroup(&format!("/kubepods/burstable/pod{uid}/{ID}"), uid).as_deref(),
            Some(format!("/kubepods/burstable/pod{uid}").as_str())
        );
        let systemd = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            uid.replace('-', "_")
        );
        assert_eq!(
            pod_cgroup(&systemd, uid).as_deref(),
            Some(
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
                    uid.replace('-', "_")
                )
                .as_str()
            )
        );
    }

    use std::collections::BTreeMap;
    use std::fs;

    use crate::observe::cgroupfs::CgroupVersion;

    const MIB: u64 = 1 << 20;
    const HOST: &str = "\
1 0 8:1 / / rw,relatime - ext4 /dev/vda rw
2 1 0:20 / /dev/shm rw,nosuid,nodev - tmpfs tmpfs rw
3 1 0:21 / /run rw,nosuid - tmpfs tmpfs rw
4 1 0:30 / /var/lib/docker/containers/ID/mounts/shm rw,nosuid - tmpfs shm rw,size=262144k
5 1 0:31 / /var/lib/kubelet/pods/UID/volumes/kubernetes.io~empty-dir/cache rw - tmpfs tmpfs rw
6 1 0:32 / /mnt/scratch rw - tmpfs tmpfs rw
";

    /// A host whose mounts and uses are given, and whose container pid 300 sees `container`.
    struct Fake {
        container: String,
        used: BTreeMap<String, u64>,
    }

    impl Mounts for Fake {
        fn own(&self) -> String {
            HOST.replace("UID", "0f1e2d3c-4b5a-6978-8877-665544332211")
                .replace("/ID/", &format!("/{ID}/"))
        }

        fn of_process(&self, pid: u32) -> Option<String> {
            (pid == 300).then(|| self.container.clone())
        }

        fn usage(&self, path: &Path) -> (Option<u64>, Option<u64>) {
            let path = path.to_string_lossy();
            match self.used.get(path.as_ref()) {
                Some(used) => (Some(*used), Some(256 * MIB)),
                None => (None, None),
            }
        }
    }

    /// A memory hierarchy with these cgroups, `(path, pids)`.
    fn hierarchy(cgroups: &[(&str, &[u32])]) -> MemoryHierarchy {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "oomtrace-tmpfs-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        for (path, pids) in cgroups {
            let dir = root.join(path.trim_start_matches('/'));
            fs::create_dir_all(&dir).unwrap();
            let procs: String = pids.iter().map(|pid| format!("{pid}\n")).collect();
            fs::write(dir.join("cgroup.procs"), procs).unwrap();
        }
        MemoryHierarchy {
            root,
            version: CgroupVersion::V1,
        }
    }

    #[test]
    fn a_docker_containers_shm_is_named_as_it_sees_it_and_measured_on_the_host() {
        let docker = format!("/docker/{ID}");
        let memory = hierarchy(&[(&docker, &[300])]);
        // Docker bind-mounts its shm mount (0:30) as the container's /dev/shm; `--tmpfs
        // /scratch` is the container's own (0:40).
        let fake = Fake {
            container: "\
10 9 0:50 / / rw - overlay overlay rw
11 10 0:51 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k
12 11 0:30 / /dev/shm rw,nosuid,nodev - tmpfs shm rw,size=262144k
13 10 0:40 / /scratch rw,nosuid - tmpfs tmpfs rw,size=131072k
14 10 0:52 / /proc/acpi ro - tmpfs tmpfs ro
"
            .to_owned(),
            used: [(
                format!("/var/lib/docker/containers/{ID}/mounts/shm"),
                100 * MIB,
            )]
            .into_iter()
            .collect(),
        };
        let found = find_in(&fake, Some(&memory), Some(&docker));
        let summary: Vec<(&str, TmpfsKind, Option<u64>, bool)> = found
            .mounts
            .iter()
            .map(|m| {
                (
                    m.mount_point.as_str(),
                    m.kind,
                    m.used_bytes,
                    m.host_path.is_some(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("/dev/shm", TmpfsKind::Shm, Some(100 * MIB), true),
                ("/scratch", TmpfsKind::ContainerTmpfs, None, false),
            ]
        );
        // Its size from its mount options, where its use cannot be read.
        assert_eq!(found.mounts[1].size_bytes, Some(128 * MIB));
        assert!(
            found
                .mounts
                .iter()
                .all(|m| m.owner.as_deref() == Some(docker.as_str()))
        );
        assert!(!found.mounts.iter().any(|m| m.outlives_container));
        let unknown = found.unknown.expect("/scratch cannot be read");
        assert!(unknown.contains("/scratch"), "{unknown}");
        fs::remove_dir_all(&memory.root).unwrap();
    }

    #[test]
    fn a_pods_empty_dir_is_found_with_no_process_left_and_outlives_its_containers() {
        let uid = "0f1e2d3c-4b5a-6978-8877-665544332211";
        let pod = format!("/kubepods/burstable/pod{uid}");
        // The container restarted: its new cgroup has no process yet.
        let restarted = "b".repeat(64);
        let memory = hierarchy(&[(&pod, &[]), (&format!("{pod}/{restarted}"), &[])]);
        let fake = Fake {
            container: String::new(),
            used: [(
                format!("/var/lib/kubelet/pods/{uid}/volumes/kubernetes.io~empty-dir/cache"),
                90 * MIB,
            )]
            .into_iter()
            .collect(),
        };
        let found = find_in(&fake, Some(&memory), Some(&pod));
        let [volume] = found.mounts.as_slice() else {
            panic!("one mount: {found:#?}");
        };
        assert_eq!(volume.kind, TmpfsKind::EmptyDir);
        assert_eq!(volume.volume.as_deref(), Some("cache"));
        assert_eq!(volume.used_bytes, Some(90 * MIB));
        assert!(volume.outlives_container);
        assert_eq!(volume.owner.as_deref(), Some(pod.as_str()));
        assert_eq!(found.unknown, None);
        fs::remove_dir_all(&memory.root).unwrap();
    }

    #[test]
    fn a_cgroup_of_the_hosts_own_gets_the_hosts_tmpfs_mounts_that_hold_something() {
        let memory = hierarchy(&[("/batch", &[300])]);
        let fake = Fake {
            // The same mount namespace as the agent: its root mount is the same.
            container: "1 0 8:1 / / rw,relatime - ext4 /dev/vda rw\n".to_owned(),
            used: [
                ("/mnt/scratch".to_owned(), 100 * MIB),
                ("/run".to_owned(), MIB / 2),
                ("/dev/shm".to_owned(), 0),
            ]
            .into_iter()
            .collect(),
        };
        let found = find_in(&fake, Some(&memory), Some("/batch"));
        let points: Vec<&str> = found
            .mounts
            .iter()
            .map(|m| m.mount_point.as_str())
            .collect();
        assert_eq!(points, ["/mnt/scratch"]);
        assert_eq!(found.mounts[0].kind, TmpfsKind::Host);
        assert_eq!(found.mounts[0].host_path, None);
        // Another container's shm is no candidate for a cgroup of the host's.
        fs::remove_dir_all(&memory.root).unwrap();
    }

    #[test]
    fn nothing_found_says_what_the_pages_may_be() {
        let docker = format!("/docker/{ID}");
        let memory = hierarchy(&[(&docker, &[])]);
        let fake = Fake {
            container: String::new(),
            used: BTreeMap::new(),
        };
        let found = find_in(&fake, Some(&memory), Some(&docker));
        // Its shm mount is on the host, its use unreadable here: named, not measured.
        assert_eq!(found.mounts.len(), 1, "{found:#?}");
        let other = find_in(&fake, Some(&memory), Some("/docker/gone"));
        assert!(other.mounts.is_empty());
        assert!(other.unknown.unwrap().contains("memfd"));
        fs::remove_dir_all(&memory.root).unwrap();
    }

    #[test]
    fn a_host_tmpfs_use_is_read() {
        let (used, size) = usage(Path::new("/proc"));
        // procfs reports no blocks; the point is that a path is read, not refused.
        assert_eq!((used, size), (Some(0), Some(0)));
        assert_eq!(usage(Path::new("/no/such/path")), (None, None));
    }
}
