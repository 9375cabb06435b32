//! The agent under test, run as a child process.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use oomtrace::record::{AgentStarted, AgentStopped, Body, OomKillRecord, Record, SigkillRecord};

use crate::{HistoryFile, agent_binary, pretty, send_signal, wait_timeout};

const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `oomtrace run --format json`, its records read in the background as the agent's
/// own [`Record`] type: tests match on its [`Body`] and read its fields, never a JSON path.
pub struct Agent {
    child: Child,
    /// One item per stdout line: the record, or the line and why it is not one.
    lines: Receiver<Result<Record, String>>,
    /// Every record read so far, in order: `agent_started` first.
    records: Vec<Record>,
    stderr: Arc<Mutex<String>>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr_reader: Option<JoinHandle<()>>,
    /// The history file the harness gave it, when the test gave none: removed with the agent.
    _own_history: Option<HistoryFile>,
}

/// What a stopped agent printed.
pub struct Stopped {
    /// Every record, `agent_started` first and `agent_stopped` last.
    pub records: Vec<Record>,
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
                    serde_json::from_str::<Record>(&line).map_err(|err| format!("{line} ({err})"))
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
            if let Body::AgentStarted(_) = record.body {
                return agent;
            }
        }
        panic!(
            "the agent printed no `agent_started` within {START_TIMEOUT:?}; {}",
            agent.failure_context()
        );
    }

    /// What the agent said when its programs were attached: the tier, and why.
    pub fn agent_started(&self) -> &AgentStarted {
        agent_started(&self.records)
    }

    /// The `oom_kill` records whose victim is one of `victim_pids`, read so far or arriving
    /// within `timeout`, until there is one per pid. The agent sees every OOM kill on the host,
    /// so tests ask for their own processes only. Returns what it has, a duplicate too: the
    /// caller asserts.
    pub fn wait_for_kills(&mut self, victim_pids: &[u32], timeout: Duration) -> Vec<OomKillRecord> {
        let kill_of_victim = |record: &Record| match &record.body {
            Body::OomKill(kill) if is_kill_of(kill, victim_pids) => Some(kill.clone()),
            _ => None,
        };
        let mut kills: Vec<OomKillRecord> =
            self.records.iter().filter_map(kill_of_victim).collect();
        let deadline = Instant::now() + timeout;
        while kills.len() < victim_pids.len() {
            match self.next_record(deadline) {
                Some(record) => kills.extend(kill_of_victim(&record)),
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
        is_match: impl Fn(&OomKillRecord) -> bool,
        timeout: Duration,
    ) -> Option<OomKillRecord> {
        self.wait_for_kills_where(is_match, 1, timeout).pop()
    }

    /// The first `count` `oom_kill` records that `is_match`, in the order the agent wrote them,
    /// read so far or arriving within `timeout`. Returns what it has: the caller asserts.
    pub fn wait_for_kills_where(
        &mut self,
        is_match: impl Fn(&OomKillRecord) -> bool,
        count: usize,
        timeout: Duration,
    ) -> Vec<OomKillRecord> {
        let matching_kill = |record: &Record| match &record.body {
            Body::OomKill(kill) if is_match(kill) => Some(kill.clone()),
            _ => None,
        };
        let mut kills: Vec<OomKillRecord> = self
            .records
            .iter()
            .filter_map(matching_kill)
            .take(count)
            .collect();
        let deadline = Instant::now() + timeout;
        while kills.len() < count {
            match self.next_record(deadline) {
                Some(record) => kills.extend(matching_kill(&record)),
                None => break,
            }
        }
        kills
    }

    /// The first thing `find` makes of a record of any kind, read so far or arriving within
    /// `timeout`; `None` if it made nothing of any. `find` matches on the record's [`Body`],
    /// e.g. `|record| match &record.body { Body::Sigkill(sigkill) if … => Some(sigkill.clone()),
    /// _ => None }`.
    pub fn wait_for_record<T>(
        &mut self,
        mut find: impl FnMut(&Record) -> Option<T>,
        timeout: Duration,
    ) -> Option<T> {
        if let Some(found) = self.records.iter().find_map(&mut find) {
            return Some(found);
        }
        let deadline = Instant::now() + timeout;
        while let Some(record) = self.next_record(deadline) {
            if let Some(found) = find(&record) {
                return Some(found);
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
    pub fn stop(self) -> Stopped {
        self.stop_with(libc::SIGTERM)
    }

    /// As [`Agent::stop`], with `signal` (SIGTERM or SIGINT, Ctrl-C).
    pub fn stop_with(self, signal: libc::c_int) -> Stopped {
        self.stop_within(signal, STOP_TIMEOUT)
    }

    /// As [`Agent::stop_with`], given `timeout` to exit: an agent that still has a burst of a
    /// thousand kills to write under the guests' emulation needs longer than the usual.
    pub fn stop_within(mut self, signal: libc::c_int, timeout: Duration) -> Stopped {
        send_signal(self.child.id(), signal).expect("signalling the agent");
        let Some(status) = wait_timeout(&mut self.child, timeout) else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            panic!(
                "the agent did not exit within {timeout:?} of signal {signal}; its stderr:\n{}",
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
            "the agent should exit 0 after signal {signal}, it exited with {status}; its stderr:\n{}",
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
    fn next_record(&mut self, deadline: Instant) -> Option<Record> {
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

    fn accept(&mut self, line: Result<Record, String>) -> Record {
        let record = line.unwrap_or_else(|line| {
            panic!(
                "the agent printed a line that is not a record: {line}\nits stderr:\n{}",
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
    pub fn kills(&self) -> impl Iterator<Item = &OomKillRecord> {
        self.records.iter().filter_map(|record| match &record.body {
            Body::OomKill(kill) => Some(kill),
            _ => None,
        })
    }

    /// The `oom_kill` records whose victim is `victim_pid`.
    pub fn kills_of(&self, victim_pid: u32) -> Vec<&OomKillRecord> {
        self.kills()
            .filter(|kill| is_kill_of(kill, &[victim_pid]))
            .collect()
    }

    /// The `sigkill` records whose target is process `pid`.
    pub fn sigkills_of(&self, pid: u32) -> Vec<&SigkillRecord> {
        self.records
            .iter()
            .filter_map(|record| match &record.body {
                Body::Sigkill(sigkill) if sigkill.target.process.pid == Some(pid) => Some(sigkill),
                _ => None,
            })
            .collect()
    }

    /// The `agent_started` record.
    pub fn agent_started(&self) -> &AgentStarted {
        agent_started(&self.records)
    }

    /// The last record, which must be `agent_stopped`.
    pub fn agent_stopped(&self) -> &AgentStopped {
        let last = self.records.last().expect("the agent printed no records");
        let Body::AgentStopped(stopped) = &last.body else {
            panic!(
                "the last record should be `agent_stopped`:\n{}",
                pretty(last)
            );
        };
        stopped
    }

    /// `agent_stopped` counts every `oom_kill` the agent printed, and the ring buffer dropped
    /// nothing.
    pub fn assert_every_kill_counted_and_none_dropped(&self) {
        let agent_stopped = self.agent_stopped();
        assert_eq!(
            agent_stopped.totals.oom_kills,
            self.kills().count() as u64,
            "oom_kills should count the printed oom_kill records: {}",
            pretty(agent_stopped)
        );
        assert_eq!(
            agent_stopped.totals.ringbuf_dropped_total,
            0,
            "records dropped, per {}",
            pretty(agent_stopped)
        );
    }
}

/// The `agent_started` record among `records`: [`Agent::start`] waited for it.
fn agent_started(records: &[Record]) -> &AgentStarted {
    records
        .iter()
        .find_map(|record| match &record.body {
            Body::AgentStarted(started) => Some(started),
            _ => None,
        })
        .expect("Agent::start returns once the agent printed agent_started")
}

/// Whether `kill`'s victim is one of `victim_pids`.
fn is_kill_of(kill: &OomKillRecord, victim_pids: &[u32]) -> bool {
    kill.victim
        .process
        .pid
        .is_some_and(|pid| victim_pids.contains(&pid))
}
