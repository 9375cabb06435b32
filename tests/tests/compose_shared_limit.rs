//! The case oomtrace was made for, with the real Docker Engine and docker-compose: project
//! `shop` runs a `db` service (`restart: always`) holding its working set and a `builder` that
//! spikes, both under one `cgroup_parent` with a memory limit. Each spike of the builder makes
//! the kernel kill the db, the biggest process under the limit; Docker restarts it, and it looks
//! merely "running". The agent must say, for each kill and as the kernel's log does: victim db,
//! trigger builder, the parent's limit hit; name them as Compose does (service db of project
//! shop) in its log, its JSON and `oomtrace show`; flag the restart loop at the third kill with
//! Docker's restart count; and describe memory as it was at each kill, not at an earlier one.

use std::time::{Duration, Instant};

use oomtrace::attribute::DomainKind;
use oomtrace::record::party::{Compose, Container, Party};
use oomtrace::record::{Body, OomKillRecord};
use oomtrace_tests::{
    ComposeProject, Dockerd, HOG_IN_IMAGE, HistoryFile, IMAGE, Kmsg, MemoryCgroup, SystemdSlice,
    or_dash, pretty, require_root,
};

const MIB: u64 = 1 << 20;
/// The project's `cgroup_parent` limit: the db's working set plus most of a build step.
const PARENT_LIMIT_BYTES: u64 = 100 * MIB;
/// The db's steady working set.
const DB_MIB: u64 = 60;
/// A build step's peak, were it alone: it fits the limit alone, not beside the db (60 + 45 >
/// 100, whatever else the cgroup holds). The step ends soon after it made the kernel kill the
/// db, so that the db, restarted a tenth of a second later, finds room again.
const BUILD_STEP_MIB: u64 = 45;
/// The agent's restart-loop threshold.
const KILLS: usize = 3;
const PROJECT: &str = "shop";

/// The project's `cgroup_parent`, as a host of the daemon's cgroup driver has it: a cgroup
/// with `memory.max` (cgroupfs), or a slice with `MemoryMax=` (systemd, the default of Docker on
/// cgroup v2 under systemd), whose containers are scopes below it.
enum Parent {
    Cgroup(MemoryCgroup),
    Slice(SystemdSlice),
}

impl Parent {
    fn for_driver(driver: &str) -> Self {
        match driver {
            "systemd" => Self::Slice(SystemdSlice::create(PARENT_LIMIT_BYTES)),
            "cgroupfs" => Self::Cgroup(MemoryCgroup::for_containers(PARENT_LIMIT_BYTES)),
            other => panic!("Docker's cgroup driver {other:?} is neither cgroupfs nor systemd"),
        }
    }

    /// What Compose's `cgroup_parent` names.
    fn compose_name(&self) -> String {
        match self {
            Self::Cgroup(cgroup) => cgroup.path(),
            Self::Slice(slice) => slice.unit().to_owned(),
        }
    }

    /// The cgroup path, as the kernel shows it.
    fn path(&self) -> String {
        match self {
            Self::Cgroup(cgroup) => cgroup.path(),
            Self::Slice(slice) => slice.path(),
        }
    }

    /// A container's cgroup below it.
    fn container_cgroup(&self, id: &str) -> String {
        match self {
            Self::Cgroup(cgroup) => format!("{}/{id}", cgroup.path()),
            Self::Slice(slice) => format!("{}/docker-{id}.scope", slice.path()),
        }
    }
}

