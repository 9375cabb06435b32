//! The case oomtrace was made for, with the real Docker Engine and docker-compose: project
//! `shop` runs a `db` service (`restart: always`) holding its working set and a `builder` that
//! spikes, both under one `cgroup_parent` with a memory limit. Each spike of the builder makes
//! the kernel kill the db, the biggest process under the limit; Docker restarts it, and it looks
//! merely "running". The agent must say, for each kill and as the kernel's log does: victim db,
//! trigger builder, the parent's limit hit; name them as Compose does (service db of project
//! shop) in its log, its JSON and `oomtrace show`; flag the restart loop at the third kill with
//! Docker's restart count; and describe memory as it was at each kill, not at an earlier one.

use std::time::{Duration, Instant};

use serde_json::Value;

use oomtrace_tests::{
    ComposeProject, Dockerd, HOG_IN_IMAGE, HistoryFile, IMAGE, Kmsg, MemoryCgroup, expect_field,
    field_str, field_u64, require_root, shown,
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

#[test]
fn a_compose_builder_spiking_under_a_shared_limit_kills_the_db_again_and_again() {
    require_root();
    let docker = Dockerd::start();
    let history = HistoryFile::new();
    let mut agent = docker.start_agent_with(&history.agent_args());
    let parent = MemoryCgroup::for_containers(PARENT_LIMIT_BYTES);
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
        parent = parent.path(),
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
        let victim_pid = u32::try_from(field_u64(&kill, "victim.process.pid")).expect("a pid");
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
    let db_memcg = format!("{parent_path}/{}", db.id());
    for (i, (kill, kernel)) in kills.iter().zip(&reports).enumerate() {
        let show = |pointer: &str| shown(kill, pointer);
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
            show("/victim/container/name"),
            show("/victim/process/pid"),
            show("/victim/container/compose"),
            show("/trigger/container/name"),
            show("/trigger/process/pid"),
            show("/domain/cgroup/path"),
            show("/domain/memory/limit_bytes"),
            show("/victim/container/restart_count"),
            show("/explanation/restart_loop"),
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
    println!(
        "verdict of kill {KILLS}: {}",
        field_str(&kills[KILLS - 1], "explanation.verdict")
    );

    for (i, (kill, kernel)) in kills.iter().zip(&reports).enumerate() {
        let context = || format!("kill {}: {kill:#}", i + 1);
        // The kernel's account of each kill.
        assert_eq!(
            kernel.task_memcg.as_deref(),
            Some(db_memcg.as_str()),
            "{}",
            context()
        );
        assert_eq!(
            kernel.oom_memcg.as_deref(),
            Some(parent_path.as_str()),
            "{}",
            context()
        );
        kernel.killed.assert_anon_rss_matches(kill);

        // Victim: the db, as Compose names it.
        expect_field(kill, "victim.memcg.path", db_memcg.as_str());
        expect_field(kill, "victim.container.name", db.name());
        expect_field(kill, "victim.container.runtime", "docker");
        expect_field(kill, "victim.container.compose.project", PROJECT);
        expect_field(kill, "victim.container.compose.service", "db");
        expect_field(kill, "victim.container.compose.number", 1);
        expect_field(kill, "victim.container.main_process", true);
        expect_field(kill, "victim.container.restart_policy", "always");
        expect_field(kill, "victim.container.restart_count", i as u64);

        // Trigger: the builder's build step, the task the kernel says set the OOM killer off.
        expect_field(kill, "trigger.container.name", builder.name());
        expect_field(kill, "trigger.container.compose.service", "builder");
        let trigger_pid = field_u64(kill, "trigger.process.pid");
        assert_eq!(
            kernel.invoker_pid.map(u64::from),
            Some(trigger_pid),
            "the kernel's invoker is the trigger, {}",
            context()
        );

        // Whose limit: the project's parent cgroup, not the db's or the builder's.
        expect_field(kill, "domain.kind", "cgroup");
        expect_field(kill, "domain.cgroup.path", parent_path.as_str());
        expect_field(kill, "domain.memory.limit_bytes", PARENT_LIMIT_BYTES);

        // The snapshot is of this kill's moment, not the one before: it lists no earlier build
        // step, each of which had exited before the next one started.
        for (j, earlier) in kills[..i].iter().enumerate() {
            let earlier_trigger = field_u64(earlier, "trigger.process.pid");
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
        let verdict = field_str(kill, "explanation.verdict");
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
    let trigger_pids: Vec<u64> = kills
        .iter()
        .map(|kill| field_u64(kill, "trigger.process.pid"))
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
        assert_eq!(kill.pointer("/explanation/restart_loop"), None, "{kill:#}");
    }
    let third = &kills[KILLS - 1];
    assert_eq!(
        field_u64(third, "explanation.restart_loop.count"),
        KILLS as u64
    );
    let verdict = field_str(third, "explanation.verdict");
    assert!(
        verdict.contains("Docker restarted it twice"),
        "the verdict should give Docker's restart count: {verdict}"
    );
    assert_eq!(db.restart_count(), KILLS as u64, "Docker's RestartCount");

    // The log line says it too.
    let log = agent.log();
    let victim_pid = field_u64(third, "victim.process.pid");
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
    let builder_victims: Vec<u64> = stopped
        .kills()
        .filter(|record| builder.is_victim_of(record))
        .map(|record| field_u64(record, "victim.process.pid"))
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
    let ids: Vec<u64> = stored
        .iter()
        .filter(|record| db.is_victim_of(record))
        .map(|record| field_u64(record, "history.id"))
        .collect();
    assert_eq!(
        ids.len(),
        KILLS,
        "`history --service db` lists the db's kills"
    );
    // The builder's own kills, if any, and nothing of the db's.
    let mut stored_builder_victims: Vec<u64> = history
        .records(&["--service", "builder", "--kind", "oom_kill"])
        .iter()
        .map(|record| field_u64(record, "victim.process.pid"))
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

fn snapshot_pids(kill: &Value) -> Vec<u64> {
    kill.pointer("/explanation/snapshot/processes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|process| process.pointer("/process/pid").and_then(Value::as_u64))
        .collect()
}

fn snapshot_processes(kill: &Value) -> String {
    kill.pointer("/explanation/snapshot/processes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|process| {
            format!(
                "{} {} MiB",
                shown(process, "/process/pid"),
                process
                    .pointer("/process/memory/usage_bytes")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
                    / MIB
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
