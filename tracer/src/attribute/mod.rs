//! Attribute: every cgroup of a kill (the victim's, the trigger's, the limit's) gets a name a
//! person recognises, a container, pod or service, even when the container is already gone.
//!
//! A cgroup path says which runtime and container id, pod or unit it belongs to
//! ([`cgroup_path`]); the runtime's API says the container's name, image, labels and limit
//! ([`runtime`], [`docker`]); a cache fed by the runtime's event stream knows them before the
//! kill, and keeps removed containers as tombstones ([`cache`], [`watch`]). A kill waits for
//! its names at most [`ATTRIBUTION_BUDGET`]; past that, or when no runtime answers, it carries
//! what the path alone says and a warning.

mod cache;
pub mod cri;
pub mod docker;
mod docker_socket;
pub(crate) mod kubelet_logs;
pub mod runtime;
pub mod state;
mod watch;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use self::cache::{Cached, MetadataCache};
use self::cri::CriRuntime;
use self::docker::{DockerApi, LOOKUP_TIMEOUT};
use self::kubelet_logs::KubeletLogs;
use self::runtime::{ContainerMetadata, ContainerRuntime, Origin, RuntimeError};
use self::state::RuntimeState;
use self::watch::Shared;
use crate::cgroup_path::{self, PathIdentity, PathKind};
use crate::decode::Domain;
use crate::incident::{OomKill, Sigkill};
use crate::observe::cgroupfs::Inference;
use crate::observe::{DomainSeen, Moment, PartyPaths};

/// How long a kill may wait for its container names, from the moment it was joined. Below the
/// promise that a kill is written within 1 s.
pub const ATTRIBUTION_BUDGET: Duration = Duration::from_millis(800);

/// Where the Docker Engine API usually listens: Docker's socket, then podman's.
pub const DEFAULT_SOCKETS: [&str; 2] = ["/var/run/docker.sock", "/run/podman/podman.sock"];

/// How a party's name was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Asked the runtime when the kill arrived.
    Live,
    /// Known from the runtime's listing or events before the kill.
    Cache,
    /// The container had already been removed; this is what it was.
    Tombstone,
    /// The runtime's state on disk (`--runtime-state`), read without its API.
    State,
    /// The cgroup path alone: no runtime knew it, or it is not a container.
    Path,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Live => "live",
            Source::Cache => "cache",
            Source::Tombstone => "tombstone",
            Source::State => "state",
            Source::Path => "path",
        }
    }
}

/// Who one cgroup belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribution {
    /// The cgroup path it was resolved from.
    pub path: String,
    pub identity: PathIdentity,
    pub container: Option<Arc<ContainerMetadata>>,
    pub source: Source,
    /// Why the name is missing, when a runtime should have known it.
    pub warning: Option<AttributionWarning>,
}

/// Why a cgroup is named by its path only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributionWarning {
    pub reason: FailureReason,
    /// What each runtime said, for people.
    pub message: String,
}

/// The kinds of [`AttributionWarning`]: a small fixed set, so it can be counted.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The cgroup path matches no container, pod or service layout.
    UnrecognisedPath,
    /// No runtime socket is configured.
    NoRuntime,
    /// No runtime is reachable: nothing listens at its socket, or it is not connected.
    RuntimeAbsent,
    /// A runtime failed or answered something the API does not promise.
    RuntimeError,
    /// A runtime did not answer within the kill's budget.
    Timeout,
    /// The runtimes that answered do not know the container.
    UnknownContainer,
}

impl FailureReason {
    pub const ALL: [FailureReason; 6] = [
        FailureReason::UnrecognisedPath,
        FailureReason::NoRuntime,
        FailureReason::RuntimeAbsent,
        FailureReason::RuntimeError,
        FailureReason::Timeout,
        FailureReason::UnknownContainer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::UnrecognisedPath => "unrecognised_path",
            FailureReason::NoRuntime => "no_runtime",
            FailureReason::RuntimeAbsent => "runtime_absent",
            FailureReason::RuntimeError => "runtime_error",
            FailureReason::Timeout => "timeout",
            FailureReason::UnknownContainer => "unknown_container",
        }
    }
}

