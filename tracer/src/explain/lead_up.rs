//! The lead-up in words: how the domain's biggest cgroups moved in the minute before the kill
//! ("builder grew from 100 MiB to 2.8 GiB over the last 40 s; db was flat at 1.9 GiB"), which
//! kind of the domain's memory grew ("within the limit, tmpfs/shared memory grew from 4 MiB to
//! 100 MiB"), and how much tasks stalled on memory.

use crate::record::timeline::{
    CgroupTimeline, CompositionKind, CompositionSample, Timeline, UsageSample as UsageAt,
};
use crate::wording::{printable, short_name, spoken_bytes};

/// How many cgroups the sentence names; the JSON has them all.
const NAMED: usize = 3;
/// Smaller moves than this are "flat": a tenth of the cgroup's size, and at least 8 MiB.
const MIN_MOVE_BYTES: u64 = 8 << 20;
/// A cgroup that has not moved for this long before the kill is "flat", whatever it did
/// earlier in the window.
const FLAT_FOR_MS: i64 = 5_000;
/// Stalls below this share of an interval go unmentioned.
const NOTABLE_STALL_PERCENT: f64 = 10.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trend {
    Grew {
        from: u64,
        to: u64,
        seconds: u64,
    },
    Fell {
        from: u64,
        to: u64,
        seconds: u64,
    },
    /// Within the threshold of `at` since `seconds` before the kill; `None`: all along.
    Flat {
        at: u64,
        seconds: Option<u64>,
    },
}

/// One or two sentences, `None` when the timeline holds too little to say anything.
pub(crate) fn lead_up(timeline: &Timeline) -> Option<String> {
    let names: Vec<String> = timeline
        .cgroups
        .iter()
        .map(|cgroup| {
            short_name(&cgroup.names)
                .unwrap_or_else(|| format!("cgroup {}", printable(&cgroup.cgroup.path)))
        })
        .collect();
    let trends: Vec<(&str, Trend)> = timeline
        .cgroups
        .iter()
        .zip(&names)
        .enumerate()
        .filter_map(|(index, (cgroup, name))| {
            // A domain with members moves as they do: name them, not it.
            if index == 0 && cgroup.limit_bytes.is_some() && timeline.cgroups.len() > 1 {
                return None;
            }
            Some((name.as_str(), trend(&cgroup.samples)?))
        })
        .collect();
    let last_leg = timeline
        .cgroups
        .first()
        .filter(|_| timeline.cgroups.len() == 1)
        .and_then(unsampled_rise);
    let mut moved: Vec<&(&str, Trend)> = trends
        .iter()
        .filter(|(_, trend)| !matches!(trend, Trend::Flat { .. }))
        .collect();
    moved.sort_by_key(|(_, trend)| std::cmp::Reverse(amount(*trend)));
    let mut flat: Vec<&(&str, Trend)> = trends
        .iter()
        .filter(|(_, trend)| matches!(trend, Trend::Flat { .. }))
        .collect();
    flat.sort_by_key(|(_, trend)| std::cmp::Reverse(amount(*trend)));
    let phrases: Vec<String> = moved
        .into_iter()
        .chain(flat)
        .take(NAMED)
        .map(|(name, trend)| phrase(name, *trend))
        .collect();
    let mut text = String::new();
    if let Some((first, rest)) = phrases.split_first() {
        text = format!(
            "In the {} before the kill, {first}",
            window_words(timeline.window_s)
        );
        for phrase in rest {
            text.push_str("; ");
            text.push_str(phrase);
        }
        if let Some(last_leg) = &last_leg {
            text.push_str(last_leg);
        }
        text.push('.');
    }
    if let Some(grew) = timeline
        .cgroups
        .first()
        .filter(|domain| domain.limit_bytes.is_some())
        .and_then(|domain| composition_phrase(&domain.composition))
    {
        if text.is_empty() {
            text = format!(
                "In the {} before the kill, within the limit, {grew}.",
                window_words(timeline.window_s)
            );
        } else {
            text.push_str(&format!(" Within the limit, {grew}."));
        }
    }
    if let Some(stall) = stall_phrase(timeline) {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&stall);
    }
    // No lead-up to tell: say why, rather than nothing.
    if timeline.cgroups.is_empty()
        && let Some(missing) = timeline.not_covered.first()
    {
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(&format!(
            "The memory timeline has no samples of cgroup {}: {}.",
            printable(&missing.cgroup.path),
            missing.detail
        ));
    }
    (!text.is_empty()).then_some(text)
}

