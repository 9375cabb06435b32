//! The real Docker Engine for the container tests: Debian's `dockerd`, started by the test,
//! the test image imported from a tarball, and throw-away containers driven through Debian's
//! `docker` command line, as an operator would.
//!
//! Each [`Dockerd`] is a daemon of the test's own: its socket, data root, exec root (where its
//! managed containerd lives) and containerd namespace are under a temporary directory, so it
//! coexists with a Docker Engine the machine already runs, and with other test processes' daemons,
//! and stopping it stops nothing it did not start. Its containers land where any cgroupfs
//! Docker host puts them (`/docker/<id>`, or `<cgroup_parent>/<id>`), and its state is on disk
//! in Docker's own layout (`<data root>/containers/<id>/config.v2.json`), which the agent can
//! be pointed at with `--runtime-state`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oomtrace::record::OomKillRecord;

use crate::container_cli::ContainerCli;
use crate::container_spec::{ContainerSpec, release};
use crate::daemon::Daemon;
use crate::image::RootfsTarball;
use crate::{Agent, command_output, ping, run_checked};

/// The test image, as the podman tests name it.
pub use crate::podman::IMAGE;

const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(60);
/// dockerd stops its containers first (`--shutdown-timeout`), then its containerd.
const DAEMON_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// docker commands take tens of milliseconds each: poll less often than the other helpers.
const DOCKER_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Debian's client, which matches its daemon; a machine may have another `docker` first on PATH.
const DEBIAN_CLIENT: &str = "/usr/bin/docker";

/// A `dockerd` of the test's own, running, with the test image imported.
pub struct Dockerd {
    dir: PathBuf,
    socket: PathBuf,
    socket_arg: String,
    daemon: Option<Daemon>,
    /// The cgroup directories `/docker` that this daemon's first container made: removed on
    /// drop once empty. Ones that existed before are left alone.
    made_cgroup_parents: Vec<PathBuf>,
}

impl Dockerd {
    /// Starts a daemon and imports the test image; returns once both are done.
    pub fn start() -> Self {
        require_docker();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Short: containerd's sockets live under the exec root, and a socket's path is limited
        // to 107 bytes.
        let dir = PathBuf::from(format!(
            "/tmp/oomtrace-test-docker-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("creating {}: {err}", dir.display()));
        let socket = dir.join("docker.sock");
        let socket_arg = socket
            .to_str()
            .expect("the temporary directory's path is UTF-8")
            .to_owned();
        let made_cgroup_parents = docker_cgroup_parents()
            .into_iter()
            .filter(|dir| !dir.exists())
            .collect();
        // From here on Drop cleans up, also if the daemon does not come up.
        let mut docker = Self {
            dir,
            socket,
            socket_arg,
            daemon: None,
            made_cgroup_parents,
        };
        docker.start_daemon();
        let tarball = RootfsTarball::build("docker");
        run_checked(
            docker
                .command()
                .args(["import", "--change", "CMD [\"/bin/sh\"]"])
                .arg(tarball.path())
                .arg(IMAGE),
        );
        docker
    }

    /// The daemon's API socket, for the agent's `--runtime-socket`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `unix://<socket>`, for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket_arg)
    }

    /// The daemon's data root: `containers/<id>/config.v2.json` is there, as under
    /// `/var/lib/docker` on a host.
    pub fn data_root(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The agent's arguments to use this daemon's API only.
    pub fn agent_args(&self) -> [&str; 2] {
        ["--runtime-socket", &self.socket_arg]
    }

    /// Starts the agent on this daemon only, and returns once it follows the daemon's events:
    /// from then on it knows every container before the container can be OOM-killed.
    pub fn start_agent(&self) -> Agent {
        self.start_agent_with(&[])
    }

    /// As [`start_agent`](Self::start_agent), with more arguments for `oomtrace run`.
    pub fn start_agent_with(&self, extra_args: &[&str]) -> Agent {
        let mut args = self.agent_args().to_vec();
        args.extend_from_slice(extra_args);
        let agent = Agent::start_with(&args);
        agent.wait_for_log("following its events", Duration::from_secs(30));
        agent
    }

    /// A new directory `name` of the test's own, removed with the daemon: for bind mounts and
    /// Compose files.
    pub fn scratch_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.join("scratch").join(name);
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("creating {}: {err}", dir.display()));
        dir
    }

