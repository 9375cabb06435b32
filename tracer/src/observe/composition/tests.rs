//! Composition from the kernel's reports (`tracer/fixtures/kmsg/`) and from the files.

use std::fs;

use super::*;
use crate::kmsg::tests::{LINUX_6_18, dmesg_kills, kills};

const DEBIAN_6_1_VM: &str = include_str!("../../../fixtures/kmsg/debian-6.1-vm.dmesg");
const LINUX_6_18_TMPFS_KMEM: &[u8] =
    include_bytes!("../../../fixtures/kmsg/linux-6.18-v1-tmpfs-and-kmem.kmsg");
const DEBIAN_6_1_TMPFS_KMEM: &[u8] =
    include_bytes!("../../../fixtures/kmsg/debian-6.1-vm-tmpfs-and-kmem.kmsg");
const MIB: u64 = 1 << 20;

fn from(kill: &crate::kmsg::parse::KmsgKill) -> Composition {
    let report = kill.report.as_deref().expect("a report");
    Composition::from_report(report, kill.seq, 4096).expect("a composition")
}

#[test]
fn a_v1_anon_hog_on_6_18_is_all_anonymous_memory_in_its_process() {
    let composition = from(&kills(LINUX_6_18)[0]);
    assert_eq!(composition.source, Source::KernelLog);
    assert_eq!(composition.kernel_log, KernelLog::Report { seq: 423 });
    assert_eq!(composition.cgroup.as_deref(), Some("/kmsgfix"));
    assert_eq!(composition.usage_bytes, Some(32 * MIB));
    assert_eq!(composition.limit_bytes, Some(32 * MIB));
    let parts = composition.parts;
    assert_eq!(parts.anon, Some(33_402_880));
    assert_eq!((parts.file, parts.shmem), (Some(0), Some(0)));
    assert_eq!(parts.kernel, Some(148 * 1024));
    // memory+swap less memory.
    assert_eq!(parts.swap, Some(0));
    assert_eq!(
        composition.processes,
        Some(Processes {
            count: 1,
            resident_bytes: 9271 * 4096,
            shmem_bytes: Some(0)
        })
    );
    assert_eq!(
        composition.not_in_processes(),
        NotInProcesses {
            shmem: 0,
            page_cache: 0,
            kernel: 148 * 1024
        }
    );
}

#[test]
fn a_v2_report_on_6_1_counts_kernel_memory_and_the_host_wide_one_the_hosts() {
    let kills = dmesg_kills(DEBIAN_6_1_VM);
    let memcg = from(&kills[0]);
    assert_eq!(memcg.cgroup.as_deref(), Some("/oomtrace-vm"));
    assert_eq!(memcg.parts.anon, Some(66_912_256));
    assert_eq!(memcg.parts.kernel, Some(196_608));
    assert_eq!(memcg.parts.page_tables, Some(163_840));
    assert_eq!(memcg.parts.swap, Some(0));

    let host = from(kills.last().unwrap());
    assert_eq!(host.cgroup, None);
    let parts = host.parts;
    assert_eq!(parts.shmem, Some(2861 * 4096));
    assert_eq!(parts.anon, Some((476 + 110_759 - 2861) * 4096));
    assert_eq!(parts.file_mapped, Some(2917 * 4096));
    assert_eq!(
        parts.kernel,
        Some((2296 + 1976 + 252) * 4096 + 944 * 1024),
        "{parts:?}"
    );
    assert_eq!(host.limit_bytes, Some((130_942 - 10_932) * 4096));
    assert_eq!(host.usage_bytes, Some((130_942 - 10_932 - 1028) * 4096));
}

