//! A read that never answers, as the agent meets one when a `/proc/<pid>` file waits for a lock
//! its process holds, or a cgroup file on a host deep in reclaim: here the domain's own
//! `cgroup.procs`, replaced by a FIFO (a bind mount) whose `open` waits for a writer. The OOM
//! kill in that domain is written anyway, with what was read before the stuck read and a `cut`
//! saying what it lacks; a kill in another domain right after it is written in full; the agent
//! stops on SIGINT and counts the read it gave up.

use std::fs;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use oomtrace::record::{CutReason, ObservedPart};
use oomtrace_tests::{Agent, Hog, MemoryCgroup, pretty, require_root};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const LIMIT_BYTES: u64 = 48 << 20;
const KILL_TIMEOUT: Duration = Duration::from_secs(30);

/// A FIFO bind-mounted over a file; unmounted, and any reader stuck on it let go, when dropped.
struct FifoOver {
    fifo: PathBuf,
    target: PathBuf,
}

impl FifoOver {
    fn mount(target: &Path) -> Self {
        let fifo = std::env::temp_dir().join(format!("oomtrace-stuck-{}.fifo", std::process::id()));
        let _ = fs::remove_file(&fifo);
        let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(made.success(), "mkfifo {}", fifo.display());
        let guard = FifoOver {
            fifo,
            target: target.to_owned(),
        };
        let mounted = Command::new("mount")
            .arg("--bind")
            .arg(&guard.fifo)
            .arg(target)
            .status()
            .expect("mount");
        assert!(
            mounted.success(),
            "mount --bind {} {}",
            guard.fifo.display(),
            target.display()
        );
        guard
    }
}

impl Drop for FifoOver {
    fn drop(&mut self) {
        // A writer lets a reader stuck in `open` go; closing it ends the read.
        let _ = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.fifo);
        let unmounted = Command::new("umount").arg("-l").arg(&self.target).status();
        if !unmounted.is_ok_and(|status| status.success()) {
            eprintln!("umount -l {} failed", self.target.display());
        }
        let _ = fs::remove_file(&self.fifo);
    }
}

#[test]
fn a_kill_whose_read_never_answers_is_written_with_what_was_read() {
    require_root();
    let stuck = MemoryCgroup::create(LIMIT_BYTES);
    let fine = MemoryCgroup::create(LIMIT_BYTES);
    let mut agent = Agent::start();
    let mut hog = Hog::spawn_held_in(HOG, &stuck);
    // After the hog joined it: from now on nothing reads who is in the cgroup.
    let fifo = FifoOver::mount(&stuck.memcg_dir().join("cgroup.procs"));
    hog.release();
    let stuck_pid = hog.wait_oom_killed(KILL_TIMEOUT);
    let kills = agent.wait_for_kills(&[stuck_pid], KILL_TIMEOUT);
    let [kill] = kills.as_slice() else {
        panic!("one oom_kill for pid {stuck_pid}, got {kills:#?}");
    };
    println!("{}", pretty(kill));
    assert_eq!(kill.victim.process.pid, Some(stuck_pid), "{}", pretty(kill));
    let cut = kill.cut.as_ref().unwrap_or_else(|| {
        panic!(
            "the kill says what it was written without: {}",
            pretty(kill)
        )
    });
    assert_eq!(cut.reason, CutReason::NoAnswer, "{}", pretty(kill));
    assert_eq!(cut.budget_ms, 1000);
    // The stuck read is the domain's processes: the snapshot's, or (without the kernel's
    // report of the kill) the composition's look for the victim.
    assert!(
        cut.parts.contains(&ObservedPart::SnapshotProcesses),
        "{}",
        pretty(kill)
    );
    assert!(
        matches!(
            cut.waiting_on,
            Some(ObservedPart::SnapshotProcesses | ObservedPart::Composition)
        ),
        "{}",
        pretty(kill)
    );
    // What was read before it is there: the domain, named as the kernel named it.
    let domain = kill.domain.as_ref().expect("a domain");
    assert_eq!(
        domain.cgroup.as_ref().map(|cgroup| cgroup.path.as_str()),
        Some(stuck.path().as_str()),
        "{}",
        pretty(kill)
    );
    assert!(!cut.parts.contains(&ObservedPart::Domain));

    // The next kill, elsewhere, is read in full while that read stays stuck.
    let fine_pid = Hog::spawn_in(HOG, &fine).wait_oom_killed(KILL_TIMEOUT);
    let kills = agent.wait_for_kills(&[fine_pid], KILL_TIMEOUT);
    let [kill] = kills.as_slice() else {
        panic!("one oom_kill for pid {fine_pid}, got {kills:#?}");
    };
    assert_eq!(kill.cut, None, "{}", pretty(kill));
    let snapshot = &kill.explanation.as_ref().expect("an explanation").snapshot;
    assert_eq!(snapshot.scope, fine.path(), "{}", pretty(kill));
    assert!(
        snapshot.processes_read.is_some_and(|read| read >= 1),
        "{}",
        pretty(kill)
    );

    // Stopping does not wait for the stuck read, and says it was given up.
    let stopped = agent.stop_within(libc::SIGINT, Duration::from_secs(10));
    let totals = &stopped.agent_stopped().totals;
    assert_eq!(totals.oom_kills, 2, "{}", pretty(stopped.agent_stopped()));
    assert_eq!(
        totals.observe_reads_given_up,
        1,
        "{}",
        pretty(stopped.agent_stopped())
    );
    assert!(
        stopped.stderr.contains("did not answer within 1000 ms"),
        "the log says why the kill lacks parts:\n{}",
        stopped.stderr
    );
    drop(fifo);
}