impl Attribution {
    /// What the cgroup path alone says: a container id, a pod, a systemd unit, or nothing.
    pub fn from_path(path: &str) -> Self {
        Attribution {
            path: path.to_owned(),
            identity: cgroup_path::parse(path),
            container: None,
            source: Source::Path,
            warning: None,
        }
    }
}

impl AttributionWarning {
    fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        AttributionWarning {
            reason,
            message: message.into(),
        }
    }
}

/// Whose limit the kill was about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedDomain {
    pub kind: DomainKind,
    pub cgroup: Option<DomainCgroup>,
    pub limit_bytes: Option<u64>,
    /// How it is known: `kernel` is `oc->memcg` itself; the rest are inferences.
    pub basis: Basis,
    pub attribution: Option<Attribution>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainKind {
    /// A memory cgroup's limit: a container's, a pod's, a slice's.
    Cgroup,
    /// No limit: the whole host ran out.
    Host,
    Unknown,
}

impl DomainKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainKind::Cgroup => "cgroup",
            DomainKind::Host => "host",
            DomainKind::Unknown => "unknown",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainCgroup {
    pub id: Option<u64>,
    pub path: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Basis {
    /// The OOM killer's own `oom_control` (full tier).
    Kernel,
    /// The memory controller's counters along the victim's ancestry.
    Counters,
    /// The victim's container has a memory limit, and its cgroup was gone before the counters
    /// could be read.
    ContainerLimit,
    /// Nothing to go on.
    None,
    /// The kernel's own OOM report in its log: the `oom-kill:` summary's `oom_memcg`, or a
    /// host-wide report.
    KernelLog,
}

impl ResolvedDomain {
    pub fn unknown() -> Self {
        ResolvedDomain {
            kind: DomainKind::Unknown,
            cgroup: None,
            limit_bytes: None,
            basis: Basis::None,
            attribution: None,
        }
    }

    pub fn inferred(&self) -> bool {
        !matches!(self.basis, Basis::Kernel | Basis::KernelLog)
    }
}

/// A kill with every party named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributedKill {
    pub kill: Box<OomKill>,
    pub victim: Option<Attribution>,
    pub trigger: Option<Attribution>,
    /// Whether the victim is its container's main process: only then does the runtime report
    /// `OOMKilled`. `None` outside containers or when the main pid is unknown.
    pub main_process: Option<bool>,
    pub domain: ResolvedDomain,
}

impl AttributedKill {
    /// A kill with nobody named and no domain: what the record holds when nothing is known.
    #[cfg(test)]
    pub fn unattributed(kill: OomKill) -> Self {
        AttributedKill {
            kill: Box::new(kill),
            victim: None,
            trigger: None,
            main_process: None,
            domain: ResolvedDomain::unknown(),
        }
    }
}

/// Fixtures for the sinks' tests: a podman container `web` and a kill inside it.
#[cfg(test)]
pub mod fixtures {
    use super::*;

    pub const ID: &str = "3f2a9c0d1e4b5a6978877665544332211000ffeeddccbbaa9988776655443322";

    pub fn container_path() -> String {
        format!("/libpod_parent/libpod-{ID}")
    }

