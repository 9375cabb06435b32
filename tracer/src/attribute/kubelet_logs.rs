//! The kubelet's log directories, read-only: they name pods and containers on a node whose CRI
//! socket the agent cannot (or may not) reach.
//!
//! - `pods/<namespace>_<pod>_<uid>/`: one directory per pod, created before its containers.
//! - `containers/<pod>_<namespace>_<container>-<id>.log`: one symlink per container the kubelet
//!   started, to `pods/<namespace>_<pod>_<uid>/<container>/<restart count>.log`.
//!
//! Pod names are DNS subdomains and namespaces and container names DNS labels: none holds an
//! `_`, so the names split unambiguously. The kubelet cuts a link's name to 255 bytes, which
//! can cut the container id of a pod with a very long name: such a link still names the pod.
//! Followed with inotify (no polling): a new link or directory is a container or pod, a removed
//! one is gone (a tombstone).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt as _};

use super::state::inotify::{self, Inotify, Watch};

use super::runtime::{
    ContainerMetadata, ContainerRuntime, K8sNames, Role, RuntimeError, RuntimeEvent, RuntimeResult,
    bounded,
};

/// Where the kubelet writes them, unless `--kubelet-log-dir` says otherwise.
pub(crate) const DEFAULT_ROOT: &str = "/var/log";
const RUNTIME: &str = "kubelet";

pub(crate) struct KubeletLogs {
    pods: PathBuf,
    containers: PathBuf,
    connected: AtomicBool,
    /// Set up by `connect`, taken by `events`.
    watching: Mutex<Option<Watching>>,
}

/// inotify on both directories.
struct Watching {
    inotify: Inotify,
    pods: Watch,
    containers: Option<Watch>,
}

impl KubeletLogs {
    /// `root` holds `pods` and `containers`, e.g. `/var/log`.
    pub(crate) fn new(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        KubeletLogs {
            pods: root.join("pods"),
            containers: root.join("containers"),
            connected: AtomicBool::new(false),
            watching: Mutex::new(None),
        }
    }

    fn try_connect(&self) -> RuntimeResult<()> {
        if !self.pods.is_dir() {
            return Err(RuntimeError::Absent(format!(
                "no directory {}",
                self.pods.display()
            )));
        }
        let inotify = Inotify::new().map_err(|err| unavailable("inotify", err))?;
        let mask = libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_MOVED_FROM
            | libc::IN_MOVED_TO
            | libc::IN_DELETE_SELF
            | libc::IN_ONLYDIR;
        let pods = inotify
            .add(&self.pods, mask)
            .map_err(|err| unavailable(&format!("watching {}", self.pods.display()), err))?;
        // Without the links, pods are still named; containers only by their pods.
        let containers = match inotify.add(&self.containers, mask) {
            Ok(watch) => Some(watch),
            Err(err) => {
                log::info!(
                    "{}: watching {}: {err}; naming pods only",
                    self.describe(),
                    self.containers.display()
                );
                None
            }
        };
        *self
            .watching
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = Some(Watching {
            inotify,
            pods,
            containers,
        });
        self.connected.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn try_list(&self) -> RuntimeResult<Vec<ContainerMetadata>> {
        let mut listed: Vec<ContainerMetadata> = read_names(&self.pods)?
            .iter()
            .filter_map(|name| pod_dir(name))
            .collect();
        if let Ok(links) = read_names(&self.containers) {
            listed.extend(links.iter().filter_map(|name| self.link(name)));
        }
        Ok(listed)
    }

    fn try_inspect(&self, id: &str) -> RuntimeResult<Option<ContainerMetadata>> {
        if self.pods.join(id).is_dir() {
            return Ok(pod_dir(id));
        }
        let suffix = format!("-{id}.log");
        let Ok(links) = read_names(&self.containers) else {
            return Ok(None);
        };
        Ok(links
            .iter()
            .find(|name| name.ends_with(&suffix))
            .and_then(|name| self.link(name)))
    }

    /// A link's names, with what its target adds (the pod's uid, the restart count).
    fn link(&self, name: &str) -> Option<ContainerMetadata> {
        let target = fs::read_link(self.containers.join(name)).ok();
        container_link(name, target.as_deref())
    }
}

impl ContainerRuntime for KubeletLogs {
    fn describe(&self) -> String {
        format!(
            "the kubelet's log directories {} and {}",
            self.pods.display(),
            self.containers.display()
        )
    }

