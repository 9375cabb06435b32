//! The stored timeline of a kill's domain, drawn for `oomtrace show`: a sparkline per cgroup
//! over the window before the kill, under the domain's one per kind of its memory (where it was
//! read), and the worst pressure stall.

use super::parties::owner_short;
use super::style::truncate;
use crate::record::timeline::{CgroupTimeline, CompositionKind, CompositionSample, Timeline};
use crate::wording::{human_bytes, printable};

/// Characters per sparkline: one per two seconds of a one-minute window.
const WIDTH: usize = 30;
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// Names are cut to this, so the lines align.
const NAME: usize = 24;

/// Lines for `timeline`, each starting with `indent`; none when it holds no samples.
pub(super) fn lines(timeline: &Timeline, indent: &str) -> Vec<String> {
    let window_ms = i64::try_from(timeline.window_s.max(1))
        .unwrap_or(60)
        .saturating_mul(1000);
    let cgroups: Vec<&CgroupTimeline> = timeline
        .cgroups
        .iter()
        .filter(|cgroup| !cgroup.samples.is_empty())
        .collect();
    let mut out = Vec::new();
    if cgroups.is_empty() {
        out.extend(not_covered(timeline, indent));
        return out;
    }
    // One scale for all, from zero: the lines compare in size as well as in shape.
    let top = cgroups
        .iter()
        .flat_map(|cgroup| {
            cgroup
                .samples
                .iter()
                .map(|sample| sample.usage_bytes)
                .chain(cgroup.limit_bytes)
        })
        .max()
        .unwrap_or(1)
        .max(1);
    for cgroup in cgroups {
        let name = owner_short(&cgroup.names).unwrap_or_else(|| printable(&cgroup.cgroup.path));
        let samples: Vec<(i64, u64)> = cgroup
            .samples
            .iter()
            .map(|sample| (sample.offset_ms, sample.usage_bytes))
            .collect();
        let first = samples.first().map_or(0, |&(_, bytes)| bytes);
        let last = samples.last().map_or(0, |&(_, bytes)| bytes);
        let limit = cgroup.limit_bytes.map_or(String::new(), |limit| {
            format!(" (limit {})", human_bytes(limit))
        });
        out.push(format!(
            "{indent}{:NAME$} {} {} → {}{limit}",
            truncate(&name, NAME),
            sparkline(&samples, window_ms, top),
            human_bytes(first),
            human_bytes(last),
        ));
        out.extend(composition_lines(
            &cgroup.composition,
            window_ms,
            top,
            indent,
        ));
    }
    if let Some(worst) = worst_stall(timeline) {
        out.push(format!("{indent}{worst}"));
    }
    out.extend(not_covered(timeline, indent));
    out
}

/// A kind is drawn from this share of the scale's top, or where it moved by as much.
const KIND_DRAWN_FROM_PERCENT: u64 = 5;

/// The domain's memory by kind, on the same scale as the cgroups: `  tmpfs/shmem ▁▁▂▅█ 4.0 MiB
/// → 100.0 MiB`, for the kinds big enough to see.
fn composition_lines(
    samples: &[CompositionSample],
    window_ms: i64,
    top: u64,
    indent: &str,
) -> Vec<String> {
    let kinds = CompositionKind::ALL.map(|kind| {
        let what = match kind {
            CompositionKind::Anon => "anonymous",
            CompositionKind::File => "page cache",
            CompositionKind::Shmem => "tmpfs/shmem",
            CompositionKind::Kernel => "kernel",
        };
        (what, kind)
    });
    let seen = top / 100 * KIND_DRAWN_FROM_PERCENT;
    kinds
        .iter()
        .filter_map(|(what, kind)| {
            let points: Vec<(i64, u64)> = samples
                .iter()
                .filter_map(|sample| Some((sample.offset_ms, kind.of(sample)?)))
                .collect();
            let (high, low) = points.iter().fold((0, u64::MAX), |(high, low), &(_, b)| {
                (high.max(b), low.min(b))
            });
            if points.is_empty() || high < seen.max(1) && high - low < seen {
                return None;
            }
            Some(format!(
                "{indent}  {:width$} {} {} → {}",
                what,
                sparkline(&points, window_ms, top),
                human_bytes(points[0].1),
                human_bytes(points[points.len() - 1].1),
                width = NAME - 2,
            ))
        })
        .collect()
}

/// What the recorder did not sample, and why: the first few.
fn not_covered(timeline: &Timeline, indent: &str) -> Vec<String> {
    const SHOWN: usize = 3;
    let mut out: Vec<String> = timeline
        .not_covered
        .iter()
        .take(SHOWN)
        .map(|missing| {
            format!(
                "{indent}not sampled: {}, as {}",
                printable(&missing.cgroup.path),
                missing.detail
            )
        })
        .collect();
    if timeline.not_covered.len() > SHOWN {
        out.push(format!(
            "{indent}and {} more not sampled",
            timeline.not_covered.len() - SHOWN
        ));
    }
    out
}

/// The usage over `[-window_ms, 0]` in WIDTH steps: each step shows the last sample at or
/// before its end, blank before the first sample.
pub(super) fn sparkline(samples: &[(i64, u64)], window_ms: i64, top: u64) -> String {
    (1..=WIDTH as i64)
        .map(|step| {
            let end = -window_ms + window_ms * step / WIDTH as i64;
            match samples.iter().take_while(|&&(at, _)| at <= end).last() {
                Some(&(_, bytes)) => {
                    let level = (bytes as u128 * BARS.len() as u128 / (top as u128 + 1)) as usize;
                    BARS[level.min(BARS.len() - 1)]
                }
                None => ' ',
            }
        })
        .collect()
}

