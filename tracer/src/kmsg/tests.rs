//! The parser on real kernel logs: `linux-6.18-memcg-v1.kmsg` was read from `/dev/kmsg` on the
//! development machine after two OOM kills in a v1 memory cgroup, `debian-6.1-vm.dmesg` is the
//! kernel-matrix VM's `dmesg` after three scenarios; the older kernels' fixtures
//! are written from their `mm/oom_kill.c` and `mm/memcontrol.c` format strings (see
//! `tracer/fixtures/kmsg/README.md`).

use std::collections::VecDeque;
use std::io::{self, Read};

use super::parse::*;
use super::read::{KernelLogKills, read_kills};

pub(crate) const LINUX_6_18: &[u8] = include_bytes!("../../fixtures/kmsg/linux-6.18-memcg-v1.kmsg");
const LINUX_5_4: &[u8] = include_bytes!("../../fixtures/kmsg/linux-5.4-memcg-and-host.kmsg");
const LINUX_4_19: &[u8] = include_bytes!("../../fixtures/kmsg/linux-4.19-memcg.kmsg");
pub(crate) const LINUX_4_14: &[u8] =
    include_bytes!("../../fixtures/kmsg/linux-4.14-memcg-and-host.kmsg");
const LINUX_3_10: &[u8] = include_bytes!("../../fixtures/kmsg/linux-3.10-host.kmsg");
const DEBIAN_6_1_VM: &str = include_str!("../../fixtures/kmsg/debian-6.1-vm.dmesg");

/// A fixture's records: a line, and the ` KEY=value` lines that continue it.
pub(crate) fn records(log: &[u8]) -> Vec<Vec<u8>> {
    let mut records: Vec<Vec<u8>> = Vec::new();
    for line in log.split_inclusive(|&b| b == b'\n') {
        match records.last_mut() {
            Some(record) if line.starts_with(b" ") => record.extend_from_slice(line),
            _ => records.push(line.to_vec()),
        }
    }
    records
}

pub(crate) fn kills(log: &[u8]) -> Vec<KmsgKill> {
    let mut assembler = KillAssembler::new();
    records(log)
        .iter()
        .filter_map(|record| assembler.push_record(record))
        .collect()
}

fn text(bytes: &[u8]) -> Option<KernelText> {
    Some(KernelText(bytes.to_vec()))
}

#[test]
fn a_memcg_kill_on_6_18_carries_every_field() {
    let mut kills = kills(LINUX_6_18);
    assert_eq!(kills.len(), 2, "{kills:#?}");
    // What the report said of memory: see `report::tests`.
    assert!(kills[0].report.take().is_some());
    assert_eq!(
        kills[0],
        KmsgKill {
            seq: 423,
            usec: 146_339_681,
            pid: 6707,
            comm: "perl".into(),
            scope: Some(OomScope::Memcg),
            memory: KilledMemory {
                total_vm_kb: Some(212_684),
                anon_rss_kb: Some(32_512),
                file_rss_kb: Some(4_572),
                shmem_rss_kb: Some(0),
                uid: Some(0),
                pgtables_kb: Some(124),
                oom_score_adj: Some(0),
            },
            constraint: Some(OomConstraint {
                constraint: "CONSTRAINT_MEMCG".to_owned(),
                nodemask: Some("(null)".to_owned()),
                cpuset: text(b"/"),
                mems_allowed: Some("0".to_owned()),
                oom_memcg: text(b"/kmsgfix"),
                task_memcg: text(b"/kmsgfix"),
                task: "perl".into(),
                pid: 6707,
                uid: Some(0),
                global_oom: false,
            }),
            legacy_limit: None,
            score: None,
            oom_group: None,
            invoker: Some(Invoker {
                comm: "perl".into(),
                gfp_mask: Some("0xcc0(GFP_KERNEL)".to_owned()),
                order: Some(0),
                oom_score_adj: Some(0),
            }),
            report: None,
        }
    );
}

#[test]
fn a_comm_with_parentheses_and_a_non_utf8_byte_is_kept_byte_for_byte() {
    // The process was exec'd as `a) b\xffc (x`; the kernel escapes the byte as `\xff`.
    let kill = kills(LINUX_6_18).pop().expect("the second kill");
    let comm: &[u8] = b"a) b\xffc (x";
    assert_eq!((kill.pid, kill.comm.0.as_slice()), (6716, comm));
    assert_eq!(kill.comm.to_string(), "a) b\\xffc (x");
    assert_eq!(String::from_utf8_lossy(&kill.comm.0), "a) b\u{fffd}c (x");
    let constraint = kill.constraint.expect("the oom-kill line of pid 6716");
    assert_eq!(constraint.task.0.as_slice(), comm);
    assert_eq!(kill.invoker.expect("the invoker").comm.0.as_slice(), comm);
    assert_eq!(kill.memory.file_rss_kb, Some(4_680));
    assert_eq!(kill.memory.pgtables_kb, Some(120));
}

