//! JSON Lines: one record per line on stdout, schema in `docs/json-schema.md`.

use std::io::Write;

use super::Sink;
use crate::record::Record;

pub(crate) struct JsonSink<W: Write> {
    out: W,
}

impl<W: Write> JsonSink<W> {
    pub(crate) fn new(out: W) -> Self {
        JsonSink { out }
    }
}

impl<W: Write> Sink for JsonSink<W> {
    fn write(&mut self, record: &Record) -> std::io::Result<()> {
        crate::escape::to_json_writer(&mut self.out, record)?;
        self.out.write_all(b"\n")?;
        // Each line is a complete event: consumers read it as it happens, not on exit.
        self.out.flush()
    }
}
