//! The gallery: the verdict of every kind of kill the test suite causes, built from the parts
//! those kills are made of (the numbers are those of real runs), kept as golden text in
//! `tracer/fixtures/verdicts/<scenario>.txt` and published in `docs/verdicts.md`. Each is read
//! for plain English by [`problems`], so a new sentence cannot bring back `0.0 s`, `1 times`
//! or a plural for one.
//!
//! A new scenario is one more entry in [`scenarios`]; then regenerate the golden files and the
//! page with `OOMTRACE_BLESS=1 cargo test -p tracer verdict::tests::gallery`, and read them.

use std::path::PathBuf;

use super::*;
use crate::explain::lead_up::lead_up;
use crate::explain::patterns::Restarts;
use crate::record::kill::CgroupPath;
use crate::record::timeline::{CgroupTimeline, Timeline, UsageSample};

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;

struct Scenario {
    /// The golden file's name.
    name: &'static str,
    /// What happened, for the page.
    title: &'static str,
    /// Which test causes such a kill.
    test: &'static str,
    kill: AttributedKill,
    top: Top,
    flags: Flags,
}

fn process(comm: &str, pid: u32, container: Option<&str>, bytes: u64) -> TopProcess {
    TopProcess {
        comm: comm.to_owned(),
        pid,
        container: container.map(str::to_owned),
        bytes,
    }
}

fn place(path: &str) -> Attribution {
    Attribution {
        path: path.to_owned(),
        identity: cgroup_path::parse(path),
        container: None,
        source: Source::Path,
        warning: None,
    }
}

fn docker(id: &str, name: &str, limit: Option<u64>) -> Attribution {
    let mut party = container(id, name, limit);
    Arc::make_mut(party.container.as_mut().unwrap()).runtime = "docker";
    party
}

fn compose(id: &str, service: &str) -> Attribution {
    let mut party = docker(id, &format!("shop_{service}_1"), None);
    let meta = Arc::make_mut(party.container.as_mut().unwrap());
    meta.compose.project = Some("shop".to_owned());
    meta.compose.service = Some(service.to_owned());
    meta.compose.number = Some(1);
    meta.restart_policy = Some("always".to_owned());
    meta.restart_count = Some(2);
    party
}

fn sized(mut kill: Box<OomKill>, anon_kb: u64, file_kb: u64) -> Box<OomKill> {
    let fields = kill.victim.fields.as_mut().unwrap();
    fields.anon_rss_kb = Some(anon_kb);
    fields.file_rss_kb = Some(file_kb);
    kill
}

fn samples(points: &[(i64, u64)]) -> Vec<UsageSample> {
    points
        .iter()
        .map(|&(offset_ms, mib)| UsageSample {
            offset_ms,
            usage_bytes: mib * MIB,
        })
        .collect()
}

/// A cgroup as the recorder kept it: its path, its limit, its `(offset ms, MiB)` samples.
type Recorded<'a> = (&'a str, Option<u64>, &'a [(i64, u64)]);

/// The recorder's timeline of `cgroups`, each named
/// as the cache names it: `owners` for the paths it knows.
fn timeline_of(cgroups: Vec<Recorded<'_>>, owners: &[&Attribution]) -> Timeline {
    Timeline {
        window_s: 60,
        pressure_source: None,
        pressure: Vec::new(),
        not_covered: Vec::new(),
        cgroups: cgroups
            .into_iter()
            .map(|(path, limit, points)| CgroupTimeline {
                cgroup: CgroupPath {
                    path: path.to_owned(),
                },
                names: owners
                    .iter()
                    .find(|owner| owner.path == path)
                    .map(|owner| crate::record::build::names(Some(owner), None))
                    .unwrap_or_default(),
                limit_bytes: limit,
                samples: samples(points),
                events: Vec::new(),
                composition: Vec::new(),
            })
            .collect(),
    }
}