#[test]
fn unmapped_shared_memory_is_what_processes_are_not_known_to_map() {
    let mut composition = Composition {
        source: Source::KernelLog,
        kernel_log: KernelLog::Report { seq: 1 },
        cgroup: Some("/box".to_owned()),
        usage_bytes: Some(128 * MIB),
        limit_bytes: Some(128 * MIB),
        parts: Parts {
            anon: Some(27 * MIB),
            file: Some(2 * MIB),
            file_mapped: Some(3 * MIB),
            shmem: Some(98 * MIB),
            kernel: Some(MIB),
            ..Parts::default()
        },
        processes: None,
        reaped: None,
        victim_shmem_bytes: None,
        tmpfs: Vec::new(),
        tmpfs_unknown: None,
    };
    // Two of the three mapped MiB are surely files; the third is shared memory or a file.
    // Nothing says a process maps shared memory beyond what the files cannot hold.
    assert_eq!(
        composition.not_in_processes(),
        NotInProcesses {
            shmem: 97 * MIB,
            page_cache: 0,
            kernel: MIB
        }
    );
    assert_eq!(composition.in_processes(), Some(30 * MIB));
    // The victim mapped none of it: the mapped MiB is a file's.
    composition.victim_shmem_bytes = Some(0);
    assert_eq!(composition.not_in_processes().shmem, 97 * MIB);
    // The task dump says processes map 3 MiB of shared memory: all mapped pages are shmem.
    composition.processes = Some(Processes {
        count: 2,
        resident_bytes: 40 * MIB,
        shmem_bytes: Some(3 * MIB),
    });
    assert_eq!(
        composition.not_in_processes(),
        NotInProcesses {
            shmem: 95 * MIB,
            page_cache: 2 * MIB,
            kernel: MIB
        }
    );
}

