//! Paced load: a dedicated thread releases work on schedule. The async runtime's timer ticks
//! once a millisecond, so sleeping on it would issue work up to a millisecond late, in bursts,
//! and a latency measured from the schedule would charge that lateness to the system under
//! test. A thread's sleep wakes within the kernel's timer slack (tens of microseconds).

use std::ops::Range;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

/// A schedule of `rate_per_sec` items a second from `start`: item k falls due at
/// `start + k / rate`.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    start: Instant,
    interval: Duration,
}

impl Schedule {
    pub fn new(start: Instant, rate_per_sec: f64) -> Self {
        Self {
            start,
            interval: Duration::from_secs_f64(1.0 / rate_per_sec),
        }
    }

    /// When item `sequence` falls due.
    pub fn due(&self, sequence: u64) -> Instant {
        self.start + self.interval.mul_f64(sequence as f64)
    }

    /// How many items have fallen due by `now`.
    fn due_by(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        (elapsed / self.interval.as_secs_f64()) as u64 + 1
    }
}

/// Releases items `0..total` on `schedule`: sleeps until the next item falls due, then hands
/// `release` every item due by then, in order, as one range. Stops early when `release`
/// returns false.
pub fn pace_batches(total: u64, schedule: Schedule, mut release: impl FnMut(Range<u64>) -> bool) {
    let mut released = 0;
    while released < total {
        let due = schedule.due(released);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let end = schedule.due_by(Instant::now()).clamp(released + 1, total);
        if !release(released..end) {
            return;
        }
        released = end;
    }
}

/// Releases `total` items on schedule, round robin over the receivers: the k-th item overall is
/// due at `start + k / rate` and goes to receiver `k mod W` as that receiver's item `k / W`,
/// sent with the instant it fell due.
pub fn pace(
    total: u64,
    rate_per_sec: f64,
    start: Instant,
    schedules: Vec<mpsc::UnboundedSender<(u64, Instant)>>,
) {
    let receivers = schedules.len() as u64;
    if receivers == 0 {
        return;
    }
    let schedule = Schedule::new(start, rate_per_sec);
    pace_batches(total, schedule, |batch| {
        batch.into_iter().all(|sequence| {
            let receiver = (sequence % receivers) as usize;
            schedules[receiver]
                .send((sequence / receivers, schedule.due(sequence)))
                .is_ok()
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_is_released_once_in_order_and_never_early() {
        let schedule = Schedule::new(Instant::now(), 20_000.0);
        let mut next = 0;
        pace_batches(2_000, schedule, |batch| {
            assert_eq!(batch.start, next, "released out of order");
            assert!(
                Instant::now() >= schedule.due(batch.end - 1),
                "released early"
            );
            next = batch.end;
            true
        });
        assert_eq!(next, 2_000);
    }

    #[test]
    fn a_refused_batch_stops_the_pacer() {
        let schedule = Schedule::new(Instant::now(), 1_000_000.0);
        let mut batches = 0;
        pace_batches(1_000, schedule, |_| {
            batches += 1;
            false
        });
        assert_eq!(batches, 1);
    }
}
