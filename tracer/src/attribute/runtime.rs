//! What a container runtime tells about a container, and the interface every runtime client
//! implements: the Docker Engine API client (which also speaks to podman), the CRI client
//! (containerd, CRI-O) and the kubelet's log directories.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;

/// Longest name, image or label value kept, in bytes: labels are user input, and the cache
/// must stay small however absurd they are.
pub const MAX_TEXT_BYTES: usize = 256;
/// Most labels kept per container.
pub const MAX_LABELS: usize = 32;

/// The labels a kubelet sets on every container it runs.
const K8S_POD_NAME: &str = "io.kubernetes.pod.name";
const K8S_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const K8S_POD_UID: &str = "io.kubernetes.pod.uid";
const K8S_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// The kubelet's annotation; cri-dockerd keeps annotations as labels with an `annotation.`
/// prefix.
pub const K8S_RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
const K8S_RESTART_COUNT_LABEL: &str = "annotation.io.kubernetes.container.restartCount";
/// The labels docker-compose (v1 and v2) sets on every container it runs.
const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const COMPOSE_SERVICE: &str = "com.docker.compose.service";
const COMPOSE_NUMBER: &str = "com.docker.compose.container-number";

/// One container as its runtime describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerMetadata {
    /// Full 64-hex id.
    pub id: String,
    /// Without Docker's leading `/`.
    pub name: String,
    /// The image as the user named it, e.g. `docker.io/library/postgres:16`.
    pub image: Option<String>,
    /// `docker`, `podman`, `containerd`, `cri-o` or `kubelet` (its log directories): which
    /// one answered.
    pub runtime: &'static str,
    pub role: Role,
    /// The container's main process in the host's pid namespace, while it runs.
    pub main_pid: Option<u32>,
    /// `--memory`, when set.
    pub memory_limit_bytes: Option<u64>,
    /// `no`, `always`, `on-failure` or `unless-stopped`, when set.
    pub restart_policy: Option<String>,
    /// How often the runtime restarted the container under its restart policy since it was
    /// last started by hand (Docker's `RestartCount`, podman's `restartCount`), when it says.
    pub restart_count: Option<u32>,
    pub k8s: K8sNames,
    pub compose: ComposeNames,
    /// Whether the runtime's API said this, or its state on disk.
    pub origin: Origin,
    /// Bounded: at most [`MAX_LABELS`], each at most [`MAX_TEXT_BYTES`].
    pub labels: BTreeMap<String, String>,
}

/// What an entry stands for. Most are containers; a pod's sandbox names its pod.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// A container that runs a workload.
    #[default]
    Workload,
    /// A Kubernetes pod's sandbox ("pause") container: it names its pod, and is never reported
    /// as the workload.
    PodSandbox,
    /// A pod known without its sandbox (from the kubelet's log directory, keyed by its
    /// directory's name): it names the pod.
    Pod,
}

/// The Kubernetes names of a container, from the labels the kubelet sets or its pod's sandbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct K8sNames {
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    pub namespace: Option<String>,
    pub container_name: Option<String>,
    /// How many times the kubelet restarted the container before this one (CRI `attempt`).
    pub restart_count: Option<u32>,
}

impl K8sNames {
    /// The pod's names: `self`'s, else `pod`'s.
    pub fn or_pod(mut self, pod: &K8sNames) -> K8sNames {
        self.pod_name = self.pod_name.or_else(|| pod.pod_name.clone());
        self.pod_uid = self.pod_uid.or_else(|| pod.pod_uid.clone());
        self.namespace = self.namespace.or_else(|| pod.namespace.clone());
        self
    }
}

/// The Compose names of a container, from the labels docker-compose sets: `shop_db_1` is
/// container number 1 of service `db` of project `shop`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComposeNames {
    pub project: Option<String>,
    pub service: Option<String>,
    pub number: Option<u32>,
}

/// Where a container's description came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// The runtime's API (the Docker Engine API, CRI).
    #[default]
    Api,
    /// The runtime's state on disk, read without its API (`--runtime-state`).
    State,
}