    pub fn web(source: Source) -> Attribution {
        let mut meta = ContainerMetadata::new(
            ID,
            "/web",
            "podman",
            [
                ("io.kubernetes.pod.namespace", "shop"),
                ("io.kubernetes.pod.name", "web-0"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        meta.image = Some("localhost/web:1".to_owned());
        meta.main_pid = Some(1);
        meta.memory_limit_bytes = Some(48 << 20);
        Attribution {
            path: container_path(),
            identity: cgroup_path::parse(&container_path()),
            container: Some(Arc::new(meta)),
            source,
            warning: None,
        }
    }

    /// `kill` in `web`, not its main process, its limit hit (inferred from the counters).
    pub fn in_web(kill: OomKill) -> AttributedKill {
        AttributedKill {
            victim: Some(web(Source::Cache)),
            trigger: Some(web(Source::Cache)),
            main_process: Some(false),
            domain: ResolvedDomain {
                kind: DomainKind::Cgroup,
                cgroup: Some(DomainCgroup {
                    id: None,
                    path: container_path(),
                }),
                limit_bytes: Some(48 << 20),
                basis: Basis::Counters,
                attribution: Some(web(Source::Cache)),
            },
            ..AttributedKill::unattributed(kill)
        }
    }

    /// The pod `pay-prod/ledger-api-7f9c` (burstable) on a containerd node, named by the CRI.
    pub const POD_UID: &str = "11111111-2222-3333-4444-555555555555";
    pub const CRI_ID: &str = "7a4d1b2805fd1506fb93883779daf46eb83f607c796d8a81cb147c45850e5f93";

    pub fn pod_path() -> String {
        format!("/kubepods/burstable/pod{POD_UID}")
    }

    /// `path` owned by the pod's sandbox (`container: None`) or by its container `container`,
    /// restarted 3 times.
    pub fn in_pod(path: &str, container: Option<&str>) -> Attribution {
        let mut meta = ContainerMetadata::new(CRI_ID, container.unwrap_or(""), "containerd", []);
        meta.role = match container {
            Some(_) => runtime::Role::Workload,
            None => runtime::Role::PodSandbox,
        };
        meta.image = container.map(|_| "registry.example/ledger:4.1".to_owned());
        meta.memory_limit_bytes = container.map(|_| 48 << 20);
        meta.k8s = runtime::K8sNames {
            pod_name: Some("ledger-api-7f9c".to_owned()),
            pod_uid: Some(POD_UID.to_owned()),
            namespace: Some("pay-prod".to_owned()),
            container_name: container.map(str::to_owned),
            restart_count: container.map(|_| 3),
        };
        Attribution {
            path: path.to_owned(),
            identity: cgroup_path::parse(path),
            container: Some(Arc::new(meta)),
            source: Source::Cache,
            warning: None,
        }
    }

    /// Container `worker` of the pod.
    pub fn worker() -> Attribution {
        in_pod(&format!("{}/{CRI_ID}", pod_path()), Some("worker"))
    }

    /// `kill` of the main process of `worker`, at the limit of `domain` (`limit_bytes`).
    pub fn in_worker(kill: OomKill, domain: Attribution, limit_bytes: u64) -> AttributedKill {
        AttributedKill {
            victim: Some(worker()),
            trigger: Some(worker()),
            main_process: Some(true),
            domain: ResolvedDomain {
                kind: DomainKind::Cgroup,
                cgroup: Some(DomainCgroup {
                    id: None,
                    path: domain.path.clone(),
                }),
                limit_bytes: Some(limit_bytes),
                basis: Basis::Kernel,
                attribution: Some(domain),
            },
            ..AttributedKill::unattributed(kill)
        }
    }
}

/// A SIGKILL with its target and sender named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributedSigkill {
    pub sigkill: Box<Sigkill>,
    pub target: Option<Attribution>,
    pub sender: Option<Attribution>,
}

pub struct AttributionOptions {
    /// Docker Engine API sockets (Docker's or podman's); none: [`DEFAULT_SOCKETS`].
    pub sockets: Vec<String>,
    /// CRI sockets (containerd's, CRI-O's); none: [`cri::DEFAULT_SOCKETS`].
    pub cri_sockets: Vec<String>,
    /// The kubelet's log directories: read at [`kubelet_logs::DEFAULT_ROOT`], at a root the
    /// user named, or not at all.
    pub kubelet_logs: KubeletLogRoot,
    /// Runtime state directories (Docker's data root, podman's storage root); none:
    /// [`state::DEFAULT_DIRS`].
    pub state_dirs: Vec<PathBuf>,
    /// No sockets at all, not even the default ones.
    pub state_only: bool,
    pub tombstone_ttl: Duration,
}

/// Where the kubelet's `pods` and `containers` log directories are looked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeletLogRoot {
    Default,
    Named(PathBuf),
    Off,
}

/// Whether the user named a runtime, or it is only looked for where runtimes usually are. A
/// host without Docker is no fault: only a runtime that was named, or that answered and then
/// stopped, is warned of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asked {
    /// On the command line.
    Named,
    /// One of the usual places.
    Default,
}

