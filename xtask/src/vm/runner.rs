//! The guest runner: how a guest runs the suite's test binaries and how their output and
//! status come back to the host, in one place for every kind of guest (the kernel matrix's
//! initramfs here; a whole distribution booted from a disk image can use the same).
//!
//! * **In the guest**, a directory (the suite directory) holds what [`suite_files`] lists:
//!   `run-tests.sh` (xtask/vm/run-tests.sh), `bin/oomtrace`, `bin/oomtrace-hog` and
//!   `tests/NAME` for each test binary, all statically linked. As root, with the cgroup2,
//!   tracefs, bpffs, /proc, /sys and devtmpfs mounts a booted system has, the guest runs
//!   `sh DIR/run-tests.sh DIR TIMEOUT_SECONDS TEST[:FILTER]...` with its output on the serial
//!   console ([`runner_args`]). Extra environment for the tests (the bench's knobs) is
//!   exported by the caller; the runner sets the rest (see the script's header).
//! * **Back on the host**, [`parse`] reads the console: one [`TestRun`] per test binary, with
//!   its exit status, run time and everything it printed, and whether the runner got to its
//!   end.

use std::{fmt::Write as _, path::PathBuf};

use crate::suite::{Suite, TestBinary};

/// The runner, a POSIX shell script.
pub const RUNNER: &str = include_str!("../../vm/run-tests.sh");
const KERNEL: &str = "@@OOMTRACE-KERNEL ";
const BEGIN: &str = "@@OOMTRACE-TEST-BEGIN ";
const END: &str = "@@OOMTRACE-TEST-END ";
const MARKER_END: &str = "@@";
pub const DONE_MARKER: &str = "@@OOMTRACE-DONE@@";
/// `timeout`'s exit status when it ended a test: GNU's, and busybox's SIGTERM.
const TIMED_OUT: [i32; 2] = [124, 143];
/// What a test prints when it does not run here, and why (`oomtrace_tests::skip`).
const SKIPPED: &str = "SKIPPED: ";

/// What goes into the suite directory: `(path relative to it, file on the host)`. The runner
/// script itself is [`RUNNER`], at `run-tests.sh`.
pub fn suite_files(suite: &Suite, tests: &[&TestBinary]) -> Vec<(String, PathBuf)> {
    let mut files = vec![
        ("bin/oomtrace".to_owned(), suite.agent.clone()),
        ("bin/oomtrace-hog".to_owned(), suite.hog.clone()),
    ];
    files.extend(
        tests
            .iter()
            .map(|test| (format!("tests/{}", test.name), test.path.clone())),
    );
    files
}

/// The runner's command line, for a suite directory at `dir` in the guest.
pub fn runner_args(dir: &str, timeout_secs: u64, tests: &[String]) -> Vec<String> {
    let mut args = vec![
        "sh".to_owned(),
        format!("{dir}/run-tests.sh"),
        dir.to_owned(),
        timeout_secs.to_string(),
    ];
    args.extend(tests.iter().cloned());
    args
}

/// One test binary's run in the guest.
#[derive(Debug, PartialEq)]
pub struct TestRun {
    pub name: String,
    /// Its exit status; `None` if the console ends before the runner said (the guest hung,
    /// panicked or was killed).
    pub status: Option<i32>,
    /// Its run time by the guest's clock.
    pub seconds: Option<f64>,
    /// Everything it printed, `\r` removed.
    pub output: String,
}

impl TestRun {
    pub fn passed(&self) -> bool {
        self.status == Some(0)
    }

    /// Why some of its tests did not run here, as they said.
    pub fn skipped(&self) -> Vec<&str> {
        self.output
            .lines()
            .filter_map(|line| line.split_once(SKIPPED).map(|(_, why)| why))
            .collect()
    }

    /// What went wrong, for a summary.
    pub fn failure(&self) -> Option<String> {
        match self.status {
            Some(0) => None,
            Some(status) if TIMED_OUT.contains(&status) => {
                Some(format!("over its time limit (status {status})"))
            }
            Some(127) => Some("no such test binary in the guest".to_owned()),
            Some(status) => Some(format!("exit status {status}")),
            None => Some("the guest stopped while it ran".to_owned()),
        }
    }

    /// The end of its output, for an error message.
    pub fn output_tail(&self, lines: usize) -> String {
        let all: Vec<&str> = self.output.lines().collect();
        let start = all.len().saturating_sub(lines);
        let mut text = String::new();
        for line in &all[start..] {
            let _ = writeln!(text, "{line}");
        }
        text
    }
}

