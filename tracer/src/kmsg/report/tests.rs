//! The report's memory lines, on the kernels' own logs (`tracer/fixtures/kmsg/`).

use std::sync::Arc;

use super::*;
use crate::kmsg::parse::{KillAssembler, KmsgKill, Pushed};
use crate::kmsg::tests::{LINUX_6_18, dmesg_kills, kills, records};

const DEBIAN_6_1_VM: &str = include_str!("../../../fixtures/kmsg/debian-6.1-vm.dmesg");

fn report(kill: &KmsgKill) -> &ReportedMemory {
    kill.report
        .as_deref()
        .unwrap_or_else(|| panic!("no report for the kill of {}: {kill:#?}", kill.pid))
}

#[test]
fn a_v1_report_on_6_18_gives_the_counters_the_statistics_and_the_task_dump() {
    let kills = kills(LINUX_6_18);
    let memory = report(&kills[0]);
    assert_eq!(
        memory.memory,
        Some(PageCounter {
            usage_kb: 32_768,
            limit_kb: 32_768,
            failcnt: Some(19)
        })
    );
    assert_eq!(memory.memsw.map(|c| c.usage_kb), Some(32_768));
    assert_eq!(memory.kmem.map(|c| c.usage_kb), Some(148));
    assert_eq!(memory.swap, None);
    assert_eq!(memory.stats_cgroup, Some("/kmsgfix".into()));
    assert_eq!(memory.stat("rss"), Some(33_402_880));
    assert_eq!(memory.stat("total_rss"), Some(33_402_880));
    assert_eq!(memory.stat("total_inactive_anon"), Some(33_349_632));
    assert_eq!(memory.stat("total_unevictable"), Some(0));
    assert_eq!(memory.stat("hierarchical_memory_limit"), Some(33_554_432));
    assert!(!memory.stats_cut);
    // Every line from `cache` to `total_unevictable`.
    assert_eq!(memory.stats.len(), 42, "{:?}", memory.stats);
    assert_eq!(
        memory.tasks,
        Some(TaskTotals {
            tasks: 1,
            rss_pages: 9271,
            rss_anon_pages: Some(8128),
            rss_file_pages: Some(1143),
            rss_shmem_pages: Some(0),
        })
    );
    assert_eq!(memory.mem_info, None);
    // The second report is its own.
    let second = report(&kills[1]);
    assert_eq!(second.memory.and_then(|c| c.failcnt), Some(82));
    assert_eq!(second.stat("rss"), Some(33_390_592));
    assert_eq!(second.tasks.map(|t| t.rss_pages), Some(9298));
}

