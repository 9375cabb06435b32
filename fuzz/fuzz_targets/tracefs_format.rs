//! Fuzzes what the agent reads from tracefs at startup and then trusts for every record: a
//! tracepoint `format` file, the record layouts derived from it, and the records decoded with
//! those layouts. A kernel oomtrace was never tried on may describe anything; a layout that
//! cannot be honoured must be refused, never trusted into an out-of-bounds read.
//!
//! Input: a format file, a NUL byte, then one raw record.

#![no_main]

use libfuzzer_sys::fuzz_target;

use oomtrace::capture::tracefs::TracepointFormat;
use oomtrace::decode::mark_victim::MarkVictimLayout;
use oomtrace::decode::signal::SignalLayout;

fuzz_target!(|data: &[u8]| {
    let (format, raw) = match data.iter().position(|&byte| byte == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let format = String::from_utf8_lossy(format);
    let Ok(parsed) = TracepointFormat::parse(&format) else {
        return;
    };
    assert!(!parsed.fields.is_empty());
    for field in &parsed.fields {
        assert!(!field.name.is_empty());
        assert!(parsed.field(&field.name).is_some());
    }

    if let Ok(layout) = MarkVictimLayout::from_format(&parsed) {
        let _ = layout.fields_present();
        let _ = layout.decode(raw);
    }
    if let Ok(layout) = SignalLayout::from_format(&parsed) {
        let _ = layout.sig_offset();
        let _ = layout.decode(raw);
    }
});