/// Which kinds of the domain's memory grew, biggest growth first: `tmpfs/shared memory grew
/// from 4 MiB to 100 MiB over the last 20 s, and anonymous memory from 2 MiB to 20 MiB`. Each
/// from its lowest to the last reading; moves smaller than a tenth of the domain (at least
/// MIN_MOVE_BYTES) go unsaid.
fn composition_phrase(samples: &[CompositionSample]) -> Option<String> {
    let last = samples.last()?;
    let total = |sample: &CompositionSample| sample.by_kind().iter().flatten().sum::<u64>();
    let threshold = (samples.iter().map(total).max()? / 10).max(MIN_MOVE_BYTES);
    let kinds = CompositionKind::ALL.map(|kind| {
        let what = match kind {
            CompositionKind::Anon => "anonymous memory",
            CompositionKind::File => "page cache",
            CompositionKind::Shmem => "tmpfs/shared memory",
            CompositionKind::Kernel => "kernel memory",
        };
        (what, kind)
    });
    // (growth, what, from, to, seconds before the kill it grew from)
    let mut grown: Vec<(u64, &str, u64, u64, u64)> = kinds
        .iter()
        .filter_map(|&(what, kind)| {
            let to = kind.of(last)?;
            // The lowest reading, the latest of equals.
            let (low_at, from) = samples
                .iter()
                .filter_map(|sample| Some((sample.offset_ms, kind.of(sample)?)))
                .rev()
                .min_by_key(|&(_, bytes)| bytes)?;
            let growth = to.checked_sub(from).filter(|&g| g >= threshold)?;
            Some((growth, what, from, to, (low_at.unsigned_abs() + 500) / 1000))
        })
        .collect();
    grown.sort_by_key(|&(growth, ..)| std::cmp::Reverse(growth));
    let &(_, what, from, to, seconds) = grown.first()?;
    let mut text = format!(
        "{what} grew from {} to {} over the last {}",
        spoken_bytes(from),
        spoken_bytes(to),
        seconds_words(seconds)
    );
    if let Some(&(_, what, from, to, _)) = grown.get(1) {
        text.push_str(&format!(
            ", and {what} from {} to {}",
            spoken_bytes(from),
            spoken_bytes(to)
        ));
    }
    Some(text)
}

fn trend(samples: &[UsageAt]) -> Option<Trend> {
    let last = samples.last()?;
    if samples.len() < 2 {
        return None;
    }
    // The latest highest point.
    let high = samples.iter().rev().max_by_key(|s| s.usage_bytes)?;
    let threshold = (high.usage_bytes / 10).max(MIN_MOVE_BYTES);
    let seconds = |sample: &UsageAt| (sample.offset_ms.unsigned_abs() + 500) / 1000;
    // Where the final flat stretch starts.
    let within = |sample: &UsageAt| sample.usage_bytes.abs_diff(last.usage_bytes) < threshold;
    let flat_from = samples
        .iter()
        .rposition(|sample| !within(sample))
        .map_or(0, |moved| moved + 1);
    let flat_start = &samples[flat_from];
    if flat_from == 0 {
        return Some(Trend::Flat {
            at: last.usage_bytes,
            seconds: None,
        });
    }
    if last.offset_ms - flat_start.offset_ms >= FLAT_FOR_MS {
        return Some(Trend::Flat {
            at: last.usage_bytes,
            seconds: Some(seconds(flat_start)),
        });
    }
    // The final rise: back from the end for as long as the values keep falling (within the
    // threshold); a restart loop's earlier teeth are not part of it.
    let mut trough = samples.len() - 1;
    for (index, sample) in samples.iter().enumerate().rev() {
        if sample.usage_bytes > samples[trough].usage_bytes + threshold {
            break;
        }
        if sample.usage_bytes < samples[trough].usage_bytes {
            trough = index;
        }
    }
    let peak = samples[trough..]
        .iter()
        .rev()
        .max_by_key(|s| s.usage_bytes)?;
    let low = &samples[trough];
    if peak.usage_bytes - low.usage_bytes >= threshold {
        return Some(Trend::Grew {
            from: low.usage_bytes,
            to: peak.usage_bytes,
            seconds: seconds(low),
        });
    }
    if high.usage_bytes.saturating_sub(last.usage_bytes) >= threshold {
        return Some(Trend::Fell {
            from: high.usage_bytes,
            to: last.usage_bytes,
            seconds: seconds(high),
        });
    }
    Some(Trend::Flat {
        at: last.usage_bytes,
        seconds: None,
    })
}

