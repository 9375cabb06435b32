//! Fuzzes the kernel-log parser: it must never panic, and what it reports must hold together,
//! whatever bytes `/dev/kmsg` (or a `dmesg` dump) hands over.

#![no_main]

use libfuzzer_sys::fuzz_target;

use oomtrace::kmsg::parse::{KernelText, KillAssembler, OomLine, parse_line, parse_record};
use oomtrace::kmsg::report::ReportReader;

fuzz_target!(|data: &[u8]| {
    // Escaping is lossless for any bytes: shown as the kernel escapes them, read back the same.
    let raw = KernelText(data.to_vec());
    let shown = raw.to_string();
    assert!(shown.bytes().all(|b| (b' '..b'\x7f').contains(&b)));
    assert_eq!(KernelText::unescape(shown.as_bytes()), raw);

    // The whole input as one message.
    let line = parse_line(data);
    assert_eq!(line, parse_line(data), "parse_line is not deterministic");
    if let Some(line) = &line {
        check_line(line, data);
    }

    // The input as a stream of records, one a line (continuation lines start with a space).
    let mut assembler = KillAssembler::new();
    let mut reader = ReportReader::new();
    let mut records: Vec<Vec<u8>> = Vec::new();
    for piece in data.split_inclusive(|&b| b == b'\n') {
        match records.last_mut() {
            Some(record) if piece.starts_with(b" ") => record.extend_from_slice(piece),
            _ => records.push(piece.to_vec()),
        }
    }
    for record in &records {
        let parsed = parse_record(record);
        if let Some(parsed) = &parsed {
            // The message is the record's own bytes, one line of them.
            assert!(!parsed.message.contains(&b'\n'));
            let within = record.as_ptr_range();
            assert!(
                parsed.message.is_empty()
                    || (within.contains(&parsed.message.as_ptr())
                        && parsed.message.len() < record.len())
            );
        }
        let kill = assembler.push_record(record);
        // A report's memory lines: any bytes, any section, never a panic; and every line of
        // the input as one message too (a `dmesg` dump's record).
        reader.push(record);
        if let Some(kill) = kill {
            let parsed = parsed.expect("a kill from a record that does not parse");
            assert_eq!((kill.seq, kill.usec), (parsed.seq, parsed.usec));
            assert!(
                matches!(parse_line(parsed.message), Some(OomLine::Killed { pid, .. }) if pid == kill.pid)
            );
            if let Some(constraint) = &kill.constraint {
                assert_eq!(
                    constraint.pid, kill.pid,
                    "a summary of another pid was paired"
                );
            }
            // A report is only ever given to a kill of a report that began.
            if kill.report.is_some() {
                assert!(kill.invoker.is_some(), "a report without its first line");
            }
        }
    }
    // What the reader took from the input is in it: each statistic's name.
    let memory = reader.into_memory();
    for (name, _) in &memory.stats {
        assert!(
            data.windows(name.len()).any(|w| w == name.as_bytes()),
            "{name} is not in the input"
        );
    }
});

/// What a recognised line reports is in the line: unescaping only ever shortens.
fn check_line(line: &OomLine, data: &[u8]) {
    let contains = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
    match line {
        OomLine::Killed { pid, comm, .. } | OomLine::KillProcess { pid, comm, .. } => {
            assert!(
                contains(format!("{pid} (").as_bytes()) || contains(b"0"),
                "pid {pid} not in the line"
            );
            assert!(comm.0.len() < data.len());
        }
        OomLine::Constraint(constraint) => {
            assert!(contains(b",pid="));
            assert!(constraint.task.0.len() < data.len());
        }
        OomLine::LegacyLimit(limit) => {
            assert!(limit.task_memcg.0.len() + limit.oom_memcg.0.len() < data.len());
        }
        OomLine::GroupKill { memcg } => assert!(memcg.0.len() < data.len()),
        OomLine::Invoked(invoker) => assert!(invoker.comm.0.len() < data.len()),
    }
}
