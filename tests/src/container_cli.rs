//! What the podman and docker command lines tell alike about one container: `inspect`,
//! `logs`, and the agent's record of its kill. Both [`Container`](crate::Container) and
//! [`DockerContainer`](crate::DockerContainer) ask through this.

use std::process::Command;
use std::time::Duration;

use oomtrace::record::OomKillRecord;

use crate::{Agent, command_output};

/// How long a test waits for the agent to report a container's kill.
const KILL_TIMEOUT: Duration = Duration::from_secs(30);

/// One container, as its runtime's command line sees it.
pub(crate) struct ContainerCli<'a> {
    /// The runtime's command (`podman`, `docker --host …`), fresh for each call.
    pub(crate) cli: Command,
    pub(crate) id: &'a str,
    pub(crate) name: &'a str,
}

impl ContainerCli<'_> {
    fn command(&self) -> Command {
        let mut command = Command::new(self.cli.get_program());
        command.args(self.cli.get_args());
        command
    }

    /// `<cli> container inspect --format`, `None` if the container does not exist (any more).
    pub(crate) fn inspect(&self, format: &str) -> Option<String> {
        let output = command_output(self.command().args([
            "container",
            "inspect",
            "--format",
            format,
            self.id,
        ]));
        if output.status.success() {
            return Some(String::from_utf8_lossy(&output.stdout).trim().to_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        // podman says "no such container", Docker "No such container".
        if stderr.to_ascii_lowercase().contains("no such container") {
            return None;
        }
        panic!(
            "`{:?} container inspect {}` failed ({}): {}",
            self.cli.get_program(),
            self.name,
            output.status,
            stderr.trim()
        );
    }

    /// [`inspect`](Self::inspect), which must find the container.
    pub(crate) fn expect_inspect(&self, format: &str) -> String {
        self.inspect(format).unwrap_or_else(|| {
            panic!(
                "container {} ({}) no longer exists: cannot inspect {format}",
                self.name, self.id
            )
        })
    }

    /// The runtime's own `State.OOMKilled`. Panics if the container is gone.
    pub(crate) fn oom_killed(&self) -> bool {
        match self.expect_inspect("{{.State.OOMKilled}}").as_str() {
            "true" => true,
            "false" => false,
            other => panic!("`State.OOMKilled` of {} is {other:?}", self.name),
        }
    }

    /// The host pid of the container's main process (its PID 1); panics unless it runs.
    pub(crate) fn main_pid(&self) -> u32 {
        let pid = self.expect_inspect("{{.State.Pid}}");
        match pid.parse() {
            Ok(0) => panic!(
                "container {} has no main process: it is not running",
                self.name
            ),
            Ok(pid) => pid,
            Err(err) => panic!("`State.Pid` of {} is {pid:?}: {err}", self.name),
        }
    }

    /// Whether the container runs; false if it is gone too.
    pub(crate) fn is_running(&self) -> bool {
        self.inspect("{{.State.Running}}").as_deref() == Some("true")
    }

    /// What the container printed so far, stdout and stderr (`logs`).
    pub(crate) fn logs(&self) -> String {
        let output = command_output(self.command().args(["logs", self.id]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// The agent's `oom_kill` record for a process of this container, within 30 s; panics
    /// with what the container printed otherwise.
    pub(crate) fn kill_record(&self, agent: &mut Agent) -> OomKillRecord {
        agent
            .wait_for_kill_where(
                |kill| crate::is_kill_in_container(kill, self.id),
                KILL_TIMEOUT,
            )
            .unwrap_or_else(|| {
                panic!(
                    "no oom_kill record for a process of container {} ({}); it printed:\n{}",
                    self.name,
                    self.id,
                    self.logs()
                )
            })
    }
}
