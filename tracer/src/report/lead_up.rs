//! The stored timeline of a kill's domain, drawn for `oomtrace show`: a sparkline per cgroup
//! over the window before the kill, and the worst pressure stall.

use serde_json::Value;

use super::parties::owner_short;
use crate::names::{human_bytes, printable};

/// Characters per sparkline: one per two seconds of a one-minute window.
const WIDTH: usize = 30;
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// Names are cut to this, so the lines align.
const NAME: usize = 24;

/// A cgroup's name, its `(offset_ms, usage_bytes)` samples and its limit.
type Drawn = (String, Vec<(i64, u64)>, Option<u64>);

/// Lines for the timeline at `/explanation/timeline`, each starting with `indent`; none when
/// the record has no timeline or it holds no samples.
pub fn lines(record: &Value, indent: &str) -> Vec<String> {
    let Some(timeline) = record.pointer("/explanation/timeline") else {
        return Vec::new();
    };
    let window_ms = timeline["window_s"].as_i64().unwrap_or(60).max(1) * 1000;
    let cgroups: Vec<Drawn> = timeline["cgroups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let name = owner_short(entry).unwrap_or_else(|| {
                entry
                    .pointer("/cgroup/path")
                    .and_then(Value::as_str)
                    .map_or("?".to_owned(), printable)
            });
            let samples: Vec<(i64, u64)> = entry["samples"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|sample| {
                    Some((
                        sample["offset_ms"].as_i64()?,
                        sample["usage_bytes"].as_u64()?,
                    ))
                })
                .collect();
            (name, samples, entry["limit_bytes"].as_u64())
        })
        .filter(|(_, samples, _): &Drawn| !samples.is_empty())
        .collect();
    let mut out = Vec::new();
    if cgroups.is_empty() {
        return out;
    }
    // One scale for all, from zero: the lines compare in size as well as in shape.
    let top = cgroups
        .iter()
        .flat_map(|(_, samples, limit)| samples.iter().map(|&(_, bytes)| bytes).chain(*limit))
        .max()
        .unwrap_or(1)
        .max(1);
    for (name, samples, limit) in &cgroups {
        let first = samples.first().map_or(0, |&(_, bytes)| bytes);
        let last = samples.last().map_or(0, |&(_, bytes)| bytes);
        let limit = limit.map_or(String::new(), |limit| {
            format!(" (limit {})", human_bytes(limit))
        });
        out.push(format!(
            "{indent}{:NAME$} {} {} → {}{limit}",
            truncate(name, NAME),
            sparkline(samples, window_ms, top),
            human_bytes(first),
            human_bytes(last),
        ));
    }
    if let Some(worst) = worst_stall(timeline) {
        out.push(format!("{indent}{worst}"));
    }
    out
}

/// The usage over `[-window_ms, 0]` in WIDTH steps: each step shows the last sample at or
/// before its end, blank before the first sample.
pub fn sparkline(samples: &[(i64, u64)], window_ms: i64, top: u64) -> String {
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

fn worst_stall(timeline: &Value) -> Option<String> {
    let worst = timeline["pressure"]
        .as_array()?
        .iter()
        .filter_map(|stall| Some((stall["some_pct"].as_f64()?, stall["offset_ms"].as_i64()?)))
        .max_by(|a, b| a.0.total_cmp(&b.0))?;
    let source = timeline["pressure_source"]
        .as_str()
        .map_or("memory".to_owned(), printable);
    Some(format!(
        "stalls: up to {:.1} % of the time ({} s before), from {source}",
        worst.0,
        (worst.1.unsigned_abs() + 500) / 1000
    ))
}

fn truncate(name: &str, width: usize) -> String {
    if name.chars().count() <= width {
        return name.to_owned();
    }
    let mut cut: String = name.chars().take(width - 1).collect();
    cut.push('…');
    cut
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
    fn the_timeline_of_a_record_is_drawn() {
        let record = serde_json::json!({"explanation": {"timeline": {
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
        ]}}});
        let drawn = lines(&record, "  ");
        assert_eq!(drawn.len(), 3, "{drawn:#?}");
        assert!(drawn[0].starts_with("  container builder "), "{}", drawn[0]);
        assert!(drawn[0].ends_with("100.0 MiB → 2.80 GiB"), "{}", drawn[0]);
        assert!(drawn[1].starts_with("  /pod/db "), "{}", drawn[1]);
        assert!(drawn[2].contains("34.0 %") && drawn[2].contains("2 s before"));
        assert!(lines(&serde_json::json!({}), "").is_empty());
    }
}
