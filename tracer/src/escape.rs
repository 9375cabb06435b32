//! One rule for every line oomtrace prints: no character that drives a terminal or reorders
//! text reaches it raw. Cgroup names, comms, container names and labels are chosen by whoever
//! runs the container (a delegated cgroup tree lets a container name its own), so a name can
//! hold `ESC ] 0 ;` (set the window title), `ESC [ 2 J` (clear the screen), a newline that forges
//! a log line, or U+202E (right-to-left override) that shows `exe.txt` for `txt.exe`.
//!
//! The rule is applied where output is formatted, not where a name is used: the log's format
//! ([`log_line`], every target), the reports' writer ([`Terminal`]) and the JSON writers
//! ([`JsonEscapes`], as `\uXXXX`, which any JSON reader decodes back).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io;

/// Whether `c` may not reach a terminal raw: C0 and C1 controls and DEL (`Cc`), the bidi
/// embeddings, overrides, isolates and marks, and the line and paragraph separators.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// Whether `text` is printable ASCII only, so nothing in it needs a look character by character:
/// almost every name, and a quick test (a SIGKILL flood escapes every line it logs).
fn is_plain_ascii(text: &str) -> bool {
    text.bytes().all(|byte| (b' '..=b'~').contains(&byte))
}

/// `text` with every unsafe character written as an escape: `\x1b`, `\n`, `\u{202e}`.
pub fn escape(text: &str) -> Cow<'_, str> {
    if is_plain_ascii(text) || !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push(&mut escaped, c);
    }
    Cow::Owned(escaped)
}

fn push(out: &mut String, c: char) {
    match c {
        c if !is_unsafe(c) => out.push(c),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x100 => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

/// The agent's log line, as env_logger writes it by default (`[time LEVEL target] message`),
/// with the message (and the target) escaped. `styles` are the level's and the brackets'
/// colors, empty when color is off.
pub fn log_line(
    out: &mut impl io::Write,
    time: impl std::fmt::Display,
    level: log::Level,
    target: &str,
    message: &std::fmt::Arguments<'_>,
    styles: (env_logger::fmt::style::Style, env_logger::fmt::style::Style),
) -> io::Result<()> {
    let (level_style, dim) = styles;
    let message = message.to_string();
    writeln!(
        out,
        "{dim}[{dim:#}{time} {level_style}{level:<5}{level_style:#} {}{dim}]{dim:#} {}",
        escape(target),
        escape(&message)
    )
}

/// A writer for reports: every unsafe character escaped except the newlines that end lines,
/// and, when `color` is on, the SGR color sequences (`ESC [ digits ; … m`) the report's own
/// [`Style`](crate::report::style) writes.
pub struct Terminal<W: io::Write> {
    inner: W,
    color: bool,
    /// The start of a UTF-8 character cut by the end of the last write.
    carry: Vec<u8>,
}

impl<W: io::Write> Terminal<W> {
    pub fn new(inner: W, color: bool) -> Self {
        Terminal {
            inner,
            color,
            carry: Vec::new(),
        }
    }

    fn escape_chunk(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if self.color
                && let Some(len) = sgr_len(rest)
            {
                out.push_str(&rest[..len]);
                rest = &rest[len..];
                continue;
            }
            if c == '\n' {
                out.push('\n');
            } else {
                push(&mut out, c);
            }
            rest = &rest[c.len_utf8()..];
        }
        out
    }
}

/// The length of an SGR sequence at the start of `text`, if one is there.
fn sgr_len(text: &str) -> Option<usize> {
    let body = text.strip_prefix("\x1b[")?;
    let params = body
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b';')
        .count();
    (body.as_bytes().get(params) == Some(&b'm')).then_some(2 + params + 1)
}

impl<W: io::Write> io::Write for Terminal<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut bytes = std::mem::take(&mut self.carry);
        bytes.extend_from_slice(buf);
        let (text, cut) = match std::str::from_utf8(&bytes) {
            Ok(text) => (Cow::Borrowed(text), 0),
            // A character cut at the end: kept for the next write.
            Err(err) if err.error_len().is_none() => {
                let valid = err.valid_up_to();
                let text = String::from_utf8_lossy(&bytes[..valid]);
                (text, bytes.len() - valid)
            }
            Err(_) => (String::from_utf8_lossy(&bytes), 0),
        };
        let escaped = self.escape_chunk(&text);
        self.inner.write_all(escaped.as_bytes())?;
        self.carry = bytes[bytes.len() - cut..].to_vec();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.carry.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.carry)).into_owned();
            let escaped = self.escape_chunk(&rest);
            self.inner.write_all(escaped.as_bytes())?;
        }
        self.inner.flush()
    }
}

/// serde_json's formatting, with every unsafe character in strings written as `\uXXXX`:
/// serde_json escapes the C0 controls itself, not DEL, the C1 controls nor the bidi ones.
pub struct JsonEscapes<F>(pub F);

