//! `oomtrace check` for people: the verdict first, then one row per thing looked at, what was
//! found and what follows, wrapped to the report width.

use super::{Report, Status, tier_words};
use crate::report::style::{self, Paint, Style};
use crate::wording::printable;

/// The status column's width: the longest status word and a space.
const STATUS_WIDTH: usize = 8;
/// The name column's width; longer names take a line of their own.
const NAME_WIDTH: usize = 34;

pub fn lines(report: &Report, style: &Style) -> Vec<String> {
    let mut lines = Vec::new();
    match (&report.capture, report.can_trace) {
        (Some(capture), can_trace) => {
            let verdict = if can_trace {
                format!(
                    "oomtrace can trace OOM kills here, in tier {}",
                    capture.tier
                )
            } else {
                format!(
                    "oomtrace would attach in tier {}, but `run` would stop (see the failed \
                     checks)",
                    capture.tier
                )
            };
            let paint = if can_trace { Paint::Bold } else { Paint::Red };
            lines.push(style.paint(paint, &verdict));
            lines.extend(style::wrap(
                &format!("it knows {}", tier_words(capture.tier)),
                "  ",
            ));
            lines.extend(style::wrap(
                &format!("why: {}", printable(&capture.reason)),
                "  ",
            ));
        }
        (None, _) => {
            lines.push(style.paint(Paint::Red, "oomtrace cannot trace OOM kills here"));
            if let Some(why) = &report.capture_error {
                lines.extend(style::wrap(&format!("why: {}", printable(why)), "  "));
            }
        }
    }
    lines.push(String::new());
    let indent = " ".repeat(STATUS_WIDTH + NAME_WIDTH);
    for check in &report.checks {
        let status = style::fit(check.status.as_str(), STATUS_WIDTH);
        let status = match check.status {
            Status::Ok => status,
            Status::Limited => style.paint(Paint::Yellow, &status),
            Status::Absent => style.paint(Paint::Dim, &status),
            Status::Failed => style.paint(Paint::Red, &status),
        };
        let name = printable(&check.name);
        let mut text = printable(&check.found);
        if let Some(consequence) = &check.consequence {
            text.push_str(&format!(" → {}", printable(consequence)));
        }
        let wrapped = wrap_whole_words(&text, &indent);
        let first = wrapped
            .first()
            .map_or("", |line| &line[indent.len()..])
            .to_owned();
        if style::width(&name) < NAME_WIDTH {
            lines.push(format!("{status}{}{first}", style::fit(&name, NAME_WIDTH)));
        } else {
            lines.push(format!("{status}{name}"));
            lines.push(format!("{indent}{first}"));
        }
        lines.extend(wrapped.into_iter().skip(1));
    }
    lines
}

/// As [`style::wrap`], but a word longer than a line keeps its line to itself, uncut: a path
/// in a check is what the reader needs whole.
fn wrap_whole_words(text: &str, indent: &str) -> Vec<String> {
    let room = style::WIDTH.saturating_sub(style::width(indent)).max(20);
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && style::width(&line) + 1 + style::width(word) > room {
            lines.push(format!("{indent}{line}"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(format!("{indent}{line}"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Tier;
    use crate::check::Check;
    use crate::record::agent::CaptureInfo;

    fn report(can_trace: bool) -> Report {
        Report {
            can_trace,
            capture: Some(CaptureInfo {
                tier: Tier::NoFunctionTracing,
                reason: "oom_kill_process: fentry: denied".to_owned(),
                mark_victim_argument: Some("task".to_owned()),
                task_hook: Some("tp_btf".to_owned()),
                function_hook: None,
                tracepoint_fields: vec!["pid".to_owned()],
                sigkill: true,
                sigkill_task_hook: None,
            }),
            capture_error: None,
            checks: vec![
                Check::new("btf", "kernel BTF", Status::Ok, "/sys/kernel/btf/vmlinux"),
                Check::new(
                    "runtime",
                    "the Docker API at /var/run/docker.sock\u{1b}[2J",
                    Status::Absent,
                    "absent: no socket",
                )
                .then("nothing lost"),
            ],
        }
    }

    #[test]
    fn the_verdict_comes_first_then_a_row_per_check() {
        let lines = lines(&report(true), &crate::report::style::tests::style(false));
        assert_eq!(
            lines[0],
            "oomtrace can trace OOM kills here, in tier no-function-tracing"
        );
        assert!(lines[2].starts_with("  why: oom_kill_process: fentry: denied"));
        assert_eq!(
            lines[4],
            "ok      kernel BTF                        /sys/kernel/btf/vmlinux"
        );
        let docker = lines[5..].join("\n");
        assert!(
            docker.contains("absent  the Docker API at /var/run/docker.sock\\x1b[2J"),
            "a name is printed escaped: {docker}"
        );
        assert!(
            docker.contains("absent: no socket → nothing lost"),
            "{docker}"
        );
        assert!(lines.iter().all(|line| style::width(line) <= style::WIDTH));
    }

    #[test]
    fn a_long_path_is_printed_whole() {
        let path = format!("/var/lib/{}/oomtrace.db", "x".repeat(80));
        let wrapped = wrap_whole_words(&format!("{path} will be created"), "    ");
        assert_eq!(wrapped[0], format!("    {path}"));
        assert_eq!(wrapped[1], "    will be created");
    }

    #[test]
    fn a_failed_check_says_run_would_stop() {
        let lines = lines(&report(false), &crate::report::style::tests::style(false));
        assert!(lines[0].contains("but `run` would stop"), "{}", lines[0]);
    }
}