/// One runtime the options call for.
pub struct ConfiguredRuntime {
    pub runtime: Arc<dyn ContainerRuntime>,
    pub asked: Asked,
}

impl AttributionOptions {
    /// Every runtime to ask, in the order their answers count: the sockets first, so that
    /// where a socket and a state directory both know a container, the API's answer is used.
    /// `oomtrace check` asks the very same ones.
    pub fn runtimes(&self) -> Vec<ConfiguredRuntime> {
        let AttributionOptions {
            sockets,
            cri_sockets,
            kubelet_logs,
            state_dirs,
            state_only,
            tombstone_ttl: _,
        } = self;
        /// The named ones, else the defaults.
        fn or_defaults<T: Clone>(named: &[T], defaults: Vec<T>) -> Vec<(T, Asked)> {
            if named.is_empty() {
                defaults
                    .into_iter()
                    .map(|it| (it, Asked::Default))
                    .collect()
            } else {
                named.iter().map(|it| (it.clone(), Asked::Named)).collect()
            }
        }
        let (sockets, cri_sockets) = if *state_only {
            (Vec::new(), Vec::new())
        } else {
            (
                or_defaults(sockets, DEFAULT_SOCKETS.map(str::to_owned).to_vec()),
                or_defaults(
                    cri_sockets,
                    cri::DEFAULT_SOCKETS.map(str::to_owned).to_vec(),
                ),
            )
        };
        let state_dirs = or_defaults(state_dirs, state::DEFAULT_DIRS.map(PathBuf::from).to_vec());
        let kubelet_logs = match kubelet_logs {
            KubeletLogRoot::Default => {
                Some((PathBuf::from(kubelet_logs::DEFAULT_ROOT), Asked::Default))
            }
            KubeletLogRoot::Named(root) => Some((root.clone(), Asked::Named)),
            KubeletLogRoot::Off => None,
        };
        let configured =
            |runtime: Arc<dyn ContainerRuntime>, asked| ConfiguredRuntime { runtime, asked };
        let apis = sockets
            .into_iter()
            .map(|(socket, asked)| configured(Arc::new(DockerApi::new(socket)), asked));
        let cri = cri_sockets
            .into_iter()
            .map(|(socket, asked)| configured(Arc::new(CriRuntime::new(socket)), asked));
        let states = state_dirs.into_iter().map(|(dir, asked)| {
            configured(
                Arc::new(RuntimeState::new(dir, cache::DEFAULT_CAPACITY)),
                asked,
            )
        });
        let logs =
            kubelet_logs.map(|(root, asked)| configured(Arc::new(KubeletLogs::new(root)), asked));
        apis.chain(cri).chain(states).chain(logs).collect()
    }
}

pub struct Attributor {
    shared: Arc<Shared>,
    runtimes: Vec<Arc<dyn ContainerRuntime>>,
    /// Unrecognised paths already warned about, so a crash-looping service warns once.
    warned: Mutex<VecDeque<String>>,
}

const WARNED_PATHS_KEPT: usize = 64;

impl Attributor {
    /// Starts a watcher per runtime (socket, state directory, log directories) on the current
    /// tokio runtime.
    pub fn start(options: AttributionOptions) -> Self {
        let configured = options.runtimes();
        let attributor = Self::with_runtimes(
            configured
                .iter()
                .map(|configured| Arc::clone(&configured.runtime))
                .collect(),
            options.tombstone_ttl,
        );
        attributor.shared.expect_runtimes(configured.len());
        for ConfiguredRuntime { runtime, asked } in configured {
            tokio::spawn(watch::watch(runtime, Arc::clone(&attributor.shared), asked));
        }
        attributor
    }

