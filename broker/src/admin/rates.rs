//! Per-topic rates (messages and bytes per second, in and out), from the topics' counters
//! sampled once a second. The bookkeeping is pure ([`RateTracker::sample`] takes the counters
//! and the clock); a task feeds it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use crate::service::{BrokerService, Topic};
use crate::TopicName;

/// A topic's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub messages_in: u64,
    pub bytes_in: u64,
    pub messages_out: u64,
    pub bytes_out: u64,
}

impl Totals {
    pub fn of(topic: &Topic) -> Self {
        let counters = &topic.counters;
        Self {
            messages_in: counters.messages_in.load(Ordering::Relaxed),
            bytes_in: counters.bytes_in.load(Ordering::Relaxed),
            messages_out: counters.messages_out.load(Ordering::Relaxed),
            bytes_out: counters.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// Rates over the last sampling interval, per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    pub rate_in_msgs_per_sec: f64,
    pub rate_in_bytes_per_sec: f64,
    pub rate_out_msgs_per_sec: f64,
    pub rate_out_bytes_per_sec: f64,
}

impl Rates {
    /// The rates between two samples. A counter that went down belongs to a topic loaded
    /// anew (its counters restart at zero): it counts from zero.
    pub fn between(before: Totals, now: Totals, elapsed: Duration) -> Self {
        let seconds = elapsed.as_secs_f64();
        if seconds <= 0.0 {
            return Self::default();
        }
        let rate = |before: u64, now: u64| {
            let delta = if now >= before { now - before } else { now };
            delta as f64 / seconds
        };
        Self {
            rate_in_msgs_per_sec: rate(before.messages_in, now.messages_in),
            rate_in_bytes_per_sec: rate(before.bytes_in, now.bytes_in),
            rate_out_msgs_per_sec: rate(before.messages_out, now.messages_out),
            rate_out_bytes_per_sec: rate(before.bytes_out, now.bytes_out),
        }
    }
}

struct Sample {
    totals: Totals,
    at: Instant,
    rates: Rates,
}

/// The latest rates of every topic loaded here.
#[derive(Default)]
pub struct RateTracker {
    samples: Mutex<HashMap<TopicName, Sample>>,
}

impl RateTracker {
    /// Records the counters of the topics loaded now; topics no longer loaded are forgotten.
    pub fn sample(&self, topics: &[(TopicName, Totals)], now: Instant) {
        let mut samples = self.samples.lock();
        samples.retain(|name, _| topics.iter().any(|(loaded, _)| loaded == name));
        for (name, totals) in topics {
            match samples.get_mut(name) {
                Some(sample) => {
                    sample.rates =
                        Rates::between(sample.totals, *totals, now.duration_since(sample.at));
                    sample.totals = *totals;
                    sample.at = now;
                }
                None => {
                    samples.insert(
                        name.clone(),
                        Sample {
                            totals: *totals,
                            at: now,
                            rates: Rates::default(),
                        },
                    );
                }
            }
        }
    }

    /// The topic's rates over the last interval (zero before two samples).
    pub fn rates(&self, topic: &TopicName) -> Rates {
        self.samples
            .lock()
            .get(topic)
            .map(|sample| sample.rates)
            .unwrap_or_default()
    }
}

/// Samples every loaded topic each [`super::RATE_INTERVAL`] until `stop` changes.
pub async fn sample_periodically(
    service: Arc<BrokerService>,
    tracker: Arc<RateTracker>,
    mut stop: watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(super::RATE_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        let topics: Vec<(TopicName, Totals)> = service
            .loaded_topics()
            .iter()
            .map(|topic| (topic.name.clone(), Totals::of(topic)))
            .collect();
        tracker.sample(&topics, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(messages_in: u64, bytes_in: u64) -> Totals {
        Totals {
            messages_in,
            bytes_in,
            ..Totals::default()
        }
    }

    #[test]
    fn rates_are_deltas_over_the_interval() {
        let rates = Rates::between(
            totals(100, 1_000),
            totals(300, 5_000),
            Duration::from_secs(2),
        );
        assert_eq!(rates.rate_in_msgs_per_sec, 100.0);
        assert_eq!(rates.rate_in_bytes_per_sec, 2_000.0);
        assert_eq!(rates.rate_out_msgs_per_sec, 0.0);
        let restarted = Rates::between(totals(500, 0), totals(50, 0), Duration::from_secs(1));
        assert_eq!(restarted.rate_in_msgs_per_sec, 50.0);
        assert_eq!(
            Rates::between(totals(0, 0), totals(9, 9), Duration::ZERO),
            Rates::default()
        );
    }

    #[test]
    fn the_tracker_follows_loaded_topics() {
        let tracker = RateTracker::default();
        let a = TopicName::parse("a").unwrap();
        let b = TopicName::parse("b").unwrap();
        let start = Instant::now();
        tracker.sample(
            &[(a.clone(), totals(0, 0)), (b.clone(), totals(0, 0))],
            start,
        );
        assert_eq!(
            tracker.rates(&a),
            Rates::default(),
            "one sample gives no rate"
        );
        tracker.sample(
            &[(a.clone(), totals(10, 100))],
            start + Duration::from_secs(1),
        );
        assert_eq!(tracker.rates(&a).rate_in_msgs_per_sec, 10.0);
        assert_eq!(tracker.rates(&b), Rates::default(), "b was unloaded");
        tracker.sample(&[(b.clone(), totals(4, 0))], start + Duration::from_secs(2));
        assert_eq!(tracker.rates(&b).rate_in_msgs_per_sec, 0.0, "b starts over");
    }
}
