//! Kill-to-output latency with container attribution on and its cache warm: a podman service on
//! a private socket, a container that exists before the agent starts (so the agent lists it at
//! startup), and kills of a hog inside it, one after another, at its `--memory` limit.
//!
//! Only the `podman` command line is used, as an operator would; the image is imported from a
//! tarball of Debian's static busybox and the static hog (no registry is reachable).

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use super::{
    json_kind,
    sys::{self, send_signal},
    watched::{Line, Stream, Watched},
};

const IMAGE: &str = "localhost/oomtrace-bench-hog:latest";
const BUSYBOX: &str = "/bin/busybox";
/// The container's limit: small, so that a kill takes a few milliseconds of allocation.
const LIMIT: &str = "16m";
const SERVICE_START_TIMEOUT: Duration = Duration::from_secs(30);
/// The agent lists the runtime's containers at startup; under load that may take a while.
const KNOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// No new kill for this long: the container's loop is stuck.
const KILL_GAP_TIMEOUT: Duration = Duration::from_secs(10);
/// From `done` to the loop's last kill being over.
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the agent may take to report the kills that happened while the loop ended.
const LAST_LINES_TIMEOUT: Duration = Duration::from_secs(5);

/// `podman system service` on a socket of its own, and the bench image.
pub struct Podman {
    dir: PathBuf,
    socket: PathBuf,
    service: Child,
}