#[test]
fn a_compose_builder_spiking_under_a_shared_limit_kills_the_db_again_and_again() {
    require_root();
    let docker = Dockerd::start();
    let history = HistoryFile::new();
    let mut agent = docker.start_agent_with(&history.agent_args());
    let parent = Parent::for_driver(&docker.cgroup_driver());
    let release_dir = docker.scratch_dir("builder-release");

    // The builder runs one build step per file the test creates, so each step starts once the
    // db holds its working set again: each kill is then the same story, not a race.
    let builder_script = format!(
        "for step in {steps}; do until [ -e /release/step-$$step ]; do sleep 0.05; done; \
         {HOG_IN_IMAGE} --no-wait --max-mib {BUILD_STEP_MIB}; \
         echo \"build step $$step ended $$?\"; done; sleep 3600",
        steps = (1..=KILLS)
            .map(|step| step.to_string())
            .collect::<Vec<_>>()
            .join(" "),
    );
    let compose_file = format!(
        r#"version: "2.4"
services:
  db:
    image: {IMAGE}
    command: ["{HOG_IN_IMAGE}", "--no-wait", "--hold", "--max-mib", "{DB_MIB}"]
    restart: always
    cgroup_parent: {parent}
    network_mode: none
  builder:
    image: {IMAGE}
    command: ["/bin/sh", "-c", {builder_script:?}]
    cgroup_parent: {parent}
    network_mode: none
    volumes:
      - {release}:/release:ro
"#,
        parent = parent.compose_name(),
        release = release_dir.display(),
    );
    let mut kmsg = Kmsg::open_at_end();
    let project = ComposeProject::up(&docker, PROJECT, &compose_file);
    let db = project.container("db");
    let builder = project.container("builder");

    // The kernel rate-limits its OOM report (the `oom-kill:` line naming the cgroups, checked
    // below) to 10 per 5 s, and the tests before this one OOM-kill many processes: wait for a
    // quiet window so that the reports of these kills are complete.
    std::thread::sleep(Duration::from_secs(6));
    let mut kills = Vec::new();
    let mut reports = Vec::new();
    let started = Instant::now();
    for step in 1..=KILLS {
        db.wait_for_output(&format!("held {DB_MIB} MiB"), step, Duration::from_secs(60));
        std::fs::write(release_dir.join(format!("step-{step}")), b"")
            .expect("releasing a build step");
        let mut found =
            agent.wait_for_kills_where(|record| db.is_victim_of(record), step, KILL_TIMEOUT);
        assert_eq!(
            found.len(),
            step,
            "one oom_kill of the db per build step, {step} so far: {found:#?}"
        );
        let kill = found.pop().expect("as many kills as steps");
        let Some(victim_pid) = kill.victim.process.pid else {
            panic!("no victim pid in {}", pretty(&kill));
        };
        reports.push(kmsg.find_report(victim_pid, Duration::from_secs(10)));
        kills.push(kill);
    }
    let elapsed = started.elapsed();
    // Docker restarts the db after its third kill too; its count is read once it has.
    db.wait_for_output(
        &format!("held {DB_MIB} MiB"),
        KILLS + 1,
        Duration::from_secs(60),
    );

    let parent_path = parent.path();
    let db_memcg = parent.container_cgroup(db.id());
    for (i, (kill, kernel)) in kills.iter().zip(&reports).enumerate() {
        let victim = kill.victim.names.container.as_ref();
        let domain = kill.domain.as_ref();
        println!(
            "kill {}: the kernel says pid {} ({}) in {:?} killed, limit of {:?}, invoked by pid \
             {:?} ({:?}); oomtrace says victim {} pid {} ({}), trigger {} pid {}, domain {} \
             limit {}, restart count {}, restart_loop {}, snapshot processes {}",
            i + 1,
            kernel.killed.pid,
            kernel.killed.comm,
            kernel.task_memcg,
            kernel.oom_memcg,
            kernel.invoker_pid,
            kernel.invoker_comm,
            or_dash(victim.and_then(|victim| victim.name.as_ref())),
            or_dash(kill.victim.process.pid),
            or_dash(victim.and_then(|victim| victim.compose.as_ref())),
            or_dash(
                kill.trigger
                    .as_ref()
                    .and_then(|trigger| trigger.names.container_name())
            ),
            or_dash(
                kill.trigger
                    .as_ref()
                    .and_then(|trigger| trigger.process.pid)
            ),
            or_dash(
                domain
                    .and_then(|domain| domain.cgroup.as_ref())
                    .map(|cgroup| &cgroup.path)
            ),
            or_dash(
                domain
                    .and_then(|domain| domain.memory)
                    .and_then(|memory| memory.limit_bytes)
            ),
            or_dash(victim.and_then(|victim| victim.restart_count)),
            or_dash(
                kill.explanation
                    .as_ref()
                    .and_then(|explanation| explanation.restart_loop)
            ),
            snapshot_processes(kill),
        );
    }
    println!(
        "{KILLS} kills in {:.1} s; Docker says: db exit codes {:?}, RestartCount {}, {} `oom` \
         events for the db and {} for the builder (none of whose processes was killed)",
        elapsed.as_secs_f32(),
        db.exit_codes(),
        db.restart_count(),
        db.oom_events(),
        builder.oom_events(),
    );
    println!("verdict of kill {KILLS}: {}", verdict_of(&kills[KILLS - 1]));

    for (i, (kill, kernel)) in kills.iter().zip(&reports).enumerate() {
        let context = format!("kill {}: {}", i + 1, pretty(kill));
        // The kernel's account of each kill.
        assert_eq!(
            kernel.task_memcg.as_deref(),
            Some(db_memcg.as_str()),
            "{context}"
        );
        assert_eq!(
            kernel.oom_memcg.as_deref(),
            Some(parent_path.as_str()),
            "{context}"
        );
        kernel.killed.assert_anon_rss_matches(kill);

        // Victim: the db, as Compose names it.
        assert_eq!(
            kill.victim
                .memcg
                .as_ref()
                .and_then(|memcg| memcg.path.as_deref()),
            Some(db_memcg.as_str()),
            "{context}"
        );
        let victim = container_of(&kill.victim, &context);
        assert_eq!(victim.name.as_deref(), Some(db.name()), "{context}");
        assert_eq!(victim.runtime.as_deref(), Some("docker"), "{context}");
        let Some(Compose {
            project,
            service,
            number,
        }) = &victim.compose
        else {
            panic!("no victim compose in {context}");
        };
        assert_eq!(project.as_deref(), Some(PROJECT), "{context}");
        assert_eq!(service.as_deref(), Some("db"), "{context}");
        assert_eq!(*number, Some(1), "{context}");
        assert_eq!(victim.main_process, Some(true), "{context}");
        assert_eq!(
            victim.restart_policy.as_deref(),
            Some("always"),
            "{context}"
        );
        assert_eq!(
            victim.restart_count,
            Some(u32::try_from(i).expect("a few kills")),
            "{context}"
        );

        // Trigger: the builder's build step, the task the kernel says set the OOM killer off.
        let Some(trigger) = &kill.trigger else {
            panic!("no trigger in {context}");
        };
        let trigger_container = container_of(trigger, &context);
        assert_eq!(
            trigger_container.name.as_deref(),
            Some(builder.name()),
            "{context}"
        );
        assert_eq!(
            trigger_container
                .compose
                .as_ref()
                .and_then(|compose| compose.service.as_deref()),
            Some("builder"),
            "{context}"
        );
        let Some(trigger_pid) = trigger.process.pid else {
            panic!("no trigger pid in {context}");
        };
        assert_eq!(
            kernel.invoker_pid,
            Some(trigger_pid),
            "the kernel's invoker is the trigger, {context}"
        );

        // Whose limit: the project's parent cgroup, not the db's or the builder's.
        let Some(domain) = &kill.domain else {
            panic!("no domain in {context}");
        };
        assert_eq!(domain.kind, DomainKind::Cgroup, "{context}");
        assert_eq!(
            domain.cgroup.as_ref().map(|cgroup| cgroup.path.as_str()),
            Some(parent_path.as_str()),
            "{context}"
        );
        assert_eq!(
            domain.memory.and_then(|memory| memory.limit_bytes),
            Some(PARENT_LIMIT_BYTES),
            "{context}"
        );

        // The snapshot is of this kill's moment, not the one before: it lists no earlier build
        // step, each of which had exited before the next one started.
        for (j, earlier) in kills[..i].iter().enumerate() {
            let Some(earlier_trigger) = earlier.trigger.as_ref().and_then(|t| t.process.pid) else {
                panic!("no trigger pid in kill {}: {}", j + 1, pretty(earlier));
            };
            assert!(
                !snapshot_pids(kill).contains(&earlier_trigger),
                "the snapshot of kill {} lists kill {}'s trigger, pid {earlier_trigger}, long \
                 gone: {}",
                i + 1,
                j + 1,
                snapshot_processes(kill)
            );
        }

        // In words.
        let verdict = verdict_of(kill);
        for expected in [
            "Service db of project shop was killed by the OOM killer",
            &format!(
                "The limit hit was not the victim's own but the 100 MiB limit of cgroup \
                 {parent_path}"
            ),
            &format!(
                "The allocation that tipped it over came from pid {trigger_pid} (oomtrace-hog) in \
                 service builder of project shop"
            ),
        ] {
            assert!(
                verdict.contains(expected),
                "the verdict of kill {} lacks `{expected}`: {verdict}",
                i + 1
            );
        }
    }
    let trigger_pids: Vec<u32> = kills
        .iter()
        .map(|kill| {
            kill.trigger
                .as_ref()
                .and_then(|trigger| trigger.process.pid)
                .unwrap_or_else(|| panic!("no trigger pid in {}", pretty(kill)))
        })
        .collect();
    // And it shows the build step that set it off, which did not exist at the kill before.
    // A build step exits within a millisecond or two of the db's kill (it then has room for its
    // peak), so a snapshot now and then misses it; all of them missing it would be a fault.
    let seen_own_trigger = kills
        .iter()
        .zip(&trigger_pids)
        .filter(|(kill, trigger_pid)| snapshot_pids(kill).contains(trigger_pid))
        .count();
    println!("{seen_own_trigger} of {KILLS} snapshots list their own trigger");
    assert!(
        seen_own_trigger >= 1,
        "no snapshot lists its own trigger: {:?}",
        kills.iter().map(snapshot_processes).collect::<Vec<_>>()
    );
    let mut distinct = trigger_pids.clone();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        KILLS,
        "each build step is a process of its own: {trigger_pids:?}"
    );

    // The restart loop, flagged at the third kill only, with Docker's own count.
    for kill in &kills[..KILLS - 1] {
        let restart_loop = kill
            .explanation
            .as_ref()
            .and_then(|explanation| explanation.restart_loop);
        assert_eq!(restart_loop, None, "{}", pretty(kill));
    }
    let third = &kills[KILLS - 1];
    assert_eq!(
        third
            .explanation
            .as_ref()
            .and_then(|explanation| explanation.restart_loop)
            .map(|restart_loop| restart_loop.count),
        Some(KILLS as u32),
        "{}",
        pretty(third)
    );
    let verdict = verdict_of(third);
    assert!(
        verdict.contains("Docker restarted it twice"),
        "the verdict should give Docker's restart count: {verdict}"
    );
    assert_eq!(db.restart_count(), KILLS as u64, "Docker's RestartCount");

    // The log line says it too.
    let log = agent.log();
    let Some(victim_pid) = third.victim.process.pid else {
        panic!("no victim pid in {}", pretty(third));
    };
    let line = log
        .lines()
        .find(|line| line.contains(&format!("OOM kill: pid {victim_pid} ")))
        .unwrap_or_else(|| panic!("no log line for the kill of {victim_pid}:\n{log}"));
    assert!(
        line.contains("service db of project shop"),
        "the log line should name the Compose service: {line}"
    );

    let stopped = agent.stop();
    // Now and then (1 run in 7 here) the build step that set the OOM killer off is killed too,
    // a moment after the db, while the db's memory is still being freed: the kernel's choice,
    // reported like any other. Such a kill's victim is one of the triggers above.
    let builder_victims: Vec<u32> = stopped
        .kills()
        .filter(|kill| builder.is_victim_of(kill))
        .map(|kill| {
            kill.victim
                .process
                .pid
                .unwrap_or_else(|| panic!("no victim pid in {}", pretty(kill)))
        })
        .collect();
    println!("build steps OOM-killed too: {builder_victims:?}");
    for pid in &builder_victims {
        assert!(
            trigger_pids.contains(pid),
            "a builder process killed ({pid}) should be a build step that killed the db: \
             {trigger_pids:?}"
        );
    }

    // And the history: `show`, `history --service`, `stats` by service.
    let stored = history.records(&["--service", "db"]);
    let ids: Vec<i64> = stored
        .iter()
        .filter(|listed| oom_kill(listed.record()).is_some_and(|kill| db.is_victim_of(kill)))
        .map(|listed| listed.history.id)
        .collect();
    assert_eq!(
        ids.len(),
        KILLS,
        "`history --service db` lists the db's kills"
    );
    // The builder's own kills, if any, and nothing of the db's.
    let mut stored_builder_victims: Vec<u32> = history
        .records(&["--service", "builder", "--kind", "oom_kill"])
        .iter()
        .map(|listed| {
            oom_kill(listed.record())
                .and_then(|kill| kill.victim.process.pid)
                .unwrap_or_else(|| panic!("no oom_kill with a victim pid: {}", pretty(listed)))
        })
        .collect();
    stored_builder_victims.sort_unstable();
    let mut expected = builder_victims.clone();
    expected.sort_unstable();
    assert_eq!(
        stored_builder_victims, expected,
        "`history --service builder` lists exactly the builder's kills"
    );
    let shown = history.run("show", &[&ids[0].to_string()]);
    println!("oomtrace show {}:\n{shown}", ids[0]);
    assert!(
        shown.contains("service db of project shop"),
        "`show` names the Compose service:\n{shown}"
    );
    let stats = history.run("stats", &["--since", "1h"]);
    println!("oomtrace stats --since 1h:\n{stats}");
    assert!(
        stats
            .lines()
            .any(|line| line.contains("shop/db") && line.contains(&KILLS.to_string())),
        "`stats` counts the kills per Compose service:\n{stats}"
    );
}