fn scenarios() -> Vec<Scenario> {
    let test_cgroup = place("/oomtrace-test-18678-0");
    let web = container(DB, "web", Some(48 * MIB));
    let worker = crate::attribute::fixtures::worker();
    // The pod's own cgroup is its sandbox's: another container id than the worker's.
    let mut pod = crate::attribute::fixtures::in_pod(&crate::attribute::fixtures::pod_path(), None);
    Arc::make_mut(pod.container.as_mut().unwrap()).id = BUILDER.to_owned();
    let shared_parent = place("/oomtrace-test-14115-0");
    let looping = {
        let mut party = container(DB, "web", Some(48 * MIB));
        let meta = Arc::make_mut(party.container.as_mut().unwrap());
        meta.restart_policy = Some("always".to_owned());
        meta.restart_count = Some(2);
        party
    };
    vec![
        Scenario {
            name: "memcg_own_limit",
            title: "A process in a plain memory cgroup at its own limit",
            test: "tests/tests/memcg_oom.rs",
            kill: AttributedKill {
                kill: sized(
                    oom((18739, "python3", 0), (18739, "python3")),
                    65_024,
                    6_656,
                ),
                victim: Some(test_cgroup.clone()),
                trigger: Some(test_cgroup.clone()),
                main_process: None,
                domain: domain(
                    DomainKind::Cgroup,
                    Basis::Counters,
                    Some(test_cgroup.clone()),
                    Some(64 * MIB),
                ),
            },
            top: Top {
                filled: None,
                processes: vec![process("python3", 18739, None, 70 * MIB + 512 * KIB)],
                ..Top::default()
            },
            flags: Flags::default(),
        },
        Scenario {
            name: "container_main_process",
            title: "A Docker container's main process at the container's --memory limit",
            test: "tests/tests/docker_oom.rs",
            kill: AttributedKill {
                kill: sized(
                    oom((21403, "oomtrace-hog", 0), (21403, "oomtrace-hog")),
                    48_500,
                    1_200,
                ),
                victim: Some(docker(DB, "web", Some(48 * MIB))),
                trigger: Some(docker(DB, "web", Some(48 * MIB))),
                main_process: Some(true),
                domain: domain(
                    DomainKind::Cgroup,
                    Basis::Counters,
                    Some(docker(DB, "web", Some(48 * MIB))),
                    Some(48 * MIB),
                ),
            },
            top: Top {
                charged_to_domain: None,
                filled: None,
                cgroups: vec![("container web".to_owned(), 48 * MIB)],
                processes: vec![process("oomtrace-hog", 21403, Some("web"), 49 * MIB)],
                lead_up: None,
            },
            flags: Flags::default(),
        },
        Scenario {
            name: "container_child",
            title: "A podman container's child process killed while its main process survives",
            test: "tests/tests/container_child.rs",
            kill: AttributedKill {
                kill: sized(
                    oom((18998, "oomtrace-hog", 0), (18998, "oomtrace-hog")),
                    48_640,
                    108,
                ),
                victim: Some(web.clone()),
                trigger: Some(web.clone()),
                main_process: Some(false),
                domain: domain(
                    DomainKind::Cgroup,
                    Basis::Counters,
                    Some(web.clone()),
                    Some(48 * MIB),
                ),
            },
            top: Top {
                charged_to_domain: None,
                filled: None,
                cgroups: vec![("container web".to_owned(), 48 * MIB)],
                processes: vec![
                    process("oomtrace-hog", 18998, Some("web"), 47 * MIB + 600 * KIB),
                    process("sh", 18950, Some("web"), 620 * KIB),
                ],
                lead_up: None,
            },
            flags: Flags::default(),
        },
        Scenario {
            name: "compose_shared_limit_loop",
            title: "A Compose service killed a third time at a limit it shares with a neighbour \
                    that spiked (restart: always)",
            test: "tests/tests/compose_shared_limit.rs",
            kill: AttributedKill {
                kill: sized(
                    oom((14675, "oomtrace-hog", 0), (14724, "oomtrace-hog")),
                    62_464,
                    100,
                ),
                victim: Some(compose(DB, "db")),
                trigger: Some(compose(BUILDER, "builder")),
                main_process: Some(true),
                domain: domain(
                    DomainKind::Cgroup,
                    Basis::Counters,
                    Some(shared_parent.clone()),
                    Some(100 * MIB),
                ),
            },
            top: Top {
                charged_to_domain: None,
                filled: None,
                cgroups: vec![
                    ("service db of project shop".to_owned(), 60_700 * KIB),
                    ("service builder of project shop".to_owned(), 39_200 * KIB),
                ],
                processes: vec![
                    process("oomtrace-hog", 14675, Some("shop_db_1"), 61 * MIB),
                    process("oomtrace-hog", 14724, Some("shop_builder_1"), 39 * MIB),
                ],
                lead_up: lead_up(&Timeline {
                    pressure: vec![crate::record::timeline::Stall {
                        offset_ms: -2_000,
                        some_pct: crate::record::timeline::Percent(23.0),
                        full_pct: crate::record::timeline::Percent(4.0),
                    }],
                    ..timeline_of(
                        vec![
                            (
                                "/oomtrace-test-14115-0",
                                Some(100 * MIB),
                                &[(-3_000, 40), (-100, 99)],
                            ),
                            (&path(DB), None, &[(-3_000, 3), (-1_100, 3), (-100, 61)]),
                            (
                                &path(BUILDER),
                                None,
                                &[(-3_000, 0), (-2_000, 1), (-100, 27)],
                            ),
                        ],
                        &[&compose(DB, "db"), &compose(BUILDER, "builder")],
                    )
                }),
            },
            flags: Flags {
                restart_loop: Some(3),
                recurring_trigger: None,
                restarts: Some(Restarts {
                    count: 2,
                    over: Duration::from_millis(1_400),
                }),
            },
        },
        Scenario {
            name: "restart_loop",
            title: "A podman container (--restart always) OOM-killed a third time, each restart \
                    filling its limit in a moment",
            test: "tests/tests/restart_loop.rs",
            kill: AttributedKill {
                kill: sized(
                    oom((4931, "oomtrace-hog", 0), (4931, "oomtrace-hog")),
                    48_700,
                    420,
                ),
                victim: Some(looping.clone()),
                trigger: Some(looping.clone()),
                main_process: Some(true),
                domain: domain(
                    DomainKind::Cgroup,
                    Basis::Counters,
                    Some(looping.clone()),
                    Some(48 * MIB),
                ),
            },
            top: Top {
                filled: None,
                processes: vec![process("oomtrace-hog", 4931, Some("web"), 48 * MIB)],
                lead_up: lead_up(&timeline_of(
                    vec![(
                        &path(DB),
                        Some(48 * MIB),
                        &[(-2_600, 42), (-1_000, 42), (-480, 0)],
                    )],
                    &[&looping],
                )),
                ..Top::default()
            },
            flags: Flags {
                restart_loop: Some(3),
                recurring_trigger: None,
                restarts: Some(Restarts {
                    count: 2,
                    over: Duration::from_millis(1_300),
                }),
            },
        },
        Scenario {
            name: "container_removed",
            title: "A --rm container, gone a moment after its kill, still named",
            test: "tests/tests/container_removed.rs",
            kill: {
                let mut gone = container(DB, "batch", Some(48 * MIB));
                gone.source = Source::Tombstone;
                AttributedKill {
                    kill: sized(
                        oom((6120, "oomtrace-hog", 0), (6120, "oomtrace-hog")),
                        48_600,
                        400,
                    ),
                    victim: Some(gone.clone()),
                    trigger: Some(gone.clone()),
                    main_process: Some(true),
                    domain: domain(
                        DomainKind::Cgroup,
                        Basis::ContainerLimit,
                        Some(gone),
                        Some(48 * MIB),
                    ),
                }
            },
            top: Top::default(),
            flags: Flags::default(),
        },
        Scenario {
            name: "oom_group",
            title: "One of five members of a memory.oom.group cgroup, all killed at once",
            test: "xtask/src/vm/scenario/oom_group.rs (full tier)",
            kill: AttributedKill {
                kill: sized(
                    oom((212, "oomtrace-hog", 0), (215, "oomtrace-hog")),
                    12_300,
                    4,
                ),
                victim: Some(place("/group/member-1")),
                trigger: Some(place("/group/member-4")),
                main_process: None,
                domain: domain(
                    DomainKind::Cgroup,
                    Basis::Kernel,
                    Some(place("/group")),
                    Some(64 * MIB),
                ),
            },
            top: Top {
                charged_to_domain: None,
                filled: None,
                cgroups: (0..5)
                    .map(|member| (format!("cgroup /group/member-{member}"), 12 * MIB))
                    .collect(),
                processes: (0..5)
                    .map(|member| process("oomtrace-hog", 211 + member, None, 12 * MIB + 300 * KIB))
                    .collect(),
                lead_up: None,
            },
            flags: Flags::default(),
        },
        Scenario {
            name: "pod_container_own_limit",
            title: "A Kubernetes container at its own limit (containerd, over the CRI)",
            test: "tests/tests/cri_container_oom.rs",
            kill: crate::attribute::fixtures::in_worker(
                *sized(
                    oom((8127, "oomtrace-hog", 0), (8127, "oomtrace-hog")),
                    48_900,
                    300,
                ),
                worker.clone(),
                48 * MIB,
            ),
            top: Top::default(),
            flags: Flags::default(),
        },
        Scenario {
            name: "pod_limit",
            title: "A Kubernetes container killed at its pod's limit, not its own",
            test: "tests/tests/cri_container_oom.rs (pod limit)",
            kill: crate::attribute::fixtures::in_worker(
                *sized(
                    oom((8127, "oomtrace-hog", 0), (8127, "oomtrace-hog")),
                    200_000,
                    300,
                ),
                pod,
                256 * MIB,
            ),
            top: Top::default(),
            flags: Flags::default(),
        },
        Scenario {
            name: "host_wide",
            title: "The whole host out of memory: a db killed, a builder next to it allocating",
            test: "xtask/src/vm/scenario/host_oom.rs (Debian 6.1 in qemu, full tier)",
            kill: AttributedKill {
                kill: sized(
                    oom((152, "oomtrace-hog", 0), (293, "oomtrace-hog")),
                    264_300,
                    4,
                ),
                victim: Some(place("/db")),
                trigger: Some(place("/builder")),
                main_process: None,
                domain: domain(DomainKind::Host, Basis::Kernel, None, None),
            },
            top: Top {
                charged_to_domain: None,
                filled: None,
                cgroups: vec![
                    ("cgroup /db".to_owned(), 265_114 * KIB),
                    ("cgroup /builder".to_owned(), 172_236 * KIB),
                ],
                processes: vec![
                    process("oomtrace-hog", 293, None, 173_670 * KIB),
                    process("oomtrace", 108, None, 5_530 * KIB),
                    process("sh", 100, None, 1_840 * KIB),
                ],
                lead_up: None,
            },
            flags: Flags::default(),
        },
        Scenario {
            name: "host_wide_recurring_trigger",
            title: "A second host-wide OOM set off by the same container, another victim",
            test: "tracer/src/explain/patterns.rs",
            kill: host_wide(),
            top: Top::default(),
            flags: Flags {
                recurring_trigger: Some(2),
                ..Flags::default()
            },
        },
        Scenario {
            name: "lead_up_growth",
            title: "A limit shared by a growing builder and a flat database, with the minute \
                    before",
            test: "tests/tests/timeline_lead_up.rs",
            kill: AttributedKill {
                kill: sized(
                    oom((4410, "postgres", 0), (4522, "cc1plus")),
                    1_992_000,
                    2_048,
                ),
                victim: Some(place("/pod/db")),
                trigger: Some(place("/pod/builder")),
                main_process: None,
                domain: domain(
                    DomainKind::Cgroup,
                    Basis::Counters,
                    Some(place("/pod")),
                    Some(5 << 30),
                ),
            },
            top: Top {
                charged_to_domain: None,
                filled: None,
                cgroups: vec![
                    ("cgroup /pod/builder".to_owned(), 2_900 * MIB),
                    ("cgroup /pod/db".to_owned(), 1_946 * MIB),
                ],
                processes: vec![
                    process("cc1plus", 4522, None, 2_870 * MIB),
                    process("postgres", 4410, None, 1_940 * MIB),
                ],
                lead_up: lead_up(&timeline_of(
                    vec![
                        ("/pod", Some(5 << 30), &[(-60_000, 2_040), (-200, 4_850)]),
                        (
                            "/pod/builder",
                            None,
                            &[
                                (-60_000, 100),
                                (-40_000, 100),
                                (-20_000, 1_400),
                                (-200, 2_900),
                            ],
                        ),
                        ("/pod/db", None, &[(-60_000, 1_946), (-200, 1_946)]),
                    ],
                    &[],
                )),
            },
            flags: Flags::default(),
        },
        Scenario {
            name: "limit_filled_between_samples",
            title: "A container that filled its limit faster than the recorder samples",
            test: "tests/tests/container_oom.rs",
            kill: AttributedKill {
                kill: sized(
                    oom((9911, "oomtrace-hog", 0), (9911, "oomtrace-hog")),
                    130_000,
                    900,
                ),
                victim: Some(container(DB, "web", Some(128 * MIB))),
                trigger: Some(container(DB, "web", Some(128 * MIB))),
                main_process: Some(true),
                domain: domain(
                    DomainKind::Cgroup,
                    Basis::Counters,
                    Some(container(DB, "web", Some(128 * MIB))),
                    Some(128 * MIB),
                ),
            },
            top: Top {
                filled: None,
                processes: vec![process("oomtrace-hog", 9911, Some("web"), 128 * MIB)],
                lead_up: lead_up(&timeline_of(
                    vec![(&path(DB), Some(128 * MIB), &[(-30_000, 1), (-20, 1)])],
                    &[&container(DB, "web", Some(128 * MIB))],
                )),
                ..Top::default()
            },
            flags: Flags::default(),
        },
        Scenario {
            name: "exiting_task_reserves",
            title: "The OOM killer finds a task already exiting, and kills nothing",
            test: "xtask/src/vm/scenario (full tier)",
            kill: {
                let mut kill = own_limit();
                kill.kill.marked_without_kill = true;
                kill
            },
            top: Top::default(),
            flags: Flags::default(),
        },
        Scenario {
            name: "tracepoint_only",
            title: "Without kernel BTF (tier tracepoint-only): only what the tracepoint says",
            test: "tests/tests/tracepoint_only.rs",
            kill: AttributedKill::unattributed(*sized(
                oom((9, "oomtrace-hog", 0), (9, "oomtrace-hog")),
                65_400,
                0,
            )),
            top: Top::default(),
            flags: Flags::default(),
        },
        Scenario {
            name: "root_cgroup",
            title: "A process outside any cgroup of its own (the root cgroup), the host out of \
                    memory",
            test: "xtask/src/vm/scenario/host_oom.rs",
            kill: AttributedKill {
                kill: sized(oom((731, "java", 0), (731, "java")), 3_100_000, 40_000),
                victim: Some(place("/")),
                trigger: Some(place("/")),
                main_process: None,
                domain: domain(DomainKind::Host, Basis::Kernel, None, None),
            },
            top: Top {
                filled: None,
                processes: vec![
                    process("java", 731, None, 3_067 * MIB),
                    process("sshd", 412, None, 6 * MIB),
                ],
                ..Top::default()
            },
            flags: Flags::default(),
        },
    ]
}

