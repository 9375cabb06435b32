//! Kernel timestamps (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) to wall-clock time.

use jiff::Timestamp;

/// The offset between CLOCK_REALTIME and CLOCK_MONOTONIC, taken once at startup.
#[derive(Clone, Copy, Debug)]
pub struct KernelClock {
    realtime_minus_monotonic_ns: i128,
}

impl KernelClock {
    pub fn now() -> Self {
        let realtime = clock_ns(libc::CLOCK_REALTIME);
        let monotonic = clock_ns(libc::CLOCK_MONOTONIC);
        KernelClock {
            realtime_minus_monotonic_ns: realtime - monotonic,
        }
    }

    /// A clock whose kernel time 0 is `realtime_minus_monotonic_ns` since the epoch.
    #[cfg(test)]
    pub fn with_offset(realtime_minus_monotonic_ns: i128) -> Self {
        KernelClock {
            realtime_minus_monotonic_ns,
        }
    }

    pub fn wall_time(&self, ktime_ns: u64) -> Timestamp {
        let ns = i128::from(ktime_ns) + self.realtime_minus_monotonic_ns;
        Timestamp::from_nanosecond(ns).unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

/// CLOCK_MONOTONIC now: the clock of `bpf_ktime_get_ns`.
pub(crate) fn monotonic_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_maps_to_the_present() {
        let clock = KernelClock::now();
        let ktime_now = u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap();
        let mapped = clock.wall_time(ktime_now);
        let skew = (Timestamp::now().as_nanosecond() - mapped.as_nanosecond()).abs();
        assert!(skew < 1_000_000_000, "skew {skew} ns");
    }
}