    fn connect(&self) -> BoxFuture<'_, RuntimeResult<()>> {
        Box::pin(async move { self.try_connect() })
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    fn disconnect(&self) {
        self.connected.store(false, Ordering::SeqCst);
        *self
            .watching
            .lock()
            .unwrap_or_else(|poison| poison.into_inner()) = None;
    }

    fn list(&self) -> BoxFuture<'_, RuntimeResult<Vec<ContainerMetadata>>> {
        Box::pin(async move { self.try_list() })
    }

    fn inspect<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, RuntimeResult<Option<ContainerMetadata>>> {
        Box::pin(async move { self.try_inspect(id) })
    }

    /// What changed since the watch was set up in `connect`; the listing after it covers the
    /// rest. An overflowing inotify queue ends the stream, so everything is listed again.
    fn events(&self, _since: SystemTime) -> BoxStream<'_, RuntimeResult<RuntimeEvent>> {
        let taken = self
            .watching
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .take();
        let Some(watching) = taken else {
            let err = RuntimeError::Unavailable("not watching".to_owned());
            return stream::once(async { Err(err) }).boxed();
        };
        stream::unfold(watching, move |mut watching| async move {
            loop {
                let event = match watching.inotify.next().await {
                    Ok(event) => event,
                    Err(err) => return Some((Err(unavailable("inotify", err)), watching)),
                };
                if event.is(libc::IN_Q_OVERFLOW | libc::IN_DELETE_SELF) {
                    let lost = RuntimeError::Unavailable(
                        "inotify lost events, or the directory went".to_owned(),
                    );
                    return Some((Err(lost), watching));
                }
                let Some(name) = inotify::name_str(&event) else {
                    continue;
                };
                let change = if event.watch == watching.pods {
                    pod_event(event.mask, name)
                } else if Some(event.watch) == watching.containers {
                    self.link_event(event.mask, name)
                } else {
                    None
                };
                if let Some(change) = change {
                    return Some((Ok(change), watching));
                }
            }
        })
        .boxed()
    }
}

impl KubeletLogs {
    fn link_event(&self, mask: u32, name: &str) -> Option<RuntimeEvent> {
        if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
            let known = self.link(name)?;
            return Some(RuntimeEvent::Changed {
                id: known.id.clone(),
                known: Some(Box::new(known)),
            });
        }
        let (_, id) = split_link(name)?;
        Some(RuntimeEvent::Removed { id: id.to_owned() })
    }
}

fn pod_event(mask: u32, name: &str) -> Option<RuntimeEvent> {
    let pod = pod_dir(name)?;
    Some(if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
        RuntimeEvent::Changed {
            id: pod.id.clone(),
            known: Some(Box::new(pod)),
        }
    } else {
        RuntimeEvent::Removed { id: pod.id }
    })
}

/// `<namespace>_<pod>_<uid>`: the pod, keyed by the directory's name.
pub(crate) fn pod_dir(name: &str) -> Option<ContainerMetadata> {
    let mut parts = name.split('_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || [namespace, pod, uid].iter().any(|part| part.is_empty()) {
        return None;
    }
    let mut meta = ContainerMetadata::new(name, "", RUNTIME, []);
    meta.role = Role::Pod;
    meta.k8s = K8sNames {
        pod_name: Some(bounded(pod)),
        pod_uid: Some(bounded(uid)),
        namespace: Some(bounded(namespace)),
        ..K8sNames::default()
    };
    Some(meta)
}