/// A `dmesg` dump (`[   13.243556] message`): each line is a record, numbered from 1.
pub(crate) fn dmesg_kills(dump: &str) -> Vec<KmsgKill> {
    let mut assembler = KillAssembler::new();
    dump.lines()
        .zip(1..)
        .filter_map(|(line, seq)| {
            let (stamp, message) = line.strip_prefix('[')?.split_once("] ")?;
            let (secs, micros) = stamp.trim().split_once('.')?;
            let usec = secs.parse::<u64>().ok()? * 1_000_000 + micros.parse::<u64>().ok()?;
            assembler.push_line(seq, usec, message.as_bytes())
        })
        .collect()
}

#[test]
fn the_debian_6_1_vm_logs_a_memcg_kill_an_oom_group_and_a_host_wide_kill() {
    let kills = dmesg_kills(DEBIAN_6_1_VM);
    let summary: Vec<_> = kills
        .iter()
        .map(|kill| {
            (
                kill.pid,
                kill.scope,
                kill.constraint.is_some(),
                kill.oom_group.as_ref().map(ToString::to_string),
            )
        })
        .collect();
    let memcg = Some(OomScope::Memcg);
    let group = || Some("/oomtrace-group".to_owned());
    // The group walk kills the chosen victim (151) again and logs it twice: reported once.
    assert_eq!(
        summary,
        [
            (143, memcg, true, None),
            (151, memcg, true, None),
            (134, memcg, false, group()),
            (136, memcg, false, group()),
            (138, memcg, false, group()),
            (140, memcg, false, group()),
            (139, Some(OomScope::Host), true, None),
        ]
    );
    let memcg_kill = &kills[0];
    assert_eq!(memcg_kill.oom_memcg(), text(b"/oomtrace-vm").as_ref());
    assert_eq!(memcg_kill.usec, 7_391_716);
    assert_eq!(
        memcg_kill.memory,
        KilledMemory {
            total_vm_kb: Some(67_344),
            anon_rss_kb: Some(65_120),
            file_rss_kb: Some(4),
            shmem_rss_kb: Some(1_092),
            uid: Some(0),
            pgtables_kb: Some(172),
            oom_score_adj: Some(0),
        }
    );
    let host = kills.last().expect("the host-wide kill");
    let constraint = host.constraint.as_ref().expect("its oom-kill line");
    assert!(constraint.global_oom);
    assert_eq!(
        (constraint.oom_memcg.as_ref(), host.task_memcg()),
        (None, text(b"/db").as_ref())
    );
    assert_eq!(
        host.invoker
            .as_ref()
            .and_then(|invoker| invoker.gfp_mask.as_deref()),
        Some("0x140dca(GFP_HIGHUSER_MOVABLE|__GFP_COMP|__GFP_ZERO)")
    );
}

#[test]
fn linux_5_4_has_uid_but_no_page_tables_and_tells_a_host_wide_oom() {
    let kills = kills(LINUX_5_4);
    assert_eq!(kills.len(), 2, "{kills:#?}");
    let memcg = &kills[0];
    assert_eq!((memcg.pid, memcg.scope), (4242, Some(OomScope::Memcg)));
    assert_eq!(memcg.memory.uid, Some(0));
    assert_eq!(
        (memcg.memory.pgtables_kb, memcg.memory.oom_score_adj),
        (None, None)
    );
    assert_eq!(
        memcg.oom_memcg(),
        text(b"/system.slice/docker-3f2a9c0d1e4b.scope").as_ref()
    );

    let host = &kills[1];
    assert_eq!((host.pid, host.comm.0.as_slice()), (880, &b"postgres"[..]));
    assert_eq!(host.scope, Some(OomScope::Host));
    let constraint = host.constraint.as_ref().expect("the oom-kill line");
    assert!(constraint.global_oom);
    assert_eq!(constraint.constraint, "CONSTRAINT_NONE");
    assert_eq!(constraint.mems_allowed.as_deref(), Some("0-1"));
    assert_eq!(constraint.oom_memcg, None);
    assert_eq!(constraint.task_memcg, text(b"/db"));
    assert_eq!(constraint.uid, Some(105));
    assert_eq!(host.memory.shmem_rss_kb, Some(131_072));
    assert_eq!(
        host.invoker.as_ref().map(|invoker| invoker.comm.clone()),
        Some("builder".into())
    );
}

