//! How fast background writers (the flusher, the compactor) write: decided without I/O.
//!
//! Every add waits for a journal fdatasync and then, on a small machine, for a CPU. At 50,000
//! adds/s a write-cache generation holds about 7.5 MB of entry log and 2.4 MB of index; written
//! in one go, the flush holds the disk and a CPU for its whole length, and the adds behind it
//! wait. Spread out in steps, it leaves room between them. Measured at 50,000 adds/s with one
//! writer, this took add p99 from 1.7–2.1 ms to 1.1–1.5 ms.
//!
//! So a timed flush spreads its writes over half the time its generation took to fill: it ends
//! well before the next generation is due. The pace never falls below
//! [`MIN_FLUSH_BYTES_PER_SEC`], and the flusher drops it (see `LedgerStorage::keep_pace`) when
//! adds outrun it or the bookie stops. Compaction writes at a fixed bound instead.

use std::time::{Duration, Instant};

/// A timed flush is never paced slower than this.
pub const MIN_FLUSH_BYTES_PER_SEC: f64 = 8.0 * 1024.0 * 1024.0;

/// The share of its generation's fill time a paced flush takes.
const SHARE_OF_FILL_TIME: f64 = 0.5;

/// Waits shorter than this are not worth a sleep: the thread would wake late anyway.
const SHORTEST_WAIT: Duration = Duration::from_micros(200);

/// The schedule of one run of writes: `bytes_per_sec` from `started`.
#[derive(Clone, Copy, Debug)]
pub struct WritePace {
    started: Instant,
    bytes_per_sec: Option<f64>,
}

impl WritePace {
    /// No pacing: explicit flushes (after replay, at shutdown, in tests).
    pub fn unpaced(now: Instant) -> Self {
        Self {
            started: now,
            bytes_per_sec: None,
        }
    }

    /// A fixed bound: `bytes_per_sec` from `now`.
    pub fn at_rate(bytes_per_sec: f64, now: Instant) -> Self {
        Self {
            started: now,
            bytes_per_sec: (bytes_per_sec.is_finite() && bytes_per_sec > 0.0)
                .then_some(bytes_per_sec),
        }
    }

    /// A pace that writes `bytes` over half of `filled_in`, the time the generation took to
    /// fill, and never slower than [`MIN_FLUSH_BYTES_PER_SEC`].
    pub fn for_generation(bytes: u64, filled_in: Duration, now: Instant) -> Self {
        let budget_secs = filled_in.as_secs_f64() * SHARE_OF_FILL_TIME;
        let bytes_per_sec = if budget_secs > 0.0 {
            (bytes as f64 / budget_secs).max(MIN_FLUSH_BYTES_PER_SEC)
        } else {
            f64::INFINITY
        };
        Self::at_rate(bytes_per_sec, now)
    }

    pub fn bytes_per_sec(&self) -> Option<f64> {
        self.bytes_per_sec
    }

    /// How long to wait, at `now`, before writing past `written` bytes: zero when on or
    /// behind schedule, or when the wait would be too short to keep.
    pub fn wait_before(&self, written: u64, now: Instant) -> Duration {
        let Some(bytes_per_sec) = self.bytes_per_sec else {
            return Duration::ZERO;
        };
        let due = self.started + Duration::from_secs_f64(written as f64 / bytes_per_sec);
        let wait = due.saturating_duration_since(now);
        if wait < SHORTEST_WAIT {
            Duration::ZERO
        } else {
            wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_is_spread_over_half_its_fill_time() {
        let start = Instant::now();
        // 10 MB filled in 1 s: written at 20 MB/s, so the flush takes 0.5 s.
        let pace = WritePace::for_generation(10_000_000, Duration::from_secs(1), start);
        assert_eq!(pace.bytes_per_sec(), Some(20_000_000.0));
        assert_eq!(pace.wait_before(0, start), Duration::ZERO);
        assert_eq!(
            pace.wait_before(5_000_000, start),
            Duration::from_millis(250)
        );
        // Running late: no wait.
        assert_eq!(
            pace.wait_before(5_000_000, start + Duration::from_millis(300)),
            Duration::ZERO
        );
        // Nearly on time: a wait shorter than a sleep can keep is skipped.
        assert_eq!(
            pace.wait_before(5_000_000, start + Duration::from_micros(249_900)),
            Duration::ZERO
        );
    }

    #[test]
    fn a_small_generation_is_written_at_the_floor_rate_and_an_instant_one_unpaced() {
        let start = Instant::now();
        let small = WritePace::for_generation(1_000, Duration::from_secs(1), start);
        assert_eq!(small.bytes_per_sec(), Some(MIN_FLUSH_BYTES_PER_SEC));
        let instant = WritePace::for_generation(1_000, Duration::ZERO, start);
        assert_eq!(instant.bytes_per_sec(), None);
        assert_eq!(instant.wait_before(u64::MAX, start), Duration::ZERO);
        assert_eq!(
            WritePace::unpaced(start).wait_before(1 << 40, start),
            Duration::ZERO
        );
        // A fixed bound, as compaction's: 1 MB at 4 MB/s is due 250 ms in.
        let fixed = WritePace::at_rate(4_000_000.0, start);
        assert_eq!(
            fixed.wait_before(1_000_000, start + Duration::from_millis(50)),
            Duration::from_millis(200)
        );
        assert_eq!(WritePace::at_rate(0.0, start).bytes_per_sec(), None);
    }
}