    /// Without watchers: for tests, which feed the cache themselves.
    pub fn with_runtimes(
        runtimes: Vec<Arc<dyn ContainerRuntime>>,
        tombstone_ttl: Duration,
    ) -> Self {
        Attributor {
            shared: Arc::new(Shared::new(MetadataCache::new(
                cache::DEFAULT_CAPACITY,
                tombstone_ttl,
            ))),
            runtimes,
            warned: Mutex::new(VecDeque::new()),
        }
    }

    #[cfg(test)]
    fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Names the target's and the sender's containers; the sender's cgroups were read off the
    /// runtime's threads ([`crate::observe::Observer::sender_paths`]).
    pub async fn sigkill(
        &self,
        sigkill: Box<Sigkill>,
        sender_paths: PartyPaths,
        deadline: Instant,
    ) -> AttributedSigkill {
        // The target's: read in the kernel where BTF allows, else from /proc when the record
        // arrived, before the killed process was (usually) reaped.
        let from_kernel = sigkill.target_task.as_ref().map(|task| PartyPaths {
            cgroup: task.target_cgroup.as_ref().map(|c| c.path.clone()),
            memcg: task.target_memcg.as_ref().map(|c| c.path.clone()),
        });
        let from_proc = sigkill
            .target_proc
            .as_ref()
            .and_then(|proc| proc.cgroups.as_ref())
            .map(|cgroups| PartyPaths {
                cgroup: cgroups.unified.clone(),
                memcg: cgroups.memory.clone(),
            });
        let target_paths = from_kernel
            .filter(|paths| paths.cgroup.is_some() || paths.memcg.is_some())
            .or(from_proc);
        let target = match target_paths.as_ref().and_then(PartyPaths::best) {
            Some(path) => Some(self.resolve(path, deadline).await),
            None => None,
        };
        let sender = match sender_paths.best() {
            Some(path) => Some(self.resolve_again(path, target.as_ref(), deadline).await),
            None => None,
        };
        AttributedSigkill {
            sigkill,
            target,
            sender,
        }
    }

    /// Names the parties of `kill` from what was seen at its `moment`, waiting for a runtime no
    /// later than `deadline`.
    pub async fn kill(
        &self,
        kill: Box<OomKill>,
        moment: Moment,
        deadline: Instant,
    ) -> AttributedKill {
        let Moment {
            victim: victim_paths,
            trigger: trigger_paths,
            domain,
            victim_is_pid_one,
            // Not a name: the record takes it as the kernel said it (`build::with_oom_group`).
            kmsg_oom_group: _,
        } = moment;
        let victim = match victim_paths.best() {
            Some(path) => Some(self.resolve(path, deadline).await),
            None => None,
        };
        // Usually the same cgroups: asked once.
        let trigger = match trigger_paths.best() {
            Some(path) => Some(self.resolve_again(path, victim.as_ref(), deadline).await),
            None => None,
        };
        let domain = match domain {
            DomainSeen::Kernel {
                domain,
                limit_bytes,
            } => {
                self.kernel_domain(&domain, limit_bytes, victim.as_ref(), deadline)
                    .await
            }
            DomainSeen::Inferred {
                victim_memcg,
                inference,
            } => {
                self.inferred_domain(victim_memcg, inference, victim.as_ref(), deadline)
                    .await
            }
            DomainSeen::KernelLog {
                cgroup: Some(path),
                limit_bytes,
            } => {
                let attribution = self.resolve_again(&path, victim.as_ref(), deadline).await;
                let limit_bytes = limit_bytes.or_else(|| container_limit(&attribution));
                ResolvedDomain {
                    kind: DomainKind::Cgroup,
                    cgroup: Some(DomainCgroup { id: None, path }),
                    limit_bytes,
                    basis: Basis::KernelLog,
                    attribution: Some(attribution),
                }
            }
            DomainSeen::KernelLog { cgroup: None, .. } => ResolvedDomain {
                kind: DomainKind::Host,
                basis: Basis::KernelLog,
                ..ResolvedDomain::unknown()
            },
            DomainSeen::Unknown => ResolvedDomain::unknown(),
        };
        let victim_tgid = kill.victim.tgid.unwrap_or(kill.victim.pid);
        let in_container = victim
            .as_ref()
            .is_some_and(|victim| victim.identity.container.is_some());
        let main_pid = victim
            .as_ref()
            .and_then(|victim| victim.container.as_ref())
            .and_then(|container| container.main_pid);
        let main_process = match (in_container, victim_is_pid_one, main_pid) {
            (false, _, _) => None,
            (true, Some(pid_one), _) => Some(pid_one),
            (true, None, main_pid) => main_pid.map(|main_pid| victim_tgid == main_pid),
        };
        AttributedKill {
            kill,
            victim,
            trigger,
            main_process,
            domain,
        }
    }