/// What a careful reader would stumble on.
fn problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut say = |problem: &str| problems.push(problem.to_owned());
    if !text.starts_with(|c: char| c.is_uppercase()) {
        say("does not start with a capital");
    }
    if !text.ends_with('.') {
        say("does not end with a full stop");
    }
    for (bad, why) in [
        ("  ", "a double space"),
        (" .", "a space before a full stop"),
        (" ,", "a space before a comma"),
        ("..", "two full stops"),
        ("()", "empty parentheses"),
        ("0.0 s", "a duration of 0.0 s"),
        (" 1 times", "`1 times`"),
        (" 2 times", "`2 times`, not `twice`"),
        (" 0 h", "a window of 0 h"),
        (" h:", "an abbreviated hour in prose"),
        ("the processes ", "`the processes` before a list"),
    ] {
        if text.contains(bad) {
            say(why);
        }
    }
    // `48.0 MiB`, `2.80 GiB`: sizes as nobody says them.
    let words: Vec<&str> = text.split(' ').collect();
    for pair in words.windows(2) {
        let (number, unit) = (pair[0].trim_start_matches('('), pair[1]);
        let unit = unit.trim_end_matches([',', '.', ';', ')']);
        if ["KiB", "MiB", "GiB", "TiB"].contains(&unit)
            && number.contains('.')
            && number.ends_with('0')
        {
            problems.push(format!("`{number} {unit}`: a trailing zero"));
        }
    }
    // `were X` with one X, `was X and Y`. A list ends at `; ` or `. ` (`2.8 GiB` has a full
    // stop that does not).
    for (verb, plural) in [
        ("users were ", true),
        ("user was ", false),
        ("processes were ", true),
        ("process was ", false),
    ] {
        for (at, _) in text.match_indices(verb) {
            let list = &text[at + verb.len()..];
            let end = [list.find("; "), list.find(". ")]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(list.len());
            let many = list[..end].contains(" and ");
            if many != plural {
                problems.push(format!(
                    "`{}` with {}",
                    verb.trim_end(),
                    if many { "many" } else { "one" }
                ));
            }
        }
    }
    problems
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/verdicts")
}

