//! A child process whose output lines are stamped with CLOCK_MONOTONIC the moment they are read.

use std::{
    io::{BufRead as _, BufReader, Read},
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::sys::{check_interrupted, monotonic_ns, send_signal};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stream {
    Stdout,
    Stderr,
}

pub struct Line {
    /// CLOCK_MONOTONIC when the reader thread got the line.
    pub read_at_ns: u64,
    pub stream: Stream,
    pub text: String,
}

/// How many stderr lines to keep for error messages.
const STDERR_TAIL: usize = 20;
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running child; killed and reaped on drop if still running.
pub struct Watched {
    name: String,
    child: Child,
    /// CLOCK_MONOTONIC just before the spawn.
    pub spawned_at_ns: u64,
    lines: Receiver<Line>,
    stderr_tail: Vec<String>,
}

impl Watched {
    /// Spawns `command` with stdout and stderr piped, each read by its own thread so that a line
    /// is stamped as soon as it is written, whatever the bench's main thread is doing.
    pub fn spawn(name: &str, command: &mut Command) -> anyhow::Result<Self> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned_at_ns = monotonic_ns();
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        let (sender, lines) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            read_lines(stdout, Stream::Stdout, sender.clone());
        }
        if let Some(stderr) = child.stderr.take() {
            read_lines(stderr, Stream::Stderr, sender);
        }
        Ok(Self {
            name: name.to_owned(),
            child,
            spawned_at_ns,
            lines,
            stderr_tail: Vec::new(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first line that `wanted` accepts, within `timeout`; other lines are dropped (the
    /// last stderr ones kept for the error message).
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut wanted: impl FnMut(&Line) -> bool,
    ) -> anyhow::Result<Line> {
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "{} wrote no {what} within {timeout:?}{}",
                    self.name,
                    self.stderr_context()
                );
            }
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) if wanted(&line) => return Ok(line),
                Ok(line) => self.keep_stderr(line),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => bail!(
                    "{} exited before writing {what}{}",
                    self.name,
                    self.stderr_context()
                ),
            }
        }
    }

    /// SIGTERM, then every line written until both streams close; SIGKILL if that takes longer
    /// than STOP_TIMEOUT.
    pub fn stop(&mut self) -> anyhow::Result<Vec<Line>> {
        send_signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut rest = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => rest.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    self.kill();
                    bail!("{} still ran {STOP_TIMEOUT:?} after SIGTERM", self.name);
                }
            }
        }
        self.child
            .wait()
            .with_context(|| format!("waiting for {}", self.name))?;
        Ok(rest)
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn keep_stderr(&mut self, line: Line) {
        if line.stream == Stream::Stderr {
            if self.stderr_tail.len() == STDERR_TAIL {
                self.stderr_tail.remove(0);
            }
            self.stderr_tail.push(line.text);
        }
    }

    fn stderr_context(&self) -> String {
        if self.stderr_tail.is_empty() {
            String::new()
        } else {
            format!("; its last stderr lines:\n{}", self.stderr_tail.join("\n"))
        }
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.kill();
    }
}

fn read_lines(stream: impl Read + Send + 'static, kind: Stream, sender: Sender<Line>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut text = String::new();
        loop {
            text.clear();
            match reader.read_line(&mut text) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let read_at_ns = monotonic_ns();
                    let line = Line {
                        read_at_ns,
                        stream: kind,
                        text: text.trim_end().to_owned(),
                    };
                    if sender.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
}
