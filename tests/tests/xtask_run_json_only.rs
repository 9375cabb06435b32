//! `cargo xtask run -- --format json > kills.jsonl` on a checkout where the eBPF toolchain was
//! never set up: xtask sets it up first (here it links Debian's Rust toolchain into rustup, as a
//! fresh checkout on this machine needs) and says so, and all of that goes to stderr: stdout
//! carries the agent's JSON lines and nothing else, from the first line on.

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use oomtrace::record::{Body, Record};
use oomtrace_tests::require_root;

/// Building the agent may be part of it: as long as a release build takes here.
const STARTED_TIMEOUT: Duration = Duration::from_secs(900);

/// A rustup home with the machine's toolchains but the one xtask links for the eBPF programs:
/// the toolchains are links to the real ones, so nothing is downloaded or copied.
struct HiddenToolchain {
    home: PathBuf,
}

impl HiddenToolchain {
    const LINKED: &'static str = "bpf-debian";

    fn new() -> Self {
        let real = std::env::var_os("RUSTUP_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".rustup")))
            .expect("HOME or RUSTUP_HOME is set");
        let home =
            std::env::temp_dir().join(format!("oomtrace-test-rustup-{}", std::process::id()));
        let _ = fs::remove_dir_all(&home);
        let toolchains = home.join("toolchains");
        fs::create_dir_all(&toolchains).expect("creating the rustup home");
        // From here on Drop removes it.
        let hidden = HiddenToolchain { home };
        fs::copy(
            real.join("settings.toml"),
            hidden.home.join("settings.toml"),
        )
        .unwrap_or_else(|err| panic!("copying rustup's settings from {}: {err}", real.display()));
        for entry in fs::read_dir(real.join("toolchains")).expect("listing rustup's toolchains") {
            let entry = entry.expect("a toolchain");
            if entry.file_name() == Self::LINKED {
                continue;
            }
            let target = fs::canonicalize(entry.path()).expect("resolving a toolchain");
            std::os::unix::fs::symlink(target, toolchains.join(entry.file_name()))
                .expect("linking a toolchain");
        }
        hidden
    }
}

impl Drop for HiddenToolchain {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.home);
    }
}

#[test]
fn xtask_run_writes_only_the_agents_json_on_stdout() {
    require_root();
    let rustup = HiddenToolchain::new();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut child = Command::new("cargo")
        .args(["xtask", "run", "--"])
        .args(["--format", "json", "--no-history", "--oom-score-adj", "0"])
        .current_dir(&workspace)
        .env("RUSTUP_HOME", &rustup.home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running cargo xtask run");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (lines, received) = mpsc::channel::<String>();
    let stdout_reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[cargo xtask run] {line}");
            text.push_str(&line);
            text.push('\n');
        }
        text
    });

    // cargo and xtask each execute the next, so the child's pid is the agent's once it runs.
    let mut stdout_lines = Vec::new();
    let deadline = Instant::now() + STARTED_TIMEOUT;
    let started = loop {
        match received.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let is_started = serde_json::from_str::<Record>(&line)
                    .is_ok_and(|record| matches!(record.body, Body::AgentStarted(_)));
                stdout_lines.push(line);
                if is_started {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let status = child.wait().expect("waiting for cargo xtask run");
    stdout_reader.join().expect("the stdout reader");
    stdout_lines.extend(received.try_iter());
    let stderr = stderr_reader.join().expect("the stderr reader");
    assert!(
        started,
        "no agent_started on stdout within {STARTED_TIMEOUT:?} ({status}); stdout:\n{}\nstderr:\n{stderr}",
        stdout_lines.join("\n")
    );
    assert!(
        status.success(),
        "the agent stops cleanly on SIGINT: {status}\n{stderr}"
    );
    assert!(
        stderr.contains("xtask: eBPF toolchain `bpf-debian`"),
        "setup ran, and spoke on stderr:\n{stderr}"
    );

    let records: Vec<Record> = stdout_lines
        .iter()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| {
                panic!("stdout carries a line that is no record ({err}): {line}")
            })
        })
        .collect();
    println!("stdout: {} lines, every one a record", records.len());
    assert!(
        matches!(
            records.first().map(|record| &record.body),
            Some(Body::AgentStarted(_))
        ),
        "the first line is agent_started: {stdout_lines:#?}"
    );
    assert!(
        matches!(
            records.last().map(|record| &record.body),
            Some(Body::AgentStopped(_))
        ),
        "the last line is agent_stopped: {stdout_lines:#?}"
    );
}
