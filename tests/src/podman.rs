//! A real container runtime for the container attribution tests: podman, its Docker-compatible
//! API served on a private socket, a test image with the hog, and throw-away containers.
//!
//! Everything goes through the `podman` command line, as an operator would, except the API's
//! readiness check. The image is built from a tarball (`podman import`): no registry is needed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use oomtrace::record::OomKillRecord;

use crate::container_cli::ContainerCli;
use crate::container_spec::{ContainerSpec, release};
use crate::daemon::Daemon;
use crate::image::RootfsTarball;
use crate::{Agent, command_output, ping, run_checked};

/// The test image: busybox and the static hog.
pub const IMAGE: &str = "localhost/oomtrace-hog:latest";
/// The image label holding a fingerprint of its content, to rebuild it only when that changed.
const FINGERPRINT_LABEL: &str = "oomtrace.rootfs";

const SERVICE_START_TIMEOUT: Duration = Duration::from_secs(30);
const SERVICE_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// podman commands take tens of milliseconds each: poll less often than the other helpers.
const PODMAN_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// `podman system service` on a socket of its own, and the test image, ready.
///
/// The socket is private (under a temporary directory), not the default
/// `/run/podman/podman.sock`: a service the machine's user runs there stays untouched, and the
/// agent under test reaches only this one. Dropping it stops the service; containers live on
/// independently of it (their monitor is conmon), each one removed by its own [`Container`].
pub struct Podman {
    dir: PathBuf,
    socket: PathBuf,
    socket_arg: String,
    service: Option<Daemon>,
}

impl Podman {
    /// Checks podman is there, adjusts the host for it, builds the test image if it is not
    /// current and starts the service; returns once the service answers.
    pub fn start() -> Self {
        require_podman();
        prepare_cgroups();
        ensure_image();

        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "oomtrace-test-podman-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("creating {}: {err}", dir.display()));
        let socket = dir.join("podman.sock");
        let socket_arg = socket
            .to_str()
            .expect("the temporary directory's path is UTF-8")
            .to_owned();
        // From here on Drop cleans up, also if the service does not come up.
        let mut podman = Self {
            dir,
            socket,
            socket_arg,
            service: None,
        };
        podman.start_service();
        podman
    }

    /// The service's socket, for the agent's `--runtime-socket`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Starts the agent on this service only, and returns once it follows the service's events:
    /// from then on it knows every container before the container can be OOM-killed, as an
    /// agent that has been running for a while does. (Connecting takes podman about a second.)
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

    /// `["--runtime-socket", <socket>]`: the agent's arguments to use this service only.
    pub fn agent_args(&self) -> [&str; 2] {
        ["--runtime-socket", &self.socket_arg]
    }

    /// Stops the service and starts it again on the same socket, as a package upgrade or a
    /// crash and restart would; returns once the new one answers. Running containers are
    /// unaffected: their monitor is conmon, not the service.
    pub fn restart_service(&mut self) {
        self.stop_service();
        assert!(
            ping(&self.socket).is_err(),
            "the podman service still answers on {} after it was stopped",
            self.socket.display()
        );
        self.start_service();
    }

