//! docker-compose projects on a test's [`Dockerd`], as users run them: a `docker-compose.yml`
//! in a directory of its own, `docker-compose -p <project> up -d`, and `down` on drop, also
//! while a failing test unwinds.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::command_output;
use crate::docker::{DockerContainer, Dockerd, unix_seconds};

/// Compose gives up on a Docker API call after 60 s by default. Creating and starting a
/// container on the systemd driver takes longer than that under emulation (the whole-system
/// guest); a host where it does is slow, not broken, and the test is about what follows.
const HTTP_TIMEOUT_SECS: &str = "600";
/// How much of the daemon's log a failed `up` shows.
const DAEMON_LOG_LINES: usize = 40;

/// A Compose project that is up; taken down (containers and networks removed) on drop.
pub struct ComposeProject<'d> {
    docker: &'d Dockerd,
    name: String,
    dir: PathBuf,
    /// When it was brought up, in seconds since the epoch, for its containers' events.
    since: u64,
}

impl<'d> ComposeProject<'d> {
    /// Writes `compose_file` (YAML) into a directory of its own and brings project `name` up
    /// (`up -d`); returns once Compose has started every service.
    pub fn up(docker: &'d Dockerd, name: &str, compose_file: &str) -> Self {
        let dir = docker.scratch_dir(&format!("compose-{name}"));
        fs::write(dir.join("docker-compose.yml"), compose_file)
            .unwrap_or_else(|err| panic!("writing {}/docker-compose.yml: {err}", dir.display()));
        let project = ComposeProject {
            docker,
            name: name.to_owned(),
            dir,
            since: unix_seconds() - 1,
        };
        let mut up = project.compose();
        up.args(["up", "--detach", "--no-build"]);
        let output = command_output(&mut up);
        assert!(
            output.status.success(),
            "{up:?} failed ({}): {}\n--- the daemon's log ---\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            tail(&docker.log(), DAEMON_LOG_LINES)
        );
        project
    }

    /// The container of `service` (its first, `<project>_<service>_1`).
    pub fn container(&self, service: &str) -> DockerContainer<'d> {
        let output = command_output(self.compose().args(["ps", "--quiet", service]));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let id = stdout.lines().next().unwrap_or_default().trim();
        assert!(
            output.status.success() && id.len() == 64,
            "`docker-compose ps -q {service}` should print the container's id; it printed \
             {stdout:?}, {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        self.docker.existing(id, self.since)
    }

    /// `docker-compose` for this project, on the test's daemon.
    fn compose(&self) -> Command {
        let mut command = Command::new("docker-compose");
        command
            .arg("--project-name")
            .arg(&self.name)
            .arg("--file")
            .arg(self.dir.join("docker-compose.yml"))
            .current_dir(&self.dir)
            .env("DOCKER_HOST", self.docker.host())
            .env("COMPOSE_HTTP_TIMEOUT", HTTP_TIMEOUT_SECS)
            // Nothing from the caller's environment decides what runs.
            .env_remove("COMPOSE_FILE")
            .env_remove("COMPOSE_PROJECT_NAME");
        command
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for ComposeProject<'_> {
    fn drop(&mut self) {
        let output =
            command_output(
                self.compose()
                    .args(["down", "--timeout", "0", "--remove-orphans"]),
            );
        if !output.status.success() {
            eprintln!(
                "docker-compose: taking project {} down failed ({}): {}",
                self.name,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
}