/// A domain whose last sample is well below its limit filled the rest between that sample and
/// the kill, faster than it was sampled: `, and filled its 48 MiB limit in the last 0.4 s`.
fn unsampled_rise(domain: &CgroupTimeline) -> Option<String> {
    let limit = domain.limit_bytes?;
    let last = domain.samples.last()?;
    let since_ms = last.offset_ms.unsigned_abs();
    // A tenth of a second is the fastest the recorder samples: under that, say so, not `0.0 s`.
    let when = if since_ms < 100 {
        "in the last tenth of a second".to_owned()
    } else {
        format!("in the last {:.1} s", since_ms as f64 / 1000.0)
    };
    (last.usage_bytes < limit / 10 * 9)
        .then(|| format!(", and filled its {} limit {when}", spoken_bytes(limit)))
}

fn amount(trend: Trend) -> u64 {
    match trend {
        Trend::Grew { from, to, .. } => to - from,
        Trend::Fell { from, to, .. } => from - to,
        Trend::Flat { at, .. } => at,
    }
}

fn phrase(name: &str, trend: Trend) -> String {
    match trend {
        Trend::Grew { from, to, seconds } => format!(
            "{name} grew from {} to {} over the last {}",
            spoken_bytes(from),
            spoken_bytes(to),
            seconds_words(seconds)
        ),
        Trend::Fell { from, to, seconds } => format!(
            "{name} fell from {} to {} over the last {}",
            spoken_bytes(from),
            spoken_bytes(to),
            seconds_words(seconds)
        ),
        Trend::Flat { at, seconds: None } => format!("{name} was flat at {}", spoken_bytes(at)),
        Trend::Flat {
            at,
            seconds: Some(seconds),
        } => format!(
            "{name} was flat at {} for the last {}",
            spoken_bytes(at),
            seconds_words(seconds)
        ),
    }
}

/// After "the last": `second`, `12 s`.
fn seconds_words(seconds: u64) -> String {
    match seconds {
        0 | 1 => "second".to_owned(),
        seconds => format!("{seconds} s"),
    }
}

/// `minute`, `2 minutes`, `30 s`: the window, after "In the".
fn window_words(seconds: u64) -> String {
    match seconds {
        60 => "minute".to_owned(),
        s if s > 60 && s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} s"),
    }
}

