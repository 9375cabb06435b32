//! Kubernetes' runtime without a kubelet: a private containerd serving the CRI, and pods and
//! containers created over the CRI the way the kubelet creates them (its labels, annotations,
//! sandbox metadata, cgroup parent, log directory and log path), driven through the agent's own
//! generated CRI client.
//!
//! The cgroup layout is the kubelet's for the host: on systemd with cgroup v2 (kubeadm's
//! default, the systemd cgroup driver) pods are slices,
//! `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`, and
//! containers scopes in them, `cri-containerd-<id>.scope`; elsewhere (cgroupfs)
//! `/kubepods/burstable/pod<uid>/<id>`.
//!
//! Each [`Containerd`] lives in a directory of its own (`/tmp/oomtrace-cri-<pid>-<n>`: root,
//! state, socket, runc's root, the pods' logs), never in /run/containerd, and is stopped by its
//! recorded pid on drop, after its pods are removed; the cgroups runc made for them and any
//! mount left under the directory go too, also when a test fails. No registry, no CNI (pods
//! use the node's network), no kubelet: the images are imported from an archive of the test
//! image ([`crate::image`]).

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use oomtrace::attribute::cri::proto::runtime::v1 as cri;
use oomtrace::attribute::cri::{Client, UnixChannel, client};
use oomtrace::deps::tonic;
use oomtrace::record::OomKillRecord;

use crate::container_spec::{RELEASE_DIR_IN_CONTAINER, release};
use crate::image::{RootfsTarball, oci_archive};
use crate::slice::SystemdSlice;
use crate::{Agent, ContainerSpec, command_output, run_checked, send_signal, wait_timeout};

/// The sandbox ("pause") image: sleeps.
const PAUSE_IMAGE: &str = "localhost/oomtrace-pause:1";
/// The workload image: busybox and the hog.
pub const CRI_IMAGE: &str = "localhost/oomtrace-hog:1";
/// containerd's namespace for the CRI's containers.
const NAMESPACE: &str = "k8s.io";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const KILL_TIMEOUT: Duration = Duration::from_secs(30);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A private containerd serving the CRI, ready, with the test images imported.
pub struct Containerd {
    dir: PathBuf,
    process: Option<Child>,
    runtime: tokio::runtime::Runtime,
    /// The uids of the pods made here, whose cgroups are removed with it.
    uids: std::sync::Mutex<Vec<String>>,
}