impl ContainerMetadata {
    /// Builds the bounded form from what a runtime returned.
    pub fn new(
        id: &str,
        name: &str,
        runtime: &'static str,
        labels: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        // The kubelet's labels are read before the rest is cut down: a pod with many labels
        // must not lose its name to the bound. The rest are kept in key order, so which ones
        // survive the bound does not depend on how the runtime ordered them.
        let mut labels: Vec<(String, String)> = labels.into_iter().collect();
        let label = |key: &str| {
            labels
                .iter()
                .find(|(name, _)| name == key)
                .map(|(_, value)| bounded(value))
        };
        let k8s = K8sNames {
            pod_name: label(K8S_POD_NAME),
            pod_uid: label(K8S_POD_UID),
            namespace: label(K8S_POD_NAMESPACE),
            container_name: label(K8S_CONTAINER_NAME),
            restart_count: label(K8S_RESTART_COUNT_LABEL).and_then(|count| count.parse().ok()),
        };
        let compose = ComposeNames {
            project: label(COMPOSE_PROJECT),
            service: label(COMPOSE_SERVICE),
            number: label(COMPOSE_NUMBER).and_then(|number| number.parse().ok()),
        };
        labels.sort_unstable();
        let labels: BTreeMap<String, String> = labels
            .into_iter()
            .take(MAX_LABELS)
            .map(|(key, value)| (bounded(&key), bounded(&value)))
            .collect();
        ContainerMetadata {
            id: bounded(id),
            name: bounded(name.trim_start_matches('/')),
            runtime,
            k8s,
            compose,
            labels,
            ..ContainerMetadata::default()
        }
    }
}

/// `text` cut to [`MAX_TEXT_BYTES`] on a character boundary.
pub fn bounded(text: &str) -> String {
    if text.len() <= MAX_TEXT_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// What a runtime's event stream says happened to a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeEvent {
    /// Created, started or renamed: look it up. `known` is what the event itself carried, in
    /// case the container is gone before it can be inspected.
    Changed {
        id: String,
        known: Option<Box<ContainerMetadata>>,
    },
    /// Removed: its cgroup is gone, but a late kill may still need its name.
    Removed { id: String },
}

#[derive(Debug)]
pub enum RuntimeError {
    /// Nothing listens at the socket.
    Absent(String),
    /// The runtime answered, but not with what the API promises.
    Garbage(String),
    /// Anything else: refused, reset, timed out.
    Unavailable(String),
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuntimeError::Absent(why) => write!(f, "absent: {why}"),
            RuntimeError::Garbage(why) => write!(f, "unexpected answer: {why}"),
            RuntimeError::Unavailable(why) => write!(f, "unavailable: {why}"),
        }
    }
}

impl std::error::Error for RuntimeError {}

pub type RuntimeResult<T> = Result<T, RuntimeError>;

/// A container runtime the agent can ask about containers. Object safe, so the agent holds
/// whichever runtimes it found behind one type.
pub trait ContainerRuntime: Send + Sync {
    /// Where it is, for messages: e.g. `podman at /run/podman/podman.sock`.
    fn describe(&self) -> String;

    /// Connects (again): called at startup and after the runtime went away.
    fn connect(&self) -> BoxFuture<'_, RuntimeResult<()>>;