#[test]
fn the_summary_line_completes_the_report_before_the_kill_line_comes() {
    let mut assembler = KillAssembler::new();
    let mut pushed = Vec::new();
    for record in records(LINUX_6_18) {
        match assembler.push_record_full(&record) {
            Pushed::Nothing => {}
            other => pushed.push(other),
        }
    }
    let summaries: Vec<(u32, Option<String>, Option<String>, u64)> = pushed
        .iter()
        .filter_map(|pushed| match pushed {
            Pushed::Summary {
                pid,
                oom_memcg,
                task_memcg,
                report,
            } => Some((
                *pid,
                oom_memcg.as_ref().map(ToString::to_string),
                task_memcg.as_ref().map(ToString::to_string),
                report.stat("rss").unwrap(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        summaries,
        [
            (
                6707,
                Some("/kmsgfix".to_owned()),
                Some("/kmsgfix".to_owned()),
                33_402_880
            ),
            (
                6716,
                Some("/kmsgfix".to_owned()),
                Some("/kmsgfix".to_owned()),
                33_390_592
            )
        ]
    );
    // The kill shares the very report its summary handed out.
    let (Pushed::Summary { report, .. }, Pushed::Kill(kill)) = (&pushed[0], &pushed[1]) else {
        panic!("a summary, then its kill: {pushed:#?}");
    };
    assert!(Arc::ptr_eq(report, kill.report.as_ref().unwrap()));
}

#[test]
fn a_v2_report_on_6_1_and_the_host_wide_mem_info() {
    let kills = dmesg_kills(DEBIAN_6_1_VM);
    let memcg = report(&kills[0]);
    assert_eq!(
        memcg.memory.map(|c| (c.usage_kb, c.limit_kb)),
        Some((65_536, 65_536))
    );
    assert_eq!(memcg.swap.map(|c| c.limit_kb), Some(0));
    assert_eq!((memcg.memsw, memcg.kmem), (None, None));
    assert_eq!(memcg.stats_cgroup, Some("/oomtrace-vm".into()));
    assert_eq!(memcg.stat("anon"), Some(66_912_256));
    assert_eq!(memcg.stat("kernel"), Some(196_608));
    assert_eq!(memcg.stat("pagetables"), Some(163_840));
    assert_eq!(memcg.stat("slab"), Some(7696));
    assert_eq!(memcg.stat("workingset_restore_anon"), Some(0));
    // 6.1's task dump has no breakdown.
    assert_eq!(
        memcg.tasks,
        Some(TaskTotals {
            tasks: 1,
            rss_pages: 16_554,
            ..TaskTotals::default()
        })
    );

    // Every victim of a `memory.oom.group` kill shares its report.
    let group: Vec<u64> = kills[1..6]
        .iter()
        .map(|kill| report(kill).tasks.unwrap().rss_pages)
        .collect();
    assert_eq!(group, [17_586; 5]);

    let host = report(kills.last().unwrap());
    assert_eq!(host.memory, None);
    assert!(host.stats.is_empty());
    let info = host.mem_info.as_ref().expect("Mem-Info");
    assert_eq!(info.pages("active_anon"), Some(476));
    assert_eq!(info.pages("inactive_anon"), Some(110_759));
    assert_eq!(info.pages("shmem"), Some(2861));
    assert_eq!(info.pages("slab_reclaimable"), Some(2296));
    assert_eq!(info.pages("slab_unreclaimable"), Some(1976));
    assert_eq!(info.pages("pagetables"), Some(252));
    assert_eq!(info.pages("free"), Some(1028));
    assert_eq!(info.pages("kernel_misc_reclaimable"), Some(0));
    assert_eq!(info.node_kb("kernel_stack"), Some(944));
    assert_eq!(info.node_kb("shmem"), Some(11_444));
    assert_eq!(info.node_kb("shmem_thp"), Some(0));
    // The zones' lines add theirs: `free` from DMA and DMA32.
    assert_eq!(info.node_kb("free"), Some(1820 + 2292));
    assert_eq!(info.pagecache_pages, Some(2861));
    assert_eq!((info.swap_free_kb, info.swap_total_kb), (Some(0), Some(0)));
    assert_eq!(
        (info.ram_pages, info.reserved_pages),
        (Some(130_942), Some(10_932))
    );
    assert_eq!(
        host.tasks.map(|t| (t.tasks, t.rss_pages)),
        Some((5, 451 + 18 + 1449 + 65_765 + 42_753))
    );
}

#[test]
fn a_v2_statistics_record_of_6_1_holds_its_lines_escaped() {
    let log = include_bytes!("../../../fixtures/kmsg/debian-6.1-vm-tmpfs-and-kmem.kmsg");
    let kills = kills(log);
    let memory = report(&kills[0]);
    assert_eq!(memory.stats_cgroup, Some("/oomtrace-shm".into()));
    assert_eq!(memory.stat("shmem"), Some(41_943_040));
    assert_eq!(memory.stat("file"), Some(41_943_040));
    assert_eq!(memory.stat("thp_collapse_alloc"), Some(0));
    assert_eq!(memory.stats.len(), 47);
    assert!(!memory.stats_cut);
    assert_eq!(memory.tasks.map(|t| t.rss_pages), Some(6294));
}

#[test]
fn a_record_the_kernel_cut_loses_its_last_line() {
    let mut reader = ReportReader::new();
    reader.push(b"Memory cgroup stats for /x:");
    let mut record = Vec::new();
    for index in 0..80 {
        record.extend_from_slice(format!("key_{index:03} 1234567\\x0a").as_bytes());
    }
    record.extend_from_slice(b"slab 76");
    reader.push(&record);
    let memory = reader.into_memory();
    assert!(memory.stats_cut);
    assert_eq!(memory.stat("key_079"), Some(1_234_567));
    assert_eq!(memory.stat("slab"), None);
}

#[test]
fn legacy_statistics_lines_sum_the_subtree_in_kib() {
    // 4.x: a line per cgroup of the subtree, each its own pages (mm/memcontrol.c).
    let mut reader = ReportReader::new();
    reader.push(b"memory: usage 102400kB, limit 102400kB, failcnt 7");
    reader.push(b"memory+swap: usage 102400kB, limit 9007199254740988kB, failcnt 0");
    reader.push(b"kmem: usage 2048kB, limit 9007199254740988kB, failcnt 0");
    reader.push(b"Memory cgroup stats for /pod: cache:0KB rss:1024KB rss_huge:0KB shmem:0KB mapped_file:0KB dirty:0KB writeback:0KB swap:0KB inactive_anon:0KB active_anon:1024KB inactive_file:0KB active_file:0KB unevictable:0KB");
    reader.push(b"Memory cgroup stats for /pod/c1: cache:81920KB rss:16384KB rss_huge:0KB shmem:81920KB mapped_file:0KB dirty:0KB writeback:0KB swap:0KB inactive_anon:98304KB active_anon:0KB inactive_file:0KB active_file:0KB unevictable:0KB");
    let memory = reader.into_memory();
    assert_eq!(memory.stats_cgroup, Some("/pod".into()));
    assert_eq!(memory.stat("rss"), Some(17_408 * 1024));
    assert_eq!(memory.stat("shmem"), Some(81_920 * 1024));
    assert_eq!(memory.kmem.map(|k| k.usage_kb), Some(2048));
}

#[test]
fn lines_outside_a_report_section_are_not_taken_for_statistics() {
    let mut reader = ReportReader::new();
    for line in [
        &b"anon 12"[..],
        b"Mem-Info",
        b"active_anon:5",
        b"[  pid  ]   uid  tgid total_vm      rss name",
        b"[   12]     0    12      100      50 sh",
        b"usage: usage 5kB",
    ] {
        reader.push(line);
    }
    assert_eq!(reader.into_memory(), ReportedMemory::default());
}
