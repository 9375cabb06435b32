//! A cgroup whose name carries terminal escapes (set the window title, clear the screen), a
//! carriage return and bidi overrides, as a delegated cgroup tree lets a container name its own: an OOM
//! kill in it, and every line the agent logs, writes as JSON, and `oomtrace show` prints is
//! free of raw control and bidi characters.

use std::time::Duration;

use oomtrace_tests::{Agent, HistoryFile, Hog, MemoryCgroup, require_root};

const HOG: &str = env!("CARGO_BIN_EXE_oomtrace-hog");
const HOSTILE: &str = "web\x1b]0;owned\x07\x1b[2J\rFAKE LINE \u{202e}gpj.exe\u{2066}x\u{7f}";

/// The first raw control or bidi character in `text`, if any.
fn raw_character(text: &str) -> Option<char> {
    text.chars().find(|&c| {
        c.is_control()
            || matches!(
                c,
                '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
                    | '\u{202a}'..='\u{202e}'
                    | '\u{2066}'..='\u{2069}'
            )
    })
}

fn assert_clean(what: &str, output: &str) {
    for line in output.lines() {
        if let Some(c) = raw_character(line) {
            panic!("{what}: a raw {c:?} in {line:?}");
        }
    }
}

#[test]
fn a_cgroup_named_with_escapes_reaches_no_output_raw() {
    require_root();
    let history = HistoryFile::new();
    let mut agent = Agent::start_with(&history.agent_args());
    let parent = MemoryCgroup::create(48 << 20);
    let hostile = parent.child(HOSTILE);
    let hog_pid = Hog::spawn_in(HOG, &hostile).wait_oom_killed(Duration::from_secs(30));
    let kills = agent.wait_for_kills(&[hog_pid], Duration::from_secs(30));
    let [kill] = kills.as_slice() else {
        panic!("one oom_kill for pid {hog_pid}, got {kills:#?}");
    };
    // The name itself is kept whole: escaped on the wire, read back exactly.
    let path = kill
        .victim
        .memcg
        .as_ref()
        .and_then(|memcg| memcg.path.clone())
        .unwrap_or_default();
    assert!(path.ends_with(HOSTILE), "the memcg path {path:?}");

    let stopped = agent.stop();
    assert_clean("the agent's log", &stopped.stderr);
    assert!(
        stopped.stderr.contains("\\x1b]0;owned"),
        "the log shows the name escaped:\n{}",
        stopped.stderr
    );
    // JSON as the agent writes it (the JSON Lines sink and the history commands share the
    // writer; the harness keeps the agent's lines parsed, so the history's are read raw).
    let jsonl = history.run(
        "history",
        &["--victim", "oomtrace-hog", "--format", "jsonl"],
    );
    assert_clean("oomtrace history --format jsonl", &jsonl);
    assert!(
        jsonl.contains("\\u202e"),
        "the bidi override as \\u202e:\n{jsonl}"
    );

    let table = history.run("history", &["--victim", "oomtrace-hog"]);
    assert_clean("oomtrace history", &table);
    let id = table
        .lines()
        .find(|line| line.contains(&format!(" {hog_pid} ")))
        .and_then(|line| line.split_whitespace().next())
        .unwrap_or_else(|| panic!("the kill of {hog_pid} in:\n{table}"));
    let shown = history.run("show", &[id]);
    assert_clean("oomtrace show", &shown);
    assert!(
        shown.contains("\\u{202e}"),
        "show names it, escaped:\n{shown}"
    );
    let json = history.run("show", &[id, "--format", "json"]);
    assert_clean("oomtrace show --format json", &json);
    println!("the kill of {hog_pid} in a cgroup named {HOSTILE:?}: every output line clean");
}
