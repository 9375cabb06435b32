//! `oomtrace stats`: kills per container and per limit hit over a window, and the containers
//! OOM-killed again and again.

use std::collections::BTreeMap;
use std::time::Duration;

use super::parties::{compose_service_cell, container_cell, limit_cell, record};
use super::style::{Paint, Style};
use super::table::{Cell, Column, render};
use crate::history::query::StoredEvent;

/// As the agent flags a restart loop: this many OOM kills of one container within the window.
const LOOP_KILLS: usize = 3;

#[derive(Default)]
struct Counts {
    oom_kills: u64,
    sigkills: u64,
    last_ns: i64,
}

impl Counts {
    fn count(&mut self, event: &StoredEvent) {
        self.last_ns = self.last_ns.max(event.time_ns);
        if event.kind == "oom_kill" {
            self.oom_kills += 1;
        } else {
            self.sigkills += 1;
        }
    }
}

/// `events` are newest first, all since `since_ns`.
pub(super) fn text(
    events: &[StoredEvent],
    since_ns: i64,
    loop_window: Duration,
    style: &Style,
) -> Vec<String> {
    let mut by_container: BTreeMap<String, Counts> = BTreeMap::new();
    // Compose users think in services: `shop/db` counts every container of service db.
    let mut by_service: BTreeMap<String, Counts> = BTreeMap::new();
    let mut by_limit: BTreeMap<String, u64> = BTreeMap::new();
    // Per container, its OOM kills' times, oldest first.
    let mut kill_times: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let (mut oom_kills, mut sigkills) = (0, 0);
    for event in events.iter().rev() {
        let record = record(event);
        let container = container_cell(event, record.as_ref());
        let service = compose_service_cell(record.as_ref());
        let counts = by_container.entry(container.clone()).or_default();
        counts.count(event);
        if let Some(service) = service {
            by_service.entry(service).or_default().count(event);
        }
        if event.kind == "oom_kill" {
            oom_kills += 1;
            *by_limit
                .entry(limit_cell(event, record.as_ref()))
                .or_default() += 1;
            if container != "-" {
                kill_times.entry(container).or_default().push(event.time_ns);
            }
        } else {
            sigkills += 1;
        }
    }
    let mut lines = vec![format!(
        "since {}: {oom_kills} OOM kills, {sigkills} other SIGKILLs",
        style.when(since_ns)
    )];
    if events.is_empty() {
        return lines;
    }

    lines.push(String::new());
    let mut containers: Vec<_> = by_container.into_iter().collect();
    containers.sort_by(|(a_name, a), (b_name, b)| {
        (b.oom_kills, b.sigkills, a_name).cmp(&(a.oom_kills, a.sigkills, b_name))
    });
    let rows: Vec<Vec<Cell>> = containers
        .iter()
        .map(|(name, counts)| {
            vec![
                if name == "-" {
                    "(no container)".to_owned()
                } else {
                    name.clone()
                }
                .into(),
                counts.oom_kills.to_string().into(),
                counts.sigkills.to_string().into(),
                style.when(counts.last_ns).into(),
            ]
        })
        .collect();
    lines.extend(render(
        &[
            column("CONTAINER", true, false),
            column("OOM KILLS", false, true),
            column("SIGKILLS", false, true),
            column("LAST", false, false),
        ],
        &rows,
        style,
    ));

    if !by_service.is_empty() {
        lines.push(String::new());
        let mut services: Vec<_> = by_service.into_iter().collect();
        services.sort_by(|(a_name, a), (b_name, b)| {
            (b.oom_kills, b.sigkills, a_name).cmp(&(a.oom_kills, a.sigkills, b_name))
        });
        let rows: Vec<Vec<Cell>> = services
            .iter()
            .map(|(name, counts)| {
                vec![
                    name.clone().into(),
                    counts.oom_kills.to_string().into(),
                    counts.sigkills.to_string().into(),
                    style.when(counts.last_ns).into(),
                ]
            })
            .collect();
        lines.extend(render(
            &[
                column("COMPOSE SERVICE", true, false),
                column("OOM KILLS", false, true),
                column("SIGKILLS", false, true),
                column("LAST", false, false),
            ],
            &rows,
            style,
        ));
    }

    if !by_limit.is_empty() {
        lines.push(String::new());
        let mut limits: Vec<_> = by_limit.into_iter().collect();
        limits.sort_by(|(a_name, a), (b_name, b)| (b, a_name).cmp(&(a, b_name)));
        let rows: Vec<Vec<Cell>> = limits
            .into_iter()
            .map(|(limit, count)| vec![limit.into(), count.to_string().into()])
            .collect();
        lines.extend(render(
            &[
                column("LIMIT HIT", true, false),
                column("OOM KILLS", false, true),
            ],
            &rows,
            style,
        ));
    }

    lines.push(String::new());
    let loops = restart_loops(&kill_times, loop_window);
    let window = super::style::span(loop_window);
    if loops.is_empty() {
        lines.push(format!(
            "no restart loops ({LOOP_KILLS} or more OOM kills of a container within {window})"
        ));
    } else {
        let rows: Vec<Vec<Cell>> = loops
            .iter()
            .map(|restart_loop| {
                vec![
                    Cell {
                        text: restart_loop.container.clone(),
                        paint: Some(Paint::Red),
                    },
                    restart_loop.most_in_window.to_string().into(),
                    restart_loop.kills.to_string().into(),
                    style.when(restart_loop.last_ns).into(),
                ]
            })
            .collect();
        lines.push(format!(
            "restart loops ({LOOP_KILLS} or more OOM kills of a container within {window}):"
        ));
        lines.extend(render(
            &[
                column("CONTAINER", true, false),
                column("MOST IN WINDOW", false, true),
                column("OOM KILLS", false, true),
                column("LAST", false, false),
            ],
            &rows,
            style,
        ));
    }
    lines
}