    async fn kernel_domain(
        &self,
        domain: &Domain,
        limit_bytes: Option<u64>,
        victim: Option<&Attribution>,
        deadline: Instant,
    ) -> ResolvedDomain {
        match domain {
            Domain::Host => ResolvedDomain {
                kind: DomainKind::Host,
                cgroup: None,
                limit_bytes: None,
                basis: Basis::Kernel,
                attribution: None,
            },
            Domain::Cgroup(cgroup) => {
                let attribution = self.resolve_again(&cgroup.path, victim, deadline).await;
                let limit_bytes = limit_bytes.or_else(|| container_limit(&attribution));
                ResolvedDomain {
                    kind: DomainKind::Cgroup,
                    cgroup: Some(DomainCgroup {
                        id: Some(cgroup.id),
                        path: cgroup.path.clone(),
                    }),
                    limit_bytes,
                    basis: Basis::Kernel,
                    attribution: Some(attribution),
                }
            }
            Domain::Unknown => ResolvedDomain {
                kind: DomainKind::Unknown,
                cgroup: None,
                limit_bytes: None,
                basis: Basis::Kernel,
                attribution: None,
            },
        }
    }

    async fn inferred_domain(
        &self,
        victim_memcg: String,
        inference: Inference,
        victim: Option<&Attribution>,
        deadline: Instant,
    ) -> ResolvedDomain {
        let unknown = ResolvedDomain::unknown();
        match inference {
            Inference::Cgroup { path, limit_bytes } => {
                let attribution = self.resolve_again(&path, victim, deadline).await;
                ResolvedDomain {
                    kind: DomainKind::Cgroup,
                    cgroup: Some(DomainCgroup { id: None, path }),
                    limit_bytes: Some(limit_bytes),
                    basis: Basis::Counters,
                    attribution: Some(attribution),
                }
            }
            Inference::NoLimitHit => ResolvedDomain {
                kind: DomainKind::Host,
                basis: Basis::Counters,
                ..unknown
            },
            Inference::Unreadable => match victim.and_then(container_limit) {
                // The container had a limit and is gone with its cgroup: its limit is by far
                // the likeliest one hit.
                Some(limit_bytes) => ResolvedDomain {
                    kind: DomainKind::Cgroup,
                    cgroup: Some(DomainCgroup {
                        id: None,
                        path: victim_memcg,
                    }),
                    limit_bytes: Some(limit_bytes),
                    basis: Basis::ContainerLimit,
                    attribution: victim.cloned(),
                },
                None => unknown,
            },
        }
    }

    /// [`resolve`](Self::resolve), unless `known` is about the same cgroup.
    async fn resolve_again(
        &self,
        path: &str,
        known: Option<&Attribution>,
        deadline: Instant,
    ) -> Attribution {
        match known {
            Some(known) if known.path == path => known.clone(),
            _ => self.resolve(path, deadline).await,
        }
    }

    /// Who the cgroup at `path` belongs to, as far as the path and the cache tell, now.
    pub fn named_from_cache(&self, path: &str) -> Attribution {
        let mut attribution = Attribution::from_path(path);
        let cached = match (&attribution.identity.kind, &attribution.identity.container) {
            (PathKind::Container, Some(container)) => self.cached(&container.id),
            _ => None,
        };
        if let Some((container, source)) = cached {
            attribution.container = Some(container);
            attribution.source = source;
        }
        self.name_pod(&mut attribution);
        attribution
    }