    /// Learns what `connect` could not afford to wait for (the engine, its API version). The
    /// connection is in use meanwhile.
    fn identify(&self) -> BoxFuture<'_, RuntimeResult<()>> {
        Box::pin(async { Ok(()) })
    }

    /// Whether the last `connect` succeeded and nothing failed since.
    fn is_connected(&self) -> bool;

    /// Forgets the connection, after its event stream failed.
    fn disconnect(&self);

    /// Whether what [`list`](Self::list) and the events' `known` say is all there is to say,
    /// so that nothing needs [`inspect`](Self::inspect)ing after them (a state directory's
    /// files hold everything; an API's listing lacks the main pid and the limit).
    fn describes_in_full(&self) -> bool {
        false
    }

    /// Every container it knows, running or not.
    fn list(&self) -> BoxFuture<'_, RuntimeResult<Vec<ContainerMetadata>>>;

    /// One container; `Ok(None)` when the runtime does not know it.
    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, RuntimeResult<Option<ContainerMetadata>>>;

    /// Container events since `since` (replayed first), then as they happen. Ends when the
    /// connection does.
    fn events(&self, since: SystemTime) -> BoxStream<'_, RuntimeResult<RuntimeEvent>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names_come_from_the_kubelet_labels() {
        let labels = [
            (K8S_POD_NAME, "web-7d9f"),
            (K8S_POD_NAMESPACE, "shop"),
            (K8S_CONTAINER_NAME, "nginx"),
            (K8S_POD_UID, "7d3e1c1a-2b4f-4a8e-9c1d-5e6f7a8b9c0d"),
            ("app", "web"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let meta = ContainerMetadata::new("abc", "/k8s_nginx_web", "docker", labels);
        assert_eq!(meta.name, "k8s_nginx_web");
        assert_eq!(meta.k8s.pod_name.as_deref(), Some("web-7d9f"));
        assert_eq!(meta.k8s.namespace.as_deref(), Some("shop"));
        assert_eq!(meta.k8s.container_name.as_deref(), Some("nginx"));
        assert_eq!(
            meta.k8s.pod_uid.as_deref(),
            Some("7d3e1c1a-2b4f-4a8e-9c1d-5e6f7a8b9c0d")
        );
    }

    #[test]
    fn compose_names_come_from_composes_labels() {
        let labels = [
            (COMPOSE_PROJECT, "shop"),
            (COMPOSE_SERVICE, "db"),
            (COMPOSE_NUMBER, "2"),
            ("com.docker.compose.oneoff", "False"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let meta = ContainerMetadata::new("abc", "/shop_db_2", "docker", labels);
        assert_eq!(meta.compose.project.as_deref(), Some("shop"));
        assert_eq!(meta.compose.service.as_deref(), Some("db"));
        assert_eq!(meta.compose.number, Some(2));

        let plain = ContainerMetadata::new("abc", "/web", "docker", []);
        assert_eq!(plain.compose, ComposeNames::default());
        let odd = ContainerMetadata::new(
            "abc",
            "/x",
            "docker",
            [(COMPOSE_NUMBER.to_owned(), "one".to_owned())],
        );
        assert_eq!(odd.compose.number, None);
    }

    #[test]
    fn absurd_labels_are_bounded() {
        let labels = (0..1000).map(|i| (format!("key{i:04}"), "é".repeat(10_000)));
        let meta = ContainerMetadata::new(&"x".repeat(5000), "name", "podman", labels);
        assert_eq!(meta.labels.len(), MAX_LABELS);
        for (key, value) in &meta.labels {
            assert!(key.len() <= MAX_TEXT_BYTES + '…'.len_utf8());
            assert!(value.len() <= MAX_TEXT_BYTES + '…'.len_utf8());
            assert!(value.ends_with('…'));
        }
        assert!(meta.id.len() <= MAX_TEXT_BYTES + '…'.len_utf8());
    }

    #[test]
    fn a_pod_with_many_labels_keeps_its_names() {
        // Sorted by key, `io.kubernetes.*` comes after these 100 `app.*` labels.
        let mut labels: Vec<(String, String)> = (0..100)
            .map(|i| (format!("app.{i:03}"), "x".to_owned()))
            .collect();
        labels.push((K8S_POD_NAME.to_owned(), "web-7d9f".to_owned()));
        labels.push((K8S_POD_NAMESPACE.to_owned(), "shop".to_owned()));
        let meta = ContainerMetadata::new("abc", "k8s_web", "docker", labels);
        assert_eq!(meta.labels.len(), MAX_LABELS);
        assert_eq!(meta.k8s.pod_name.as_deref(), Some("web-7d9f"));
        assert_eq!(meta.k8s.namespace.as_deref(), Some("shop"));
    }
}
