//! Fuzzes the command line's quantities (`--tombstone-ttl 24h`, `--ringbuf-size 4M`,
//! `oomtrace history --since 2h` or an RFC 3339 time): never a panic or an overflow, and what
//! is accepted means what it says.

#![no_main]

use libfuzzer_sys::fuzz_target;

use oomtrace::deps::jiff;
use oomtrace::units::{HumanDuration, RingBufSize, TimeBound};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    if let Ok(HumanDuration(duration)) = text.parse::<HumanDuration>() {
        // Only digits and the four units, so the same text always means the same thing and
        // a whole number of seconds.
        assert_eq!(duration.subsec_nanos(), 0);
        assert!(
            text.trim()
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, 's' | 'm' | 'h' | 'd')),
            "accepted {text:?}"
        );
        assert_eq!(text.parse::<HumanDuration>(), Ok(HumanDuration(duration)));
    }

    if let Ok(bound) = text.parse::<TimeBound>() {
        // A duration is a time before now; anything else parsed is a timestamp. Resolving
        // never overflows, however far either reaches.
        let now = jiff::Timestamp::now();
        let resolved = bound.resolve(now);
        match bound {
            TimeBound::Ago(ago) => {
                assert_eq!(text.parse::<HumanDuration>(), Ok(HumanDuration(ago)));
                assert!(i128::from(resolved) <= now.as_nanosecond());
            }
            TimeBound::At(at) => {
                assert!(text.parse::<HumanDuration>().is_err());
                if let Ok(ns) = i64::try_from(at) {
                    assert_eq!(resolved, ns);
                }
            }
        }
    }

    if let Ok(RingBufSize(bytes)) = text.parse::<RingBufSize>() {
        assert!(bytes.is_power_of_two(), "{text:?} gave {bytes}");
        assert!((4096..=1 << 30).contains(&bytes), "{text:?} gave {bytes}");
    }
});
