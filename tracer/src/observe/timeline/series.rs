//! One measured quantity over the recorder's window, in bounded memory: every sample of the
//! last [`FINE_SPAN`], and one per [`COARSE_INTERVAL`] before that. Fast sampling (ten a
//! second while pressure rises) thus costs memory only for the last seconds, which are the
//! ones read closely.

use std::collections::VecDeque;
use std::time::Duration;

/// Samples younger than this are all kept.
pub(crate) const FINE_SPAN: Duration = Duration::from_secs(5);
/// Older samples are thinned to one per this.
pub(crate) const COARSE_INTERVAL: Duration = Duration::from_secs(1);

/// Something sampled at a CLOCK_MONOTONIC time.
pub(crate) trait Timed {
    fn at_ns(&self) -> u64;
}

#[derive(Clone, Debug)]
pub(crate) struct Series<T> {
    samples: VecDeque<T>,
    /// How many of the oldest samples are past FINE_SPAN and thinned already.
    thinned: usize,
}

impl<T> Default for Series<T> {
    fn default() -> Self {
        Series {
            samples: VecDeque::new(),
            thinned: 0,
        }
    }
}

impl<T: Timed> Series<T> {
    /// Adds a sample taken now (`sample.at_ns()`), forgetting what is older than `window`
    /// but the last sample before it.
    pub(crate) fn push(&mut self, sample: T, window: Duration) {
        let now_ns = sample.at_ns();
        self.samples.push_back(sample);
        let window_start = now_ns.saturating_sub(window.as_nanos() as u64);
        // One sample at or before the window's start is kept: the value there (a flat stretch
        // that began earlier still begins with the window).
        while self
            .samples
            .get(1)
            .is_some_and(|second| second.at_ns() <= window_start)
        {
            self.samples.pop_front();
            self.thinned = self.thinned.saturating_sub(1);
        }
        let fine_start = now_ns.saturating_sub(FINE_SPAN.as_nanos() as u64);
        let coarse_ns = COARSE_INTERVAL.as_nanos() as u64;
        while let Some(aged) = self.samples.get(self.thinned)
            && aged.at_ns() < fine_start
        {
            let too_close = self.thinned > 0
                && aged.at_ns() - self.samples[self.thinned - 1].at_ns() < coarse_ns;
            if too_close {
                self.samples.remove(self.thinned);
            } else {
                self.thinned += 1;
            }
        }
    }

    /// Adds a sample as [`push`](Self::push) does, except where it is the same as the two
    /// before it (`same`): then it only moves the end of their flat stretch, which a reader
    /// draws the same, so a cgroup that does not change holds two samples, not sixty.
    pub(crate) fn push_merging(
        &mut self,
        sample: T,
        window: Duration,
        same: impl Fn(&T, &T) -> bool,
    ) {
        let len = self.samples.len();
        if len >= 2
            && same(&self.samples[len - 1], &sample)
            && same(&self.samples[len - 2], &sample)
        {
            self.samples.pop_back();
            self.thinned = self.thinned.min(self.samples.len());
        }
        self.push(sample, window);
    }

    /// Bytes held, as allocated.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.samples.capacity() * std::mem::size_of::<T>()
    }

    /// The samples taken at or before `until_ns`, oldest first.
    pub(crate) fn until(&self, until_ns: u64) -> impl Iterator<Item = &T> {
        self.samples
            .iter()
            .take_while(move |sample| sample.at_ns() <= until_ns)
    }

    pub(crate) fn last(&self) -> Option<&T> {
        self.samples.back()
    }

    /// The newest sample taken at or before `at_ns`, else the oldest there is.
    pub(crate) fn at_or_before(&self, at_ns: u64) -> Option<&T> {
        self.samples
            .iter()
            .rev()
            .find(|sample| sample.at_ns() <= at_ns)
            .or(self.samples.front())
    }

    /// The oldest sample taken after `at_ns`.
    pub(crate) fn after(&self, at_ns: u64) -> Option<&T> {
        self.samples.iter().find(|sample| sample.at_ns() > at_ns)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }

    /// The most samples one series holds over `window`: bounds the recorder's memory.
    pub(crate) fn capacity_for(window: Duration, fastest: Duration) -> usize {
        let fine = FINE_SPAN.min(window).as_millis() / fastest.as_millis().max(1);
        let coarse = window.saturating_sub(FINE_SPAN).as_millis() / COARSE_INTERVAL.as_millis();
        (fine + coarse) as usize + 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct At(u64);

    impl Timed for At {
        fn at_ns(&self) -> u64 {
            self.0
        }
    }

    const MS: u64 = 1_000_000;
    const WINDOW: Duration = Duration::from_secs(60);

    fn times(series: &Series<At>) -> Vec<u64> {
        series.until(u64::MAX).map(|at| at.0 / MS).collect()
    }

    #[test]
    fn a_slow_series_keeps_every_sample_of_the_window() {
        let mut series = Series::default();
        for second in 0..=100 {
            series.push(At(second * 1000 * MS), WINDOW);
        }
        let kept = times(&series);
        assert_eq!(kept.first(), Some(&40_000));
        assert_eq!(kept.len(), 61);
    }

    #[test]
    fn fast_samples_are_thinned_once_older_than_the_fine_span() {
        let mut series = Series::default();
        // Ten a second for two minutes.
        for tenth in 0..=1200 {
            series.push(At(tenth * 100 * MS), WINDOW);
        }
        let kept = times(&series);
        let now = 120_000;
        let fine: Vec<u64> = kept.iter().copied().filter(|&t| t >= now - 5_000).collect();
        assert_eq!(fine.len(), 51, "every sample of the last 5 s");
        let coarse: Vec<u64> = kept.iter().copied().filter(|&t| t < now - 5_000).collect();
        assert!(
            coarse.windows(2).all(|pair| pair[1] - pair[0] >= 1000),
            "{coarse:?}"
        );
        assert!((54..=56).contains(&coarse.len()), "{}", coarse.len());
        assert!(coarse[0] >= now - 60_000);
        assert!(series.len() <= Series::<At>::capacity_for(WINDOW, Duration::from_millis(100)));
    }

    #[test]
    fn a_flat_stretch_older_than_the_window_keeps_its_start() {
        let mut series = Series::default();
        for second in 0..=100 {
            series.push_merging(At(second * 1000 * MS), WINDOW, |_, _| true);
        }
        // The stretch began at 0, before the window (40 s on): that start stays.
        assert_eq!(times(&series), [0, 100_000]);
    }

    #[test]
    fn until_stops_at_the_kill() {
        let mut series = Series::default();
        for ms in [0, 100, 200, 300] {
            series.push(At(ms * MS), WINDOW);
        }
        let before: Vec<u64> = series.until(250 * MS).map(|at| at.0 / MS).collect();
        assert_eq!(before, [0, 100, 200]);
    }
}