/// What the guest's console says: every test the runner started, and whether it finished.
#[derive(Debug, PartialEq)]
pub struct Report {
    /// The guest's `uname -r`, as the runner saw it.
    pub kernel: Option<String>,
    pub runs: Vec<TestRun>,
    /// The runner printed [`DONE_MARKER`] after the last test.
    pub done: bool,
}

pub fn parse(console: &str) -> Report {
    let mut runs: Vec<TestRun> = Vec::new();
    let mut open: Option<TestRun> = None;
    let mut done = false;
    let mut kernel = None;
    for line in console.lines().map(|line| line.trim_end_matches('\r')) {
        if let Some(release) = marker(line, KERNEL) {
            kernel = Some(release.to_owned());
        } else if let Some(name) = marker(line, BEGIN) {
            runs.extend(open.take());
            open = Some(TestRun {
                name: name.to_owned(),
                status: None,
                seconds: None,
                output: String::new(),
            });
        } else if let Some(end) = marker(line, END) {
            let mut words = end.split_whitespace();
            let name = words.next().unwrap_or_default();
            if let Some(mut run) = open.take_if(|run| run.name == name) {
                let before = &line[..line.find(END).unwrap_or(0)];
                if !before.is_empty() {
                    run.output.push_str(before);
                    run.output.push('\n');
                }
                run.status = words.next().and_then(|status| status.parse().ok());
                run.seconds = words.next().and_then(|seconds| seconds.parse().ok());
                runs.push(run);
            }
        } else if line.contains(DONE_MARKER) {
            done = true;
        } else if let Some(run) = &mut open {
            run.output.push_str(line);
            run.output.push('\n');
        }
    }
    runs.extend(open);
    Report { kernel, runs, done }
}

fn marker<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    // A test's output may end without a newline: the marker then follows it on the same line.
    let at = line.find(prefix)?;
    line[at + prefix.len()..].strip_suffix(MARKER_END)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONSOLE: &str = "[    0.1] boot noise\r\n\
        @@OOMTRACE-INIT@@\r\n\
        @@OOMTRACE-KERNEL 6.1.0-57-cloud-amd64@@\r\n\
        @@OOMTRACE-TEST-BEGIN memcg_oom@@\r\n\
        running 3 tests\r\n\
        SKIPPED: this kernel has no kprobes\r\n\
        test result: ok. 3 passed\r\n\
        @@OOMTRACE-TEST-END memcg_oom 0 12.5@@\r\n\
        @@OOMTRACE-TEST-BEGIN oom_group@@\r\n\
        thread 'main' panicked at tests/oom_group.rs:10:5\r\n\
        no newline at the end@@OOMTRACE-TEST-END oom_group 101 3.0@@\r\n\
        @@OOMTRACE-TEST-BEGIN host_oom@@\r\n\
        running 1 test\r\n";

    #[test]
    fn each_test_comes_back_with_its_status_and_output() {
        let report = parse(CONSOLE);
        assert!(!report.done);
        assert_eq!(report.kernel.as_deref(), Some("6.1.0-57-cloud-amd64"));
        let [memcg, group, host] = report.runs.as_slice() else {
            panic!("{report:?}");
        };
        assert_eq!((memcg.status, memcg.seconds), (Some(0), Some(12.5)));
        assert!(memcg.passed());
        assert_eq!(memcg.skipped(), ["this kernel has no kprobes"]);
        assert!(memcg.output.starts_with("running 3 tests\n"));
        assert_eq!(group.failure().as_deref(), Some("exit status 101"));
        assert!(
            group
                .output
                .ends_with("panicked at tests/oom_group.rs:10:5\nno newline at the end\n")
        );
        assert_eq!(host.status, None);
        assert_eq!(host.output, "running 1 test\n");
        assert_eq!(
            host.failure().as_deref(),
            Some("the guest stopped while it ran")
        );
        assert!(
            parse(&format!(
                "{CONSOLE}@@OOMTRACE-TEST-END host_oom 143 300.0@@\n@@OOMTRACE-DONE@@\n"
            ))
            .done
        );
    }

    #[test]
    fn the_runner_line_names_its_directory_time_limit_and_tests() {
        assert_eq!(
            runner_args(
                "/suite",
                300,
                &["memcg_oom".to_owned(), "oom_burst:burst".to_owned()]
            ),
            [
                "sh",
                "/suite/run-tests.sh",
                "/suite",
                "300",
                "memcg_oom",
                "oom_burst:burst"
            ]
        );
    }
}
