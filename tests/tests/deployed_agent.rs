//! The agent as users deploy it on a host with systemd as PID 1, seen from outside as its
//! operator sees it, when a service is killed at its `MemoryMax=`:
//! - deploy/oomtrace.service, installed and enabled as its comments say: the kill is an entry
//!   of the agent's unit in the journal with the victim's unit named; `journalctl -u` of the
//!   victim's own unit shows it too; `journalctl -x` explains it with the installed catalog;
//!   and the unit's history (`oomtrace history`, `oomtrace show`) holds it under the entry's id.
//! - the image (deploy/Containerfile) run by the system's Docker as docs/deploy.md says: the
//!   kill is a record on the container's output (`docker logs oomtrace`), the unit named.
//!
//! Only where systemd is PID 1 and the agent was deployed that way: the whole-system guest
//! (`cargo xtask vm --system`) deploys it and runs this; elsewhere each test skips.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use oomtrace::record::composition::KernelLogState;
use oomtrace::record::{Body, OomKillRecord, Record};
use oomtrace_tests::{
    HistoryFile, Journald, KilledProcess, Kmsg, TransientService, pretty, require_root, skip,
    static_hog_binary,
};

const DEPLOYED_UNIT: &str = "oomtrace.service";
/// The container's name in the `docker run` line of the guest's deployment.
const DEPLOYED_CONTAINER: &str = "oomtrace";
const LIMIT_BYTES: u64 = 48 << 20;
/// `oom_kill`'s MESSAGE_ID (deploy/oomtrace.catalog).
const OOM_KILL_ID: &str = "377b4ba9a5e44d82badfb510c999ebd9";
/// Looks at the journal or the container's log take a while under emulation, and the
/// deployed agent writes after the kill's reads.
const OUTPUT_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether systemd runs this host; says why not and returns false otherwise.
fn systemd_is_pid_1() -> bool {
    let is = Path::new("/run/systemd/system").is_dir();
    if !is {
        skip("systemd is not PID 1 here: the deployed agent runs in `cargo xtask vm --system`");
    }
    is
}

/// A service killed at its `MemoryMax=` (the static hog, growing 16 MiB a second), with the
/// kernel's own account of the kill.
fn kill_a_service() -> (TransientService, KilledProcess) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let mut kmsg = Kmsg::open_at_end();
    let service = TransientService::start(
        &format!(
            "oomtrace-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ),
        LIMIT_BYTES,
        &static_hog_binary(),
        &["--no-wait", "--mib-per-second", "16"],
    );
    let pid = service.main_pid(Duration::from_secs(30));
    let killed = kmsg.find_killed(pid, Duration::from_secs(60));
    println!(
        "the kernel killed pid {pid} ({}) of {}; systemd says Result={}",
        killed.comm,
        service.unit(),
        service.property("Result")
    );
    (service, killed)
}

/// Panics unless the deployed agent read the kernel's own report of the kill from
/// `/dev/kmsg` (for what filled the limit; the same access recovers kills from before it
/// started): a deployment that hides the kernel log loses both.
fn assert_kernel_report_used(kill: &OomKillRecord, deployment: &str) {
    let kernel_log = kill
        .domain
        .as_ref()
        .and_then(|domain| domain.composition.as_ref())
        .map(|composition| &composition.kernel_log);
    assert_eq!(
        kernel_log.map(|used| used.state),
        Some(KernelLogState::Report),
        "{deployment} should read the kernel's report of the kill from /dev/kmsg: {}",
        pretty(&kernel_log)
    );
}

/// The victim's unit as the record names it.
fn victim_unit(kill: &OomKillRecord) -> Option<&str> {
    kill.victim
        .names
        .systemd
        .as_ref()
        .map(|systemd| systemd.unit.as_str())
}

