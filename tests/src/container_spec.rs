//! What a container test starts, whichever runtime runs it (`podman run`, `docker run`, the
//! CRI's `CreateContainer`): a
//! memory limit and a command in the test image, and a release directory through which the
//! test lets a held hog go.

use std::fs;
use std::path::Path;

use crate::image::HOG_IN_IMAGE;

/// Where a container sees its release directory, a read-only bind mount of a host directory:
/// the file a held hog (see [`ContainerSpec::held_hog`]) waits for appears there.
pub(crate) const RELEASE_DIR_IN_CONTAINER: &str = "/oomtrace-release";
/// The file a held hog waits for, in its release directory.
const RELEASE_FILE: &str = "go";
const MIB: u64 = 1 << 20;

/// What [`Podman::run`](crate::Podman::run) or [`Dockerd::run`](crate::Dockerd::run) starts.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    memory_bytes: u64,
    remove: bool,
    restart: Option<String>,
    /// More `run` flags, as a user would pass them (`--shm-size=256m`, `--tmpfs=/scratch`).
    run_flags: Vec<String>,
    command: Vec<String>,
}

impl ContainerSpec {
    /// The hog as the container's main process (PID 1), allocating at once until the OOM
    /// killer ends it.
    pub fn hog(memory_bytes: u64) -> Self {
        Self::with_command(
            memory_bytes,
            vec![
                HOG_IN_IMAGE.to_owned(),
                "--no-wait".to_owned(),
                "--max-mib".to_owned(),
                hog_max_mib(memory_bytes).to_string(),
            ],
        )
    }

    /// A shell (`sh -c script`) as the main process; [`hog_command`](Self::hog_command) gives
    /// the hog's command line for the script.
    pub fn shell(memory_bytes: u64, script: &str) -> Self {
        Self::with_command(
            memory_bytes,
            vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()],
        )
    }

    /// The hog as the main process, but only once the test calls [`Container::release`]: the
    /// shell waiting for it `exec`s the hog, which so becomes PID 1. Lets a test prepare (e.g.
    /// freeze the agent) between the container's start and its OOM kill, which otherwise
    /// follows within a tenth of a second.
    pub fn held_hog(memory_bytes: u64) -> Self {
        Self::shell(memory_bytes, &Self::held_hog_script(memory_bytes))
    }

    /// [`held_hog`](Self::held_hog)'s script, for a shell that starts other processes first.
    pub fn held_hog_script(memory_bytes: u64) -> String {
        format!(
            "until [ -e {RELEASE_DIR_IN_CONTAINER}/{RELEASE_FILE} ]; do sleep 0.05; done; exec {}",
            Self::hog_command(memory_bytes)
        )
    }

    /// The hog's command line in a container limited to `memory_bytes`, for shell scripts.
    pub fn hog_command(memory_bytes: u64) -> String {
        format!(
            "{HOG_IN_IMAGE} --no-wait --max-mib {}",
            hog_max_mib(memory_bytes)
        )
    }

    /// `--rm`: podman removes the container, and its cgroups, as soon as it exits.
    pub fn removed_on_exit(mut self) -> Self {
        self.remove = true;
        self
    }

    /// One more `run` flag, e.g. `--shm-size=256m` or `--tmpfs=/scratch:size=256m`.
    pub fn run_flag(mut self, flag: &str) -> Self {
        self.run_flags.push(flag.to_owned());
        self
    }

    /// `--restart=<policy>`, e.g. `on-failure:1`.
    pub fn restart(mut self, policy: &str) -> Self {
        self.restart = Some(policy.to_owned());
        self
    }

    /// The `run` flags both CLIs share, then the image and the command. Without
    /// `--memory-swap`, as users run it: the runtimes then set memory+swap to twice the limit
    /// (the hosts have no swap anyway). Set equal to `--memory` on cgroup v1, the limit hit
    /// shows in neither `memory.failcnt` nor `memory.memsw.failcnt` (seen on 6.18).
    pub(crate) fn run_args(&self, release_dir: &Path, image: &str) -> Vec<String> {
        let mut args = vec![format!("--memory={}", self.memory_bytes)];
        if self.remove {
            args.push("--rm".to_owned());
        }
        if let Some(policy) = &self.restart {
            args.push(format!("--restart={policy}"));
        }
        args.extend(self.run_flags.iter().cloned());
        // Released from the host rather than by `exec`, which races the kill it causes: once
        // the hog dies, a `--rm` container is removed under the exec session, which then fails,
        // although its `touch` had done its job.
        fs::create_dir_all(release_dir)
            .unwrap_or_else(|err| panic!("creating {}: {err}", release_dir.display()));
        args.push(format!(
            "--volume={}:{RELEASE_DIR_IN_CONTAINER}:ro",
            release_dir.display()
        ));
        // No network stack to set up or to fail: the tests need none.
        args.extend(["--network".to_owned(), "none".to_owned(), image.to_owned()]);
        args.extend(self.command.iter().cloned());
        args
    }

    /// The limit, for runtimes without `run` flags (the CRI).
    pub(crate) fn memory_bytes(&self) -> u64 {
        self.memory_bytes
    }

    /// The command, for runtimes without `run` flags (the CRI); it expects the release
    /// directory at [`RELEASE_DIR_IN_CONTAINER`].
    pub(crate) fn command(&self) -> &[String] {
        &self.command
    }

    fn with_command(memory_bytes: u64, command: Vec<String>) -> Self {
        Self {
            memory_bytes,
            remove: false,
            restart: None,
            run_flags: Vec::new(),
            command,
        }
    }
}

/// Well past the limit, so reaching it means the limit did not work; yet bounded.
fn hog_max_mib(memory_bytes: u64) -> u64 {
    (4 * memory_bytes / MIB).max(16)
}

/// Lets the held hog of container `name`, whose release directory is `release_dir`, allocate.
pub(crate) fn release(release_dir: &Path, name: &str) {
    let file = release_dir.join(RELEASE_FILE);
    fs::write(&file, b"").unwrap_or_else(|err| {
        panic!(
            "releasing the hog in {name}: creating {}: {err}",
            file.display()
        )
    });
}