impl Podman {
    pub fn start(static_hog: &Path) -> anyhow::Result<Self> {
        Command::new("podman")
            .arg("--version")
            .output()
            .context("podman is not installed (`cargo xtask setup` installs it)")?;
        prepare_cgroups()?;
        let dir =
            std::env::temp_dir().join(format!("oomtrace-bench-podman-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        build_image(&dir, static_hog)?;
        let socket = dir.join("podman.sock");
        let log = fs::File::create(dir.join("service.log"))?;
        let service = Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting `podman system service`")?;
        let podman = Self {
            dir,
            socket,
            service,
        };
        let deadline = Instant::now() + SERVICE_START_TIMEOUT;
        while !podman.socket.exists() {
            ensure!(
                Instant::now() < deadline,
                "`podman system service` made no socket within {SERVICE_START_TIMEOUT:?}"
            );
            sys::sleep(Duration::from_millis(100))?;
        }
        Ok(podman)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A container whose shell waits for `go` in a directory shared with the host, then runs
    /// the hog at the container's limit, over and over, until `done` appears there.
    ///
    /// The loop runs in a subshell with `oom_score_adj` 1000, which the hogs inherit. Once in a
    /// while the shell allocates (forks the next hog) while its killed predecessor's memory is
    /// still charged, and the OOM killer, finding that victim already reaped, picks a shell:
    /// then it takes the loop's subshell, which PID 1 starts again, rather than PID 1 itself,
    /// which would end the container.
    pub fn container(&self, label: &str) -> anyhow::Result<Container> {
        let name = format!("oomtrace-bench-{}-{label}", std::process::id());
        let shared = self.dir.join(&name);
        fs::create_dir_all(&shared).with_context(|| format!("creating {}", shared.display()))?;
        let script = "while [ ! -e /bench/go ]; do sleep 0.05; done; \
             while [ ! -e /bench/done ]; do \
               ( echo 1000 > /proc/self/oom_score_adj; \
                 while [ ! -e /bench/done ]; do oomtrace-hog --no-wait --max-mib 256; done ); \
             done; \
             touch /bench/finished; exec sleep 3600";
        let output = Command::new("podman")
            .args(["run", "--detach", "--name", &name, "--memory", LIMIT])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=4096:4096",
            ])
            .args(["--network", "none", "--volume"])
            .arg(format!("{}:/bench", shared.display()))
            .args([IMAGE, "sh", "-c", script])
            // conmon leaves an `oom` file in its working directory.
            .current_dir(&shared)
            .output()
            .context("podman run")?;
        ensure!(
            output.status.success(),
            "podman run failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        let id = String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned();
        ensure!(
            id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "`podman run -d` printed no container id: {id:?}"
        );
        let output = Command::new("podman")
            .args(["inspect", "--format", "{{.State.CgroupPath}}", &id])
            .output()
            .context("podman inspect")?;
        let cgroup_path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        Ok(Container {
            name,
            id,
            shared,
            cgroup_path,
        })
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        send_signal(self.service.id(), libc::SIGTERM);
        let _ = self.service.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub struct Container {
    name: String,
    id: String,
    shared: PathBuf,
    /// Its cgroup, relative to a hierarchy's root (`State.CgroupPath`).
    cgroup_path: String,
}

impl Container {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Lets the container's loop of kills begin.
    pub fn go(&self) -> anyhow::Result<()> {
        let go = self.shared.join("go");
        fs::write(&go, "").with_context(|| format!("writing {}", go.display()))
    }

    /// Ends the loop of kills and waits until it has ended: no kill follows.
    pub fn finish(&self) -> anyhow::Result<()> {
        let done = self.shared.join("done");
        fs::write(&done, "").with_context(|| format!("writing {}", done.display()))?;
        let finished = self.shared.join("finished");
        let deadline = Instant::now() + FINISH_TIMEOUT;
        while !finished.exists() {
            ensure!(
                Instant::now() < deadline,
                "container {}: its loop of kills did not end within {FINISH_TIMEOUT:?}",
                self.name
            );
            sys::sleep(Duration::from_millis(20))?;
        }
        Ok(())
    }

    /// The kernel's count of OOM kills in the container's memory cgroup: `oom_kill` in
    /// `memory.oom_control` (v1) or `memory.events` (v2).
    pub fn oom_kills(&self) -> anyhow::Result<u64> {
        let candidates = [
            Path::new("/sys/fs/cgroup/memory")
                .join(self.cgroup_path.trim_start_matches('/'))
                .join("memory.oom_control"),
            Path::new("/sys/fs/cgroup")
                .join(self.cgroup_path.trim_start_matches('/'))
                .join("memory.events"),
        ];
        for file in &candidates {
            if let Ok(text) = fs::read_to_string(file)
                && let Some(count) = text
                    .lines()
                    .find_map(|line| line.strip_prefix("oom_kill "))
                    .and_then(|count| count.trim().parse().ok())
            {
                return Ok(count);
            }
        }
        bail!(
            "container {}: no `oom_kill` count in {} or {}",
            self.name,
            candidates[0].display(),
            candidates[1].display()
        )
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "0", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// One run's kills in a container, as the agent wrote them.
pub struct WarmRun {
    /// Kills the run asked for; the loop ends once the agent has reported that many.
    pub kills: usize,
    /// The kernel's count of kills in the container (its memcg's `oom_kill`), the loop over.
    pub happened: u64,
    /// Kill-to-output latency of every kill the agent reported for the container.
    pub latencies_ns: Vec<u64>,
    /// Reported kills whose victim was the loop's shell, not the hog (see
    /// [`Podman::container`]).
    pub shells: usize,
    /// Kills whose `attribution.source` was `cache`.
    pub from_cache: usize,
    pub after: sys::Memory,
}

/// Starts the container, then the agent on the podman socket; once the agent has listed the
/// container, lets it kill until the agent has reported `kills` kills, ends the loop, and
/// collects the lines of every kill the container's memory cgroup counted.
pub fn measure_warm(
    podman: &Podman,
    agent_binary: &Path,
    agent_args: &[String],
    kills: usize,
    label: &str,
) -> anyhow::Result<WarmRun> {
    let container = podman.container(label)?;
    let socket = podman.socket().display().to_string();
    let mut agent = Watched::spawn(
        "oomtrace",
        Command::new(agent_binary)
            .args(["run", "--format", "json", "--runtime-socket", &socket])
            .args(agent_args),
    )?;
    // "container runtime podman at <socket>: N containers known; following its events"
    agent.wait_for("list of the runtime's containers", KNOWN_TIMEOUT, |line| {
        line.stream == Stream::Stderr
            && line.text.contains(&socket)
            && line.text.contains("containers known")
    })?;
    container.go()?;
    // Only this container's kills: podman's storage is the machine's, so the agent also
    // knows (and reports) containers that other jobs on the machine run and OOM.
    let ours = |line: &Line| {
        container_kill(line)
            .is_some_and(|kill| kill.container_id.as_deref() == Some(container.id()))
    };
    let mut lines = Vec::new();
    while lines.len() < kills {
        lines.push(agent.wait_for("`oom_kill` line", KILL_GAP_TIMEOUT, ours)?);
    }
    container.finish()?;
    let happened = container.oom_kills()?;
    // The kills of the loop's last moments, reported by now or soon.
    while (lines.len() as u64) < happened {
        match agent.wait_for("`oom_kill` line", LAST_LINES_TIMEOUT, ours) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    sys::check_interrupted()?;
    let after = sys::memory(agent.pid())?;
    agent.stop()?;
    drop(container);
    let mut run = WarmRun {
        kills,
        happened,
        latencies_ns: Vec::new(),
        shells: 0,
        from_cache: 0,
        after,
    };
    for line in &lines {
        let Some(kill) = container_kill(line) else {
            continue;
        };
        run.latencies_ns
            .push(line.read_at_ns.saturating_sub(kill.ktime_ns));
        run.shells += usize::from(kill.victim_comm.as_deref() != Some("oomtrace-hog"));
        run.from_cache += usize::from(kill.source.as_deref() == Some("cache"));
    }
    Ok(run)
}

/// What the bench reads of an `oom_kill` line.
struct ContainerKill {
    /// `bpf_ktime_get_ns()` at capture.
    ktime_ns: u64,
    container_id: Option<String>,
    victim_comm: Option<String>,
    /// `attribution.source`.
    source: Option<String>,
}

fn container_kill(line: &Line) -> Option<ContainerKill> {
    let (kind, value) = json_kind(line)?;
    if kind != "oom_kill" {
        return None;
    }
    let victim = &value["victim"];
    let text = |value: &serde_json::Value| value.as_str().map(str::to_owned);
    Some(ContainerKill {
        ktime_ns: value["ktime_ns"].as_u64()?,
        container_id: text(&victim["container"]["id"]),
        victim_comm: text(&victim["process"]["executable"]["name"]),
        source: text(&victim["attribution"]["source"]),
    })
}

/// crun refuses a hybrid cgroup host while cgroup2 holds a controller: bind each one to a v1
/// hierarchy of its own, as the container tests do. Nothing to do on v1 or pure v2 hosts.
fn prepare_cgroups() -> anyhow::Result<()> {
    let Ok(controllers) = fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers") else {
        return Ok(());
    };
    for controller in controllers.split_whitespace() {
        let dir = Path::new("/sys/fs/cgroup").join(controller);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let status = Command::new("mount")
            .args(["-t", "cgroup", "-o", controller, "cgroup"])
            .arg(&dir)
            .status()
            .context("mount")?;
        ensure!(
            status.success(),
            "mounting the v1 {controller} controller at {} failed",
            dir.display()
        );
    }
    Ok(())
}

/// The image: busybox with a link per applet the script uses, and the hog, from a tarball.
fn build_image(dir: &Path, static_hog: &Path) -> anyhow::Result<()> {
    let rootfs = dir.join("rootfs");
    let bin = rootfs.join("bin");
    for sub in ["bin", "tmp", "bench", "proc", "sys", "dev"] {
        fs::create_dir_all(rootfs.join(sub))?;
    }
    fs::copy(BUSYBOX, bin.join("busybox")).with_context(|| format!("copying {BUSYBOX}"))?;
    for applet in ["sh", "sleep", "cat", "ls"] {
        symlink("busybox", bin.join(applet))?;
    }
    fs::copy(static_hog, bin.join("oomtrace-hog"))
        .with_context(|| format!("copying {}", static_hog.display()))?;
    let tarball = dir.join("rootfs.tar");
    let status = Command::new("tar")
        .arg("--create")
        .arg("--file")
        .arg(&tarball)
        .arg("--directory")
        .arg(&rootfs)
        .args(["--numeric-owner", "--owner=0", "--group=0", "."])
        .status()
        .context("tar")?;
    ensure!(status.success(), "tar of the image's rootfs failed");
    let output = Command::new("podman")
        .args(["import", "--quiet", "--change=CMD=[\"/bin/sh\"]"])
        .arg(&tarball)
        .arg(IMAGE)
        .output()
        .context("podman import")?;
    ensure!(
        output.status.success(),
        "podman import failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}
