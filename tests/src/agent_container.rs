//! The agent as users deploy it in a container: its image built from deploy/Containerfile, run
//! with the `podman run` line of the deployment guide (docs/deploy.md), flag for flag.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use oomtrace::record::Record;

use crate::podman::ulimit_args;
use crate::tracefs::TRACEFS;

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// Where podman keeps the state the agent names its containers from, mounted as it is.
const STATE_DIR: &str = "/var/lib/containers/storage/libpod:/var/lib/containers/storage/libpod";
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// The agent linked statically, for the image, which has no libc: `$OOMTRACE_STATIC_BIN`
/// (`cargo xtask test` builds it and sets it), else where xtask builds it.
pub fn static_agent_binary() -> PathBuf {
    let binary = match std::env::var_os("OOMTRACE_STATIC_BIN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(WORKSPACE).join("target/x86_64-unknown-linux-gnu/release/oomtrace"),
    };
    assert!(
        binary.is_file(),
        "the static agent {} does not exist: run `cargo xtask test`, which builds it and sets \
         OOMTRACE_STATIC_BIN, or `cargo xtask image`",
        binary.display()
    );
    binary
}

/// The agent's image, built as `cargo xtask image` builds it (deploy/Containerfile, a context
/// holding only the static agent and the journal's catalog) under a tag of the test's own; the
/// tag is removed on drop.
pub struct AgentImage {
    tag: String,
}

