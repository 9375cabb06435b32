//! How reports look on a terminal: times in local time with their age, cells cut to fit 100
//! columns, and color only for a terminal that wants it.

use std::io::IsTerminal as _;

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// Reports fit a terminal this wide.
pub const WIDTH: usize = 100;

#[derive(Clone, Debug)]
pub struct Style {
    pub color: bool,
    pub now: Timestamp,
    pub tz: TimeZone,
}

/// ANSI colors a report uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paint {
    Bold,
    Dim,
    Red,
    Yellow,
}

impl Style {
    /// Color when stdout is a terminal and `NO_COLOR` is unset or empty (no-color.org).
    pub fn for_stdout() -> Self {
        Style {
            color: wants_color(
                std::io::stdout().is_terminal(),
                std::env::var_os("NO_COLOR"),
            ),
            now: Timestamp::now(),
            tz: TimeZone::try_system().unwrap_or(TimeZone::UTC),
        }
    }

    /// `text` in `paint`, when color is on.
    pub fn paint(&self, paint: Paint, text: &str) -> String {
        if !self.color {
            return text.to_owned();
        }
        let code = match paint {
            Paint::Bold => "1",
            Paint::Dim => "2",
            Paint::Red => "31",
            Paint::Yellow => "33",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// `2026-11-30 10:02:11` in local time.
    pub fn local_time(&self, time_ns: i64) -> String {
        match Timestamp::from_nanosecond(i128::from(time_ns)) {
            Ok(time) => time
                .to_zoned(self.tz.clone())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string(),
            Err(_) => format!("{time_ns} ns"),
        }
    }

    /// `2026-11-30 10:02:11 (3 h ago)`.
    pub fn when(&self, time_ns: i64) -> String {
        format!("{} ({})", self.local_time(time_ns), self.age(time_ns))
    }

    /// `3 h ago`, `12 min ago`, `just now`.
    pub fn age(&self, time_ns: i64) -> String {
        let now_ns = i64::try_from(self.now.as_nanosecond()).unwrap_or(i64::MAX);
        let seconds = now_ns.saturating_sub(time_ns) / 1_000_000_000;
        let (amount, ago) = if seconds < 0 {
            (-seconds, false)
        } else {
            (seconds, true)
        };
        let span = match amount {
            0..2 => return "just now".to_owned(),
            2..120 => format!("{amount} s"),
            120..7200 => format!("{} min", amount / 60),
            7200..172_800 => format!("{} h", amount / 3600),
            _ => format!("{} d", amount / 86_400),
        };
        if ago {
            format!("{span} ago")
        } else {
            format!("in {span}")
        }
    }
}

fn wants_color(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

/// A duration as people say it: `6 h`, `90 min`, `2 d`.
pub fn span(duration: std::time::Duration) -> String {
    match duration.as_secs() {
        seconds if seconds >= 86_400 && seconds % 86_400 == 0 => format!("{} d", seconds / 86_400),
        seconds if seconds >= 3600 && seconds % 3600 == 0 => format!("{} h", seconds / 3600),
        seconds if seconds >= 60 && seconds % 60 == 0 => format!("{} min", seconds / 60),
        seconds => format!("{seconds} s"),
    }
}

/// The columns `text` takes on a terminal. Wide (CJK, emoji) characters take two, combining
/// marks none; an approximation of wcwidth good enough to keep a table aligned.
pub fn width(text: &str) -> usize {
    text.chars().map(char_width).sum()
}

fn char_width(c: char) -> usize {
    let code = u32::from(c);
    match code {
        0x0300..=0x036F | 0x200B..=0x200F | 0xFE00..=0xFE0F => 0,
        0x1100..=0x115F
        | 0x2E80..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1FAFF
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

/// `text` cut to at most `max` columns, an ellipsis marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    if width(text) <= max {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = char_width(c);
        if used + w + 1 > max {
            break;
        }
        out.push(c);
        used += w;
    }
    if max > 0 {
        out.push('…');
    }
    out
}

/// `text` cut to `width` columns and padded to exactly that.
pub fn fit(text: &str, columns: usize) -> String {
    let mut cell = truncate(text, columns);
    let used = width(&cell);
    cell.extend(std::iter::repeat_n(' ', columns.saturating_sub(used)));
    cell
}

/// `text` as lines of at most `WIDTH` columns, each starting with `indent`, broken at spaces
/// (a word longer than a line is cut).
pub fn wrap(text: &str, indent: &str) -> Vec<String> {
    let room = WIDTH.saturating_sub(width(indent)).max(20);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let needed = if line.is_empty() {
            width(word)
        } else {
            width(&line) + 1 + width(word)
        };
        if needed > room && !line.is_empty() {
            lines.push(format!("{indent}{line}"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&truncate(word, room));
    }
    if !line.is_empty() {
        lines.push(format!("{indent}{line}"));
    }
    lines
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A style with fixed "now", UTC, and color as given.
    pub fn style(color: bool) -> Style {
        Style {
            color,
            now: "2026-11-30T13:02:11Z".parse().unwrap(),
            tz: TimeZone::UTC,
        }
    }

    #[test]
    fn times_show_local_time_and_age() {
        let style = style(false);
        let at = |text: &str| text.parse::<Timestamp>().unwrap().as_nanosecond() as i64;
        assert_eq!(
            style.when(at("2026-11-30T10:02:11Z")),
            "2026-11-30 10:02:11 (3 h ago)"
        );
        assert_eq!(style.age(at("2026-11-30T12:50:11Z")), "12 min ago");
        assert_eq!(style.age(at("2026-11-30T13:01:41Z")), "30 s ago");
        assert_eq!(style.age(at("2026-11-30T13:02:11Z")), "just now");
        assert_eq!(style.age(at("2026-11-20T13:02:11Z")), "10 d ago");
        assert_eq!(style.age(at("2026-11-30T13:05:11Z")), "in 3 min");
    }

    #[test]
    fn cells_are_cut_with_an_ellipsis_to_their_width() {
        assert_eq!(truncate("postgres", 10), "postgres");
        assert_eq!(truncate("a-very-long-container-name", 10), "a-very-lo…");
        assert_eq!(width(&truncate("a-very-long-container-name", 10)), 10);
        assert_eq!(width(&truncate("日本語のコンテナ名", 7)), 7);
        assert_eq!(fit("db", 5), "db   ");
        assert_eq!(width(&fit("日本語のコンテナ名", 8)), 8);
    }

    #[test]
    fn no_color_without_a_terminal_or_with_no_color() {
        assert_eq!(style(false).paint(Paint::Red, "oom"), "oom");
        assert_eq!(style(true).paint(Paint::Red, "oom"), "\x1b[31moom\x1b[0m");
        assert!(wants_color(true, None));
        assert!(wants_color(true, Some("".into())));
        assert!(!wants_color(true, Some("1".into())));
        assert!(!wants_color(false, None));
    }

    #[test]
    fn wrapped_lines_fit_the_width() {
        let text = "word ".repeat(100) + &"x".repeat(150);
        let lines = wrap(&text, "  ");
        assert!(lines.len() > 3);
        for line in &lines {
            assert!(width(line) <= WIDTH, "{line}");
            assert!(line.starts_with("  "));
        }
    }
}