fn page_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/verdicts.md")
}

/// `docs/verdicts.md`: generated from the scenarios, never edited by hand.
fn page(verdicts: &[(&Scenario, String)]) -> String {
    let mut page = String::from(
        "# Verdicts\n\n\
         <!-- Generated by `OOMTRACE_BLESS=1 cargo test -p tracer verdict::tests::gallery` from \
         tracer/src/explain/verdict/tests/gallery.rs; do not edit. -->\n\n\
         Each OOM kill is explained in one paragraph: the log's `why:` line, the JSON's \
         `explanation.verdict`, `oomtrace show`, and the journal's `OOMTRACE_VERDICT`. These are \
         the verdicts of the kinds of kill the test suite causes, with the numbers of real runs. \
         Each is kept as golden text in `tracer/fixtures/verdicts/` and read for plain English \
         by the test that writes this page (no `0.0 s`, no `1 times`, sizes as people say them, \
         one user said as one).\n",
    );
    for (scenario, text) in verdicts {
        page.push_str(&format!(
            "\n## {}\n\n*{}: `{}`*\n\n> {}\n",
            scenario.title, scenario.test, scenario.name, text
        ));
    }
    page
}

#[test]
fn gallery() {
    let bless = std::env::var_os("OOMTRACE_BLESS").is_some();
    let scenarios = scenarios();
    let mut verdicts = Vec::new();
    let mut failures = Vec::new();
    for scenario in &scenarios {
        let text = verdict(&scenario.kill, &scenario.top, scenario.flags, HOURS_6);
        let problems = problems(&text);
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {}\n  {text}",
                scenario.name,
                problems.join("; ")
            ));
        }
        let path = golden_dir().join(format!("{}.txt", scenario.name));
        if bless {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, format!("{text}\n")).unwrap();
        }
        match std::fs::read_to_string(&path) {
            Ok(golden) if golden.trim_end() == text => {}
            Ok(golden) => failures.push(format!(
                "{}: the verdict changed; if that is meant, read it and run OOMTRACE_BLESS=1 \
                 cargo test -p tracer verdict::tests::gallery\n  was: {}\n  now: {text}",
                scenario.name,
                golden.trim_end()
            )),
            Err(err) => failures.push(format!("{}: {err}", path.display())),
        }
        verdicts.push((scenario, text));
    }
    let page = page(&verdicts);
    if bless {
        std::fs::write(page_path(), &page).unwrap();
    }
    if std::fs::read_to_string(page_path()).ok().as_deref() != Some(page.as_str()) {
        failures.push(
            "docs/verdicts.md is not the gallery's: run OOMTRACE_BLESS=1 cargo test -p tracer \
             verdict::tests::gallery"
                .to_owned(),
        );
    }
    let names: std::collections::BTreeSet<_> = scenarios.iter().map(|s| s.name).collect();
    assert_eq!(names.len(), scenarios.len(), "two scenarios share a name");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The reader of the gallery is itself tested: each stumble it knows is caught.
#[test]
fn the_plain_english_reader_catches_what_it_should() {
    for (text, problem) in [
        ("It filled its limit within the last 0.0 s.", "0.0 s"),
        ("Docker restarted it 1 times in 2 s.", "`1 times`"),
        ("The limit of 48.0 MiB was hit.", "trailing zero"),
        (
            "At that moment the biggest users were the processes a (pid 1, 2 MiB).",
            "the processes",
        ),
        (
            "At that moment the biggest users were a (2 MiB).",
            "with one",
        ),
        (
            "At that moment the biggest user was a (2.8 GiB) and b (1 MiB).",
            "with many",
        ),
        ("no capital.", "capital"),
    ] {
        let found = problems(text);
        assert!(
            found.iter().any(|found| found.contains(problem)),
            "`{text}` should be caught for {problem}: {found:?}"
        );
    }
    assert_eq!(
        problems(
            "At that moment the biggest users were a (2.8 GiB) and b (1 MiB); the biggest \
             process was c (pid 7, 1.9 GiB)."
        ),
        Vec::<String>::new()
    );
}
