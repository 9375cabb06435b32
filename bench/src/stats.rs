//! Small statistics for the tables: median with min and max, percentiles.

/// Median, min and max of one figure over the runs.
#[derive(Clone, Copy)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub count: usize,
}

impl Spread {
    /// None when there is nothing to summarize.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut values: Vec<f64> = values.into_iter().collect();
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        let median = if values.len() % 2 == 1 {
            values[middle]
        } else {
            (values[middle - 1] + values[middle]) / 2.0
        };
        Some(Self {
            median,
            min: values[0],
            max: values[values.len() - 1],
            count: values.len(),
        })
    }

    /// `median (min–max)` with `decimals` places; the median alone for a single run.
    pub fn show(&self, decimals: usize) -> String {
        if self.count == 1 {
            format!("{:.decimals$}", self.median)
        } else {
            format!(
                "{:.decimals$} ({:.decimals$}–{:.decimals$})",
                self.median, self.min, self.max
            )
        }
    }
}

pub fn show(spread: Option<Spread>, decimals: usize) -> String {
    spread.map_or_else(|| "—".to_owned(), |spread| spread.show(decimals))
}

/// The ratio of two medians, e.g. `0.42×`.
pub fn ratio(ours: Option<Spread>, theirs: Option<Spread>) -> String {
    match (ours, theirs) {
        (Some(ours), Some(theirs)) if theirs.median > 0.0 => {
            format!("{:.2}×", ours.median / theirs.median)
        }
        _ => "—".to_owned(),
    }
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted values; None when empty.
pub fn percentile(values: &[u64], p: f64) -> Option<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1)).copied()
}