/// `<pod>_<namespace>_<container>-<64 hex id>.log` → (`<pod>_<namespace>_<container>`, id).
fn split_link(name: &str) -> Option<(&str, &str)> {
    let stem = name.strip_suffix(".log")?;
    let (names, id) = stem.rsplit_once('-')?;
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some((names, id))
}

/// A container's link, and its target when it could be read: the names, and from the target
/// (`…/<namespace>_<pod>_<uid>/<container>/<restart count>.log`) the pod's uid and the restart
/// count. A link whose name was cut (a very long pod name) names its pod from the target.
pub(crate) fn container_link(name: &str, target: Option<&Path>) -> Option<ContainerMetadata> {
    let from_target = target.and_then(|target| {
        let restarts = target.file_stem()?.to_str()?.parse::<u32>().ok();
        let container = target.parent()?;
        let pod = pod_dir(container.parent()?.file_name()?.to_str()?)?;
        Some((pod, container.file_name()?.to_str()?.to_owned(), restarts))
    });
    let Some((names, id)) = split_link(name) else {
        // Cut: only the target can say, and it names the pod.
        return from_target.map(|(pod, _, _)| pod);
    };
    let mut parts = names.split('_');
    let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || [pod, namespace, container].iter().any(|p| p.is_empty()) {
        return None;
    }
    let mut meta = ContainerMetadata::new(id, container, RUNTIME, []);
    meta.k8s = K8sNames {
        pod_name: Some(bounded(pod)),
        namespace: Some(bounded(namespace)),
        container_name: Some(bounded(container)),
        ..K8sNames::default()
    };
    if let Some((pod_of_target, _, restarts)) = from_target {
        meta.k8s.pod_uid = pod_of_target.k8s.pod_uid;
        meta.k8s.restart_count = restarts;
    }
    Some(meta)
}

fn read_names(dir: &Path) -> RuntimeResult<Vec<String>> {
    let entries = fs::read_dir(dir).map_err(|err| unavailable(&dir.display().to_string(), err))?;
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect())
}