impl Containerd {
    pub fn start() -> Self {
        require_containerd();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = PathBuf::from(format!(
            "/tmp/oomtrace-cri-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&dir);
        for sub in ["root", "state", "runc", "cni", "log/pods", "log/containers"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path)
                .unwrap_or_else(|err| panic!("creating {}: {err}", path.display()));
        }
        fs::write(dir.join("config.toml"), config(&dir))
            .unwrap_or_else(|err| panic!("writing containerd's config: {err}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|err| panic!("a tokio runtime for the CRI client: {err}"));
        let mut containerd = Containerd {
            dir,
            process: None,
            runtime,
            uids: std::sync::Mutex::new(Vec::new()),
        };
        containerd.start_process();
        containerd.import_images();
        containerd
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// The root of the kubelet-like log directories (`pods`, `containers`).
    pub fn log_root(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// The agent's arguments to name containers by this containerd only: no Docker API, no
    /// kubelet log directories.
    pub fn agent_args(&self) -> Vec<String> {
        vec![
            "--cri-socket".to_owned(),
            self.socket().display().to_string(),
            "--runtime-socket".to_owned(),
            self.dir.join("no-docker.sock").display().to_string(),
            "--no-kubelet-logs".to_owned(),
        ]
    }

    /// Starts the agent on this containerd, and returns once it follows its events.
    pub fn start_agent(&self) -> Agent {
        let args = self.agent_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let agent = Agent::start_with(&args);
        agent.wait_for_log("following its events", START_TIMEOUT);
        agent
    }

    /// [`Containerd::start_agent`], returned once the agent follows containerd's event stream
    /// too, so that a container started next is known by its events, not only by a lookup.
    pub fn start_agent_following_events(&self) -> Agent {
        let agent = self.start_agent();
        agent.wait_for_log(
            "following containerd's event stream",
            Duration::from_secs(10),
        );
        agent
    }

    /// Stops containerd and starts it again on the same socket and state, as an upgrade or a
    /// crash and restart would; its pods keep running (their shims are not containerd).
    pub fn restart(&mut self) {
        self.stop_process();
        assert!(
            !self.answers(),
            "containerd still answers on {} after it was stopped",
            self.socket().display()
        );
        self.start_process();
    }

    /// A pod sandbox as the kubelet makes it: metadata and labels naming the pod, cgroup parent
    /// `/kubepods/burstable/pod<uid>`, the node's network, and (unless `spec` says not to) the
    /// log directory `<log root>/pods/<namespace>_<name>_<uid>`.
    pub fn run_pod(&self, spec: PodSpec) -> Pod<'_> {
        let uid = new_uid();
        self.uids
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .push(uid.clone());
        let PodSpec {
            name,
            namespace,
            log_directory,
            memory_limit_bytes,
        } = spec;
        // The pod's limit, set before the sandbox starts in it, as the kubelet does.
        let slice = memory_limit_bytes.and_then(|limit| set_pod_limit(&uid, limit));
        let labels = HashMap::from([
            ("io.kubernetes.pod.name".to_owned(), name.clone()),
            ("io.kubernetes.pod.namespace".to_owned(), namespace.clone()),
            ("io.kubernetes.pod.uid".to_owned(), uid.clone()),
        ]);
        let log_directory = log_directory.then(|| {
            self.log_root()
                .join("pods")
                .join(format!("{namespace}_{name}_{uid}"))
        });
        let config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: namespace.clone(),
                attempt: 0,
            }),
            // Empty: runc cannot set a hostname without a UTS namespace of the pod's own.
            hostname: String::new(),
            log_directory: log_directory
                .as_ref()
                .map(|dir| dir.display().to_string())
                .unwrap_or_default(),
            labels,
            annotations: HashMap::new(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: pod_cgroup_parent(&uid),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(node_network()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        };
        let request = cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let id = self
            .call(|mut client| async move { client.run_pod_sandbox(request).await })
            .unwrap_or_else(|err| panic!("RunPodSandbox {namespace}/{name}: {err}"))
            .pod_sandbox_id;
        Pod {
            containerd: self,
            id,
            uid,
            name,
            namespace,
            config,
            log_directory,
            removed: false,
            slice,
        }
    }

    /// A CRI call, with a fresh connection.
    fn call<T, F>(&self, call: impl FnOnce(Client) -> F) -> Result<T, String>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let socket = self.socket();
        self.runtime.block_on(async move {
            let channel = UnixChannel::connect(&socket.display().to_string())
                .await
                .map_err(|err| format!("connecting to {}: {err}", socket.display()))?;
            tokio::time::timeout(Duration::from_secs(20), call(client(channel)))
                .await
                .map_err(|_| "no answer within 20 s".to_owned())?
                .map(|response| response.into_inner())
                .map_err(|status| format!("{status}"))
        })
    }

    fn answers(&self) -> bool {
        let request = cri::VersionRequest {
            version: "v1".to_owned(),
        };
        self.call(|mut client| async move { client.version(request).await })
            .is_ok()
    }

    fn start_process(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .unwrap_or_else(|err| panic!("containerd's log: {err}"));
        let stderr = log.try_clone().expect("a second handle on the log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            // Its own process group: a test's Ctrl-C does not reach it; drop stops it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("starting containerd: {err}"));
        fs::write(self.dir.join("containerd.pid"), child.id().to_string())
            .unwrap_or_else(|err| panic!("recording containerd's pid: {err}"));
        self.process = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.answers() {
            if let Some(Ok(Some(status))) = self.process.as_mut().map(Child::try_wait) {
                panic!("containerd exited ({status}); its log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not answer within {START_TIMEOUT:?}; its log:\n{}",
                self.log()
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    fn stop_process(&mut self) {
        let Some(mut child) = self.process.take() else {
            return;
        };
        let _ = send_signal(child.id(), libc::SIGTERM);
        if wait_timeout(&mut child, STOP_TIMEOUT).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_file(self.dir.join("containerd.pid"));
    }

    fn import_images(&self) {
        let archive = images_archive();
        run_checked(
            Command::new("ctr")
                .arg("--address")
                .arg(self.socket())
                .args(["--namespace", NAMESPACE, "images", "import"])
                .arg(archive),
        );
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// Every sandbox still there, stopped and removed (its containers with it).
    fn remove_all_pods(&self) {
        let listed = self.call(|mut client| async move {
            client
                .list_pod_sandbox(cri::ListPodSandboxRequest::default())
                .await
        });
        for sandbox in listed.map(|listed| listed.items).unwrap_or_default() {
            remove_sandbox(self, &sandbox.id);
        }
    }

    /// The cgroups runc made for this containerd's pods, deepest first; the kubelet-like
    /// parents (`/kubepods/burstable`, `/kubepods`) only if empty (another test may use them).
    fn remove_cgroups(&self) {
        let uids = self
            .uids
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone();
        for uid in &uids {
            remove_pod_cgroups(uid);
        }
        for root in cgroup_roots() {
            let _ = fs::remove_dir(root.join("kubepods/burstable"));
            let _ = fs::remove_dir(root.join("kubepods"));
        }
    }

    /// Mounts left under the directory (a shim killed midway leaves its rootfs mounted).
    fn unmount_leftovers(&self) {
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.dir.display().to_string();
        let mut targets: Vec<&str> = mounts
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|target| target.starts_with(&prefix))
            .collect();
        // Deepest first.
        targets.sort_by_key(|target| std::cmp::Reverse(target.len()));
        for target in targets {
            let _ = Command::new("umount").arg("--lazy").arg(target).status();
        }
    }

    /// Shims of this containerd that outlived it (they run until their container is gone).
    fn kill_leftover_shims(&self) {
        let socket = self.socket().display().to_string();
        let Ok(entries) = fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|pid| pid.parse::<u32>().ok())
            else {
                continue;
            };
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.starts_with("/usr/bin/containerd-shim") && cmdline.contains(&socket) {
                let _ = send_signal(pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if self.process.is_some() {
            self.remove_all_pods();
        }
        self.stop_process();
        self.kill_leftover_shims();
        self.unmount_leftovers();
        self.remove_cgroups();
        if thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "containerd's log, the last lines:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// What [`Containerd::run_pod`] makes.
pub struct PodSpec {
    name: String,
    namespace: String,
    log_directory: bool,
    memory_limit_bytes: Option<u64>,
}

impl PodSpec {
    pub fn new(namespace: &str, name: &str) -> Self {
        PodSpec {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            log_directory: true,
            memory_limit_bytes: None,
        }
    }

    /// A pod-level memory limit (the sum of its containers' limits, for the kubelet): the pod
    /// slice's `MemoryMax=` under systemd, the pod cgroup's limit file under cgroupfs.
    pub fn with_memory_limit(mut self, bytes: u64) -> Self {
        self.memory_limit_bytes = Some(bytes);
        self
    }

    /// No log directory: where the name is too long for one.
    pub fn without_log_directory(mut self) -> Self {
        self.log_directory = false;
        self
    }
}

/// A pod sandbox; stopped and removed on drop unless [`Pod::remove`] did it.
pub struct Pod<'a> {
    containerd: &'a Containerd,
    id: String,
    uid: String,
    name: String,
    namespace: String,
    config: cri::PodSandboxConfig,
    log_directory: Option<PathBuf>,
    removed: bool,
    /// The pod's slice unit with its limit, under systemd; stopped after the sandbox.
    slice: Option<SystemdSlice>,
}

impl Pod<'_> {
    pub fn uid(&self) -> &str {
        &self.uid
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The pod's cgroup path as the kernel shows it.
    pub fn cgroup_path(&self) -> String {
        format!("/{}", pod_cgroup_relative(&self.uid))
    }

    /// A container's cgroup path in this pod, as the kernel shows it: runc's scope
    /// `cri-containerd-<id>.scope` under systemd, `<id>` under cgroupfs.
    pub fn container_cgroup_path(&self, container: &CriContainer) -> String {
        if systemd_layout() {
            format!(
                "{}/cri-containerd-{}.scope",
                self.cgroup_path(),
                container.id
            )
        } else {
            format!("{}/{}", self.cgroup_path(), container.id)
        }
    }

    /// The pod's memory cgroup directory (v1 on a hybrid host, else cgroup2).
    pub fn memcg_dir(&self) -> PathBuf {
        let relative = pod_cgroup_relative(&self.uid);
        let v1 = Path::new("/sys/fs/cgroup/memory").join(&relative);
        if Path::new("/sys/fs/cgroup/memory").is_dir() {
            v1
        } else {
            Path::new("/sys/fs/cgroup").join(relative)
        }
    }

    /// Where the kubelet would mount the pod's `emptyDir` volume `name`
    /// (`<root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<name>`), made here; with
    /// `medium: Memory` the kubelet mounts a tmpfs on it.
    pub fn empty_dir(&self, name: &str) -> PathBuf {
        let dir = self
            .containerd
            .dir
            .join("kubelet/pods")
            .join(&self.uid)
            .join("volumes/kubernetes.io~empty-dir")
            .join(name);
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("creating {}: {err}", dir.display()));
        dir
    }

    /// The pod's memory limit, on its cgroup, as the kubelet sets it (the sum of its
    /// containers' limits).
    pub fn set_memory_limit(&self, bytes: u64) {
        let dir = self.memcg_dir();
        let file = if Path::new("/sys/fs/cgroup/memory").is_dir() {
            "memory.limit_in_bytes"
        } else {
            "memory.max"
        };
        fs::write(dir.join(file), bytes.to_string())
            .unwrap_or_else(|err| panic!("setting {}/{file}: {err}", dir.display()));
    }

    /// Creates and starts a container as the kubelet does: its labels, its restart count
    /// (annotation and CRI attempt), its memory limit, and a log path under the pod's log
    /// directory, linked from `<log root>/containers` as the kubelet links it.
    pub fn run(&self, spec: CriContainerSpec) -> CriContainer {
        let CriContainerSpec {
            name,
            spec,
            restart_count,
            oom_group,
            volumes,
        } = spec;
        let labels = HashMap::from([
            ("io.kubernetes.pod.name".to_owned(), self.name.clone()),
            (
                "io.kubernetes.pod.namespace".to_owned(),
                self.namespace.clone(),
            ),
            ("io.kubernetes.pod.uid".to_owned(), self.uid.clone()),
            ("io.kubernetes.container.name".to_owned(), name.clone()),
        ]);
        let annotations = HashMap::from([(
            "io.kubernetes.container.restartCount".to_owned(),
            restart_count.to_string(),
        )]);
        // Released from the host (see [`CriContainer::release`]).
        let release_dir = self
            .containerd
            .dir
            .join(format!("release-{}-{name}", self.uid));
        fs::create_dir_all(&release_dir)
            .unwrap_or_else(|err| panic!("creating {}: {err}", release_dir.display()));
        let mut mounts = vec![cri::Mount {
            container_path: RELEASE_DIR_IN_CONTAINER.to_owned(),
            host_path: release_dir.display().to_string(),
            readonly: true,
            ..Default::default()
        }];
        mounts.extend(volumes.iter().map(|(host, container)| cri::Mount {
            container_path: container.clone(),
            host_path: host.display().to_string(),
            ..Default::default()
        }));
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.clone(),
                attempt: restart_count,
            }),
            image: Some(cri::ImageSpec {
                image: CRI_IMAGE.to_owned(),
                ..Default::default()
            }),
            command: spec.command().to_vec(),
            mounts,
            labels,
            annotations,
            log_path: self
                .log_directory
                .as_ref()
                .map(|_| format!("{name}/{restart_count}.log"))
                .unwrap_or_default(),
            linux: Some(cri::LinuxContainerConfig {
                // As the kubelet does on cgroup v1: no swap limit of its own (the runtime sets
                // memory+swap to the limit).
                resources: Some(cri::LinuxContainerResources {
                    memory_limit_in_bytes: i64::try_from(spec.memory_bytes())
                        .expect("a limit within i64"),
                    // As the kubelet (1.28 and later, cgroup v2) asks: the whole container is
                    // killed when one of its processes is.
                    unified: if oom_group {
                        HashMap::from([("memory.oom.group".to_owned(), "1".to_owned())])
                    } else {
                        HashMap::new()
                    },
                    ..Default::default()
                }),
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(node_network()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        let request = cri::CreateContainerRequest {
            pod_sandbox_id: self.id.clone(),
            config: Some(config),
            sandbox_config: Some(self.config.clone()),
        };
        let id = self
            .containerd
            .call(|mut client| async move { client.create_container(request).await })
            .unwrap_or_else(|err| panic!("CreateContainer {name}: {err}"))
            .container_id;
        let start = cri::StartContainerRequest {
            container_id: id.clone(),
        };
        self.containerd
            .call(|mut client| async move { client.start_container(start).await })
            .unwrap_or_else(|err| panic!("StartContainer {name}: {err}"));
        if let Some(pod_dir) = &self.log_directory {
            // The kubelet's link: <pod>_<namespace>_<container>-<id>.log → the log file.
            let link = self
                .containerd
                .log_root()
                .join("containers")
                .join(format!("{}_{}_{name}-{id}.log", self.name, self.namespace));
            symlink(pod_dir.join(format!("{name}/{restart_count}.log")), &link)
                .unwrap_or_else(|err| panic!("linking {}: {err}", link.display()));
        }
        CriContainer {
            id,
            name,
            release_dir,
        }
    }

    /// Stops and removes the sandbox and its containers now, as the kubelet does when a pod is
    /// deleted; the pod's cgroup and the kubelet's links go too.
    pub fn remove(mut self) {
        remove_sandbox(self.containerd, &self.id);
        self.removed = true;
        if let Some(slice) = self.slice.take() {
            drop(slice);
        }
        remove_pod_cgroups(&self.uid);
        let prefix = format!("{}_{}_", self.name, self.namespace);
        if let Ok(entries) = fs::read_dir(self.containerd.log_root().join("containers")) {
            for entry in entries.filter_map(Result::ok) {
                if entry.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        if !self.removed {
            remove_sandbox(self.containerd, &self.id);
        }
    }
}

/// What [`Pod::run`] starts: a container of the test image (the limit and command of a
/// [`ContainerSpec`]) by its name in the pod, and its restart count.
pub struct CriContainerSpec {
    name: String,
    spec: ContainerSpec,
    restart_count: u32,
    oom_group: bool,
    /// `(host path, container path)` bind mounts, as the kubelet passes a pod's volumes.
    volumes: Vec<(PathBuf, String)>,
}

impl CriContainerSpec {
    pub fn new(name: &str, spec: ContainerSpec) -> Self {
        CriContainerSpec {
            name: name.to_owned(),
            spec,
            restart_count: 0,
            oom_group: false,
            volumes: Vec::new(),
        }
    }

    /// `memory.oom.group` set on the container's cgroup (cgroup v2 only), as the kubelet sets
    /// it.
    pub fn oom_group(mut self) -> Self {
        self.oom_group = true;
        self
    }

    /// A pod's volume at `host_path` mounted at `container_path`, as the kubelet mounts an
    /// `emptyDir` (see [`Pod::empty_dir`]).
    pub fn volume(mut self, host_path: &Path, container_path: &str) -> Self {
        self.volumes
            .push((host_path.to_owned(), container_path.to_owned()));
        self
    }

    /// As the kubelet's restart count (annotation) and the CRI's attempt.
    pub fn restarted(mut self, count: u32) -> Self {
        self.restart_count = count;
        self
    }
}

/// A container [`Pod::run`] started; it goes with its pod.
pub struct CriContainer {
    id: String,
    name: String,
    release_dir: PathBuf,
}

impl CriContainer {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Lets a [`ContainerSpec::held_hog`] allocate.
    pub fn release(&self) {
        release(&self.release_dir, &self.name);
    }

    /// Whether `kill` is of a process in this container (its id is in the victim's cgroup
    /// path).
    pub fn is_victim_of(&self, kill: &OomKillRecord) -> bool {
        crate::is_kill_in_container(kill, &self.id)
    }

    /// The agent's `oom_kill` record for a process of this container.
    pub fn kill_record(&self, agent: &mut Agent) -> OomKillRecord {
        agent
            .wait_for_kill_where(|kill| self.is_victim_of(kill), KILL_TIMEOUT)
            .unwrap_or_else(|| {
                panic!(
                    "no oom_kill record for a process of container {} ({})",
                    self.name, self.id
                )
            })
    }
}

fn remove_sandbox(containerd: &Containerd, id: &str) {
    let stop = cri::StopPodSandboxRequest {
        pod_sandbox_id: id.to_owned(),
    };
    if let Err(err) =
        containerd.call(|mut client| async move { client.stop_pod_sandbox(stop).await })
    {
        eprintln!("containerd: StopPodSandbox {id}: {err}");
    }
    let remove = cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.to_owned(),
    };
    if let Err(err) =
        containerd.call(|mut client| async move { client.remove_pod_sandbox(remove).await })
    {
        eprintln!("containerd: RemovePodSandbox {id}: {err}");
    }
}

/// Pods on the node's network (there is no CNI), each container in its own pid namespace.
fn node_network() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        target_id: String::new(),
    }
}

/// A random UUID in the kubelet's form: pods of concurrent tests never share a cgroup.
fn new_uid() -> String {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut random| std::io::Read::read_exact(&mut random, &mut bytes))
        .unwrap_or_else(|err| panic!("reading /dev/urandom: {err}"));
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Every hierarchy's root: the v1 controllers' and cgroup2's.
fn cgroup_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.is_dir())
                .collect()
        })
        .unwrap_or_default();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    roots
}

/// Whether pods get the systemd driver's layout: systemd runs the host on cgroup v2.
fn systemd_layout() -> bool {
    SystemdSlice::host_has_systemd_on_cgroup2()
}

/// The pod's slice unit, under systemd: the kubelet writes the uid's dashes as underscores.
fn pod_slice(uid: &str) -> String {
    format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_"))
}

/// What the kubelet gives the CRI as the sandbox's cgroup parent.
fn pod_cgroup_parent(uid: &str) -> String {
    if systemd_layout() {
        pod_slice(uid)
    } else {
        format!("/kubepods/burstable/pod{uid}")
    }
}

/// The pod's cgroup below the hierarchy's root.
fn pod_cgroup_relative(uid: &str) -> String {
    if systemd_layout() {
        crate::slice::slice_path(&pod_slice(uid))
            .trim_start_matches('/')
            .to_owned()
    } else {
        format!("kubepods/burstable/pod{uid}")
    }
}

/// Sets the pod's limit before its sandbox starts: a slice unit under systemd (returned, to be
/// stopped with the pod), else the limit file of a pod cgroup made for it.
fn set_pod_limit(uid: &str, limit_bytes: u64) -> Option<SystemdSlice> {
    if systemd_layout() {
        return Some(SystemdSlice::named(&pod_slice(uid), limit_bytes));
    }
    let relative = pod_cgroup_relative(uid);
    let v1 = Path::new("/sys/fs/cgroup/memory");
    let (dir, file) = if v1.is_dir() {
        (v1.join(&relative), "memory.limit_in_bytes")
    } else {
        (Path::new("/sys/fs/cgroup").join(&relative), "memory.max")
    };
    fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("making {}: {err}", dir.display()));
    fs::write(dir.join(file), limit_bytes.to_string())
        .unwrap_or_else(|err| panic!("setting {}/{file}: {err}", dir.display()));
    None
}

/// The pod's cgroup in every hierarchy, as the kubelet removes it once the pod is gone (runc
/// removes only its containers').
fn remove_pod_cgroups(uid: &str) {
    if systemd_layout() {
        let _ = Command::new("systemctl")
            .args(["stop", &pod_slice(uid)])
            .output();
    }
    for root in cgroup_roots() {
        remove_cgroup_tree(&root.join(pod_cgroup_relative(uid)));
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.path().is_dir() {
                remove_cgroup_tree(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// The images' archive, kept under target/ by its content's fingerprint: built once, and again
/// only when busybox or the hog changed.
fn images_archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/oomtrace-cri-images");
        let archive = dir.join(format!("{}.tar", RootfsTarball::fingerprint()));
        if archive.is_file() {
            return archive;
        }
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("creating {}: {err}", dir.display()));
        let rootfs = RootfsTarball::build("cri");
        // Written aside and renamed: a concurrent test process never imports half an archive.
        let partial = dir.join(format!("partial-{}.tar", std::process::id()));
        oci_archive(
            &rootfs,
            &[
                (PAUSE_IMAGE, &["/bin/sleep", "infinity"]),
                (CRI_IMAGE, &["/bin/sh"]),
            ],
            &partial,
        );
        fs::rename(&partial, &archive)
            .unwrap_or_else(|err| panic!("placing {}: {err}", archive.display()));
        archive
    })
}

/// Panics, saying how to get them, unless containerd and ctr are installed.
fn require_containerd() {
    for program in ["containerd", "ctr", "runc"] {
        let found = command_output(Command::new(program).arg("--version"));
        assert!(
            found.status.success(),
            "{program} is not installed: run `cargo xtask setup` (Debian's containerd and runc)"
        );
    }
}

/// containerd's configuration: everything under `dir`, the CRI plugin on, nothing pulled.
fn config(dir: &Path) -> String {
    let dir = dir.display();
    format!(
        r#"version = 2
root = "{dir}/root"
state = "{dir}/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{dir}/containerd.sock"

[ttrpc]
  address = "{dir}/containerd.sock.ttrpc"

[debug]
  address = "{dir}/containerd-debug.sock"
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{dir}/opt"

  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    disable_tcp_service = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true
    # No CAP_SYS_RESOURCE on some hosts: the sandbox's default oom_score_adj of -998 fails.
    restrict_oom_score_adj = true
    systemd_cgroup = false

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "{dir}/cni"
      max_conf_num = 1

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = {systemd}
          Root = "{dir}/runc"
"#,
        systemd = systemd_layout(),
    )
}