    /// Who the cgroup at `path` belongs to.
    pub async fn resolve(&self, path: &str, deadline: Instant) -> Attribution {
        let mut attribution = Attribution::from_path(path);
        let id = match (&attribution.identity.kind, &attribution.identity.container) {
            // LXC has no API here: its name is its id, straight from the path.
            (PathKind::Container, Some(container))
                if container.runtime != Some(cgroup_path::Runtime::Lxc) =>
            {
                container.id.clone()
            }
            (PathKind::Unrecognised, _) => {
                attribution.warning = self.warn_unrecognised(path);
                return attribution;
            }
            (PathKind::Pod, _) => {
                self.name_pod(&mut attribution);
                return attribution;
            }
            _ => return attribution,
        };
        match self.container(&id, deadline).await {
            Ok((container, source)) => {
                attribution.container = Some(container);
                attribution.source = source;
            }
            Err(warning) => {
                log::warn!(
                    "container {}: {}; named from its cgroup path{} only",
                    short(&id),
                    warning.message,
                    if attribution.identity.pod.is_some() {
                        " and its pod"
                    } else {
                        ""
                    }
                );
                attribution.warning = Some(warning);
            }
        }
        self.name_pod(&mut attribution);
        attribution
    }

    /// Fills in the names of the pod the path names, where the container's own say none: a
    /// kill in a pod's own cgroup, or in a container that nothing knows (the pod is known from
    /// its sandbox or the kubelet's log directory).
    fn name_pod(&self, attribution: &mut Attribution) {
        let Some(uid) = attribution
            .identity
            .pod
            .as_ref()
            .map(|pod| pod.uid.as_str())
        else {
            return;
        };
        if attribution
            .container
            .as_ref()
            .is_some_and(|meta| meta.k8s.pod_name.is_some())
        {
            return;
        }
        let Some((pod, source)) = self
            .shared
            .with_cache_quietly(|cache| cache.pod(uid, Instant::now()))
            .map(found)
        else {
            return;
        };
        let named = match (&attribution.container, &attribution.identity.container) {
            // A known container without its pod's names.
            (Some(meta), _) => {
                let mut meta = (**meta).clone();
                meta.k8s = meta.k8s.or_pod(&pod.k8s);
                meta
            }
            // A container nothing knows, in a known pod.
            (None, Some(container)) => ContainerMetadata {
                id: container.id.clone(),
                runtime: pod.runtime,
                k8s: runtime::K8sNames {
                    container_name: None,
                    restart_count: None,
                    ..pod.k8s.clone()
                },
                ..ContainerMetadata::default()
            },
            // The pod's own cgroup: the pod, by its sandbox; known only by one of its
            // containers, by the pod's names alone (that container is not the pod's cgroup).
            (None, None) => {
                attribution.source = source;
                attribution.container = Some(match pod.role {
                    runtime::Role::Workload => Arc::new(ContainerMetadata {
                        id: uid.to_owned(),
                        runtime: pod.runtime,
                        role: runtime::Role::Pod,
                        k8s: runtime::K8sNames {
                            container_name: None,
                            restart_count: None,
                            ..pod.k8s.clone()
                        },
                        ..ContainerMetadata::default()
                    }),
                    runtime::Role::PodSandbox | runtime::Role::Pod => pod,
                });
                return;
            }
        };
        if attribution.source == Source::Path {
            attribution.source = source;
        }
        attribution.container = Some(Arc::new(named));
    }