    /// `docker` with this daemon's socket.
    pub fn command(&self) -> Command {
        let client = if Path::new(DEBIAN_CLIENT).exists() {
            DEBIAN_CLIENT
        } else {
            "docker"
        };
        let mut command = Command::new(client);
        command.arg("--host").arg(self.host());
        command
    }

    /// The daemon's cgroup driver, as `docker info` says: `cgroupfs`, or `systemd` (Docker's
    /// default on cgroup v2 under systemd), where `cgroup_parent` must name a slice and each
    /// container is a scope, `docker-<id>.scope`.
    pub fn cgroup_driver(&self) -> String {
        let output = command_output(
            self.command()
                .args(["info", "--format", "{{.CgroupDriver}}"]),
        );
        assert!(
            output.status.success(),
            "docker info failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Stops the daemon and starts it again with the same state, as a package upgrade or a
    /// crash and restart would; returns once the new one answers. Its running containers stop
    /// with it (no `--live-restore`), as on most hosts.
    pub fn restart(&mut self) {
        self.stop_daemon();
        assert!(
            ping(&self.socket).is_err(),
            "dockerd still answers on {} after it was stopped",
            self.socket.display()
        );
        self.start_daemon();
    }

    /// Starts a container (`docker run -d`) and returns once Docker has started it.
    pub fn run(&self, spec: ContainerSpec) -> DockerContainer<'_> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "oomtrace-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let release_dir = self.dir.join("release").join(&name);
        let since = unix_seconds() - 1;
        let mut command = self.command();
        command
            .args(["run", "--detach", "--name", &name])
            .args(spec.run_args(&release_dir, IMAGE));
        let output = command_output(&mut command);
        if !output.status.success() {
            panic!(
                "{command:?} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let id = stdout.lines().last().unwrap_or_default().trim().to_owned();
        assert!(
            is_container_id(&id),
            "`docker run -d` should print the container's id, it printed {stdout:?}"
        );
        DockerContainer {
            docker: self,
            name,
            id,
            since,
            release_dir: Some(release_dir),
            owned: true,
        }
    }

    /// A container this daemon runs that the test did not start itself (a Compose service's):
    /// not removed on drop.
    pub fn existing(&self, id: &str, since: u64) -> DockerContainer<'_> {
        let mut container = DockerContainer {
            docker: self,
            name: String::new(),
            id: id.to_owned(),
            since,
            release_dir: None,
            owned: false,
        };
        container.name = container
            .cli()
            .expect_inspect("{{.Name}}")
            .trim_start_matches('/')
            .to_owned();
        container
    }

    fn start_daemon(&mut self) {
        let namespace = format!(
            "oomtrace-test-{}",
            self.dir
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or_default()
                .trim_start_matches("oomtrace-test-docker-")
        );
        let mut command = Command::new("dockerd");
        command
            // No bridge and no firewall rules: the containers run with `--network none`, and the
            // host's network stays as it was.
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .arg("--host")
            .arg(self.host())
            .arg("--data-root")
            .arg(self.data_root())
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("dockerd.pid"))
            // A containerd already running at /run/containerd would be shared: a namespace of
            // our own keeps its containers and ours apart.
            .arg("--containerd-namespace")
            .arg(&namespace)
            .arg("--containerd-plugins-namespace")
            .arg(format!("{namespace}-plugins"))
            .args(["--shutdown-timeout", "2"])
            .current_dir(&self.dir);
        let daemon = self.daemon.insert(Daemon::spawn(
            "dockerd",
            command,
            self.dir.join("dockerd.log"),
        ));
        daemon.wait_answering(&self.socket, DAEMON_START_TIMEOUT, DOCKER_POLL_INTERVAL);
    }

    /// SIGTERM, which makes dockerd stop its containers and its containerd and exit; SIGKILL if
    /// it does not.
    fn stop_daemon(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            daemon.stop(DAEMON_STOP_TIMEOUT);
        }
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        self.daemon.as_ref().map_or_else(String::new, Daemon::log)
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop_daemon();
        // dockerd unmounts what it mounted as it stops; whatever a killed one left mounted
        // under its directory goes now, or removing the directory would fail on it.
        unmount_under(&self.dir);
        if let Err(err) = fs::remove_dir_all(&self.dir) {
            eprintln!("docker: removing {}: {err}", self.dir.display());
        }
        for dir in &self.made_cgroup_parents {
            // Busy when another daemon's containers still use it: theirs to remove.
            let _ = fs::remove_dir(dir);
        }
    }
}