/// The worst stall of the window, if notable.
fn stall_phrase(timeline: &Timeline) -> Option<String> {
    let worst = timeline
        .pressure
        .iter()
        .max_by(|a, b| a.some_pct.0.total_cmp(&b.some_pct.0))?;
    let percent = worst.some_pct.0;
    (percent >= NOTABLE_STALL_PERCENT).then(|| {
        // Measured at the kill itself: not `0 s before`.
        let when = match (worst.offset_ms.unsigned_abs() + 500) / 1000 {
            0 => "Just before the kill".to_owned(),
            seconds => format!("{seconds} s before the kill"),
        };
        format!("{when}, tasks were stalled on memory {percent:.0} % of the time.")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::kill::CgroupPath;
    use crate::record::timeline::{Percent, Stall};

    const MIB: u64 = 1 << 20;

    fn series(points: &[(i64, u64)]) -> Vec<UsageAt> {
        points
            .iter()
            .map(|&(offset_ms, mib)| UsageAt {
                offset_ms,
                usage_bytes: mib * MIB,
            })
            .collect()
    }

    fn cgroup(path: &str, limit: Option<u64>, points: &[(i64, u64)]) -> CgroupTimeline {
        CgroupTimeline {
            cgroup: CgroupPath {
                path: path.to_owned(),
            },
            names: Default::default(),
            limit_bytes: limit,
            samples: series(points),
            events: Vec::new(),
            composition: Vec::new(),
        }
    }

    fn timeline(pressure: Vec<Stall>, cgroups: Vec<CgroupTimeline>) -> Timeline {
        Timeline {
            window_s: 60,
            pressure_source: None,
            pressure,
            cgroups,
            not_covered: Vec::new(),
        }
    }

    #[test]
    fn a_timeline_without_samples_says_why() {
        let mut empty = timeline(Vec::new(), Vec::new());
        assert_eq!(lead_up(&empty), None);
        empty.not_covered.push(crate::record::timeline::NotCovered {
            cgroup: crate::record::kill::CgroupPath {
                path: "/kubepods/pod9".into(),
            },
            reason: crate::record::timeline::NotCoveredReason::CgroupBound,
            detail: "the recorder samples at most 100 cgroups (--timeline-max-cgroups), the \
                     fullest limits first"
                .into(),
        });
        assert_eq!(
            lead_up(&empty).as_deref(),
            Some(
                "The memory timeline has no samples of cgroup /kubepods/pod9: the recorder \
                 samples at most 100 cgroups (--timeline-max-cgroups), the fullest limits first."
            )
        );
    }

    #[test]
    fn a_growing_builder_next_to_a_flat_database() {
        let timeline = timeline(
            Vec::new(),
            vec![
                cgroup("/pod", Some(5000 * MIB), &[(-60_000, 2000), (-100, 4700)]),
                cgroup(
                    "/pod/builder",
                    None,
                    &[
                        (-60_000, 100),
                        (-40_000, 100),
                        (-20_000, 1500),
                        (-100, 2870),
                    ],
                ),
                cgroup("/pod/db", None, &[(-60_000, 1945), (-100, 1946)]),
            ],
        );
        assert_eq!(
            lead_up(&timeline).as_deref(),
            Some(
                "In the minute before the kill, cgroup /pod/builder grew from 100 MiB to 2.8 GiB \
                 over the last 40 s; cgroup /pod/db was flat at 1.9 GiB."
            )
        );
    }

    #[test]
    fn a_lone_domain_speaks_for_itself_and_stalls_are_told() {
        let stall = |offset_ms, some| Stall {
            offset_ms,
            some_pct: Percent(some),
            full_pct: Percent(0.0),
        };
        let timeline = timeline(
            vec![stall(-3000, 2.0), stall(-1900, 34.0)],
            vec![cgroup(
                "/box",
                Some(48 * MIB),
                &[(-12_000, 2), (-6_000, 20), (-200, 47)],
            )],
        );
        assert_eq!(
            lead_up(&timeline).as_deref(),
            Some(
                "In the minute before the kill, cgroup /box grew from 2 MiB to 47 MiB over the \
                 last 12 s. 2 s before the kill, tasks were stalled on memory 34 % of the time."
            )
        );
        // The worst stall in the interval that ends at the kill: not `0 s before`.
        let timeline = super::tests::timeline(
            vec![stall(-1000, 20.0), stall(-300, 100.0)],
            vec![cgroup("/box", Some(48 * MIB), &[(-6_000, 20), (-200, 47)])],
        );
        let said = lead_up(&timeline).unwrap_or_default();
        assert!(
            said.ends_with("Just before the kill, tasks were stalled on memory 100 % of the time."),
            "{said}"
        );
    }

    #[test]
    fn a_limit_filled_faster_than_sampled_is_said_so() {
        let timeline = timeline(
            Vec::new(),
            vec![cgroup("/box", Some(16 * MIB), &[(-30_000, 1), (-400, 1)])],
        );
        assert_eq!(
            lead_up(&timeline).as_deref(),
            Some(
                "In the minute before the kill, cgroup /box was flat at 1 MiB, and filled its \
                 16 MiB limit in the last 0.4 s."
            )
        );
        // Sampled at the very moment: not `0.0 s`.
        let timeline = super::tests::timeline(
            Vec::new(),
            vec![cgroup("/box", Some(128 * MIB), &[(-30_000, 1), (-20, 1)])],
        );
        assert_eq!(
            lead_up(&timeline).as_deref(),
            Some(
                "In the minute before the kill, cgroup /box was flat at 1 MiB, and filled its \
                 128 MiB limit in the last tenth of a second."
            )
        );
    }

    /// `(offset ms, anon, file, shmem, kernel)` in MiB.
    fn composition(points: &[(i64, u64, u64, u64, Option<u64>)]) -> Vec<CompositionSample> {
        points
            .iter()
            .map(
                |&(offset_ms, anon, file, shmem, kernel)| CompositionSample {
                    offset_ms,
                    anon_bytes: anon * MIB,
                    file_bytes: file * MIB,
                    shmem_bytes: shmem * MIB,
                    kernel_bytes: kernel.map(|kernel| kernel * MIB),
                },
            )
            .collect()
    }

    #[test]
    fn the_kind_of_memory_that_grew_is_named() {
        let mut domain = cgroup(
            "/box",
            Some(128 * MIB),
            &[(-30_000, 6), (-20_000, 60), (-300, 127)],
        );
        domain.composition = composition(&[
            (-60_000, 1, 1, 4, Some(1)),
            (-20_000, 1, 1, 58, Some(1)),
            (-2_000, 20, 1, 100, Some(2)),
        ]);
        assert_eq!(
            lead_up(&timeline(Vec::new(), vec![domain.clone()])).as_deref(),
            Some(
                "In the minute before the kill, cgroup /box grew from 6 MiB to 127 MiB over the \
                 last 30 s. Within the limit, tmpfs/shared memory grew from 4 MiB to 100 MiB \
                 over the last 60 s, and anonymous memory from 1 MiB to 20 MiB."
            )
        );
        // Kernel memory, where v1 without kmem accounting says nothing of it.
        domain.composition = composition(&[
            (-40_000, 2, 1, 0, Some(3)),
            (-12_000, 2, 1, 0, Some(3)),
            (-1_000, 3, 1, 0, Some(110)),
        ]);
        let said = lead_up(&timeline(Vec::new(), vec![domain.clone()])).unwrap_or_default();
        assert!(
            said.ends_with(
                "Within the limit, kernel memory grew from 3 MiB to 110 MiB over the last 12 s."
            ),
            "{said}"
        );
        domain.composition = composition(&[(-40_000, 2, 1, 0, None), (-1_000, 3, 1, 0, None)]);
        let said = lead_up(&timeline(Vec::new(), vec![domain.clone()])).unwrap_or_default();
        assert!(!said.contains("Within the limit"), "{said}");
        // Nothing else to say: the kind alone.
        domain.samples.truncate(1);
        domain.composition = composition(&[(-9_000, 2, 1, 0, None), (-1_000, 2, 90, 0, None)]);
        assert_eq!(
            lead_up(&timeline(Vec::new(), vec![domain])).as_deref(),
            Some(
                "In the minute before the kill, within the limit, page cache grew from 1 MiB to \
                 90 MiB over the last 9 s."
            )
        );
    }

    #[test]
    fn too_little_says_nothing() {
        let one_sample = timeline(Vec::new(), vec![cgroup("/a", None, &[(-100, 10)])]);
        assert_eq!(lead_up(&one_sample), None);
    }

    #[test]
    fn trends() {
        let trend_of = |points: &[(i64, u64)]| trend(&series(points));
        assert_eq!(
            trend_of(&[(-3000, 500), (-2000, 505), (-100, 498)]),
            Some(Trend::Flat {
                at: 498 * MIB,
                seconds: None
            })
        );
        // Grown early in the window, then held for longer than FLAT_FOR_MS.
        assert_eq!(
            trend_of(&[(-12_000, 24), (-11_000, 48), (-6_000, 48), (-100, 48)]),
            Some(Trend::Flat {
                at: 48 * MIB,
                seconds: Some(11)
            })
        );
        assert_eq!(
            trend_of(&[(-3000, 500), (-2000, 900), (-100, 100)]),
            Some(Trend::Fell {
                from: 900 * MIB,
                to: 100 * MIB,
                seconds: 2
            })
        );
        // A restart loop's sawtooth: only the last rise counts.
        assert_eq!(
            trend_of(&[
                (-9000, 0),
                (-6000, 100),
                (-5900, 0),
                (-3000, 0),
                (-2000, 50),
                (-100, 104),
            ]),
            Some(Trend::Grew {
                from: 0,
                to: 104 * MIB,
                seconds: 3
            })
        );
        assert_eq!(
            trend_of(&[(-3000, 900), (-100, 100)]),
            Some(Trend::Fell {
                from: 900 * MIB,
                to: 100 * MIB,
                seconds: 3
            })
        );
    }
}