fn unavailable(what: &str, err: std::io::Error) -> RuntimeError {
    match err.kind() {
        std::io::ErrorKind::NotFound => RuntimeError::Absent(format!("{what}: {err}")),
        _ => RuntimeError::Unavailable(format!("{what}: {err}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "7a4d1b2805fd1506fb93883779daf46eb83f607c796d8a81cb147c45850e5f93";
    const UID: &str = "11111111-2222-3333-4444-555555555555";

    #[test]
    fn a_link_names_pod_namespace_container_uid_and_restarts() {
        let name = format!("ledger-api-7f9c_pay-prod_worker-{ID}.log");
        let target = format!("/var/log/pods/pay-prod_ledger-api-7f9c_{UID}/worker/2.log");
        let meta = container_link(&name, Some(Path::new(&target))).expect("a container");
        assert_eq!(meta.id, ID);
        assert_eq!(meta.role, Role::Workload);
        assert_eq!(meta.runtime, "kubelet");
        assert_eq!(meta.k8s.pod_name.as_deref(), Some("ledger-api-7f9c"));
        assert_eq!(meta.k8s.namespace.as_deref(), Some("pay-prod"));
        assert_eq!(meta.k8s.container_name.as_deref(), Some("worker"));
        assert_eq!(meta.k8s.pod_uid.as_deref(), Some(UID));
        assert_eq!(meta.k8s.restart_count, Some(2));
    }

    #[test]
    fn a_link_without_its_target_still_names() {
        let name = format!("web.v2.example_shop_nginx-{ID}.log");
        let meta = container_link(&name, None).expect("a container");
        assert_eq!(meta.k8s.pod_name.as_deref(), Some("web.v2.example"));
        assert_eq!(meta.k8s.pod_uid, None);
        assert_eq!(meta.k8s.restart_count, None);
    }

    #[test]
    fn a_cut_link_names_its_pod_from_the_target() {
        // The kubelet cuts the link's name to 255 bytes.
        let pod = format!("{}.{}", "a".repeat(120), "b".repeat(60));
        let full = format!("{pod}_odd_worker-{ID}");
        let name = format!("{}.log", &full[..251]);
        let target = format!("/var/log/pods/odd_{pod}_{UID}/worker/0.log");
        let meta = container_link(&name, Some(Path::new(&target))).expect("the pod");
        assert_eq!(meta.role, Role::Pod);
        assert_eq!(meta.k8s.pod_name.as_deref(), Some(pod.as_str()));
        assert_eq!(meta.k8s.pod_uid.as_deref(), Some(UID));
        assert!(container_link(&name, None).is_none());
    }

    #[test]
    fn pod_directories_name_pods() {
        let meta = pod_dir(&format!("pay-prod_ledger-api-7f9c_{UID}")).expect("a pod");
        assert_eq!(meta.role, Role::Pod);
        assert_eq!(meta.k8s.namespace.as_deref(), Some("pay-prod"));
        assert_eq!(meta.k8s.pod_name.as_deref(), Some("ledger-api-7f9c"));
        assert_eq!(meta.k8s.pod_uid.as_deref(), Some(UID));
        assert_eq!(meta.id, format!("pay-prod_ledger-api-7f9c_{UID}"));
    }

    #[test]
    fn other_names_are_not_pods_or_containers() {
        for name in ["", "a_b", "a__c", "a_b_c_d", "_b_c"] {
            assert!(pod_dir(name).is_none(), "{name:?}");
        }
        for name in [
            "x.log".to_owned(),
            format!("pod_ns-{ID}.log"),
            format!("pod_ns_c_d-{ID}.log"),
            format!("pod_ns_c-{}.log", &ID[1..]),
            format!("pod_ns_c-{ID}.txt"),
            format!("pod__c-{ID}.log"),
        ] {
            assert!(container_link(&name, None).is_none(), "{name:?}");
        }
    }

    #[tokio::test]
    async fn the_directories_are_listed_and_followed() {
        let root =
            std::env::temp_dir().join(format!("oomtrace-kubelet-logs-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let pod_dir_name = format!("pay-prod_ledger-api-7f9c_{UID}");
        fs::create_dir_all(root.join("pods").join(&pod_dir_name).join("worker")).unwrap();
        fs::create_dir_all(root.join("containers")).unwrap();
        let logs = KubeletLogs::new(&root);
        logs.connect().await.expect("both directories are there");
        let listed = logs.list().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].role, Role::Pod);

        let mut events = logs.events(SystemTime::now());
        let link = root
            .join("containers")
            .join(format!("ledger-api-7f9c_pay-prod_worker-{ID}.log"));
        std::os::unix::fs::symlink(
            root.join("pods").join(&pod_dir_name).join("worker/1.log"),
            &link,
        )
        .unwrap();
        let Some(Ok(RuntimeEvent::Changed {
            id,
            known: Some(meta),
        })) = events.next().await
        else {
            panic!("a new link is a new container");
        };
        assert_eq!(id, ID);
        assert_eq!(meta.k8s.restart_count, Some(1));
        assert_eq!(meta.k8s.pod_uid.as_deref(), Some(UID));
        assert_eq!(
            logs.inspect(ID).await.unwrap().map(|m| m.id),
            Some(ID.to_owned())
        );

        fs::remove_file(&link).unwrap();
        assert!(matches!(
            events.next().await,
            Some(Ok(RuntimeEvent::Removed { id })) if id == ID
        ));
        fs::remove_dir_all(root.join("pods").join(&pod_dir_name)).unwrap();
        assert!(matches!(
            events.next().await,
            Some(Ok(RuntimeEvent::Removed { id })) if id == pod_dir_name
        ));
        drop(events);
        let _ = fs::remove_dir_all(&root);
    }
}