/// A container of a [`Dockerd`]: one the test ran (removed with `docker rm -f` on drop), or a
/// Compose service's.
pub struct DockerContainer<'d> {
    docker: &'d Dockerd,
    name: String,
    id: String,
    /// A second before `docker run`, in seconds since the epoch: its events are younger.
    since: u64,
    /// The host side of its release directory (see [`DockerContainer::release`]).
    release_dir: Option<PathBuf>,
    owned: bool,
}

impl DockerContainer<'_> {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full id, 64 hex digits.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether `kill` is of a process in this container: the kernel's cgroup paths of its
    /// processes end in its id (`/docker/<id>`, `<cgroup_parent>/<id>`).
    pub fn is_victim_of(&self, kill: &OomKillRecord) -> bool {
        crate::is_kill_in_container(kill, &self.id)
    }

    /// The agent's `oom_kill` record for a process of this container, within 30 s; panics with
    /// what the container printed otherwise.
    pub fn kill_record(&self, agent: &mut Agent) -> OomKillRecord {
        self.cli().kill_record(agent)
    }

    /// Lets a [`ContainerSpec::held_hog`] allocate.
    pub fn release(&self) {
        let dir = self.release_dir.as_deref().unwrap_or_else(|| {
            panic!(
                "container {} was not started with a release directory",
                self.name
            )
        });
        release(dir, &self.name);
    }

    /// The exit codes of the container's main process, oldest first, from Docker's `die`
    /// events: unlike `docker wait` or `inspect`, that works for a `--rm` container already
    /// removed, and keeps every exit of a restarted one. 137 is 128 + SIGKILL.
    pub fn exit_codes(&self) -> Vec<i32> {
        self.events("die", "{{index .Actor.Attributes \"exitCode\"}}")
            .iter()
            .map(|code| {
                code.parse()
                    .unwrap_or_else(|err| panic!("Docker's exit code {code:?}: {err}"))
            })
            .collect()
    }

    /// The first exit code (see [`exit_codes`](Self::exit_codes)); panics after `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(&code) = self.exit_codes().first() {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "container {} did not exit within {timeout:?}; its output:\n{}",
                self.name,
                self.logs()
            );
            thread::sleep(DOCKER_POLL_INTERVAL);
        }
    }

    /// How many `oom` events Docker sent for the container: one for each OOM notification of
    /// its memory cgroup, whichever process was killed (or none of its own: a parent cgroup's
    /// OOM notifies the cgroups below it too).
    pub fn oom_events(&self) -> usize {
        self.events("oom", "{{.Action}}").len()
    }

    /// Docker's own `State.OOMKilled`: whether Docker believes the OOM killer ended the
    /// container. Panics if the container is gone.
    pub fn inspect_oom_killed(&self) -> bool {
        self.cli().oom_killed()
    }

    /// Docker's `RestartCount`: how often its restart policy restarted the container.
    pub fn restart_count(&self) -> u64 {
        let count = self.cli().expect_inspect("{{.RestartCount}}");
        count
            .parse()
            .unwrap_or_else(|err| panic!("`RestartCount` of {} is {count:?}: {err}", self.name))
    }

    /// The host pid of the container's main process (its PID 1); panics unless it runs.
    pub fn main_pid(&self) -> u32 {
        self.cli().main_pid()
    }

    /// The cgroup directories of the container's main process: its v1 memory cgroup and its
    /// cgroup2 cgroup, as far as the host has them. Panics unless the container runs.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        crate::cgroup_dirs_of(self.main_pid())
    }

    /// Whether the container runs; false if it is gone too.
    pub fn is_running(&self) -> bool {
        self.cli().is_running()
    }

    /// Waits until Docker no longer knows the container (a `--rm` one, after it exited);
    /// panics after `timeout`.
    pub fn wait_removed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.cli().inspect("{{.Id}}").is_some() {
            assert!(
                Instant::now() < deadline,
                "container {} still exists {timeout:?} later",
                self.name
            );
            thread::sleep(DOCKER_POLL_INTERVAL);
        }
    }

    /// What the container printed so far, stdout and stderr (`docker logs`), every run of it.
    pub fn logs(&self) -> String {
        self.cli().logs()
    }

    /// Waits until the container printed `needle` `times` times in all (over its restarts);
    /// panics after `timeout`.
    pub fn wait_for_output(&self, needle: &str, times: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if logs.matches(needle).count() >= times {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "container {} did not print {needle:?} {times} times within {timeout:?}; it \
                 printed:\n{logs}",
                self.name
            );
            thread::sleep(DOCKER_POLL_INTERVAL);
        }
    }

    /// `docker events` of this container with `action` since it was started, up to now, each
    /// formatted with the Go template `format`.
    fn events(&self, action: &str, format: &str) -> Vec<String> {
        let mut command = self.docker.command();
        command.args([
            "events",
            "--since",
            &self.since.to_string(),
            "--until",
            &unix_seconds().saturating_add(1).to_string(),
            "--filter",
            &format!("container={}", self.id),
            "--filter",
            &format!("event={action}"),
            "--format",
            format,
        ]);
        let output = command_output(&mut command);
        assert!(
            output.status.success(),
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| line.trim().to_owned())
            .filter(|line| !line.is_empty())
            .collect()
    }

    fn cli(&self) -> ContainerCli<'_> {
        ContainerCli {
            cli: self.docker.command(),
            id: &self.id,
            name: &self.name,
        }
    }
}