const KILL_TIMEOUT: Duration = Duration::from_secs(30);

fn snapshot_pids(kill: &OomKillRecord) -> Vec<u32> {
    kill.explanation
        .iter()
        .flat_map(|explanation| &explanation.snapshot.processes)
        .map(|entry| entry.process.pid)
        .collect()
}

fn snapshot_processes(kill: &OomKillRecord) -> String {
    kill.explanation
        .iter()
        .flat_map(|explanation| &explanation.snapshot.processes)
        .map(|entry| {
            format!(
                "{} {} MiB",
                entry.process.pid,
                entry.process.memory.usage_bytes / MIB
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn verdict_of(kill: &OomKillRecord) -> &str {
    match &kill.explanation {
        Some(explanation) => &explanation.verdict,
        None => panic!("no explanation in {}", pretty(kill)),
    }
}

/// The container a party is in; panics with `context` if it has none.
fn container_of<'a>(party: &'a Party, context: &str) -> &'a Container {
    party
        .names
        .container
        .as_ref()
        .unwrap_or_else(|| panic!("no container in {context}"))
}

/// The `oom_kill` a listed record is, if it is one.
fn oom_kill(record: Option<&oomtrace::record::Record>) -> Option<&OomKillRecord> {
    match record.map(|record| &record.body) {
        Some(Body::OomKill(kill)) => Some(kill),
        _ => None,
    }
}