impl<F: serde_json::ser::Formatter> serde_json::ser::Formatter for JsonEscapes<F> {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        if is_plain_ascii(fragment) {
            return writer.write_all(fragment.as_bytes());
        }
        let mut rest = fragment;
        while let Some(at) = rest.find(is_unsafe) {
            writer.write_all(&rest.as_bytes()[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            rest = &rest[at + c.len_utf8()..];
        }
        writer.write_all(rest.as_bytes())
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

/// `value` as one line of JSON, escaped by the rule.
pub fn to_json_writer(
    writer: impl io::Write,
    value: &impl serde::Serialize,
) -> serde_json::Result<()> {
    let mut serializer = serde_json::Serializer::with_formatter(
        writer,
        JsonEscapes(serde_json::ser::CompactFormatter),
    );
    value.serialize(&mut serializer)
}

/// `value` as indented JSON, escaped by the rule.
pub fn to_json_writer_pretty(
    writer: impl io::Write,
    value: &impl serde::Serialize,
) -> serde_json::Result<()> {
    let mut serializer = serde_json::Serializer::with_formatter(
        writer,
        JsonEscapes(serde_json::ser::PrettyFormatter::new()),
    );
    value.serialize(&mut serializer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// A cgroup name a container could give itself.
    const HOSTILE: &str = "web\x1b]0;owned\x07\x1b[2J\nFAKE \u{202e}gpj.exe\u{9b}\u{7f}";

    fn raw_free(text: &str) {
        for c in text.chars() {
            assert!(!is_unsafe(c) || c == '\n', "raw {:?} in {text:?}", c);
        }
    }

    #[test]
    fn every_unsafe_character_is_escaped_and_the_rest_kept() {
        let escaped = escape(HOSTILE);
        assert_eq!(
            escaped,
            "web\\x1b]0;owned\\x07\\x1b[2J\\nFAKE \\u{202e}gpj.exe\\x9b\\x7f"
        );
        assert!(matches!(escape("plain name-1 / ü ✓"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_log_line_of_any_target_is_one_line_without_raw_controls() {
        let none = (
            env_logger::fmt::style::Style::new(),
            env_logger::fmt::style::Style::new(),
        );
        for target in [
            "oomtrace::attribute",
            "oomtrace::sink::text",
            "oomtrace::agent",
            "oomtrace::attribute::state::docker",
            "oomtrace::observe::timeline",
            "oomtrace::history::writer",
            "oomtrace::metrics::http",
            "oomtrace::capture",
            "oomtrace::kmsg",
            "oomtrace::stages",
            "aya",
        ] {
            let mut out = Vec::new();
            log_line(
                &mut out,
                "2026-12-07T10:00:00Z",
                log::Level::Info,
                target,
                &format_args!("cgroup /x/{HOSTILE} named"),
                none,
            )
            .unwrap();
            let line = String::from_utf8(out).unwrap();
            assert_eq!(line.matches('\n').count(), 1, "{line:?}");
            assert!(line.ends_with('\n'));
            raw_free(&line);
            assert!(
                line.starts_with(&format!(
                    "[2026-12-07T10:00:00Z INFO  {target}] cgroup /x/web"
                )),
                "{line}"
            );
        }
    }

    #[test]
    fn a_report_keeps_its_lines_and_its_own_colors_only() {
        let mut out = Vec::new();
        {
            let mut terminal = Terminal::new(&mut out, true);
            writeln!(terminal, "\x1b[1mID\x1b[0m {HOSTILE}").unwrap();
            // A character cut across two writes.
            let bidi = "\u{202e}".as_bytes();
            terminal.write_all(&bidi[..1]).unwrap();
            terminal.write_all(&bidi[1..]).unwrap();
            terminal.write_all("é\n".as_bytes()).unwrap();
            terminal.flush().unwrap();
        }
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("\x1b[1mID\x1b[0m web\\x1b]0;owned"),
            "{text:?}"
        );
        assert!(text.ends_with("\\u{202e}é\n"), "{text:?}");
        assert_eq!(
            text.lines().count(),
            3,
            "the name's newline is escaped: {text:?}"
        );
        // Without color, no escape sequence passes at all.
        let mut plain = Vec::new();
        writeln!(Terminal::new(&mut plain, false), "\x1b[1mID\x1b[0m").unwrap();
        assert_eq!(String::from_utf8(plain).unwrap(), "\\x1b[1mID\\x1b[0m\n");
    }

    #[test]
    fn json_carries_no_raw_control_and_reads_back_the_same() {
        let value = serde_json::json!({"name": HOSTILE, "list": [HOSTILE]});
        for pretty in [false, true] {
            let mut out = Vec::new();
            if pretty {
                to_json_writer_pretty(&mut out, &value).unwrap();
            } else {
                to_json_writer(&mut out, &value).unwrap();
            }
            let text = String::from_utf8(out).unwrap();
            raw_free(&text);
            assert!(text.contains("\\u202e"), "{text}");
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back, value);
        }
        let mut out = Vec::new();
        to_json_writer(&mut out, &value).unwrap();
        assert!(!String::from_utf8(out).unwrap().contains('\n'));
    }
}