impl AgentImage {
    pub fn build() -> Self {
        let tag = format!("localhost/oomtrace-test-agent:{}", std::process::id());
        let context =
            std::env::temp_dir().join(format!("oomtrace-test-agent-image-{}", std::process::id()));
        let _ = fs::remove_dir_all(&context);
        fs::create_dir_all(&context)
            .unwrap_or_else(|err| panic!("creating {}: {err}", context.display()));
        let agent = static_agent_binary();
        fs::copy(&agent, context.join("oomtrace"))
            .unwrap_or_else(|err| panic!("copying {} into the context: {err}", agent.display()));
        let catalog = Path::new(WORKSPACE).join("deploy/oomtrace.catalog");
        fs::copy(&catalog, context.join("oomtrace.catalog"))
            .unwrap_or_else(|err| panic!("copying {} into the context: {err}", catalog.display()));
        // From here on Drop removes the tag, also if the build half-succeeded.
        let image = Self { tag };
        let output = output(
            Command::new("podman")
                .args(["build", "--quiet", "--file"])
                .arg(Path::new(WORKSPACE).join("deploy/Containerfile"))
                .args(["--tag", &image.tag])
                .arg(&context),
        );
        let _ = fs::remove_dir_all(&context);
        assert!(
            output.status.success(),
            "podman build of deploy/Containerfile failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        image
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }
}

impl Drop for AgentImage {
    fn drop(&mut self) {
        let result = output(Command::new("podman").args(["rmi", "--ignore", &self.tag]));
        if !result.status.success() {
            eprintln!(
                "podman: removing image {} failed: {}",
                self.tag,
                String::from_utf8_lossy(&result.stderr).trim()
            );
        }
    }
}

/// The deployment guide's `podman run` line for the agent, as arguments after `podman`.
pub fn documented_run_line() -> Vec<String> {
    let guide_path = Path::new(WORKSPACE).join("docs/deploy.md");
    let guide = fs::read_to_string(&guide_path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", guide_path.display()));
    parse_run_line(&guide).unwrap_or_else(|| {
        panic!(
            "{} has no `podman run --detach --name oomtrace …` line",
            guide_path.display()
        )
    })
}

/// The words of the first `podman run … --name oomtrace` command and its `\`-continued lines.
fn parse_run_line(guide: &str) -> Option<Vec<String>> {
    let mut lines = guide
        .lines()
        .skip_while(|line| !(line.starts_with("podman run ") && line.contains("--name oomtrace")));
    let mut words = Vec::new();
    for line in lines.by_ref() {
        let (text, continued) = match line.trim_end().strip_suffix('\\') {
            Some(text) => (text, true),
            None => (line, false),
        };
        words.extend(text.split_whitespace().map(str::to_owned));
        if !continued {
            break;
        }
    }
    (words.first()? == "podman").then(|| words.split_off(1))
}

/// The agent, running in its image with the deployment guide's flags; removed (with its volume) on drop.
pub struct AgentContainer {
    name: String,
    volume: String,
}

impl AgentContainer {
    /// `podman run` as the deployment guide says, with these test-only changes, each asserted to apply:
    /// the container's and the history volume's names are the test's own; the seccomp profile's
    /// path is made absolute (the deployment guide's is relative to the repository); the image is `image`;
    /// capabilities this machine withholds from root are not asked for (podman could not grant
    /// them); and the machine's lower ulimits (see [`ulimit_args`]). podman's state directory is
    /// mounted as the deployment guide says, read-only, unchanged: the test's podman keeps its containers
    /// there; no runtime socket is mounted.
    pub fn start(image: &AgentImage, withheld_caps: &[&str]) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let suffix = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let container = Self {
            name: format!("oomtrace-test-agent-{suffix}"),
            volume: format!("oomtrace-test-history-{suffix}"),
        };
        let documented = documented_run_line();
        let mut args = Vec::new();
        let mut replaced = Vec::new();
        let mut words = documented.iter().peekable();
        while let Some(word) = words.next() {
            match word.as_str() {
                "--name" => {
                    words.next();
                    args.extend(["--name".to_owned(), container.name.clone()]);
                    replaced.push("name");
                }
                "-v" => {
                    let spec = words.next().expect("-v takes a volume");
                    assert!(
                        !spec.contains(".sock"),
                        "the deployment guide's run line mounts a runtime socket, which is root on the \
                         host: {spec}"
                    );
                    let spec = if spec.starts_with(&format!("{TRACEFS}:")) {
                        // The container only bind-mounts the host's tracefs, which the guide
                        // says the host mounts (the agent on the host mounts it itself).
                        crate::tracefs::ensure_mounted();
                        spec.clone()
                    } else if spec.starts_with(STATE_DIR) {
                        assert!(
                            spec.ends_with(":ro"),
                            "podman's state is mounted read-only: {spec}"
                        );
                        replaced.push("state");
                        spec.clone()
                    } else if let Some(rest) = spec.strip_prefix("oomtrace-history:") {
                        replaced.push("volume");
                        format!("{}:{rest}", container.volume)
                    } else {
                        spec.clone()
                    };
                    args.extend(["-v".to_owned(), spec]);
                }
                cap if cap.strip_prefix("--cap-add=").is_some_and(|name| {
                    withheld_caps.contains(&name.to_ascii_lowercase().as_str())
                }) =>
                {
                    println!("not asking podman for {cap}: this machine withholds it from root");
                }
                seccomp if seccomp.starts_with("--security-opt=seccomp=") => {
                    let profile = seccomp.trim_start_matches("--security-opt=seccomp=");
                    let profile = Path::new(WORKSPACE).join(profile);
                    assert!(
                        profile.is_file(),
                        "the deployment guide's seccomp profile {}",
                        profile.display()
                    );
                    args.push(format!("--security-opt=seccomp={}", profile.display()));
                    replaced.push("seccomp");
                }
                image_name if image_name.starts_with("localhost/oomtrace:") => {
                    args.extend(ulimit_args());
                    args.push(image.tag().to_owned());
                    replaced.push("image");
                }
                other => args.push(other.to_owned()),
            }
        }
        for expected in ["name", "state", "volume", "seccomp", "image"] {
            assert!(
                replaced.contains(&expected),
                "the deployment guide's run line has no {expected} to replace: {documented:?}"
            );
        }
        println!("podman {}", args.join(" "));
        let output = output(Command::new("podman").args(&args));
        assert!(
            output.status.success(),
            "starting the agent's container failed ({}): {}\n(podman {})",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim(),
            args.join(" ")
        );
        container
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The agent's host pid (`State.Pid`): the container runs with `--pid=host`.
    pub fn host_pid(&self) -> u32 {
        let output = output(Command::new("podman").args([
            "inspect",
            "--format",
            "{{.State.Pid}}",
            &self.name,
        ]));
        let text = String::from_utf8_lossy(&output.stdout);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("the agent container's pid: {text:?}"))
    }

    /// What the agent wrote so far: stdout (the JSON Lines) and stderr (its log), separately.
    pub fn logs(&self) -> (String, String) {
        let output = output(Command::new("podman").args(["logs", &self.name]));
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Waits until the agent logged `needle` on stderr; panics with its logs after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let (stdout, stderr) = self.logs();
            if let Some(line) = stderr.lines().find(|line| line.contains(needle)) {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "the agent's container logged no `{needle}` within {timeout:?}; {}\nstderr:\n\
                 {stderr}\nstdout:\n{stdout}",
                self.state()
            );
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The first thing `find` makes of a record on the agent's stdout, within `timeout`, as
    /// [`Agent::wait_for_record`](crate::Agent::wait_for_record).
    pub fn wait_for_record<T>(
        &self,
        find: impl Fn(&Record) -> Option<T>,
        timeout: Duration,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let (stdout, _) = self.logs();
            for line in stdout.lines() {
                let record: Record = serde_json::from_str(line).unwrap_or_else(|err| {
                    panic!("the agent wrote a line that is not a record ({err}): {line}")
                });
                if let Some(found) = find(&record) {
                    return Some(found);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// `podman stop` (SIGTERM): the agent must drain and exit 0.
    pub fn stop(&self) -> i32 {
        let output = output(Command::new("podman").args(["stop", "--time", "20", &self.name]));
        assert!(
            output.status.success(),
            "podman stop {} failed: {}",
            self.name,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        let code = output_of(&["inspect", "--format", "{{.State.ExitCode}}", &self.name]);
        code.trim()
            .parse()
            .unwrap_or_else(|_| panic!("the agent container's exit code: {code:?}"))
    }

    fn state(&self) -> String {
        format!(
            "container state: {}",
            output_of(&[
                "inspect",
                "--format",
                "{{.State.Status}} exit {{.State.ExitCode}}",
                &self.name
            ])
            .trim()
        )
    }
}

impl Drop for AgentContainer {
    fn drop(&mut self) {
        for args in [
            vec![
                "rm",
                "--force",
                "--ignore",
                "--volumes",
                "--time",
                "0",
                &self.name,
            ],
            vec!["volume", "rm", "--force", &self.volume],
        ] {
            let result = output(Command::new("podman").args(&args));
            if !result.status.success() {
                eprintln!(
                    "podman {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&result.stderr).trim()
                );
            }
        }
    }
}

fn output(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("running {command:?}: {err}"))
}

fn output_of(args: &[&str]) -> String {
    String::from_utf8_lossy(&output(Command::new("podman").args(args)).stdout).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_line_is_read_with_its_continuations() {
        let readme = "text\n```sh\npodman run --detach --name oomtrace \\\n  --pid=host \\\n  \
                      -v a:b:ro \\\n  localhost/oomtrace:0.1.0\n```\n";
        assert_eq!(
            parse_run_line(readme).unwrap(),
            [
                "run",
                "--detach",
                "--name",
                "oomtrace",
                "--pid=host",
                "-v",
                "a:b:ro",
                "localhost/oomtrace:0.1.0"
            ]
        );
        assert_eq!(parse_run_line("podman ps\n"), None);
    }

    #[test]
    fn the_deployment_guide_has_one() {
        let words = documented_run_line();
        for flag in [
            "--pid=host",
            "--cap-drop=ALL",
            "--cap-add=BPF",
            "--cap-add=PERFMON",
        ] {
            assert!(words.iter().any(|word| word == flag), "{flag} in {words:?}");
        }
    }
}
