//! Docker Engine API sockets that misbehave: one accepts connections and never answers, the
//! other answers `/_ping` and then every request with a body that never ends (no newline in
//! it, so an event stream's line never ends either). A real OOM kill in a Docker-layout cgroup
//! is still logged on time, named from its path, the agent's memory stays bounded, and it
//! stops on SIGINT.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use oomtrace_tests::{Agent, Hog, MemoryCgroup, require_root};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const CONTAINER_ID: &str = "50c4e750c4e750c4e750c4e750c4e750c4e750c4e750c4e750c4e750c4e750c4";
/// How late a kill may be logged: the agent's own promise is 1 s; the margin is this busy
/// machine's.
const ON_TIME: Duration = Duration::from_secs(5);
/// The agent's peak resident memory, at most: an answer is cut at 32 MiB.
const MAX_PEAK_RSS_KB: u64 = 200 << 10;

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Serves `answer` on every connection, each on a thread of its own, for the test's lifetime.
fn serve(path: &std::path::Path, answer: fn(UnixStream)) {
    let listener =
        UnixListener::bind(path).unwrap_or_else(|err| panic!("binding {}: {err}", path.display()));
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || answer(stream));
        }
    });
}

fn never_answer(stream: UnixStream) {
    // Holds the connection open, reads nothing, says nothing.
    std::thread::sleep(Duration::from_secs(3600));
    drop(stream);
}

fn endless_answer(mut stream: UnixStream) {
    let mut request_line = String::new();
    let mut reader = BufReader::new(stream.try_clone().expect("a second handle"));
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    if request_line.contains("/_ping") {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK");
        return;
    }
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\n\r\n";
    if stream.write_all(head).is_err() {
        return;
    }
    let mut chunk = format!("{:x}\r\n", 64 << 10).into_bytes();
    chunk.extend(std::iter::repeat_n(b' ', 64 << 10));
    chunk.extend_from_slice(b"\r\n");
    while stream.write_all(&chunk).is_ok() {}
}

fn peak_rss_kb(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the agent's status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in the agent's status")
}

#[test]
fn runtime_sockets_that_never_answer_or_never_end_hold_up_nothing() {
    require_root();
    let scratch = Scratch(
        std::env::temp_dir().join(format!("oomtrace-hostile-socket-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&scratch.0);
    std::fs::create_dir_all(&scratch.0).expect("the scratch directory");
    let silent = scratch.0.join("silent.sock");
    let endless = scratch.0.join("endless.sock");
    serve(&silent, never_answer);
    serve(&endless, endless_answer);

    let mut agent = Agent::start_with(&[
        "--runtime-socket",
        silent.to_str().expect("a UTF-8 path"),
        "--runtime-socket",
        endless.to_str().expect("a UTF-8 path"),
    ]);
    // Let the watchers connect, list and follow (and be cut off) a few times first.
    std::thread::sleep(Duration::from_secs(3));

    let parent = MemoryCgroup::create(64 << 20);
    let docker = parent.child("docker");
    let container = docker.child(CONTAINER_ID);
    let hog_pid = Hog::spawn_in(HOG, &container).wait_oom_killed(Duration::from_secs(30));
    let killed_at = Instant::now();
    let kills = agent.wait_for_kills(&[hog_pid], ON_TIME);
    let logged_after = killed_at.elapsed();
    let [kill] = kills.as_slice() else {
        panic!(
            "one oom_kill for pid {hog_pid} within {ON_TIME:?}, got {kills:#?}; log:\n{}",
            agent.log()
        );
    };
    let named = kill
        .victim
        .names
        .container
        .as_ref()
        .expect("the container's id, from its cgroup path");
    assert_eq!(named.id, CONTAINER_ID);
    assert_eq!(named.name, None, "no runtime answered with a name");

    let peak_kb = peak_rss_kb(agent.pid());
    assert!(
        peak_kb < MAX_PEAK_RSS_KB,
        "the agent peaked at {peak_kb} kB (bound {MAX_PEAK_RSS_KB} kB)"
    );
    let stopping = Instant::now();
    let stopped = agent.stop_with(libc::SIGINT);
    println!(
        "silent and endless runtime sockets: the kill of {hog_pid} logged {logged_after:?} after \
         it, agent peak RSS {peak_kb} kB, stopped {:?} after SIGINT ({} records)",
        stopping.elapsed(),
        stopped.records.len()
    );
}