#[test]
fn linux_4_19_pairs_the_summary_the_kill_process_line_and_the_unprefixed_kill() {
    let [kill] = kills(LINUX_4_19).try_into().expect("one kill");
    assert_eq!(
        (kill.pid, kill.comm.to_string()),
        (31337, "java".to_owned())
    );
    // `Killed process` has no prefix before 5.1: the `Kill process` line's says memcg.
    assert_eq!(kill.scope, Some(OomScope::Memcg));
    assert_eq!(kill.score, Some(1998));
    assert_eq!(kill.memory.anon_rss_kb, Some(517_120));
    assert_eq!(kill.memory.uid, None);
    let constraint = kill.constraint.as_ref().expect("the oom-kill line");
    assert_eq!(constraint.uid, Some(1000));
    assert_eq!(
        kill.task_memcg(),
        text(b"/kubepods/burstable/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789/3f2a9c0d1e4b5a69")
            .as_ref()
    );
    assert_eq!(
        kill.oom_memcg(),
        text(b"/kubepods/burstable/pod0a1b2c3d-4e5f-6789-abcd-ef0123456789").as_ref()
    );
    let invoker = kill.invoker.expect("the invoker");
    assert_eq!(invoker.oom_score_adj, Some(999));
    assert_eq!(invoker.gfp_mask.as_deref(), Some("0x6000c0(GFP_KERNEL)"));
}

#[test]
fn linux_4_14_reads_the_task_in_line_and_a_sacrificed_child() {
    let [memcg, host] = kills(LINUX_4_14).try_into().expect("two kills");
    let container = b"/docker/3f2a9c0d1e4b5a6978877665544332211000ffeeddccbbaa9988776655443322";
    assert_eq!(memcg.pid, 7001);
    assert_eq!(memcg.constraint, None);
    assert_eq!(
        memcg.legacy_limit,
        Some(LegacyLimit {
            task_memcg: KernelText(container.to_vec()),
            oom_memcg: KernelText(container.to_vec()),
        })
    );
    assert_eq!(memcg.oom_memcg(), text(container).as_ref());
    assert_eq!(
        (memcg.scope, memcg.score),
        (Some(OomScope::Memcg), Some(1001))
    );
    assert_eq!(memcg.memory.shmem_rss_kb, Some(0));

    // The OOM killer chose bash (2990) and killed its child instead: the score is bash's.
    assert_eq!(
        (host.pid, host.comm.to_string()),
        (2991, "cc1plus".to_owned())
    );
    assert_eq!((host.scope, host.score), (Some(OomScope::Host), None));
    assert_eq!(
        host.legacy_limit, None,
        "the limit line was another report's"
    );
    assert_eq!(host.memory.anon_rss_kb, Some(2_800_000));
}

#[test]
fn linux_3_10_has_no_shmem_rss() {
    let [kill] = kills(LINUX_3_10).try_into().expect("one kill");
    assert_eq!((kill.pid, kill.score), (1234, Some(950)));
    assert_eq!(kill.scope, Some(OomScope::Host));
    assert_eq!(kill.usec, 86_400_000_620);
    assert_eq!(
        kill.memory,
        KilledMemory {
            total_vm_kb: Some(7_864_320),
            anon_rss_kb: Some(3_808_000),
            file_rss_kb: Some(0),
            ..KilledMemory::default()
        }
    );
}

#[test]
fn a_killed_process_line_alone_is_a_kill() {
    let mut assembler = KillAssembler::new();
    let kill = assembler
        .push_record(b"3,7,9,-;Out of memory: Killed process 12 (sh) total-vm:1kB, anon-rss:2kB, file-rss:3kB, shmem-rss:4kB, UID:0 pgtables:5kB oom_score_adj:-17\n")
        .expect("a kill");
    assert_eq!((kill.seq, kill.usec, kill.pid), (7, 9, 12));
    assert_eq!(kill.scope, Some(OomScope::Host));
    assert_eq!(kill.memory.oom_score_adj, Some(-17));
    assert_eq!((kill.constraint, kill.invoker), (None, None));
}

