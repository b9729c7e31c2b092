//! A latency histogram with fixed buckets, shared by every producer stream of a topic and read
//! by the metrics exporter and topic stats. No I/O, no locks: each bucket is an atomic counter,
//! so recording costs one addition on the publish path.
//!
//! The bucket bounds follow Pulsar's publish latency buckets (0.5 ms to 1 s) with a few more
//! below a millisecond, where a durable local publish lands.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds; one more bucket catches everything above.
pub const BUCKET_BOUNDS_US: [u64; 13] = [
    100, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
    1_000_000,
];

/// Counts of latencies per bucket, plus their sum.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// `buckets[i]` counts latencies at or below `BUCKET_BOUNDS_US[i]` and above the bound
    /// before it; the last one counts those above every bound.
    buckets: [AtomicU64; BUCKET_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

/// A copy of a histogram's counts at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistogramSnapshot {
    /// Per bucket, not cumulative; one more than `BUCKET_BOUNDS_US`.
    pub buckets: Vec<u64>,
    pub sum_us: u64,
}

impl LatencyHistogram {
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let index = BUCKET_BOUNDS_US
            .iter()
            .position(|&bound| micros <= bound)
            .unwrap_or(BUCKET_BOUNDS_US.len());
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self
                .buckets
                .iter()
                .map(|bucket| bucket.load(Ordering::Relaxed))
                .collect(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Cumulative counts per bound, as Prometheus's `le` buckets want them; the last is `+Inf`.
    pub fn cumulative(&self) -> Vec<u64> {
        self.buckets
            .iter()
            .scan(0u64, |total, &count| {
                *total += count;
                Some(*total)
            })
            .collect()
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), in microseconds: an
    /// estimate that never understates. `None` when nothing was recorded or the quantile falls
    /// above the last bound.
    pub fn quantile_upper_bound_us(&self, q: f64) -> Option<u64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * count as f64).ceil() as u64).max(1);
        let index = self.cumulative().iter().position(|&total| total >= rank)?;
        BUCKET_BOUNDS_US.get(index).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_the_bucket_of_their_upper_bound() {
        let histogram = LatencyHistogram::default();
        for micros in [50, 100, 101, 999, 1_000, 3_000, 2_000_000] {
            histogram.record(Duration::from_micros(micros));
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.buckets[0], 2, "50 and 100 are at or below 100 us");
        assert_eq!(snapshot.buckets[1], 1, "101 us");
        assert_eq!(snapshot.buckets[3], 2, "999 and 1000 us");
        assert_eq!(snapshot.buckets[5], 1, "3 ms");
        assert_eq!(snapshot.buckets[BUCKET_BOUNDS_US.len()], 1, "2 s overflows");
        assert_eq!(snapshot.count(), 7);
        assert_eq!(
            snapshot.sum_us,
            50 + 100 + 101 + 999 + 1_000 + 3_000 + 2_000_000
        );
        assert_eq!(*snapshot.cumulative().last().unwrap(), 7);
    }

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        let histogram = LatencyHistogram::default();
        assert_eq!(histogram.snapshot().quantile_upper_bound_us(0.5), None);
        for _ in 0..99 {
            histogram.record(Duration::from_micros(300));
        }
        histogram.record(Duration::from_millis(15));
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.quantile_upper_bound_us(0.5), Some(500));
        assert_eq!(snapshot.quantile_upper_bound_us(0.99), Some(500));
        assert_eq!(snapshot.quantile_upper_bound_us(1.0), Some(20_000));
        histogram.record(Duration::from_secs(5));
        assert_eq!(histogram.snapshot().quantile_upper_bound_us(1.0), None);
    }
}