impl Drop for DockerContainer<'_> {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        // Also for a `--rm` container, in case it still runs; one Docker removed already is
        // "No such container", which is fine.
        let result = self
            .docker
            .command()
            .args(["rm", "--force", &self.id])
            .stdin(Stdio::null())
            .output();
        match result {
            Ok(output)
                if output.status.success()
                    || String::from_utf8_lossy(&output.stderr).contains("No such container") => {}
            Ok(output) => eprintln!(
                "docker: removing container {} failed ({}): {}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(err) => eprintln!("docker: removing container {}: {err}", self.name),
        }
    }
}

/// Panics, saying how to get them, unless `dockerd` and the `docker` client are installed.
fn require_docker() {
    for program in ["dockerd", "docker"] {
        match Command::new(program).arg("--version").output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => panic!(
                "`{program} --version` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                panic!("{program} is not installed: run `cargo xtask setup` (Debian's docker.io)")
            }
            Err(err) => panic!("running `{program} --version`: {err}"),
        }
    }
}

/// Where a cgroupfs Docker puts its containers by default: `docker` in each v1 hierarchy and in
/// the cgroup2 one.
fn docker_cgroup_parents() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut parents = Vec::new();
    if root.join("cgroup.controllers").exists() {
        parents.push(root.join("docker"));
    }
    for entry in fs::read_dir(root).into_iter().flatten().flatten() {
        let hierarchy = entry.path();
        if hierarchy.join("cgroup.procs").exists() {
            parents.push(hierarchy.join("docker"));
        }
    }
    parents
}

/// Lazily unmounts every mount point under `dir`, deepest first.
fn unmount_under(dir: &Path) {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<&str> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| Path::new(point).starts_with(dir))
        .collect();
    points.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in points {
        let _ = Command::new("umount").args(["--lazy", point]).output();
    }
}

fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

pub(crate) fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}
