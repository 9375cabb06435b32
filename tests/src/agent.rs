//! The agent under test, run as a child process.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{HistoryFile, agent_binary, pretty, send_signal, wait_timeout};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `oomtrace run --format json`, its records read in the background.
pub struct Agent {
    child: Child,
    /// One item per stdout line: the record, or the line itself if it is not JSON.
    lines: Receiver<Result<Value, String>>,
    /// Every record read so far, in order.
    records: Vec<Value>,
    stderr: Arc<Mutex<String>>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr_reader: Option<JoinHandle<()>>,
    /// The history file the harness gave it, when the test gave none: removed with the agent.
    _own_history: Option<HistoryFile>,
}

/// What a stopped agent printed.
pub struct Stopped {
    /// Every record, `agent_started` first and `agent_stopped` last.
    pub records: Vec<Value>,
    pub stderr: String,
}

impl Agent {
    /// Starts the agent and returns once it printed `agent_started` (its programs are attached).
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// As [`Agent::start`], with more arguments for `oomtrace run`. Unless they say
    /// `--history` or `--no-history`, the agent stores its history in a file of its own in
    /// [`history_dir`](crate::history_dir), not in the host's.
    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::start_wrapped(&[], extra_args)
    }

    /// As [`Agent::start_with`], the agent started by `wrapper` (a program and its arguments
    /// that ends by executing the rest of its command line, such as `setpriv … --`): the child's
    /// pid is then the agent's.
    pub fn start_wrapped(wrapper: &[String], extra_args: &[&str]) -> Self {
        let binary = agent_binary();
        let own_history = (!extra_args
            .iter()
            .any(|arg| *arg == "--history" || *arg == "--no-history"))
        .then(HistoryFile::new);
        let mut command = match wrapper {
            [program, args @ ..] => {
                let mut command = Command::new(program);
                command.args(args).arg(&binary);
                command
            }
            [] => Command::new(&binary),
        };
        let mut child = command
            .args(["run", "--format", "json"])
            .args(extra_args)
            .args(own_history.iter().flat_map(HistoryFile::agent_args))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("spawning the agent {}: {err}", binary.display()));

        let stdout = child.stdout.take().expect("the agent's stdout is piped");
        let (sender, lines) = mpsc::channel();
        let stdout_reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.map_err(|err| format!("<unreadable line: {err}>"));
                let record = line.and_then(|line| {
                    serde_json::from_str(&line).map_err(|err| format!("{line} ({err})"))
                });
                if sender.send(record).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().expect("the agent's stderr is piped");
        let stderr_text = Arc::new(Mutex::new(String::new()));
        let stderr_reader = thread::spawn({
            let stderr_text = Arc::clone(&stderr_text);
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    // Shown with `--nocapture`, kept for failure messages either way.
                    eprintln!("[oomtrace] {line}");
                    let mut text = stderr_text
                        .lock()
                        .unwrap_or_else(|poison| poison.into_inner());
                    text.push_str(&line);
                    text.push('\n');
                }
            }
        });

        let mut agent = Self {
            child,
            lines,
            records: Vec::new(),
            stderr: stderr_text,
            stdout_reader: Some(stdout_reader),
            stderr_reader: Some(stderr_reader),
            _own_history: own_history,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while let Some(record) = agent.next_record(deadline) {
            if record["kind"] == "agent_started" {
                return agent;
            }
        }
        panic!(
            "the agent printed no `agent_started` within {START_TIMEOUT:?}; {}",
            agent.failure_context()
        );
    }

    /// The `oom_kill` records whose victim is one of `victim_pids`, read so far or arriving
    /// within `timeout`, until there is one per pid. The agent sees every OOM kill on the host,
    /// so tests ask for their own processes only. Returns what it has: the caller asserts.
    pub fn wait_for_kills(&mut self, victim_pids: &[u32], timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut kills: Vec<Value> = self
            .records
            .iter()
            .filter(|record| is_kill_of(record, victim_pids))
            .cloned()
            .collect();
        while kills.len() < victim_pids.len() {
            match self.next_record(deadline) {
                Some(record) if is_kill_of(&record, victim_pids) => kills.push(record),
                Some(_) => {}
                None => break,
            }
        }
        kills
    }

    /// The first `oom_kill` record for which `is_match` holds, read so far or arriving within
    /// `timeout`; `None` if none did. For victims whose pid is not known in advance, such as a
    /// container's processes: match them by the cgroup path the kernel gave (see
    /// [`Container::is_victim_of`](crate::Container::is_victim_of)).
    pub fn wait_for_kill_where(
        &mut self,
        is_match: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        let is_kill_match = |record: &Value| record["kind"] == "oom_kill" && is_match(record);
        if let Some(record) = self.records.iter().find(|record| is_kill_match(record)) {
            return Some(record.clone());
        }
        let deadline = Instant::now() + timeout;
        while let Some(record) = self.next_record(deadline) {
            if is_kill_match(&record) {
                return Some(record);
            }
        }
        None
    }

    /// The first `count` `oom_kill` records that `is_match`, in the order the agent wrote them,
    /// read so far or arriving within `timeout`. Returns what it has: the caller asserts.
    pub fn wait_for_kills_where(
        &mut self,
        is_match: impl Fn(&Value) -> bool,
        count: usize,
        timeout: Duration,
    ) -> Vec<Value> {
        let is_kill_match = |record: &Value| record["kind"] == "oom_kill" && is_match(record);
        let mut kills: Vec<Value> = self
            .records
            .iter()
            .filter(|record| is_kill_match(record))
            .take(count)
            .cloned()
            .collect();
        let deadline = Instant::now() + timeout;
        while kills.len() < count {
            match self.next_record(deadline) {
                Some(record) if is_kill_match(&record) => kills.push(record),
                Some(_) => {}
                None => break,
            }
        }
        kills
    }

    /// The first record of any kind for which `is_match` holds, read so far or arriving within
    /// `timeout`; `None` if none did.
    pub fn wait_for_record_where(
        &mut self,
        is_match: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        if let Some(record) = self.records.iter().find(|record| is_match(record)) {
            return Some(record.clone());
        }
        let deadline = Instant::now() + timeout;
        while let Some(record) = self.next_record(deadline) {
            if is_match(&record) {
                return Some(record);
            }
        }
        None
    }

    /// Waits until the agent logs a line containing `needle`, e.g. that it follows a runtime's
    /// events; panics with what it logged after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the agent logged no `{needle}` within {timeout:?}; its log:\n{}",
                self.stderr()
            );
            thread::sleep(crate::POLL_INTERVAL);
        }
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the agent logged (its stderr) so far.
    pub fn log(&self) -> String {
        self.stderr()
    }

    /// Freezes the agent (SIGSTOP): the kernel keeps queueing records, nobody reads them.
    pub fn suspend(&self) {
        send_signal(self.child.id(), libc::SIGSTOP).expect("sending SIGSTOP to the agent");
    }

    /// Lets a [`suspend`](Self::suspend)ed agent run again (SIGCONT).
    pub fn resume(&self) {
        send_signal(self.child.id(), libc::SIGCONT).expect("sending SIGCONT to the agent");
    }

    /// Stops the agent with SIGTERM, which must make it drain and exit 0, and returns every
    /// record it printed.
    pub fn stop(mut self) -> Stopped {
        send_signal(self.child.id(), libc::SIGTERM).expect("sending SIGTERM to the agent");
        let Some(status) = wait_timeout(&mut self.child, STOP_TIMEOUT) else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "the agent did not exit within {STOP_TIMEOUT:?} of SIGTERM; its stderr:\n{}",
                self.stderr()
            );
        };
        for reader in [self.stdout_reader.take(), self.stderr_reader.take()]
            .into_iter()
            .flatten()
        {
            reader.join().expect("an agent output reader panicked");
        }
        while let Ok(line) = self.lines.try_recv() {
            self.accept(line);
        }
        assert!(
            status.success(),
            "the agent should exit 0 after SIGTERM, it exited with {status}; its stderr:\n{}",
            self.stderr()
        );
        Stopped {
            records: std::mem::take(&mut self.records),
            stderr: self.stderr(),
        }
    }

    /// Kills the agent with SIGKILL, as a crash or the OOM killer would: nothing is drained.
    /// Returns what it had logged.
    pub fn kill(mut self) -> String {
        let _ = self.child.kill();
        let status = self.child.wait().expect("waiting for the killed agent");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "the agent should die of SIGKILL, it ended with {status}"
        );
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        self.stderr()
    }

    /// The next record before `deadline`, `None` on timeout; panics if the agent exited.
    fn next_record(&mut self, deadline: Instant) -> Option<Value> {
        match self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) => Some(self.accept(line)),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                panic!("the agent closed its stdout; {}", self.failure_context())
            }
        }
    }

    fn accept(&mut self, line: Result<Value, String>) -> Value {
        let record = line.unwrap_or_else(|line| {
            panic!(
                "the agent printed a line that is not JSON: {line}\nits stderr:\n{}",
                self.stderr()
            )
        });
        self.records.push(record.clone());
        record
    }

    /// Whether and how the agent ended, and its stderr, for failure messages.
    fn failure_context(&mut self) -> String {
        let state = match wait_timeout(&mut self.child, Duration::from_secs(2)) {
            Some(status) => {
                if let Some(reader) = self.stderr_reader.take() {
                    let _ = reader.join();
                }
                format!("it exited with {status}")
            }
            None => "it is still running".to_owned(),
        };
        format!("{state}; its stderr:\n{}", self.stderr())
    }

    fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // A failing test must not leave programs attached: killing the agent detaches them.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Stopped {
    /// Every `oom_kill` record, whoever the victim.
    pub fn kills(&self) -> impl Iterator<Item = &Value> {
        self.records
            .iter()
            .filter(|record| record["kind"] == "oom_kill")
    }

    /// The `oom_kill` records whose victim is `victim_pid`.
    pub fn kills_of(&self, victim_pid: u32) -> Vec<&Value> {
        self.kills()
            .filter(|record| is_kill_of(record, &[victim_pid]))
            .collect()
    }

    /// The `sigkill` records whose target is process `pid`.
    pub fn sigkills_of(&self, pid: u32) -> Vec<&Value> {
        self.records
            .iter()
            .filter(|record| {
                record["kind"] == "sigkill"
                    && record
                        .pointer("/target/process/pid")
                        .and_then(Value::as_u64)
                        == Some(u64::from(pid))
            })
            .collect()
    }

    /// The last record, which must be `agent_stopped`.
    pub fn agent_stopped(&self) -> &Value {
        let last = self.records.last().expect("the agent printed no records");
        assert!(
            last["kind"] == "agent_stopped",
            "the last record should be `agent_stopped`:\n{}",
            pretty(last)
        );
        last
    }
}

/// Whether `record` is an `oom_kill` whose victim is one of `victim_pids`.
fn is_kill_of(record: &Value, victim_pids: &[u32]) -> bool {
    record["kind"] == "oom_kill"
        && record
            .pointer("/victim/process/pid")
            .and_then(Value::as_u64)
            .is_some_and(|pid| victim_pids.iter().any(|&victim| u64::from(victim) == pid))
}
