//! Kills from the kernel log, as history records: what the agent could not trace because it
//! was not running yet. Each becomes an `oom_kill` record holding what the log says (pid, comm,
//! memory, the victim's and the limit's memory cgroups, the invoker's comm), named from the
//! cgroup path alone: the runtime is not asked, as such a container is usually long gone.

use std::time::Duration;

use serde_json::{Map, Value, json};

use super::parse::{KernelText, KilledMemory, KmsgKill, OomScope};
use crate::attribute::Attribution;
use crate::clock::KernelClock;
use crate::sink::json::SCHEMA_VERSION;
use crate::sink::json::names::names_json;

/// How far apart the kernel log's clock and the tracer's may put one kill. The log stamps
/// records with the scheduler clock, `bpf_ktime_get_ns` reads CLOCK_MONOTONIC: they start
/// together at boot but are not slewed alike, so the gap grows with uptime (by at most about
/// 0.1 %, well past what NTP slews).
pub fn tolerance(kill: &KmsgKill) -> Duration {
    Duration::from_secs(2) + Duration::from_micros(kill.usec / 1000)
}

/// The `oom_kill` record of a kill the kernel logged, shaped as the JSON sink writes them.
pub fn record(kill: &KmsgKill, clock: &KernelClock) -> Value {
    let KmsgKill {
        seq,
        usec,
        pid,
        comm,
        scope,
        memory,
        constraint,
        legacy_limit: _,
        score,
        oom_group,
        invoker,
    } = kill;
    let ktime_ns = usec.saturating_mul(1000);

    let mut process = Map::new();
    process.insert("pid".into(), json!(pid));
    process.insert("executable".into(), json!({ "name": lossy(comm) }));
    let KilledMemory {
        total_vm_kb,
        anon_rss_kb,
        file_rss_kb,
        shmem_rss_kb,
        uid,
        pgtables_kb,
        oom_score_adj,
    } = memory;
    if let Some(uid) = uid {
        process.insert("real_user".into(), json!({ "id": uid }));
    }
    if let Some(adj) = oom_score_adj {
        process.insert("oom_score_adj".into(), json!(adj));
    }
    let mut bytes = Map::new();
    for (name, kb) in [
        ("virtual_bytes", total_vm_kb),
        ("anon_rss_bytes", anon_rss_kb),
        ("file_rss_bytes", file_rss_kb),
        ("shmem_rss_bytes", shmem_rss_kb),
        ("page_tables_bytes", pgtables_kb),
    ] {
        if let Some(kb) = kb {
            bytes.insert(name.into(), json!(kb.saturating_mul(1024)));
        }
    }
    if !bytes.is_empty() {
        process.insert("memory".into(), Value::Object(bytes));
    }
    let mut victim = Map::new();
    victim.insert("process".into(), Value::Object(process));
    if let Some(memcg) = kill.task_memcg() {
        let path = lossy(memcg);
        victim.insert("memcg".into(), json!({ "path": path }));
        merge(&mut victim, named_by_path(&path));
    }
    if let Some(score) = score {
        victim.insert(
            "badness".into(),
            json!({ "points": score, "estimated": false }),
        );
    }

    let mut domain = Map::new();
    let kind = if kill.oom_memcg().is_some() || *scope == Some(OomScope::Memcg) {
        "cgroup"
    } else if *scope == Some(OomScope::Host)
        || constraint
            .as_ref()
            .is_some_and(|constraint| constraint.global_oom)
    {
        "host"
    } else {
        "unknown"
    };
    domain.insert("kind".into(), json!(kind));
    domain.insert("inferred".into(), json!(false));
    domain.insert("basis".into(), json!("kernel_log"));
    if let Some(memcg) = kill.oom_memcg() {
        let path = lossy(memcg);
        domain.insert("cgroup".into(), json!({ "path": path }));
        merge(&mut domain, named_by_path(&path));
    }

    let mut record = Map::new();
    record.insert("schema_version".into(), json!(SCHEMA_VERSION));
    record.insert("kind".into(), json!("oom_kill"));
    record.insert("time".into(), json!(clock.wall_time(ktime_ns).to_string()));
    record.insert("ktime_ns".into(), json!(ktime_ns));
    record.insert("capture".into(), json!({ "parts": ["kmsg"] }));
    record.insert("kmsg".into(), json!({ "seq": seq }));
    record.insert("victim".into(), Value::Object(victim));
    if let Some(invoker) = invoker {
        record.insert(
            "trigger".into(),
            json!({ "process": { "executable": { "name": lossy(&invoker.comm) } } }),
        );
    }
    record.insert("domain".into(), Value::Object(domain));
    if let Some(constraint) = constraint {
        record.insert(
            "incident".into(),
            json!({ "constraint": constraint.constraint.to_ascii_lowercase() }),
        );
    }
    if let Some(group) = oom_group {
        record.insert("kmsg_oom_group".into(), json!({ "path": lossy(group) }));
    }
    Value::Object(record)
}