    /// Starts a container (`podman run -d`) and returns once podman has started it.
    pub fn run(&self, spec: ContainerSpec) -> Container {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "oomtrace-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut command = Command::new("podman");
        command.args(["run", "--detach", "--name", &name]);
        command.args(ulimit_args());
        let release_dir = self.dir.join("release").join(&name);
        command.args(spec.run_args(&release_dir, IMAGE));

        // conmon, which `podman run` leaves to watch the container, records an OOM kill by
        // creating a file `oom` in its working directory, inherited from here; podman 4.3 looks
        // for it in the container's bundle directory instead, so never sets `State.OOMKilled`.
        // A directory per container keeps those files out of the test's working directory (the
        // source tree) and says what conmon saw.
        let conmon_dir = self.dir.join("conmon").join(&name);
        fs::create_dir_all(&conmon_dir)
            .unwrap_or_else(|err| panic!("creating {}: {err}", conmon_dir.display()));
        command.current_dir(&conmon_dir);

        let started = Instant::now();
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
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "`podman run -d` should print the container's id, it printed {stdout:?}"
        );
        Container {
            name,
            id,
            started,
            conmon_dir,
            release_dir,
        }
    }

    fn start_service(&mut self) {
        // A socket file left by a killed service would make the new one's listen fail.
        let _ = fs::remove_file(&self.socket);
        let mut command = Command::new("podman");
        command
            .args(["system", "service", "--time=0"])
            // Like `podman run` (see there), containers started through the API would leave
            // conmon's `oom` files in the service's working directory: not in the source tree.
            .current_dir(&self.dir)
            .arg(format!("unix://{}", self.socket_arg));
        let service = self.service.insert(Daemon::spawn(
            "`podman system service`",
            command,
            self.dir.join("service.log"),
        ));
        service.wait_answering(&self.socket, SERVICE_START_TIMEOUT, PODMAN_POLL_INTERVAL);
    }

    /// SIGTERM, which makes the service close its socket and exit; SIGKILL if it does not.
    fn stop_service(&mut self) {
        if let Some(mut service) = self.service.take() {
            service.stop(SERVICE_STOP_TIMEOUT);
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.stop_service();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A container [`Podman::run`] started; removed (`podman rm -f`) on drop.
pub struct Container {
    name: String,
    id: String,
    /// Just before `podman run`: its events are younger.
    started: Instant,
    /// conmon's working directory (see [`Container::conmon_saw_oom`]).
    conmon_dir: PathBuf,
    /// The host side of its release directory (see [`Container::release`]).
    release_dir: PathBuf,
}

impl Container {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The full id, 64 hex digits.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The agent's `oom_kill` record for a process of this container, within 30 s; panics with
    /// what the container printed otherwise.
    pub fn kill_record(&self, agent: &mut Agent) -> OomKillRecord {
        self.cli().kill_record(agent)
    }

    /// Whether `kill` is of a process in this container (its id is in the victim's cgroup
    /// path).
    pub fn is_victim_of(&self, kill: &OomKillRecord) -> bool {
        crate::is_kill_in_container(kill, &self.id)
    }

    /// Lets a [`ContainerSpec::held_hog`] allocate.
    pub fn release(&self) {
        release(&self.release_dir, &self.name);
    }

    /// The exit code of the container's main process, the first time it exited, from podman's
    /// `died` event: unlike `podman wait` or `inspect`, that works for a `--rm` container already
    /// removed, and is not overwritten by a restart. 137 is 128 + SIGKILL. Panics after `timeout`.
    pub fn wait_exit(&self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.first_exit_code() {
                return code;
            }
            if Instant::now() >= deadline {
                panic!(
                    "container {} did not exit within {timeout:?}; its output:\n{}",
                    self.name,
                    self.logs()
                );
            }
            thread::sleep(PODMAN_POLL_INTERVAL);
        }
    }

    /// podman's own `State.OOMKilled`: whether podman believes the OOM killer ended the
    /// container. Panics if the container is gone.
    pub fn inspect_oom_killed(&self) -> bool {
        self.cli().oom_killed()
    }

    /// Whether conmon, podman's container monitor, noticed an OOM kill in the container's
    /// cgroup: it then creates `oom` in its working directory. That is the signal podman 4.3
    /// misses (see [`Podman::run`]), so this can be true while `State.OOMKilled` is false.
    pub fn conmon_saw_oom(&self) -> bool {
        self.conmon_dir.join("oom").exists()
    }

    /// The host pid of the container's main process (its PID 1); panics unless it runs.
    pub fn main_pid(&self) -> u32 {
        self.cli().main_pid()
    }

    /// Whether the container runs; false if it is gone too.
    pub fn is_running(&self) -> bool {
        self.cli().is_running()
    }

    /// Whether podman still knows the container.
    pub fn exists(&self) -> bool {
        let output = command_output(Command::new("podman").args(["container", "exists", &self.id]));
        match output.status.code() {
            Some(0) => true,
            Some(1) => false,
            _ => panic!(
                "`podman container exists {}` failed ({}): {}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        }
    }

    /// Waits until podman no longer knows the container (a `--rm` one, after it exited);
    /// panics after `timeout`.
    pub fn wait_removed(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.exists() {
            assert!(
                Instant::now() < deadline,
                "container {} still exists {timeout:?} later",
                self.name
            );
            thread::sleep(PODMAN_POLL_INTERVAL);
        }
    }

    /// The cgroup directories of the container's main process: its v1 memory cgroup and its
    /// cgroup2 cgroup, as far as the host has them. Panics unless the container runs.
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        crate::cgroup_dirs_of(self.main_pid())
    }

    /// What the container printed so far, stdout and stderr (`podman logs`).
    pub fn logs(&self) -> String {
        self.cli().logs()
    }

    /// Waits until the container printed `needle`; panics after `timeout`.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "container {} did not print {needle:?} within {timeout:?}; it printed:\n{logs}",
                self.name
            );
            thread::sleep(PODMAN_POLL_INTERVAL);
        }
    }

    fn first_exit_code(&self) -> Option<i32> {
        // podman's event log covers the whole machine's history: read only this container's
        // lifetime, with a minute to spare for clock steps.
        let since = format!("{}s", self.started.elapsed().as_secs() + 60);
        let mut command = Command::new("podman");
        command.args([
            "events",
            "--stream=false",
            "--since",
            &since,
            "--filter",
            &format!("container={}", self.id),
            "--filter",
            "event=died",
            "--format",
            "{{.ContainerExitCode}}",
        ]);
        let output = command_output(&mut command);
        assert!(
            output.status.success(),
            "{command:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        let stdout = String::from_utf8_lossy(&output.stdout);
        let first = stdout.lines().next()?.trim();
        Some(
            first
                .parse()
                .unwrap_or_else(|err| panic!("podman's exit code {first:?}: {err}")),
        )
    }

    fn cli(&self) -> ContainerCli<'_> {
        ContainerCli {
            cli: Command::new("podman"),
            id: &self.id,
            name: &self.name,
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Also for a `--rm` container, in case it still runs: `--ignore` makes one that podman
        // removed already a success.
        let result = Command::new("podman")
            .args(["rm", "--force", "--ignore", "--time", "0", &self.id])
            .stdin(Stdio::null())
            .output();
        match result {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "podman: removing container {} failed ({}): {}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(err) => eprintln!("podman: removing container {}: {err}", self.name),
        }
    }
}