fn worst_stall(timeline: &Timeline) -> Option<String> {
    let worst = timeline
        .pressure
        .iter()
        .max_by(|a, b| a.some_pct.0.total_cmp(&b.some_pct.0))?;
    let source = timeline
        .pressure_source
        .as_deref()
        .map_or("memory".to_owned(), printable);
    Some(format!(
        "stalls: up to {:.1} % of the time ({} s before), from {source}",
        worst.some_pct.0,
        (worst.offset_ms.unsigned_abs() + 500) / 1000
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rise_draws_as_a_rising_line() {
        let samples = [(-60_000, 0), (-30_000, 50), (-10_000, 80), (-100, 100)];
        let line = sparkline(&samples, 60_000, 100);
        assert_eq!(line.chars().count(), WIDTH);
        assert!(line.starts_with('▁'), "{line}");
        assert!(line.ends_with('█'), "{line}");
        // Nothing recorded yet at the start of the window: blank.
        let late = sparkline(&[(-20_000, 50)], 60_000, 100);
        assert!(late.starts_with(' ') && late.ends_with('▄'), "{late:?}");
    }

    #[test]
    fn the_domains_memory_is_drawn_by_kind_under_it() {
        let timeline: Timeline = serde_json::from_value(serde_json::json!({
        "window_s": 60,
        "pressure": [],
        "cgroups": [
            {"cgroup": {"path": "/box"}, "limit_bytes": 134217728u64,
             "samples": [{"offset_ms": -30000, "usage_bytes": 6291456},
                         {"offset_ms": -100, "usage_bytes": 133169152}],
             "composition": [
                {"offset_ms": -30000, "anon_bytes": 1048576, "file_bytes": 1048576,
                 "shmem_bytes": 4194304, "kernel_bytes": 65536},
                {"offset_ms": -1000, "anon_bytes": 20971520, "file_bytes": 1048576,
                 "shmem_bytes": 104857600, "kernel_bytes": 131072}]}
        ]}))
        .expect("a timeline as the record writes it");
        let drawn = lines(&timeline, "  ");
        assert_eq!(drawn.len(), 3, "{drawn:#?}");
        assert!(drawn[0].starts_with("  /box "), "{}", drawn[0]);
        assert!(drawn[1].starts_with("    anonymous "), "{}", drawn[1]);
        assert!(drawn[1].ends_with("1.0 MiB → 20.0 MiB"), "{}", drawn[1]);
        assert!(drawn[2].starts_with("    tmpfs/shmem "), "{}", drawn[2]);
        assert!(drawn[2].ends_with("4.0 MiB → 100.0 MiB"), "{}", drawn[2]);
        // The sparklines line up with the cgroup's.
        let column = |line: &str| line.chars().position(|c| BARS.contains(&c));
        assert_eq!(column(&drawn[0]), column(&drawn[2]), "{drawn:#?}");
    }

    #[test]
    fn the_timeline_of_a_record_is_drawn() {
        let timeline: Timeline = serde_json::from_value(serde_json::json!({
        "window_s": 60,
        "pressure_source": "/proc/pressure/memory",
        "pressure": [{"offset_ms": -2000, "some_pct": 34.0, "full_pct": 1.0}],
        "cgroups": [
            {"cgroup": {"path": "/pod/builder"}, "container": {"id": "abc", "name": "builder"},
             "samples": [{"offset_ms": -40000, "usage_bytes": 104857600},
                         {"offset_ms": -100, "usage_bytes": 3006477107u64}]},
            {"cgroup": {"path": "/pod/db"},
             "samples": [{"offset_ms": -60000, "usage_bytes": 2040109465u64},
                         {"offset_ms": -100, "usage_bytes": 2040109465u64}]},
            {"cgroup": {"path": "/pod/empty"}, "samples": []}
        ]}))
        .expect("a timeline as the record writes it");
        let drawn = lines(&timeline, "  ");
        assert_eq!(drawn.len(), 3, "{drawn:#?}");
        assert!(
            drawn.iter().all(|line| !line.contains("tmpfs")),
            "{drawn:#?}"
        );
        assert!(drawn[0].starts_with("  container builder "), "{}", drawn[0]);
        assert!(drawn[0].ends_with("100.0 MiB → 2.80 GiB"), "{}", drawn[0]);
        assert!(drawn[1].starts_with("  /pod/db "), "{}", drawn[1]);
        assert!(drawn[2].contains("34.0 %") && drawn[2].contains("2 s before"));
        let mut empty = Timeline {
            window_s: 60,
            pressure_source: None,
            pressure: Vec::new(),
            cgroups: Vec::new(),
            not_covered: Vec::new(),
        };
        assert!(lines(&empty, "").is_empty());
        // Nothing sampled is said, with why.
        empty.not_covered.push(crate::record::timeline::NotCovered {
            cgroup: crate::record::kill::CgroupPath {
                path: "/pod/new".into(),
            },
            reason: crate::record::timeline::NotCoveredReason::NotSeenYet,
            detail: "it was made too shortly before the kill to be sampled".into(),
        });
        assert_eq!(
            lines(&empty, "  "),
            ["  not sampled: /pod/new, as it was made too shortly before the kill to be sampled"]
        );
    }
}