fn column(header: &'static str, flexible: bool, right: bool) -> Column {
    Column {
        header,
        flexible,
        right,
    }
}

#[derive(Debug, PartialEq, Eq)]
struct RestartLoop {
    container: String,
    /// The most OOM kills within any one window.
    most_in_window: usize,
    kills: usize,
    last_ns: i64,
}

/// Containers with at least [`LOOP_KILLS`] OOM kills within `window`, most kills first.
/// `kill_times` are oldest first.
fn restart_loops(kill_times: &BTreeMap<String, Vec<i64>>, window: Duration) -> Vec<RestartLoop> {
    let window_ns = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX);
    let mut loops: Vec<RestartLoop> = kill_times
        .iter()
        .filter_map(|(container, times)| {
            let mut start = 0;
            let mut most = 0;
            for (end, &time) in times.iter().enumerate() {
                while time - times[start] > window_ns {
                    start += 1;
                }
                most = most.max(end + 1 - start);
            }
            (most >= LOOP_KILLS).then(|| RestartLoop {
                container: container.clone(),
                most_in_window: most,
                kills: times.len(),
                last_ns: *times.last().unwrap_or(&0),
            })
        })
        .collect();
    loops.sort_by(|a, b| (b.most_in_window, &a.container).cmp(&(a.most_in_window, &b.container)));
    loops
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000_000;

    #[test]
    fn three_kills_within_the_window_are_a_loop() {
        let mut times = BTreeMap::new();
        // web: 4 kills, 3 of them within 6 h.
        times.insert("web".to_owned(), vec![0, 10 * HOUR, 12 * HOUR, 15 * HOUR]);
        // db: 3 kills, but spread over 7 h.
        times.insert("db".to_owned(), vec![0, 4 * HOUR, 7 * HOUR]);
        // cache: 5 kills in an hour.
        times.insert("cache".to_owned(), (0..5).map(|i| i * HOUR / 5).collect());
        let loops = restart_loops(&times, Duration::from_secs(6 * 3600));
        assert_eq!(
            loops,
            [
                RestartLoop {
                    container: "cache".into(),
                    most_in_window: 5,
                    kills: 5,
                    last_ns: 4 * HOUR / 5
                },
                RestartLoop {
                    container: "web".into(),
                    most_in_window: 3,
                    kills: 4,
                    last_ns: 15 * HOUR
                },
            ]
        );
    }
}