#[test]
fn an_oom_group_kill_names_the_group_and_pairs_the_summary_with_its_own_pid_only() {
    let log = b"\
4,1,10,-;hog invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
6,2,11,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/grp,task_memcg=/grp/a,task=hog,pid=100,uid=0
3,3,12,-;Memory cgroup out of memory: Killed process 100 (hog) total-vm:9kB, anon-rss:8kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0
6,4,13,-;Tasks in /grp are going to be killed due to memory.oom.group set
3,5,14,-;Memory cgroup out of memory: Killed process 101 (hog) total-vm:9kB, anon-rss:7kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0
3,6,15,-;Memory cgroup out of memory: Killed process 102 (sh) total-vm:9kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0
";
    let kills = kills(log);
    let summary: Vec<_> = kills
        .iter()
        .map(|k| (k.pid, k.constraint.is_some()))
        .collect();
    assert_eq!(summary, [(100, true), (101, false), (102, false)]);
    assert_eq!(kills[0].oom_group, None);
    assert_eq!(kills[2].oom_group, text(b"/grp"));
    assert!(kills.iter().all(|k| k.scope == Some(OomScope::Memcg)));
}

#[test]
fn a_summary_line_of_another_pid_or_another_report_is_not_paired() {
    let log = b"\
4,1,10,-;a invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
6,2,11,-;Task in /x killed as a result of limit of /x
6,3,12,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),oom_memcg=/x,task_memcg=/x,task=a,pid=5,uid=0
4,4,20,-;b invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0
3,5,21,-;Memory cgroup out of memory: Killed process 5 (a) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB
";
    let [kill] = kills(log).try_into().expect("one kill");
    assert_eq!((kill.constraint, kill.legacy_limit), (None, None));
    assert_eq!(kill.invoker.map(|i| i.comm), Some("b".into()));
}

#[test]
fn summary_fields_may_hold_commas_and_unknown_fields_are_skipped() {
    let line =
        b"oom-kill:constraint=CONSTRAINT_CPUSET,nodemask=0-1,3,cpuset=/a,b,mems_allowed=0,2,\
oom_memcg=/p,q,task_memcg=/p,q/r,task=x,pid=1,uid=9,pid=77,uid=1000";
    let Some(OomLine::Constraint(constraint)) = parse_line(line) else {
        panic!("not a summary line");
    };
    assert_eq!(
        constraint,
        OomConstraint {
            constraint: "CONSTRAINT_CPUSET".to_owned(),
            nodemask: Some("0-1,3".to_owned()),
            cpuset: text(b"/a,b"),
            mems_allowed: Some("0,2".to_owned()),
            oom_memcg: text(b"/p,q"),
            task_memcg: text(b"/p,q/r"),
            // A comm may hold `,pid=`: pid and uid are the last ones.
            task: "x,pid=1,uid=9".into(),
            pid: 77,
            uid: Some(1000),
            global_oom: false,
        }
    );
    // A field this parser does not know is passed over.
    let Some(OomLine::Constraint(newer)) =
        parse_line(b"oom-kill:newer=1,constraint=CONSTRAINT_NONE,global_oom,task=y,pid=2")
    else {
        panic!("not a summary line");
    };
    assert_eq!(newer.constraint, "CONSTRAINT_NONE");
    assert!(newer.global_oom);
    assert_eq!((newer.task, newer.pid, newer.uid), ("y".into(), 2, None));
}

#[test]
fn other_messages_are_not_oom_lines() {
    for line in [
        &b"oom_reaper: reaped process 6707 (perl), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB"[..],
        b"Memory cgroup out of memory: OOM victim 5 (x) is already exiting. Skip killing the task",
        b"memory: usage 32768kB, limit 32768kB, failcnt 19",
        b"Killed process",
        b"Killed process x (y) total-vm:1kB",
        b"Killed process 5 (y)",
        b"oom-kill:constraint=CONSTRAINT_NONE",
        b"Task in /x",
        b"",
    ] {
        assert_eq!(parse_line(line), None, "{}", String::from_utf8_lossy(line));
    }
}