#[test]
fn a_service_killed_at_its_memory_max_is_an_entry_of_the_deployed_unit() {
    require_root();
    if !systemd_is_pid_1() {
        return;
    }
    let active = Command::new("systemctl")
        .args(["is-active", "--quiet", DEPLOYED_UNIT])
        .status()
        .is_ok_and(|status| status.success());
    if !active {
        skip(&format!(
            "{DEPLOYED_UNIT} is not deployed and running here (deploy/oomtrace.service says how; \
             `cargo xtask vm --system --deployment unit` does it)"
        ));
        return;
    }
    let journal = Journald::start();
    let (service, killed) = kill_a_service();
    let pid = killed.pid;

    // The deployed agent's own entry, found as its operator would.
    let matches = [
        format!("_SYSTEMD_UNIT={DEPLOYED_UNIT}"),
        format!("MESSAGE_ID={OOM_KILL_ID}"),
        format!("OOMTRACE_PID={pid}"),
    ];
    let entries = journal.wait_for_entries(&matches, 1, OUTPUT_TIMEOUT);
    let [entry] = entries.as_slice() else {
        panic!(
            "one entry of {DEPLOYED_UNIT} for the kill of pid {pid}, found {}: {entries:#?}",
            entries.len()
        );
    };
    println!(
        "journalctl {}: {}",
        matches.join(" "),
        serde_json::to_string_pretty(entry).unwrap_or_default()
    );
    let expect = |field: &str, value: &str| {
        assert_eq!(
            entry.get(field).map(String::as_str),
            Some(value),
            "{field} of the entry {entry:#?}"
        );
    };
    expect("SYSLOG_IDENTIFIER", "oomtrace");
    expect("_TRANSPORT", "journal");
    expect("OOMTRACE_KIND", "oom_kill");
    expect("OOMTRACE_COMM", &killed.comm);
    expect("OOMTRACE_UNIT", service.unit());
    expect("OBJECT_SYSTEMD_UNIT", service.unit());
    expect("OOMTRACE_CGROUP", &service.cgroup_path());
    expect("OOMTRACE_LIMIT_KIND", "cgroup");
    expect("OOMTRACE_LIMIT_CGROUP", &service.cgroup_path());
    expect("OOMTRACE_LIMIT_BYTES", &LIMIT_BYTES.to_string());
    expect("OOMTRACE_TRIGGER_SELF", "true");
    let message = &entry["MESSAGE"];
    assert!(
        message.starts_with(&format!("OOM kill: pid {pid} ({})", killed.comm))
            && message.contains(service.unit()),
        "MESSAGE is the log line naming the unit: {message}"
    );
    let verdict = &entry["OOMTRACE_VERDICT"];

    // The victim's unit shows its own kill: `journalctl -u` takes a root sender's
    // OBJECT_SYSTEMD_UNIT.
    let by_victim = [
        format!("--unit={}", service.unit()),
        format!("MESSAGE_ID={OOM_KILL_ID}"),
    ];
    let victims_entries = journal.entries(&by_victim);
    assert!(
        victims_entries
            .iter()
            .any(|shown| shown.get("OOMTRACE_PID") == Some(&pid.to_string())),
        "journalctl {} shows the kill: {victims_entries:#?}",
        by_victim.join(" ")
    );

    // Explained by the catalog the deployment installed.
    let explained = journal.explained_as_installed(&by_victim);
    println!("journalctl -x {}:\n{explained}", by_victim.join(" "));
    for expected in [
        "Subject: A process was killed by the kernel's OOM killer",
        "Defined-By: oomtrace",
        verdict.as_str(),
    ] {
        assert!(
            explained.contains(expected),
            "journalctl -x should show `{expected}`:\n{explained}"
        );
    }

    // Stored in the unit's history under the entry's id, the unit named.
    let id: i64 = entry
        .get("OOMTRACE_HISTORY_ID")
        .unwrap_or_else(|| panic!("no OOMTRACE_HISTORY_ID in {entry:#?}"))
        .parse()
        .unwrap_or_else(|err| panic!("OOMTRACE_HISTORY_ID of {entry:#?}: {err}"));
    let history = HistoryFile::deployed(oomtrace::history::DEFAULT_PATH);
    let listed = history.records(&[]);
    let stored = listed
        .iter()
        .find(|listed| listed.history.id == id)
        .unwrap_or_else(|| panic!("no row {id} in {}", pretty(&listed)));
    let kill: &OomKillRecord = match stored.record().map(|record| &record.body) {
        Some(Body::OomKill(kill)) => kill,
        _ => panic!("row {id} is no oom_kill: {}", pretty(stored)),
    };
    assert_eq!(kill.victim.process.pid, Some(pid), "{}", pretty(kill));
    assert_eq!(
        victim_unit(kill),
        Some(service.unit()),
        "the stored victim's unit: {}",
        pretty(kill)
    );
    assert_kernel_report_used(kill, DEPLOYED_UNIT);
    let shown = history.run("show", &[&id.to_string()]);
    println!("oomtrace show {id}:\n{shown}");
    assert!(
        shown.contains(service.unit()),
        "`oomtrace show {id}` names {}:\n{shown}",
        service.unit()
    );
}

#[test]
fn a_service_killed_at_its_memory_max_is_a_record_of_the_deployed_image() {
    require_root();
    if !systemd_is_pid_1() {
        return;
    }
    let state = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{.State.Status}}",
            DEPLOYED_CONTAINER,
        ])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    if state != "running" {
        skip(&format!(
            "no container {DEPLOYED_CONTAINER} runs under the system's Docker here (docs/deploy.md \
             says how; `cargo xtask vm --system --deployment image` does it)"
        ));
        return;
    }
    let (service, killed) = kill_a_service();
    let pid = killed.pid;

    // Its output, JSON Lines on stdout, read back as records.
    let deadline = Instant::now() + OUTPUT_TIMEOUT;
    let (kill, history) = loop {
        let output = Command::new("docker")
            .args(["logs", DEPLOYED_CONTAINER])
            .output()
            .unwrap_or_else(|err| panic!("running docker logs {DEPLOYED_CONTAINER}: {err}"));
        let stdout = String::from_utf8_lossy(&output.stdout);
        let found = stdout
            .lines()
            .filter_map(|line| serde_json::from_str::<Record>(line).ok())
            .find_map(|record| match record.body {
                Body::OomKill(kill) if kill.victim.process.pid == Some(pid) => {
                    Some((kill, record.history))
                }
                _ => None,
            });
        if let Some(found) = found {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no oom_kill record of pid {pid} from {DEPLOYED_CONTAINER} within {OUTPUT_TIMEOUT:?}; \
             its log:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        thread::sleep(Duration::from_millis(500));
    };
    let context = pretty(&kill);
    println!("{DEPLOYED_CONTAINER}'s record of the kill: {context}");
    assert_eq!(victim_unit(&kill), Some(service.unit()), "{context}");
    assert_eq!(
        kill.victim.process.comm(),
        Some(killed.comm.as_str()),
        "{context}"
    );
    let domain = kill.domain.as_ref().expect("the record's domain");
    assert_eq!(
        domain.cgroup.as_ref().map(|cgroup| cgroup.path.as_str()),
        Some(service.cgroup_path().as_str()),
        "the limit hit is the service's: {context}"
    );
    assert_eq!(
        domain.memory.and_then(|memory| memory.limit_bytes),
        Some(LIMIT_BYTES),
        "{context}"
    );
    assert!(kill.triggered_by_victim(), "{context}");
    assert_kernel_report_used(&kill, DEPLOYED_CONTAINER);
    assert!(history.is_some(), "stored in the history volume: {context}");
}
