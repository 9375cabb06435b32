//! Daemons a test starts itself (podman's API service, dockerd): their output in a log file,
//! stopped with the test even when the test process is killed outright, ready once their API
//! socket answers, and stopped politely first.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::{ping, send_signal, wait_timeout};

/// A daemon started by a test, with its log.
pub(crate) struct Daemon {
    /// What it is, for messages: e.g. "`podman system service`".
    what: &'static str,
    log_path: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts `command` with its stdout and stderr appended to `log_path`.
    pub(crate) fn spawn(what: &'static str, mut command: Command, log_path: PathBuf) -> Self {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|err| panic!("creating {}: {err}", log_path.display()));
        let log_for_stderr = log
            .try_clone()
            .unwrap_or_else(|err| panic!("duplicating {}: {err}", log_path.display()));
        command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_for_stderr);
        // Its owner's drop stops it, also while a failing test unwinds. If the test process is
        // killed outright, the kernel stops it instead: the "parent" whose death it signals is
        // the thread that spawned it, which is the test's own thread, the owner's.
        // SAFETY: prctl is async-signal-safe and touches no memory of this process.
        unsafe {
            command.pre_exec(
                || match libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) {
                    0 => Ok(()),
                    _ => Err(io::Error::last_os_error()),
                },
            );
        }
        let child = command
            .spawn()
            .unwrap_or_else(|err| panic!("starting {command:?}: {err}"));
        Daemon {
            what,
            log_path,
            child: Some(child),
        }
    }

    /// Returns once the Docker Engine API answers on `socket`; panics with the daemon's log if
    /// it exits first or `timeout` passes.
    pub(crate) fn wait_answering(&mut self, socket: &Path, timeout: Duration, poll: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let last_error = match ping(socket) {
                Ok(()) => return,
                Err(err) => err,
            };
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "{} exited with {status} before answering on {}; its log:\n{}",
                    self.what,
                    socket.display(),
                    self.log()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not answer on {} within {timeout:?} (last: {last_error}); its log:\n{}",
                    self.what,
                    socket.display(),
                    self.log()
                );
            }
            thread::sleep(poll);
        }
    }

    /// SIGTERM, which makes it close its socket, clean up and exit; SIGKILL if it does not
    /// within `timeout`. Stopping it again does nothing.
    pub(crate) fn stop(&mut self, timeout: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(None) = child.try_wait() {
            let _ = send_signal(child.id(), libc::SIGTERM);
            if wait_timeout(&mut child, timeout).is_none() {
                eprintln!(
                    "{} (pid {}) ignored SIGTERM for {timeout:?}: killing it",
                    self.what,
                    child.id()
                );
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// How it exited, if it has.
    pub(crate) fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// What it logged so far.
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_else(|err| format!("<unreadable: {err}>"))
    }
}
