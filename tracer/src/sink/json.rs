//! JSON Lines: one record per line on stdout, schema in `docs/json-schema.md`.

use std::io::Write;

use super::Sink;
use crate::record::Record;

/// Above this, the line's buffer is given back after the write: one huge record (a kill with
/// a long lead-up) should not keep its size for the agent's lifetime.
const KEPT_LINE_BYTES: usize = 64 << 10;

pub(crate) struct JsonSink<W: Write> {
    out: W,
    /// The line being written, kept between records: each is serialized here whole and then
    /// written at once, rather than piece by piece through stdout's line buffer (which searches
    /// every piece for a newline: a fifth of what a SIGKILL flood cost).
    line: Vec<u8>,
}

impl<W: Write> JsonSink<W> {
    pub(crate) fn new(out: W) -> Self {
        JsonSink {
            out,
            line: Vec::new(),
        }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn write(&mut self, record: &Record) -> std::io::Result<()> {
        self.line.clear();
        crate::escape::to_json_writer(&mut self.line, record)?;
        self.line.push(b'\n');
        let written = self.out.write_all(&self.line);
        if self.line.capacity() > KEPT_LINE_BYTES {
            self.line = Vec::new();
        }
        written?;
        // Each line is a complete event: consumers read it as it happens, not on exit.
        self.out.flush()
    }
}
