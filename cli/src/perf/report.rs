//! Shared pieces of every benchmark: latency histograms and the closing JSON line.

use hdrhistogram::Histogram;
use serde_json::{Map, Value};

/// A latency histogram in microseconds, 1 us to 60 s at 3 significant digits.
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
}

impl LatencyHistogram {
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, 60_000_000, 3)
            .expect("the bounds are constants known to be valid");
        Self { histogram }
    }

    /// Records one latency; values outside the bounds are clamped rather than lost.
    pub fn record_us(&mut self, latency_us: u64) {
        self.histogram.saturating_record(latency_us.max(1));
    }

    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn percentile_us(&self, percentile: f64) -> u64 {
        self.histogram.value_at_quantile(percentile / 100.0)
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

/// The figures of one run, printed as one JSON line at the end.
#[derive(Default)]
pub struct Figures {
    fields: Map<String, Value>,
}

impl Figures {
    pub fn set(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.fields.insert(key.to_string(), value.into());
        self
    }

    /// Rounds to two decimals so the line stays readable.
    pub fn set_f64(&mut self, key: &str, value: f64) -> &mut Self {
        let rounded = (value * 100.0).round() / 100.0;
        self.set(key, rounded)
    }

    /// Prints the closing JSON line on stdout.
    pub fn print_json_line(&self) {
        println!("{}", Value::Object(self.fields.clone()));
    }
}

/// Prints, once a second until aborted, how many of `total` entries are acknowledged and the
/// rate over the last second (nothing when `quiet`).
pub fn spawn_progress(
    acked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    total: u64,
    quiet: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = 0;
        let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let now = acked.load(std::sync::atomic::Ordering::Relaxed);
            if !quiet {
                eprintln!(
                    "  {now}/{total} entries acknowledged, {} adds/s",
                    now - last
                );
            }
            last = now;
        }
    })
}