    /// The cache, then each connected runtime, then the cache again as events arrive or
    /// runtimes connect, until `deadline`.
    async fn container(
        &self,
        id: &str,
        deadline: Instant,
    ) -> Result<(Arc<ContainerMetadata>, Source), AttributionWarning> {
        if self.runtimes.is_empty() {
            return self.cached(id).ok_or_else(|| {
                AttributionWarning::new(
                    FailureReason::NoRuntime,
                    "no container runtime socket is configured",
                )
            });
        }
        let mut asked = vec![false; self.runtimes.len()];
        let mut problems = Vec::new();
        loop {
            // Registered before looking, so a change in between is not missed.
            let updated = self.shared.updated.notified();
            tokio::pin!(updated);
            updated.as_mut().enable();
            if let Some(found) = self.cached(id) {
                return Ok(found);
            }
            for (runtime, asked) in self.runtimes.iter().zip(&mut asked) {
                if *asked || !runtime.is_connected() {
                    continue;
                }
                *asked = true;
                let budget = deadline
                    .saturating_duration_since(Instant::now())
                    .min(LOOKUP_TIMEOUT);
                match tokio::time::timeout(budget, runtime.inspect(id)).await {
                    Ok(Ok(Some(meta))) => {
                        let source = live_source(&meta, Source::Live);
                        let meta = Arc::new(meta);
                        self.shared
                            .with_cache(|cache| cache.upsert((*meta).clone(), Instant::now()));
                        return Ok((meta, source));
                    }
                    Ok(Ok(None)) => problems.push((
                        FailureReason::UnknownContainer,
                        format!("unknown to {}", runtime.describe()),
                    )),
                    Ok(Err(err)) => {
                        let reason = match err {
                            RuntimeError::Absent(_) => FailureReason::RuntimeAbsent,
                            RuntimeError::Garbage(_) | RuntimeError::Unavailable(_) => {
                                FailureReason::RuntimeError
                            }
                        };
                        problems.push((reason, format!("{}: {err}", runtime.describe())));
                    }
                    Err(_) => problems.push((
                        FailureReason::Timeout,
                        format!("{}: no answer in time", runtime.describe()),
                    )),
                }
            }
            // A runtime still connecting may know it; a connected one may send its event (a
            // container that lived for milliseconds can be gone before it is inspected).
            let connecting = self.shared.connecting.load(Ordering::SeqCst) > 0
                && asked.iter().any(|asked| !asked);
            let connected = self.shared.connected.load(Ordering::SeqCst) > 0;
            if !(connecting || connected) {
                break;
            }
            if tokio::time::timeout_at(deadline.into(), updated)
                .await
                .is_err()
            {
                break;
            }
        }
        for (runtime, asked) in self.runtimes.iter().zip(&asked) {
            if !asked {
                problems.push((
                    FailureReason::RuntimeAbsent,
                    format!("{} is not connected", runtime.describe()),
                ));
            }
        }
        // The most telling: a runtime that answered "unknown" beats one that is not there.
        let reason = problems
            .iter()
            .map(|(reason, _)| *reason)
            .max()
            .unwrap_or(FailureReason::RuntimeAbsent);
        let message = problems
            .into_iter()
            .map(|(_, problem)| problem)
            .collect::<Vec<_>>()
            .join("; ");
        Err(AttributionWarning::new(reason, message))
    }

    fn cached(&self, id: &str) -> Option<(Arc<ContainerMetadata>, Source)> {
        self.shared
            .with_cache_quietly(|cache| cache.get(id, Instant::now()))
            .map(found)
    }

    fn warn_unrecognised(&self, path: &str) -> Option<AttributionWarning> {
        let warning = "the cgroup path matches no known container, pod or service layout";
        let mut warned = self
            .warned
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if !warned.iter().any(|seen| seen == path) {
            log::info!("cgroup {path}: {warning}; named by its path");
            if warned.len() == WARNED_PATHS_KEPT {
                warned.pop_front();
            }
            warned.push_back(path.to_owned());
        }
        Some(AttributionWarning::new(
            FailureReason::UnrecognisedPath,
            warning,
        ))
    }
}

/// A cache entry and how it was known.
fn found(cached: Cached) -> (Arc<ContainerMetadata>, Source) {
    match cached {
        Cached::Live(meta) => {
            let source = live_source(&meta, Source::Cache);
            (meta, source)
        }
        Cached::Tombstone(meta) => (meta, Source::Tombstone),
    }
}

/// `api`, or [`Source::State`] for what was read from the runtime's state on disk.
fn live_source(meta: &ContainerMetadata, api: Source) -> Source {
    match meta.origin {
        Origin::Api => api,
        Origin::State => Source::State,
    }
}

fn container_limit(attribution: &Attribution) -> Option<u64> {
    attribution.container.as_ref()?.memory_limit_bytes
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests;