/// Panics, saying how to get podman, unless it runs.
fn require_podman() {
    match Command::new("podman").arg("--version").output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "`podman --version` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            panic!("podman is not installed: run `cargo xtask setup`")
        }
        Err(err) => panic!("running `podman --version`: {err}"),
    }
}

/// crun (1.8) refuses to run containers on a hybrid cgroup host while the cgroup2 hierarchy
/// holds any controller ("cgroups in hybrid mode not supported, drop all controllers from
/// cgroupv2"), and this machine kind boots with hugetlb there. Binding each such controller to
/// a v1 hierarchy of its own, as on any v1 host, drops it from cgroup2. Idempotent: a
/// controller once mounted is no longer listed. Nothing to do on v1 or pure v2 hosts.
fn prepare_cgroups() {
    let root = Path::new("/sys/fs/cgroup");
    let Ok(controllers) = fs::read_to_string(root.join("unified/cgroup.controllers")) else {
        return;
    };
    for controller in controllers.split_whitespace() {
        let dir = root.join(controller);
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("creating {}: {err}", dir.display()));
        let cstring = |text: &str| std::ffi::CString::new(text).expect("no NUL in mount arguments");
        let (source, target, fstype, data) = (
            cstring("cgroup"),
            cstring(dir.to_str().expect("cgroup paths are UTF-8")),
            cstring("cgroup"),
            cstring(controller),
        );
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let mounted = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                data.as_ptr().cast(),
            )
        };
        if mounted != 0 {
            let err = io::Error::last_os_error();
            // Another test process may have mounted it in the meantime.
            let still_v2 = fs::read_to_string(root.join("unified/cgroup.controllers"))
                .is_ok_and(|now| now.split_whitespace().any(|c| c == controller));
            assert!(
                !still_v2,
                "podman's crun needs the cgroup2 hierarchy without controllers on this hybrid \
                 host, but mounting the v1 {controller} controller at {} failed: {err} (EBUSY: \
                 a cgroup2 cgroup uses it)",
                dir.display()
            );
        }
    }
}

/// podman asks crun for RLIMIT_NOFILE and RLIMIT_NPROC of 1048576, which needs raising the hard
/// limits, and this machine kind withholds CAP_SYS_RESOURCE even from root: crun fails with
/// "setrlimit `RLIMIT_NOFILE`: Operation not permitted". Ask for modest limits instead, within
/// this process's hard limits, which are always permitted.
pub(crate) fn ulimit_args() -> Vec<String> {
    [
        ("nofile", libc::RLIMIT_NOFILE, 1024),
        ("nproc", libc::RLIMIT_NPROC, 4096),
    ]
    .into_iter()
    .map(|(name, resource, wanted)| {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only the struct it is given.
        let value = match unsafe { libc::getrlimit(resource, &mut limit) } {
            0 => wanted.min(limit.rlim_max),
            _ => wanted,
        };
        format!("--ulimit={name}={value}:{value}")
    })
    .collect()
}

/// Imports [`IMAGE`] (see [`RootfsTarball`]) unless it is current. The image's label holds a
/// fingerprint of its content: a rebuilt hog gets a new image, and the old one is removed.
fn ensure_image() {
    // One test process builds it once; the others in it wait.
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|poison| poison.into_inner());
    if *built {
        return;
    }
    let fingerprint = RootfsTarball::fingerprint();
    let current = command_output(Command::new("podman").args([
        "image",
        "inspect",
        "--format",
        &format!("{{{{.Id}}}} {{{{index .Config.Labels \"{FINGERPRINT_LABEL}\"}}}}"),
        IMAGE,
    ]));
    let current = String::from_utf8_lossy(&current.stdout).trim().to_owned();
    let old_id = match current.split_once(' ') {
        Some((_, label)) if label == fingerprint => {
            *built = true;
            return;
        }
        Some((id, _)) => Some(id.to_owned()),
        None => None,
    };

    let tarball = RootfsTarball::build("podman");
    let mut import = Command::new("podman");
    import
        .args(["import", "--quiet"])
        .arg("--change=CMD=[\"/bin/sh\"]")
        .arg(format!("--change=LABEL={FINGERPRINT_LABEL}={fingerprint}"))
        .arg(tarball.path())
        .arg(IMAGE);
    run_checked(&mut import);
    if let Some(old_id) = old_id {
        // Untagged now; a leftover container may still use it, which is fine too.
        let _ = command_output(Command::new("podman").args(["rmi", &old_id]));
    }
    *built = true;
}