fn fake_cgroup(version: CgroupVersion, files: &[(&str, &str)]) -> MemoryHierarchy {
    let root = std::env::temp_dir().join(format!(
        "oomtrace-composition-{}-{version:?}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&root);
    let dir = root.join("box");
    fs::create_dir_all(&dir).unwrap();
    for (name, text) in files {
        fs::write(dir.join(name), text).unwrap();
    }
    MemoryHierarchy { root, version }
}

#[test]
fn memory_stat_read_late_gets_back_what_the_victim_freed() {
    let memory = fake_cgroup(
        CgroupVersion::V2,
        &[
            (
                "memory.stat",
                "anon 1048576\nfile 105906176\nkernel 524288\nkernel_stack 16384\n\
                 pagetables 65536\nsock 0\nshmem 104857600\nfile_mapped 0\nfile_dirty 0\n\
                 file_writeback 0\ninactive_file 1048576\nactive_file 0\nunevictable 0\n\
                 slab_reclaimable 200000\nslab_unreclaimable 200000\n",
            ),
            ("memory.current", "107479040\n"),
            ("memory.max", "134217728\n"),
            ("memory.swap.current", "0\n"),
        ],
    );
    let mut composition =
        Composition::read_cgroup(&memory, "/box", KernelLog::NoReport).expect("its files");
    assert_eq!(composition.source, Source::MemoryStat);
    assert_eq!(composition.parts.shmem, Some(100 * MIB));
    assert_eq!(composition.parts.file, Some(MIB));
    assert_eq!(composition.parts.kernel, Some(512 * 1024));
    // The victim held 30 MiB of anonymous memory and 64 KiB of page tables at its kill; the
    // cgroup is 25.5 MiB short of its limit now, which is what it freed.
    assert_eq!(
        Composition::read_cgroup(&memory, "/gone", KernelLog::NoReport),
        None
    );
    composition.add_back(
        &VictimMemory {
            anon_bytes: 30 * MIB,
            file_bytes: 2 * MIB,
            shmem_bytes: 0,
            page_tables_bytes: 64 * 1024,
        },
        true,
    );
    let short = 134_217_728 - 107_479_040;
    assert_eq!(
        composition.reaped,
        Some(Reaped {
            anon_bytes: short,
            page_tables_bytes: 0
        })
    );
    assert_eq!(composition.usage_bytes, Some(128 * MIB));
    assert_eq!(composition.parts.anon, Some(MIB + short));
    // Its files count as mapped again, as far as they were charged here.
    assert_eq!(composition.parts.file_mapped, Some(MIB));
    assert_eq!(composition.not_in_processes().shmem, 100 * MIB);
    fs::remove_dir_all(&memory.root).unwrap();
}

#[test]
fn v1_files_give_kernel_memory_sockets_and_swap_from_their_own_counters() {
    let memory = fake_cgroup(
        CgroupVersion::V1,
        &[
            (
                "memory.stat",
                "cache 5\nrss 6\nshmem 1\ntotal_cache 4096000\ntotal_rss 8192000\n\
                 total_shmem 4000000\ntotal_mapped_file 8192\ntotal_dirty 4096\n\
                 total_writeback 0\ntotal_inactive_file 90000\ntotal_active_file 6000\n\
                 total_unevictable 0\ntotal_swap 0\n",
            ),
            ("memory.usage_in_bytes", "12400000\n"),
            ("memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory.kmem.usage_in_bytes", "111000\n"),
            ("memory.kmem.tcp.usage_in_bytes", "2000\n"),
            ("memory.memsw.usage_in_bytes", "12400000\n"),
        ],
    );
    let composition =
        Composition::read_cgroup(&memory, "/box", KernelLog::NoReport).expect("its files");
    let parts = composition.parts;
    assert_eq!(parts.anon, Some(8_192_000));
    assert_eq!(parts.file, Some(96_000));
    assert_eq!(parts.shmem, Some(4_000_000));
    assert_eq!(parts.kernel, Some(111_000));
    assert_eq!(parts.sock, Some(2000));
    assert_eq!(parts.swap, Some(0));
    assert_eq!(composition.limit_bytes, None);
    fs::remove_dir_all(&memory.root).unwrap();
}

#[test]
fn meminfo_gives_the_hosts_parts() {
    let meminfo = "MemTotal:        2000000 kB\nMemFree:          100000 kB\n\
                   AnonPages:        900000 kB\nActive(file):     200000 kB\n\
                   Inactive(file):   100000 kB\nDirty:              1000 kB\n\
                   Writeback:             0 kB\nMapped:            50000 kB\n\
                   Shmem:            600000 kB\nUnevictable:           0 kB\n\
                   SReclaimable:      30000 kB\nSUnreclaim:        20000 kB\n\
                   KernelStack:        5000 kB\nPageTables:         6000 kB\n\
                   Percpu:             1000 kB\nSwapTotal:             0 kB\n\
                   SwapFree:              0 kB\n";
    let composition = Composition::from_meminfo(meminfo, KernelLog::Unreadable("no".into()));
    assert_eq!(composition.source, Source::Meminfo);
    assert_eq!(composition.usage_bytes, Some(1_900_000 * 1024));
    assert_eq!(composition.parts.file, Some(300_000 * 1024));
    assert_eq!(composition.parts.kernel, Some(62_000 * 1024));
    // Host-wide, a victim that is gone gave back all it held.
    let mut late = composition.clone();
    late.add_back(
        &VictimMemory {
            anon_bytes: 100 * MIB,
            ..VictimMemory::default()
        },
        true,
    );
    assert_eq!(late.parts.anon, Some(900_000 * 1024 + 100 * MIB));
    let mut early = composition;
    early.add_back(
        &VictimMemory {
            anon_bytes: 100 * MIB,
            ..VictimMemory::default()
        },
        false,
    );
    assert_eq!(early.reaped, None);
}

#[test]
fn tmpfs_written_in_a_v1_cgroup_on_6_18_is_shared_memory_no_process_maps() {
    // 100 MiB written by `dd` into a tmpfs from inside a 128 MiB cgroup, then python3 grew
    // until it was killed at 27.5 MiB of anonymous memory.
    let kills = kills(LINUX_6_18_TMPFS_KMEM);
    let composition = from(&kills[0]);
    assert_eq!(composition.cgroup.as_deref(), Some("/oomtrace-comp-shm"));
    assert_eq!(composition.limit_bytes, Some(128 * MIB));
    assert_eq!(composition.parts.shmem, Some(100 * MIB));
    assert_eq!(composition.parts.file, Some(0));
    assert_eq!(composition.parts.anon, Some(28_962_816));
    assert_eq!(composition.parts.kernel, Some(388 * 1024));
    let not_in = composition.not_in_processes();
    assert_eq!(not_in.shmem, 100 * MIB);
    assert_eq!(not_in.page_cache, 0);
    // The three add up to the limit, to within a page or two the kernel rounds.
    let sum = composition.in_processes().unwrap() + not_in.total();
    assert!(sum.abs_diff(128 * MIB) <= 8192, "{sum}");
}

#[test]
fn many_directories_in_a_v1_cgroup_on_6_18_fill_it_with_kernel_memory() {
    let kills = kills(LINUX_6_18_TMPFS_KMEM);
    let composition = from(&kills[1]);
    assert_eq!(composition.cgroup.as_deref(), Some("/oomtrace-comp-kmem"));
    assert_eq!(composition.parts.kernel, Some(31_804 * 1024));
    let not_in = composition.not_in_processes();
    assert!(not_in.kernel * 100 / (32 * MIB) >= 95, "{not_in:?}");
    let processes = composition.processes.unwrap();
    assert_eq!(processes.count, 5, "{processes:?}");
}

#[test]
fn v2_on_6_1_reports_tmpfs_and_slab_the_same_way() {
    let kills = kills(DEBIAN_6_1_TMPFS_KMEM);
    let tmpfs = from(&kills[0]);
    assert_eq!(tmpfs.cgroup.as_deref(), Some("/oomtrace-shm"));
    assert_eq!(tmpfs.parts.shmem, Some(40 * MIB));
    assert_eq!(tmpfs.parts.file, Some(0));
    // The hog's own binary is in the initramfs, a tmpfs: its 964 KiB of `shmem-rss` are
    // mapped shared memory, which the task dump of 6.1 does not break down.
    let mut tmpfs = tmpfs;
    tmpfs.victim_shmem_bytes = Some(964 * 1024);
    assert_eq!(tmpfs.not_in_processes().shmem, 40 * MIB);

    let kmem = from(&kills[1]);
    assert_eq!(kmem.parts.kernel, Some(24_928_256));
    assert_eq!(kmem.parts.slab_unreclaimable, Some(19_667_984));
    assert_eq!(kmem.usage_bytes, Some(24 * MIB));
}

/// A cgroup's files as they were read on a real kernel right after its kill.
fn captured(name: &str, version: CgroupVersion) -> MemoryHierarchy {
    let root = std::env::temp_dir().join(format!(
        "oomtrace-composition-captured-{}-{name}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&root);
    let dir = root.join("box");
    fs::create_dir_all(&dir).unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/memory-stat")
        .join(name);
    for entry in fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    MemoryHierarchy { root, version }
}

#[test]
fn memory_stat_read_after_the_kill_on_6_18_gets_the_victims_memory_back() {
    let memory = captured("linux-6.18-v1-tmpfs-after-kill", CgroupVersion::V1);
    let mut composition =
        Composition::read_cgroup(&memory, "/box", KernelLog::NoReport).expect("its files");
    // python3 was gone: its 27.5 MiB of anonymous memory with it.
    assert_eq!(composition.parts.anon, Some(0));
    assert_eq!(composition.parts.shmem, Some(100 * MIB));
    composition.add_back(
        &VictimMemory {
            anon_bytes: 28_160 * 1024,
            file_bytes: 6688 * 1024,
            shmem_bytes: 0,
            page_tables_bytes: 112 * 1024,
        },
        true,
    );
    // What the kernel's own report said at the kill (the same kill, above): 28,962,816 bytes
    // of rss; the reading gives it back to within the victim's page tables.
    let anon = composition.parts.anon.unwrap();
    assert!(anon.abs_diff(28_962_816) <= 128 * 1024, "{anon}");
    assert_eq!(composition.not_in_processes().shmem, 100 * MIB);
    fs::remove_dir_all(&memory.root).unwrap();
}

#[test]
fn memory_stat_read_after_the_kill_on_6_1_gets_the_victims_memory_back() {
    let memory = captured("debian-6.1-v2-tmpfs-after-kill", CgroupVersion::V2);
    let mut composition =
        Composition::read_cgroup(&memory, "/box", KernelLog::NoReport).expect("its files");
    assert_eq!(composition.parts.shmem, Some(40 * MIB));
    assert_eq!(composition.limit_bytes, Some(64 * MIB));
    composition.add_back(
        &VictimMemory {
            anon_bytes: 24_208 * 1024,
            file_bytes: 4 * 1024,
            shmem_bytes: 964 * 1024,
            page_tables_bytes: 84 * 1024,
        },
        true,
    );
    // The kernel's report of this kill said anon 24,813,568.
    let anon = composition.parts.anon.unwrap();
    assert!(anon.abs_diff(24_813_568) <= 256 * 1024, "{anon}");
    fs::remove_dir_all(&memory.root).unwrap();
}
