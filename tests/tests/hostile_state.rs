//! A runtime's data root that someone else can write to: a FIFO where Docker keeps a
//! container's `config.v2.json` (opening it for reading waits for a writer forever), and a
//! symlink from another container's to a root-only file outside the data root. The agent
//! starts, names nothing from either, quotes neither file anywhere, traces the kill in that
//! container and stops on SIGTERM.

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oomtrace_tests::{Agent, HistoryFile, Hog, MemoryCgroup, require_root};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const FIFO_ID: &str = "f1f0f1f0f1f0f1f0f1f0f1f0f1f0f1f0f1f0f1f0f1f0f1f0f1f0f1f0f1f0f1f0";
const LINKED_ID: &str = "5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f5e1f";
const SECRET: &str = "oomtrace-hostile-secret-4f1c";

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mkfifo(path: &Path) {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL in the path");
    // SAFETY: a valid C string for the duration of the call.
    let made = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(made, 0, "mkfifo {}", path.display());
}

#[test]
fn a_fifo_and_a_symlink_in_dockers_state_neither_hang_nor_leak() {
    require_root();
    let scratch = Scratch(
        std::env::temp_dir().join(format!("oomtrace-hostile-state-{}", std::process::id())),
    );
    let _ = std::fs::remove_dir_all(&scratch.0);
    let root = scratch.0.join("docker");
    for id in [FIFO_ID, LINKED_ID] {
        std::fs::create_dir_all(root.join("containers").join(id)).expect("a container directory");
    }
    mkfifo(&root.join("containers").join(FIFO_ID).join("config.v2.json"));
    let secret = scratch.0.join("secret.json");
    std::fs::write(
        &secret,
        format!(r#"{{"ID":"{SECRET}","Name":"/{SECRET}"}}"#),
    )
    .expect("the secret file");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::os::unix::fs::symlink(
        &secret,
        root.join("containers")
            .join(LINKED_ID)
            .join("config.v2.json"),
    )
    .expect("the symlink");

    let history = HistoryFile::new();
    let root_arg = root.to_str().expect("a UTF-8 path");
    let mut args = vec!["--runtime-state", root_arg, "--runtime-state-only"];
    args.extend(history.agent_args());
    // Starting at all is the first check: the FIFO used to hold the agent before it attached.
    let mut agent = Agent::start_with(&args);

    // A kill in the container whose state is the symlink: named from its cgroup path only.
    let parent = MemoryCgroup::create(64 << 20);
    let docker = parent.child("docker");
    let container = docker.child(LINKED_ID);
    let hog_pid = Hog::spawn_in(HOG, &container).wait_oom_killed(Duration::from_secs(30));
    let kills = agent.wait_for_kills(&[hog_pid], Duration::from_secs(30));
    let [kill] = kills.as_slice() else {
        panic!(
            "one oom_kill for pid {hog_pid}, got {kills:#?}; log:\n{}",
            agent.log()
        );
    };
    let container_named = kill
        .victim
        .names
        .container
        .as_ref()
        .expect("the container's id");
    assert_eq!(container_named.id, LINKED_ID);
    assert_eq!(
        container_named.name, None,
        "nothing named from the symlinked file"
    );
    let warning = kill
        .victim
        .names
        .attribution
        .as_ref()
        .and_then(|attribution| attribution.warning.clone())
        .unwrap_or_default();
    assert!(
        warning.contains("symlink"),
        "the warning says why: {warning:?}"
    );

    let stopped = agent.stop();
    assert!(
        !stopped.stderr.contains(SECRET),
        "the log quotes the file:\n{}",
        stopped.stderr
    );
    for record in &stopped.records {
        let json = serde_json::to_string(record).expect("a record serializes");
        assert!(!json.contains(SECRET), "a record quotes the file: {json}");
    }
    for suffix in ["", "-wal"] {
        let mut file = history.path().as_os_str().to_owned();
        file.push(suffix);
        if let Ok(bytes) = std::fs::read(&file) {
            assert!(
                !String::from_utf8_lossy(&bytes).contains(SECRET),
                "the history quotes the file"
            );
        }
    }
    println!("a FIFO and a symlink in the state: attached, the kill of {hog_pid} traced, no leak");
}