#[test]
fn records_have_a_header_a_message_and_maybe_continuation_lines() {
    let record = parse_record(b"6,193,306312,-,caller=T1;acpi PNP0A08:00: _OSC\n SUBSYSTEM=acpi\n DEVICE=+acpi:PNP0A08:00\n")
        .expect("a record");
    assert_eq!(
        record,
        Record {
            prio: 6,
            seq: 193,
            usec: 306_312,
            message: b"acpi PNP0A08:00: _OSC",
        }
    );
    // A kill whose record continues is still read.
    let mut assembler = KillAssembler::new();
    let kill = assembler.push_record(
        b"3,9,9,c;Killed process 5 (x) total-vm:1kB, anon-rss:2kB, file-rss:3kB\n SUBSYSTEM=mem\n",
    );
    assert_eq!(kill.map(|kill| kill.memory.file_rss_kb), Some(Some(3)));
    for bad in [
        &b"no header"[..],
        b"6,1,2;too few fields",
        b"x,1,2,-;prio",
        b"6,-1,2,-;seq",
        b"99999999999,1,2,-;prio overflows",
        b"",
    ] {
        assert_eq!(parse_record(bad), None, "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn escapes_are_undone_and_redone_losslessly() {
    for (escaped, raw) in [
        (&b"plain"[..], &b"plain"[..]),
        (b"a\\x5cb", b"a\\b"),
        (b"\\xFF\\x00", b"\xff\x00"),
        (b"\\x", b"\\x"),
        (b"\\xZ1", b"\\xZ1"),
        (b"end\\x4", b"end\\x4"),
    ] {
        let text = KernelText::unescape(escaped);
        assert_eq!(
            text.0.as_slice(),
            raw,
            "{}",
            String::from_utf8_lossy(escaped)
        );
        // Shown as the kernel would escape it, and read back the same.
        assert_eq!(KernelText::unescape(text.to_string().as_bytes()), text);
    }
}

/// `/dev/kmsg` as a script: each read returns the next record or error, then `EAGAIN`.
struct ScriptedKmsg(VecDeque<Result<Vec<u8>, i32>>);

impl Read for ScriptedKmsg {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        match self.0.pop_front() {
            Some(Ok(record)) => {
                buffer[..record.len()].copy_from_slice(&record);
                Ok(record.len())
            }
            Some(Err(errno)) => Err(io::Error::from_raw_os_error(errno)),
            None => Err(io::Error::from_raw_os_error(libc::EAGAIN)),
        }
    }
}

fn scripted(log: &[u8]) -> ScriptedKmsg {
    ScriptedKmsg(records(log).into_iter().map(Ok).collect())
}

#[test]
fn the_reader_reads_until_eagain() {
    let found = read_kills(&mut scripted(LINUX_6_18), 10).expect("read");
    let pids: Vec<u32> = found.kills.iter().map(|kill| kill.pid).collect();
    assert_eq!(pids, [6707, 6716]);
    assert_eq!(found.records, 159);
    assert_eq!(
        (found.overwritten, found.kills_over_cap, found.stopped_early),
        (0, 0, false)
    );
}

#[test]
fn the_reader_skips_on_past_overwritten_records_and_retries_interrupted_reads() {
    let mut source = scripted(LINUX_5_4);
    // The first report's summary, then its records are overwritten mid-report.
    let cut = source
        .0
        .iter()
        .position(|record| {
            record
                .as_ref()
                .is_ok_and(|r| r.windows(9).any(|w| w == b"oom-kill:"))
        })
        .expect("a summary line");
    source.0.insert(cut + 1, Err(libc::EPIPE));
    source.0.insert(0, Err(libc::EINTR));
    let found = read_kills(&mut source, 10).expect("read");
    assert_eq!(found.overwritten, 1);
    assert_eq!(found.kills.len(), 2);
    // Nothing is paired across the gap.
    assert_eq!(found.kills[0].constraint, None);
    assert!(found.kills[1].constraint.is_some());
}

#[test]
fn the_reader_keeps_the_newest_kills_up_to_its_cap() {
    let mut log = LINUX_4_14.to_vec();
    log.extend_from_slice(LINUX_3_10);
    log.extend_from_slice(LINUX_6_18);
    let found = read_kills(&mut scripted(&log), 2).expect("read");
    let pids: Vec<u32> = found.kills.iter().map(|kill| kill.pid).collect();
    assert_eq!(pids, [6707, 6716]);
    assert_eq!(found.kills_over_cap, 3);
    let none = read_kills(&mut scripted(&log), 0).expect("read");
    assert_eq!((none.kills.len(), none.kills_over_cap), (0, 5));
}

#[test]
fn the_reader_reports_other_errors() {
    let mut source = ScriptedKmsg(VecDeque::from([Err(libc::EINVAL)]));
    let err = read_kills(&mut source, 10).expect_err("EINVAL is an error");
    assert!(err.to_string().contains("reading /dev/kmsg"), "{err}");
    let empty = read_kills(&mut ScriptedKmsg(VecDeque::new()), 10).expect("read");
    assert_eq!(empty, KernelLogKills::default());
}
