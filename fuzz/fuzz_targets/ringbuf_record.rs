//! Fuzzes the ring-buffer decoder: every record the eBPF programs write is decoded by kind,
//! with the layouts read from the live tracepoint formats. The programs and the agent are built
//! together, but a record cut short, a kind not known, or a field the kernel filled with
//! anything must be an error or a part, never a panic or a read past the record.
//!
//! Input: one byte choosing the layouts (the 6.18 kernel's, or pid-only before 6.9), then one
//! record as the ring buffer hands it over.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

use oomtrace::capture::tracefs::TracepointFormat;
use oomtrace::decode::decode_with;
use oomtrace::decode::mark_victim::MarkVictimLayout;
use oomtrace::decode::signal::SignalLayout;



fn mark_victim(format: &str) -> MarkVictimLayout {
    let format = TracepointFormat::parse(format).expect("a saved format");
    MarkVictimLayout::from_format(&format).expect("a usable layout")
}

static LAYOUTS: LazyLock<[(MarkVictimLayout, SignalLayout); 2]> = LazyLock::new(|| {
    let signal = || {
        let format = TracepointFormat::parse(include_str!(
            "../../tracer/tests/fixtures/tracefs/signal_generate-6.18.format"
        ))
        .expect("a saved format");
        SignalLayout::from_format(&format).expect("a usable layout")
    };

    [
        (
            mark_victim(include_str!(
                "../../tracer/tests/fixtures/tracefs/mark_victim-6.18.format"
            )),
            signal(),
        ),
        (
            mark_victim(include_str!(
                "../../tracer/tests/fixtures/tracefs/mark_victim-pid-only.format"
            )),
            signal(),
        ),
    ]
});

fuzz_target!(|data: &[u8]| {
    let Some((&choice, record)) = data.split_first() else {
        return;
    };
    let (mark_victim, signal) = &LAYOUTS[usize::from(choice & 1)];
    let _ = decode_with(record, mark_victim, Some(signal));
    let _ = decode_with(record, mark_victim, None);
});
