//! Paced load: a dedicated thread releases work on schedule. The async runtime's timer ticks
//! once a millisecond, so sleeping on it would issue work up to a millisecond late, in bursts,
//! and a latency measured from the schedule would charge that lateness to the system under
//! test. A thread's sleep wakes within the kernel's timer slack (tens of microseconds).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

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
    let interval = Duration::from_secs_f64(1.0 / rate_per_sec);
    for sequence in 0..total {
        let due = start + interval.mul_f64(sequence as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let receiver = (sequence % receivers) as usize;
        if schedules[receiver]
            .send((sequence / receivers, due))
            .is_err()
        {
            return;
        }
    }
}
