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
    /// Nanoseconds since the epoch: any RFC 3339 time, years 0000 to 9999, fits.
    At(i128),
}

impl TimeBound {
    /// Nanoseconds since the epoch, saturated to what the history stores.
    pub fn resolve(self, now: jiff::Timestamp) -> i64 {
        let ns = match self {
            TimeBound::Ago(ago) => now
                .as_nanosecond()
                .saturating_sub(i128::try_from(ago.as_nanos()).unwrap_or(i128::MAX)),
            TimeBound::At(at) => at,
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
        rfc3339_ns(text.trim()).map(TimeBound::At).ok_or_else(|| {
            format!(
                "`{text}` is neither a duration like 2h or 7d nor an RFC 3339 time like \
                 2026-11-30T10:00:00Z"
            )
        })
    }
}

/// An RFC 3339 `date-time` (section 5.6): `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, `T` and `Z`
/// in either case or a space for `T`, a leap second `:60` as the second after `:59`, in
/// nanoseconds since the epoch. Not limited to the years a calendar library covers.
fn rfc3339_ns(text: &str) -> Option<i128> {
    let bytes = text.as_bytes();
    let number = |at: usize, len: usize| -> Option<i64> {
        let digits = bytes.get(at..at + len)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, allowed: &[u8]| bytes.get(at).is_some_and(|b| allowed.contains(b));
    let (year, month, day) = (number(0, 4)?, number(5, 2)?, number(8, 2)?);
    let (hour, minute, second) = (number(11, 2)?, number(14, 2)?, number(17, 2)?);
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month)
        || day < 1
        || day > month_days[month as usize - 1]
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut at = 19;
    let mut fraction_ns = 0i128;
    if sep(at, b".") {
        let digits = bytes[at + 1..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        for (place, digit) in bytes[at + 1..at + 1 + digits].iter().enumerate().take(9) {
            fraction_ns += i128::from(digit - b'0') * 10i128.pow(8 - place as u32);
        }
        at += 1 + digits;
    }
    let offset_s = match bytes.get(at..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), ..] if bytes.len() == at + 6 && sep(at + 3, b":") => {
            let (hours, minutes) = (number(at + 1, 2)?, number(at + 4, 2)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(i128::from(seconds) * 1_000_000_000 + fraction_ns)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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
    fn any_valid_rfc3339_time_is_accepted_and_nothing_else() {
        let ns = |text: &str| {
            text.parse::<TimeBound>().map(|bound| match bound {
                TimeBound::At(ns) => ns,
                TimeBound::Ago(_) => panic!("{text} is a duration"),
            })
        };
        let jiff_ns = |text: &str| text.parse::<jiff::Timestamp>().unwrap().as_nanosecond();
        for same in [
            "2026-11-30T10:00:00Z",
            "2026-11-30t10:00:00z",
            "2026-11-30 10:00:00Z",
            "2026-11-30T10:00:00.5+01:00",
            "2026-11-30T10:00:00.123456789-05:30",
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2024-02-29T12:00:00Z",
            "0001-01-01T00:00:00Z",
            "2000-03-01T00:00:00-00:00",
        ] {
            let expected = jiff_ns(&same.replace(' ', "T").to_uppercase());
            assert_eq!(ns(same), Ok(expected), "{same}");
        }
        // Past what calendar libraries cover, and a leap second.
        assert_eq!(ns("9999-12-31T23:59:59Z"), Ok(253_402_300_799_000_000_000));
        assert_eq!(ns("0000-01-01T00:00:00Z"), Ok(-62_167_219_200_000_000_000));
        assert_eq!(
            ns("2016-12-31T23:59:60Z"),
            Ok(jiff_ns("2017-01-01T00:00:00Z"))
        );
        let now: jiff::Timestamp = "2026-11-30T12:00:00Z".parse().unwrap();
        assert_eq!(
            "9999-12-31T23:59:59Z"
                .parse::<TimeBound>()
                .unwrap()
                .resolve(now),
            i64::MAX
        );
        for bad in [
            "2026-11-30",
            "2026-11-30T10:00:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-31T00:00:00Z",
            "2026-11-30T24:00:00Z",
            "2026-11-30T10:60:00Z",
            "2026-11-30T10:00:61Z",
            "2026-11-30T10:00:00.Z",
            "2026-11-30T10:00:00+1:00",
            "2026-11-30T10:00:00+24:00",
            "2026-11-30T10:00:00Zjunk",
            "+2026-11-30T10:00:00Z",
            "２０２６-11-30T10:00:00Z",
        ] {
            assert!(ns(bad).is_err(), "{bad} was accepted");
        }
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
