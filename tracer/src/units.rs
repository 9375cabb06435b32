//! Quantities as people write them on a command line: durations (`24h`), points in time
//! (`2h` ago, or an RFC 3339 time) and sizes (`4M`).
//! Pure parsers of untrusted text (fuzzed: fuzz/fuzz_targets/units.rs).

use std::str::FromStr;
use std::time::Duration;

/// A ring buffer size: a power of two of at least one page (4 KiB), at most 1 GiB, in bytes
/// or with a `K`, `M` or `G` suffix (binary multiples).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingBufSize(pub u32);

impl FromStr for RingBufSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        const PAGE: u64 = 4096;
        const MAX: u64 = 1 << 30;
        let trimmed = text.trim();
        let (digits, shift) = match trimmed.char_indices().last() {
            Some((at, 'K' | 'k')) => (&trimmed[..at], 10),
            Some((at, 'M' | 'm')) => (&trimmed[..at], 20),
            Some((at, 'G' | 'g')) => (&trimmed[..at], 30),
            _ => (trimmed, 0),
        };
        let invalid =
            || format!("`{text}` is not a power of two from 4K to 1G, like 1M, 4M or 262144");
        let number: u64 = digits.parse().map_err(|_| invalid())?;
        let bytes = number.checked_shl(shift).ok_or_else(invalid)?;
        if !bytes.is_power_of_two() || !(PAGE..=MAX).contains(&bytes) || bytes >> shift != number {
            return Err(invalid());
        }
        u32::try_from(bytes).map(Self).map_err(|_| invalid())
    }
}

/// A duration as people write it: `90s`, `15m`, `24h`, `7d`, or a sum like `1h30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl From<HumanDuration> for Duration {
    fn from(duration: HumanDuration) -> Self {
        duration.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("`{text}` is not a duration like 90s, 15m, 24h, 7d or 1h30m");
        let mut total = Duration::ZERO;
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(invalid());
        }
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit_end = rest[digits..]
                .find(|c: char| c.is_ascii_digit())
                .map_or(rest.len(), |end| digits + end);
            let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
            let unit_secs = match &rest[digits..unit_end] {
                "s" => 1,
                "m" => 60,
                "h" => 60 * 60,
                "d" => 24 * 60 * 60,
                _ => return Err(invalid()),
            };
            let part = number.checked_mul(unit_secs).ok_or_else(invalid)?;
            total = total
                .checked_add(Duration::from_secs(part))
                .ok_or_else(invalid)?;
            rest = &rest[unit_end..];
        }
        Ok(HumanDuration(total))
    }
}

/// A point in time as a query gives it: a duration before now (`2h`), or an RFC 3339 time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeBound {
    Ago(Duration),
    At(jiff::Timestamp),
}

impl TimeBound {
    /// Nanoseconds since the epoch.
    pub fn resolve(self, now: jiff::Timestamp) -> i64 {
        let ns = match self {
            TimeBound::Ago(ago) => now
                .as_nanosecond()
                .saturating_sub(i128::try_from(ago.as_nanos()).unwrap_or(i128::MAX)),
            TimeBound::At(at) => at.as_nanosecond(),
        };
        i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX })
    }
}

impl FromStr for TimeBound {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Ok(HumanDuration(ago)) = text.parse() {
            return Ok(TimeBound::Ago(ago));
        }
        text.trim().parse().map(TimeBound::At).map_err(|_| {
            format!(
                "`{text}` is neither a duration like 2h or 7d nor an RFC 3339 time like \
                 2026-11-30T10:00:00Z"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_buffer_sizes_are_powers_of_two_of_a_page_or_more() {
        let bytes = |text: &str| text.parse::<RingBufSize>().map(|size| size.0);
        assert_eq!(bytes("4M"), Ok(4 << 20));
        assert_eq!(bytes("1m"), Ok(1 << 20));
        assert_eq!(bytes("512K"), Ok(512 << 10));
        assert_eq!(bytes("1G"), Ok(1 << 30));
        assert_eq!(bytes("262144"), Ok(262_144));
        for bad in [
            "",
            "M",
            "3M",
            "2K",
            "2G",
            "1000000",
            "-4M",
            "4MB",
            "99999999999999999999M",
        ] {
            assert!(bytes(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let secs = |text: &str| text.parse::<HumanDuration>().map(|d| d.0.as_secs());
        assert_eq!(secs("90s"), Ok(90));
        assert_eq!(secs("15m"), Ok(900));
        assert_eq!(secs("24h"), Ok(86_400));
        assert_eq!(secs("7d"), Ok(604_800));
        assert_eq!(secs("1h30m"), Ok(5_400));
        assert_eq!(secs("0s"), Ok(0));
    }

    #[test]
    fn time_bounds_are_durations_ago_or_rfc3339_times() {
        let now: jiff::Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        let resolve = |text: &str| text.parse::<TimeBound>().map(|bound| bound.resolve(now));
        let at = |text: &str| text.parse::<jiff::Timestamp>().unwrap().as_nanosecond() as i64;
        assert_eq!(resolve("2h"), Ok(at("2026-11-30T10:00:00Z")));
        assert_eq!(resolve("1d"), Ok(at("2026-11-29T12:00:00Z")));
        assert_eq!(
            resolve("2026-11-30T09:30:00+01:00"),
            Ok(at("2026-11-30T08:30:00Z"))
        );
        let err = resolve("yesterday").unwrap_err();
        assert!(err.contains("neither a duration"), "{err}");
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        for bad in [
            "",
            "h",
            "10",
            "10x",
            "-5m",
            "1.5h",
            "99999999999999999999d",
            "5m junk",
        ] {
            let err = bad.parse::<HumanDuration>().unwrap_err();
            assert!(err.contains("is not a duration"), "{bad}: {err}");
        }
    }
}
