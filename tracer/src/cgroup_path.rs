//! Recognises which container, Kubernetes pod or systemd unit a cgroup path belongs to.
//!
//! The kernel tells the tracer only the victim's cgroup path; this module turns that path into
//! an identity the agent can enrich (ask a runtime about a container id, match a pod UID) or
//! else report as a bare path. The observe and attribute stages both read paths with it. It is
//! pure and never panics, whatever the input (it is fuzzed).
//!
//! Shapes recognised, and where the less obvious ones come from:
//! - Docker: `/docker/<id>` (cgroupfs driver, v1 and v2), `docker-<id>.scope` (systemd driver,
//!   also rootless under `user@UID.service`, and dockershim under a kubepods slice).
//! - containerd: `cri-containerd-<id>.scope`, `nerdctl-<id>.scope`, and the colon form
//!   `kubepods-…-pod<uid>.slice:cri-containerd:<id>` that containerd's CRI plugin builds as a
//!   systemd cgroupsPath and that shows up verbatim under `containerd.service` on some nodes
//!   (containerd `getCgroupsPath`; Datadog and OpenTelemetry detector fixtures).
//! - Kubernetes: `/kubepods[/<qos>]/pod<uid>/<id>` (cgroupfs driver; no QoS directory means
//!   Guaranteed; k3s; `/kubepods/kubepods/…` in Elastic APM fixtures) and
//!   `kubepods[-<qos>]-pod<uid>.slice` (systemd driver, which writes the UID's dashes as
//!   underscores; kubelet's cgroup manager). A custom cgroup root prefixes the slice name, as
//!   kind's `kubelet-kubepods-…` does. Static pods have a 32-hex UID (an md5 of the manifest,
//!   kubelet `config/common.go`), not a UUID.
//! - CRI-O: `crio-<id>.scope`, `crio-<id>` (cgroupfs) and crun's `crio-<id>.scope/container`.
//! - podman: `/libpod_parent/libpod-<id>` (observed on this project's test machine),
//!   `/libpod_parent/<pod id>/libpod-<id>`, `libpod-<id>.scope[/container]`, and containers
//!   inside podman pods, `machine-libpod_pod_<id>.slice` (a podman pod, not a Kubernetes pod).
//! - LXC: `/lxc/<name>` (LXC < 4, Proxmox's `/lxc/<vmid>/ns`), `/lxc.payload.<name>` (LXC 4+,
//!   LXC's `cgroup.h`), `/lxc.payload/<name>` (Falco's LXC matcher).
//!
//! Runtime monitors are deliberately never the container: CRI-O's and podman's conmon
//! (`crio-conmon-<id>[.scope]`, `libpod-conmon-<id>.scope`, podman's cgroupfs
//! `/libpod_parent/conmon`) and LXC's monitor (`lxc.monitor.<name>`, Proxmox's
//! `lxc.monitor/<vmid>`) run on the host, outside the container's limits. A monitor's scope
//! counts as a systemd unit; a directory adds nothing (so conmon beside a pod's containers
//! leaves the path a Pod, and LXC's monitor a Host path). [`monitored_container`] says whose
//! monitor a cgroup holds.

/// Container runtimes whose cgroup naming this module recognises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    Lxc,
}

impl Runtime {
    /// Stable lowercase name, for reports and for choosing which runtime API to ask.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Lxc => "lxc",
        }
    }
}