fn lossy(text: &KernelText) -> String {
    String::from_utf8_lossy(&text.0).into_owned()
}

/// A party's names as the JSON sink writes a path-only attribution.
fn named_by_path(path: &str) -> Value {
    let attribution = Attribution::from_path(path);
    serde_json::to_value(names_json(Some(&attribution), None)).unwrap_or(Value::Null)
}

fn merge(into: &mut Map<String, Value>, names: Value) {
    if let Value::Object(names) = names {
        into.extend(names);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kmsg::tests::{LINUX_4_14, LINUX_6_18, kills};

    #[test]
    fn a_memcg_kill_on_6_18_becomes_a_history_record() {
        let kill = kills(LINUX_6_18).remove(0);
        let record = record(&kill, &KernelClock::now());
        let row = crate::history::row::EventRow::from_record(
            &record,
            crate::history::row::Source::Kmsg,
            "boot",
        )
        .expect("the history takes it");
        assert_eq!(row.victim_pid, kill.pid);
        assert_eq!(row.victim_comm.as_deref(), Some(lossy(&kill.comm).as_str()));
        assert_eq!(row.ktime_ns, kill.usec * 1000);
        assert_eq!(row.domain_kind.as_deref(), Some("cgroup"));
        assert_eq!(record["domain"]["basis"], "kernel_log");
        assert_eq!(
            record["victim"]["memcg"]["path"].as_str(),
            kill.task_memcg().map(lossy).as_deref()
        );
        assert_eq!(
            record["victim"]["process"]["memory"]["anon_rss_bytes"],
            kill.memory.anon_rss_kb.unwrap() * 1024
        );
        assert_eq!(record["victim"]["attribution"]["source"], "path");
    }

    #[test]
    fn legacy_host_and_memcg_kills_say_whose_memory_ran_out() {
        let kinds: Vec<Value> = kills(LINUX_4_14)
            .iter()
            .map(|kill| record(kill, &KernelClock::now())["domain"]["kind"].clone())
            .collect();
        assert!(kinds.contains(&json!("cgroup")), "{kinds:?}");
        assert!(kinds.contains(&json!("host")), "{kinds:?}");
    }

    #[test]
    fn a_container_is_named_from_its_path() {
        let path = format!("/libpod_parent/libpod-{}", "ab".repeat(32));
        let names = named_by_path(&path);
        assert_eq!(names["container"]["id"], "ab".repeat(32));
        assert_eq!(names["attribution"]["path"], path);
    }

    #[test]
    fn the_tolerance_grows_with_uptime() {
        let mut kill = kills(LINUX_6_18).remove(0);
        kill.usec = 1_000_000;
        assert_eq!(tolerance(&kill), Duration::from_millis(2001));
        kill.usec = 86_400 * 1_000_000;
        assert_eq!(tolerance(&kill), Duration::from_millis(2000 + 86_400));
    }
}