/// Kubernetes QoS class, which decides the pod's place in the kubepods hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    /// Lowercase name, as it appears in cgroup paths.
    pub fn as_str(self) -> &'static str {
        match self {
            QosClass::Guaranteed => "guaranteed",
            QosClass::Burstable => "burstable",
            QosClass::BestEffort => "besteffort",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRef {
    /// None when the layout does not say (e.g. cgroupfs-driver kubepods paths `/kubepods/burstable/pod<uid>/<64hex>`).
    pub runtime: Option<Runtime>,
    /// 64 lowercase hex for docker/containerd/cri-o/podman; the container name for LXC.
    pub id: String,
}

impl ContainerRef {
    fn new(runtime: Option<Runtime>, id: &str) -> Self {
        ContainerRef {
            runtime,
            id: id.to_owned(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRef {
    /// Canonical form, with dashes (the systemd driver writes underscores); 32 hex for static pods.
    pub uid: String,
    pub qos: QosClass,
}

/// What a path is, most specific first: Container > Pod > SystemdUnit > Host > Unrecognised.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    Container,
    /// A pod's cgroup with no container component below it.
    Pod,
    SystemdUnit,
    /// The root, or nothing but slices and runtimes' own grouping directories.
    Host,
    /// Some component is unclassifiable (e.g. `/oomtrace-test-123`): report the path only.
    Unrecognised,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathIdentity {
    pub kind: PathKind,
    /// The deepest container, so Docker-in-Docker and kind report the innermost workload.
    pub container: Option<ContainerRef>,
    /// The deepest Kubernetes pod on the path.
    pub pod: Option<PodRef>,
    /// The deepest systemd unit (`*.service`, `*.scope`) that is not itself a container's scope,
    /// e.g. `nginx.service`, `session-3.scope`, `user@1000.service` → the deepest one.
    pub systemd_unit: Option<String>,
}

/// What the kernel-side path walk writes in place of the components it had to drop.
const TRUNCATION_MARK: &str = "…";

/// `<prefix><64 hex>[.scope]` names of runtime monitors. Checked before the container prefixes,
/// which would otherwise read `crio-conmon-<id>` as CRI-O container `conmon-<id>`.
const MONITOR_PREFIXES: [(&str, Runtime); 2] = [
    ("crio-conmon-", Runtime::CriO),
    ("libpod-conmon-", Runtime::Podman),
];

/// `<prefix><64 hex>[.scope]` names of container cgroups.
const CONTAINER_PREFIXES: [(&str, Runtime); 5] = [
    ("docker-", Runtime::Docker),
    ("cri-containerd-", Runtime::Containerd),
    ("nerdctl-", Runtime::Containerd),
    ("crio-", Runtime::CriO),
    ("libpod-", Runtime::Podman),
];

/// Middle part of the `<slice>:<prefix>:<id>` colon form.
const COLON_PREFIXES: [(&str, Runtime); 3] = [
    ("cri-containerd", Runtime::Containerd),
    ("crio", Runtime::CriO),
    ("docker", Runtime::Docker),
];

/// Directories that runtimes create only to group their containers; holding no container
/// themselves, they are host-level.
const GROUPING_DIRS: [&str; 7] = [
    "docker",
    "kubepods",
    "libpod_parent",
    "lxc",
    "lxc.payload",
    "lxc.monitor",
    "lxc.pivot",
];

/// systemd unit types that own a cgroup of their own.
const UNIT_SUFFIXES: [&str; 5] = [".service", ".scope", ".socket", ".mount", ".swap"];

/// Never panics; every input maps to some PathIdentity.
pub fn parse(path: &str) -> PathIdentity {
    let found = walk(path);
    let kind = if found.container.is_some() {
        PathKind::Container
    } else if found.pod.is_some() {
        PathKind::Pod
    } else if found.unit.is_some() {
        PathKind::SystemdUnit
    } else if found.unknown || (found.components == 0 && (path.is_empty() || found.partial)) {
        // Neither the empty string nor a bare `…/` or `..` is known to be the root.
        PathKind::Unrecognised
    } else {
        PathKind::Host
    };
    PathIdentity {
        kind,
        container: found.container,
        pod: found.pod,
        systemd_unit: found.unit.map(str::to_owned),
    }
}

/// The kubelet's cgroups above the pods (cgroupfs and systemd drivers): a limit hit there is
/// the node's, not a pod's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KubeLevel {
    /// `/kubepods`, `kubepods.slice`: every pod on the node, limited to its allocatable memory.
    Node,
    /// `/kubepods/burstable`, `kubepods-besteffort.slice`: one QoS class's pods.
    Qos(QosClass),
}

/// Where the deepest component of `path` sits among the kubelet's own cgroups, if it is one.
pub fn kube_level(path: &str) -> Option<KubeLevel> {
    let mut names = path.rsplit('/').filter(|name| !name.is_empty());
    let last = names.next()?;
    let parent = names.next();
    let qos = |name: &str| match name {
        "burstable" => Some(QosClass::Burstable),
        "besteffort" => Some(QosClass::BestEffort),
        _ => None,
    };
    if last == "kubepods" {
        return Some(KubeLevel::Node);
    }
    if let (Some(class), Some("kubepods")) = (qos(last), parent) {
        return Some(KubeLevel::Qos(class));
    }
    // systemd: `[<root>-]kubepods.slice`, `[<root>-]kubepods-<qos>.slice`.
    let stem = last.strip_suffix(".slice")?;
    let at = stem.rfind("kubepods")?;
    if !(at == 0 || stem[..at].ends_with('-')) {
        return None;
    }
    match &stem[at + "kubepods".len()..] {
        "" => Some(KubeLevel::Node),
        rest => rest.strip_prefix('-').and_then(qos).map(KubeLevel::Qos),
    }
}

/// The container whose runtime monitor (conmon, LXC monitor) lives in this cgroup, if any:
/// an OOM kill there takes the container's supervisor, not the container.
pub fn monitored_container(path: &str) -> Option<ContainerRef> {
    walk(path).monitor
}

/// What one path component means, given its parent and grandparent.
enum Component {
    Container(ContainerRef, Option<PodRef>),
    Pod(PodRef),
    Monitor { of: ContainerRef, is_unit: bool },
    Unit,
    Group,
    Unknown,
}

/// Everything one pass over a path found, deepest match of each sort.
#[derive(Default)]
struct Findings<'a> {
    container: Option<ContainerRef>,
    pod: Option<PodRef>,
    unit: Option<&'a str>,
    monitor: Option<ContainerRef>,
    unknown: bool,
    /// A truncation mark or `..` hid where the path starts.
    partial: bool,
    components: usize,
}

fn walk(path: &str) -> Findings<'_> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let (truncated, rest) = match rest.strip_prefix(TRUNCATION_MARK) {
        Some(after) if after.is_empty() || after.starts_with('/') => (true, after),
        _ => (false, rest),
    };
    let mut found = Findings {
        partial: truncated,
        ..Findings::default()
    };
    let (mut parent, mut grandparent) = (None, None);
    for name in rest.split('/') {
        match name {
            "" | "." => continue,
            // Paths read inside a cgroup namespace start with these: what follows is relative
            // to a point we cannot see, as after a truncation mark.
            ".." => {
                found.partial = true;
                continue;
            }
            _ => found.components += 1,
        }
        match classify(name, parent, grandparent) {
            Component::Container(container, pod) => {
                found.container = Some(container);
                found.pod = pod.or(found.pod.take());
            }
            Component::Pod(pod) => found.pod = Some(pod),
            Component::Monitor { of, is_unit } => {
                found.monitor = Some(of);
                if is_unit {
                    found.unit = Some(name);
                }
            }
            Component::Unit => found.unit = Some(name),
            Component::Group => {}
            Component::Unknown => found.unknown = true,
        }
        grandparent = parent;
        parent = Some(name);
    }
    found
}

fn classify(name: &str, parent: Option<&str>, grandparent: Option<&str>) -> Component {
    // cgroupfs layouts put the meaning in the parent directory.
    match parent {
        Some("lxc" | "lxc.payload") => return Component::Container(lxc(name), None),
        Some("lxc.monitor") => {
            return Component::Monitor {
                of: lxc(name),
                is_unit: false,
            };
        }
        _ => {}
    }
    if is_container_id(name) {
        return match parent {
            // podman's cgroupfs pod directory: a podman pod, not a container.
            Some("libpod_parent") => Component::Group,
            Some("docker") => container(Some(Runtime::Docker), name),
            _ => container(None, name),
        };
    }
    if let Some(pod) = cgroupfs_pod(name, parent, grandparent) {
        return Component::Pod(pod);
    }
    if let Some((found, pod)) = colon_form(name) {
        return Component::Container(found, pod);
    }
    if let Some(lxc_name) = name.strip_prefix("lxc.payload.").filter(|n| !n.is_empty()) {
        return Component::Container(lxc(lxc_name), None);
    }
    if let Some(lxc_name) = name.strip_prefix("lxc.monitor.").filter(|n| !n.is_empty()) {
        return Component::Monitor {
            of: lxc(lxc_name),
            is_unit: false,
        };
    }
    let (stem, is_scope) = match name.strip_suffix(".scope") {
        Some(stem) => (stem, true),
        None => (name, false),
    };
    if let Some(of) = runtime_prefixed(stem, &MONITOR_PREFIXES) {
        return Component::Monitor {
            of,
            is_unit: is_scope,
        };
    }
    if let Some(found) = runtime_prefixed(stem, &CONTAINER_PREFIXES) {
        return Component::Container(found, None);
    }
    if let Some(pod) = pod_slice(name) {
        return Component::Pod(pod);
    }
    let podman_pod_dir =
        parent.is_some_and(is_container_id) && grandparent == Some("libpod_parent");
    if name.ends_with(".slice")
        || GROUPING_DIRS.contains(&name)
        || (matches!(name, "burstable" | "besteffort") && parent == Some("kubepods"))
        || (name == "conmon" && (parent == Some("libpod_parent") || podman_pod_dir))
    {
        Component::Group
    } else if UNIT_SUFFIXES
        .iter()
        .any(|s| name.len() > s.len() && name.ends_with(s))
    {
        // Includes `docker-<not an id>.scope`: a real unit, just not a container we know.
        Component::Unit
    } else {
        Component::Unknown
    }
}

fn container(runtime: Option<Runtime>, id: &str) -> Component {
    Component::Container(ContainerRef::new(runtime, id), None)
}

fn lxc(name: &str) -> ContainerRef {
    ContainerRef::new(Some(Runtime::Lxc), name)
}

/// `<prefix><64 hex>` for one of `prefixes`.
fn runtime_prefixed(stem: &str, prefixes: &[(&str, Runtime)]) -> Option<ContainerRef> {
    prefixes.iter().find_map(|&(prefix, runtime)| {
        let id = stem.strip_prefix(prefix).filter(|id| is_container_id(id))?;
        Some(ContainerRef::new(Some(runtime), id))
    })
}

/// `<pod slice>:<runtime prefix>:<64 hex>`, one component (see the module docs).
fn colon_form(name: &str) -> Option<(ContainerRef, Option<PodRef>)> {
    let mut parts = name.splitn(3, ':');
    let (slice, prefix, id) = (parts.next()?, parts.next()?, parts.next()?);
    let &(_, runtime) = COLON_PREFIXES.iter().find(|(p, _)| *p == prefix)?;
    is_container_id(id).then(|| (ContainerRef::new(Some(runtime), id), pod_slice(slice)))
}

/// cgroupfs driver: `pod<uid>` directly under `kubepods` (Guaranteed) or `kubepods/<qos>`.
fn cgroupfs_pod(name: &str, parent: Option<&str>, grandparent: Option<&str>) -> Option<PodRef> {
    let raw_uid = name.strip_prefix("pod")?;
    let qos = match (parent?, grandparent) {
        ("kubepods", _) => QosClass::Guaranteed,
        ("burstable", Some("kubepods")) => QosClass::Burstable,
        ("besteffort", Some("kubepods")) => QosClass::BestEffort,
        _ => return None,
    };
    canonical_pod_uid(raw_uid).map(|uid| PodRef { uid, qos })
}

/// systemd driver: `[<root>-]kubepods[-<qos>]-pod<uid>.slice`, the name systemd derives from
/// the slice's place in the hierarchy.
fn pod_slice(name: &str) -> Option<PodRef> {
    const KUBEPODS: &str = "kubepods-";
    let stem = name.strip_suffix(".slice")?;
    let (start, _) = stem.match_indices(KUBEPODS).find(|&(at, _)| {
        stem.get(..at)
            .is_some_and(|before| before.is_empty() || before.ends_with('-'))
    })?;
    let rest = stem.get(start + KUBEPODS.len()..)?;
    let (qos, raw_uid) = if let Some(uid) = rest.strip_prefix("burstable-pod") {
        (QosClass::Burstable, uid)
    } else if let Some(uid) = rest.strip_prefix("besteffort-pod") {
        (QosClass::BestEffort, uid)
    } else {
        (QosClass::Guaranteed, rest.strip_prefix("pod")?)
    };
    canonical_pod_uid(raw_uid).map(|uid| PodRef { uid, qos })
}

/// A UUID in 8-4-4-4-12 lowercase hex, separated by dashes (cgroupfs) or only underscores
/// (systemd), or a static pod's 32-hex hash; returned in canonical form.
fn canonical_pod_uid(raw: &str) -> Option<String> {
    if raw.len() == 32 && is_lower_hex(raw) {
        return Some(raw.to_owned());
    }
    if raw.len() != 36 {
        return None;
    }
    // A mixture is neither driver's spelling (found by fuzzing).
    if raw.contains('_') && raw.contains('-') {
        return None;
    }
    let uid = raw.replace('_', "-");
    let groups: Vec<&str> = uid.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    (lengths == [8, 4, 4, 4, 12] && groups.iter().all(|g| is_lower_hex(g))).then_some(uid)
}

/// Docker, containerd, CRI-O and podman all name containers by 64 lowercase hex characters.
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "9ec39b91f3d70e1beff50a308f77067065ea6be0d91a3378375056cd4422cf3d";
    const C2: &str = "34dc0b5e626f2c5c4c5170e34b10e7654ce36f0fcd532739f4445baabea03376";
    const POD: &str = "71b289d2028f1c5a5557efaee6f352615311e199997f0ec2fa5b579876eb9e07";
    const UID: &str = "74c13223-5a00-11e9-b385-42010a80018d";
    const STATIC_UID: &str = "5f7e8f3a1b2c4d5e6f708192a3b4c5d6";

    /// `path => expected` per line; `{C}`, `{C2}`, `{P}` (podman pod), `{U}` (pod UID),
    /// `{u}` (UID as the systemd driver writes it) and `{S}` (static pod UID) are filled in.
    /// Expected: kind, then `runtime:id` (`?` = unknown runtime), `pod=uid/qos`, `unit=name`.
    const TABLE: &str = r"
# Docker: cgroupfs (v1 and v2), systemd, rootless, Docker-in-Docker, the daemon itself
/docker/{C} => container docker:{C}
/system.slice/docker-{C}.scope => container docker:{C}
/user.slice/user-1000.slice/user@1000.service/user.slice/docker-{C}.scope => container docker:{C} unit=user@1000.service
…/docker/{C} => container docker:{C}
/docker/{C}/docker/{C2} => container docker:{C2}
/system.slice/docker.service => unit unit=docker.service
/docker => host
# Kubernetes, systemd driver (containerd, CRI-O, dockershim), v1 and v2
/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{C}.scope => container containerd:{C} pod={U}/burstable
/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/cri-containerd-{C}.scope => container containerd:{C} pod={U}/besteffort
/kubepods.slice/kubepods-pod{u}.slice/cri-containerd-{C}.scope => container containerd:{C} pod={U}/guaranteed
/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{S}.slice/cri-containerd-{C}.scope => container containerd:{C} pod={S}/burstable
/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/docker-{C}.scope => container docker:{C} pod={U}/burstable
/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/crio-{C}.scope => container cri-o:{C} pod={U}/burstable
/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/crio-{C}.scope/container => container cri-o:{C} pod={U}/burstable
/kubepods.slice/kubepods-pod{u}.slice/crio-{C}.scope => container cri-o:{C} pod={U}/guaranteed
/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/crio-conmon-{C}.scope => pod pod={U}/burstable unit=crio-conmon-{C}.scope
/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice => pod pod={U}/burstable
/kubepods.slice/kubepods-besteffort.slice => host
/system.slice/containerd.service/kubepods-besteffort-pod{u}.slice:cri-containerd:{C} => container containerd:{C} pod={U}/besteffort unit=containerd.service
…/kubepods-burstable-pod{u}.slice/cri-containerd-{C}.scope => container containerd:{C} pod={U}/burstable
# kind: a node is a Docker container whose kubelet uses the cgroup root /kubelet
/system.slice/docker-{C}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{u}.slice/cri-containerd-{C2}.scope => container containerd:{C2} pod={U}/besteffort
# Kubernetes, cgroupfs driver (k3s, GKE, CRI-O with cgroupfs); k3d nests k3s in Docker
/kubepods/burstable/pod{U}/{C} => container ?:{C} pod={U}/burstable
/kubepods/besteffort/pod{U}/{C} => container ?:{C} pod={U}/besteffort
/kubepods/pod{U}/{C} => container ?:{C} pod={U}/guaranteed
/kubepods/kubepods/besteffort/pod{U}/{C} => container ?:{C} pod={U}/besteffort
/kubepods/besteffort/pod{U}/crio-{C} => container cri-o:{C} pod={U}/besteffort
/kubepods/besteffort/pod{U}/crio-conmon-{C} => pod pod={U}/besteffort
/kubepods/burstable/pod{U} => pod pod={U}/burstable
/docker/{C}/kubepods/burstable/pod{U}/{C2} => container ?:{C2} pod={U}/burstable
/kubepods/burstable => host
# AWS ECS on EC2: /ecs/<cluster>/<task>/<id> (dd-trace-php fixture); the runtime is not named
/ecs/test-ecs-classic/5a0d5ceddf6c44c1928d367a815d890f/{C} => container ?:{C}
# containerd without Kubernetes
/system.slice/nerdctl-{C}.scope => container containerd:{C}
# podman: cgroupfs, systemd (podman 4+ adds /container), pods, rootless, conmon
/libpod_parent/libpod-{C} => container podman:{C}
/libpod_parent/{P}/libpod-{C} => container podman:{C}
/libpod_parent/conmon => host
/libpod_parent/{P}/conmon => host
/machine.slice/libpod-{C}.scope => container podman:{C}
/machine.slice/libpod-{C}.scope/container => container podman:{C}
/machine.slice/libpod-conmon-{C}.scope => unit unit=libpod-conmon-{C}.scope
/machine.slice/machine-libpod_pod_{P}.slice/libpod-{C}.scope/container => container podman:{C}
/user.slice/user-1000.slice/user@1000.service/user.slice/user-libpod_pod_{P}.slice/libpod-{C}.scope/container => container podman:{C} unit=user@1000.service
# LXC: before 4.0, 4.0+, systemd layout, Proxmox, monitors
/lxc/web => container lxc:web
/lxc.payload.web => container lxc:web
/lxc.payload.web/system.slice/nginx.service => container lxc:web unit=nginx.service
/lxc.payload/web => container lxc:web
/lxc/101/ns/system.slice/cron.service => container lxc:101 unit=cron.service
/lxc.monitor.web => host
/lxc.monitor/101 => host
# systemd services, sessions, user managers, VMs
/ => host
/init.scope => unit unit=init.scope
/system.slice/nginx.service => unit unit=nginx.service
/system.slice/crio-conmon-{C}.scope => unit unit=crio-conmon-{C}.scope
/user.slice/user-1000.slice/session-3.scope => unit unit=session-3.scope
/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-firefox-1234.scope => unit unit=app-gnome-firefox-1234.scope
/machine.slice/machine-qemu\x2d1\x2dvm.scope => unit unit=machine-qemu\x2d1\x2dvm.scope
/user.slice => host
/system.slice => host
# Not classifiable, or ids that are not ids
/oomtrace-test-123 => unrecognised
/foo/bar => unrecognised
/docker/not-an-id => unrecognised
/system.slice/docker-{C}0.scope => unit unit=docker-{C}0.scope
";

    fn fill(template: &str) -> String {
        template
            .replace("{C2}", C2)
            .replace("{C}", C)
            .replace("{P}", POD)
            .replace("{U}", UID)
            .replace("{u}", &UID.replace('-', "_"))
            .replace("{S}", STATIC_UID)
    }

    fn render(identity: &PathIdentity) -> String {
        let kind = match identity.kind {
            PathKind::Container => "container",
            PathKind::Pod => "pod",
            PathKind::SystemdUnit => "unit",
            PathKind::Host => "host",
            PathKind::Unrecognised => "unrecognised",
        };
        let mut words = vec![kind.to_owned()];
        if let Some(c) = &identity.container {
            words.push(format!(
                "{}:{}",
                c.runtime.map_or("?", Runtime::as_str),
                c.id
            ));
        }
        if let Some(pod) = &identity.pod {
            words.push(format!("pod={}/{}", pod.uid, pod.qos.as_str()));
        }
        if let Some(unit) = &identity.systemd_unit {
            words.push(format!("unit={unit}"));
        }
        words.join(" ")
    }

    #[test]
    fn real_world_paths() {
        let rows: Vec<(&str, &str)> = TABLE
            .lines()
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .filter_map(|line| line.split_once(" => "))
            .collect();
        assert!(rows.len() >= 35, "only {} rows", rows.len());
        for (path, expected) in rows {
            let path = fill(path);
            assert_eq!(render(&parse(&path)), fill(expected), "{path}");
        }
    }

    #[test]
    fn the_kubelets_own_cgroups_are_the_nodes() {
        for (path, level) in [
            ("/kubepods", Some(KubeLevel::Node)),
            ("/kubepods.slice", Some(KubeLevel::Node)),
            (
                "/kubelet.slice/kubelet-kubepods.slice",
                Some(KubeLevel::Node),
            ),
            (
                "/kubepods/burstable",
                Some(KubeLevel::Qos(QosClass::Burstable)),
            ),
            (
                "/kubepods/besteffort/",
                Some(KubeLevel::Qos(QosClass::BestEffort)),
            ),
            (
                "/kubepods.slice/kubepods-burstable.slice",
                Some(KubeLevel::Qos(QosClass::Burstable)),
            ),
            (&format!("/kubepods/burstable/pod{UID}"), None),
            (
                &format!(
                    "/kubepods.slice/kubepods-pod{}.slice",
                    UID.replace('-', "_")
                ),
                None,
            ),
            ("/burstable", None),
            ("/system.slice/notkubepods.slice", None),
            ("/kubepods-guaranteed.slice", None),
            ("", None),
        ] {
            assert_eq!(kube_level(path), level, "{path}");
        }
    }

    #[test]
    fn monitors_name_their_container_but_are_not_it() {
        let conmon = format!("/machine.slice/libpod-conmon-{C}.scope");
        let expected = ContainerRef::new(Some(Runtime::Podman), C);
        assert_eq!(monitored_container(&conmon), Some(expected));
        assert_eq!(monitored_container("/lxc.monitor.web"), Some(lxc("web")));
        assert_eq!(
            monitored_container(&format!("/system.slice/docker-{C}.scope")),
            None
        );
    }

    #[test]
    fn garbage_never_panics_and_stays_consistent() {
        let long = "/a".repeat(5 * 1024);
        let inputs = [
            String::new(),
            "…/".to_owned(),
            "…".to_owned(),
            "no-leading-slash".to_owned(),
            long,
            "x".repeat(10 * 1024),
            format!("/docker/{}", &C[..63]),
            format!("/docker/{C}0"),
            format!("/docker/{}", C.to_uppercase()),
            format!("/system.slice/docker-{}.scope", C.replace('9', "g")),
            format!("/kubepods/burstable/pod{}/{C}", UID.to_uppercase()),
            "/kubepods-burstable-pod.slice:crio:".to_owned(),
            "/lxc.payload.".to_owned(),
            format!("/docker/{C}\0/x\0"),
            "\0".to_owned(),
            format!("/../../pod{UID}/{C}/.."),
            "/é/…/🦀.scope:crio:".to_owned(),
        ];
        for input in &inputs {
            let identity = parse(input);
            assert_eq!(
                identity.kind == PathKind::Container,
                identity.container.is_some()
            );
            if let Some(c) = &identity.container {
                assert_eq!(c.id.len(), 64, "{input:?}");
            }
        }
        assert_eq!(parse("").kind, PathKind::Unrecognised);
        assert_eq!(parse("…/").kind, PathKind::Unrecognised);
        assert_eq!(parse("/../..").kind, PathKind::Unrecognised);
        let mixed = format!("/kubepods/pod74c13223_5a00_11e9-b385_42010a80018d/{C}");
        assert_eq!(parse(&mixed).pod, None);
        assert_eq!(
            parse(&format!("/docker/{}", &C[..63])).kind,
            PathKind::Unrecognised
        );
        assert_eq!(
            parse(&format!("/docker/{C}\0")).kind,
            PathKind::Unrecognised
        );
    }
}
