//! `/metrics`: the broker's figures in Prometheus's text exposition format (version 0.0.4).
//!
//! Gathering reads the loaded topics (their counters, ledgers, cursors and subscription
//! tasks); rendering is pure and tested on its own. Every name starts with `magnetar_`;
//! units come last (`_bytes`, `_seconds`, `_per_second`), counters end in `_total`.
//!
//! Series (topic labels: `tenant`, `namespace`, `topic`; subscription series add
//! `subscription`):
//! - broker: `magnetar_broker_{topics,subscriptions,producers,consumers}`,
//!   `magnetar_broker_{rate_in,rate_out}_msgs_per_second`,
//!   `magnetar_broker_{throughput_in,throughput_out}_bytes_per_second`,
//!   `magnetar_broker_storage_size_bytes`, `magnetar_broker_backlog_entries`;
//! - topic: `magnetar_topic_{messages,bytes}_{in,out}_total`, the same rates and throughputs,
//!   `magnetar_topic_{producers,consumers,subscriptions}`,
//!   `magnetar_topic_storage_{size_bytes,entries}`, and the histogram
//!   `magnetar_topic_publish_latency_seconds`;
//! - subscription: `magnetar_subscription_{backlog_entries,consumers,unacked_messages}`.

use std::fmt::Write as _;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::rates::{Rates, Totals};
use super::Context;
use crate::latency::{HistogramSnapshot, BUCKET_BOUNDS_US};
use crate::TopicName;

/// A topic's subscriptions are left out of a scrape when their tasks do not answer this fast.
const SUBSCRIPTION_STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// A subscription's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionSample {
    pub name: String,
    pub backlog_entries: u64,
    pub consumers: usize,
    pub unacked_messages: usize,
}

/// A topic's figures at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSample {
    pub name: TopicName,
    pub totals: Totals,
    pub rates: Rates,
    pub producers: usize,
    pub subscriptions: Vec<SubscriptionSample>,
    pub storage_size_bytes: u64,
    pub storage_entries: u64,
    pub publish_latency: HistogramSnapshot,
}

/// Reads the figures of every topic loaded on this broker.
pub async fn gather(context: &Context) -> Vec<TopicSample> {
    let mut topics = context.service.loaded_topics();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let mut samples = Vec::with_capacity(topics.len());
    for topic in topics {
        let ledgers = topic.ledger.ledgers();
        let (producers, subscriptions) =
            match tokio::time::timeout(SUBSCRIPTION_STATS_TIMEOUT, topic.stats()).await {
                Ok(stats) => (
                    stats.producers.len(),
                    stats
                        .subscriptions
                        .into_iter()
                        .map(|(name, subscription)| SubscriptionSample {
                            name,
                            backlog_entries: subscription.backlog_entries,
                            consumers: subscription.live.consumers.len(),
                            unacked_messages: subscription.live.unacked_messages,
                        })
                        .collect(),
                ),
                Err(_) => (0, Vec::new()),
            };
        samples.push(TopicSample {
            totals: Totals::of(&topic),
            rates: context.rates.rates(&topic.name),
            producers,
            subscriptions,
            storage_size_bytes: ledgers.iter().map(|ledger| ledger.size_bytes).sum(),
            storage_entries: ledgers.iter().map(|ledger| ledger.entries).sum(),
            publish_latency: topic.counters.publish_latency.snapshot(),
            name: topic.name.clone(),
        });
    }
    samples
}

/// `GET /metrics`.
pub async fn scrape(State(context): State<Context>) -> Response {
    let body = render(&gather(&context).await);
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// Writes families and samples in the exposition format.
struct Exposition {
    out: String,
}

/// Label values escaped as the format requires.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (index, (key, value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn topic_labels(name: &TopicName) -> [(&'static str, String); 3] {
    [
        ("tenant", name.tenant.clone()),
        ("namespace", name.namespace.clone()),
        ("topic", name.to_string()),
    ]
}

/// The exposition of the broker's totals and of every topic and subscription.
pub fn render(topics: &[TopicSample]) -> String {
    let mut exposition = Exposition { out: String::new() };
    // Folded from +0.0: a float sum of nothing is -0.0, which would print as "-0".
    let sum = |figure: &dyn Fn(&TopicSample) -> f64| {
        topics
            .iter()
            .map(figure)
            .fold(0.0, |total, value| total + value)
    };

    type BrokerFigure<'a> = (&'a str, &'a str, Box<dyn Fn(&TopicSample) -> f64>);
    let broker: [BrokerFigure; 10] = [
        (
            "magnetar_broker_topics",
            "Topics loaded on this broker.",
            Box::new(|_| 1.0),
        ),
        (
            "magnetar_broker_subscriptions",
            "Subscriptions of the topics loaded here.",
            Box::new(|t| t.subscriptions.len() as f64),
        ),
        (
            "magnetar_broker_producers",
            "Producers connected.",
            Box::new(|t| t.producers as f64),
        ),
        (
            "magnetar_broker_consumers",
            "Consumers connected.",
            Box::new(|t| t.subscriptions.iter().map(|s| s.consumers).sum::<usize>() as f64),
        ),
        (
            "magnetar_broker_rate_in_msgs_per_second",
            "Messages published per second, over the last second.",
            Box::new(|t| t.rates.rate_in_msgs_per_sec),
        ),
        (
            "magnetar_broker_rate_out_msgs_per_second",
            "Messages dispatched to consumers per second, over the last second.",
            Box::new(|t| t.rates.rate_out_msgs_per_sec),
        ),
        (
            "magnetar_broker_throughput_in_bytes_per_second",
            "Bytes published per second, over the last second.",
            Box::new(|t| t.rates.rate_in_bytes_per_sec),
        ),
        (
            "magnetar_broker_throughput_out_bytes_per_second",
            "Bytes dispatched per second (stored batches), over the last second.",
            Box::new(|t| t.rates.rate_out_bytes_per_sec),
        ),
        (
            "magnetar_broker_storage_size_bytes",
            "Bytes stored in the logs of the topics loaded here.",
            Box::new(|t| t.storage_size_bytes as f64),
        ),
        (
            "magnetar_broker_backlog_entries",
            "Entries not yet acknowledged, summed over every subscription.",
            Box::new(|t| {
                t.subscriptions
                    .iter()
                    .map(|s| s.backlog_entries)
                    .sum::<u64>() as f64
            }),
        ),
    ];
    for (name, help, figure) in &broker {
        exposition.family(name, "gauge", help);
        exposition.sample(name, &[], sum(figure.as_ref()));
    }

    type TopicFigure<'a> = (&'a str, &'a str, &'a str, fn(&TopicSample) -> f64);
    let per_topic: [TopicFigure; 13] = [
        (
            "magnetar_topic_messages_in_total",
            "counter",
            "Messages published.",
            |t| t.totals.messages_in as f64,
        ),
        (
            "magnetar_topic_bytes_in_total",
            "counter",
            "Bytes published (stored batches).",
            |t| t.totals.bytes_in as f64,
        ),
        (
            "magnetar_topic_messages_out_total",
            "counter",
            "Messages dispatched to consumers, redeliveries included.",
            |t| t.totals.messages_out as f64,
        ),
        (
            "magnetar_topic_bytes_out_total",
            "counter",
            "Bytes dispatched to consumers (stored batches, as published), redeliveries included.",
            |t| t.totals.bytes_out as f64,
        ),
        (
            "magnetar_topic_rate_in_msgs_per_second",
            "gauge",
            "Messages published per second, over the last second.",
            |t| t.rates.rate_in_msgs_per_sec,
        ),
        (
            "magnetar_topic_throughput_in_bytes_per_second",
            "gauge",
            "Bytes published per second, over the last second.",
            |t| t.rates.rate_in_bytes_per_sec,
        ),
        (
            "magnetar_topic_rate_out_msgs_per_second",
            "gauge",
            "Messages dispatched per second, over the last second.",
            |t| t.rates.rate_out_msgs_per_sec,
        ),
        (
            "magnetar_topic_throughput_out_bytes_per_second",
            "gauge",
            "Bytes dispatched per second (stored batches), over the last second.",
            |t| t.rates.rate_out_bytes_per_sec,
        ),
        (
            "magnetar_topic_producers",
            "gauge",
            "Producers connected.",
            |t| t.producers as f64,
        ),
        (
            "magnetar_topic_consumers",
            "gauge",
            "Consumers connected, over every subscription.",
            |t| t.subscriptions.iter().map(|s| s.consumers).sum::<usize>() as f64,
        ),
        (
            "magnetar_topic_subscriptions",
            "gauge",
            "Subscriptions.",
            |t| t.subscriptions.len() as f64,
        ),
        (
            "magnetar_topic_storage_size_bytes",
            "gauge",
            "Bytes in the topic's log.",
            |t| t.storage_size_bytes as f64,
        ),
        (
            "magnetar_topic_storage_entries",
            "gauge",
            "Entries in the topic's log.",
            |t| t.storage_entries as f64,
        ),
    ];
    for (name, kind, help, figure) in per_topic {
        exposition.family(name, kind, help);
        for topic in topics {
            let labels = topic_labels(&topic.name);
            let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            exposition.sample(name, &labels, figure(topic));
        }
    }

    let latency = "magnetar_topic_publish_latency_seconds";
    exposition.family(
        latency,
        "histogram",
        "From a send's arrival at the broker to its receipt (stored on the bookies).",
    );
    for topic in topics {
        let labels = topic_labels(&topic.name);
        let mut labels: Vec<(&str, String)> = labels.iter().map(|(k, v)| (*k, v.clone())).collect();
        let cumulative = topic.publish_latency.cumulative();
        for (index, count) in cumulative.iter().enumerate() {
            let le = match BUCKET_BOUNDS_US.get(index) {
                Some(bound_us) => format!("{}", *bound_us as f64 / 1e6),
                None => "+Inf".to_string(),
            };
            labels.push(("le", le));
            let borrowed: Vec<(&str, &str)> =
                labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
            exposition.sample(&format!("{latency}_bucket"), &borrowed, count);
            labels.pop();
        }
        let borrowed: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        exposition.sample(
            &format!("{latency}_sum"),
            &borrowed,
            topic.publish_latency.sum_us as f64 / 1e6,
        );
        exposition.sample(
            &format!("{latency}_count"),
            &borrowed,
            topic.publish_latency.count(),
        );
    }

    type SubscriptionFigure<'a> = (&'a str, &'a str, fn(&SubscriptionSample) -> f64);
    let per_subscription: [SubscriptionFigure; 3] = [
        (
            "magnetar_subscription_backlog_entries",
            "Entries the subscription has not acknowledged.",
            |s| s.backlog_entries as f64,
        ),
        (
            "magnetar_subscription_consumers",
            "Consumers attached.",
            |s| s.consumers as f64,
        ),
        (
            "magnetar_subscription_unacked_messages",
            "Messages delivered and not yet acknowledged.",
            |s| s.unacked_messages as f64,
        ),
    ];
    for (name, help, figure) in per_subscription {
        exposition.family(name, "gauge", help);
        for topic in topics {
            let labels = topic_labels(&topic.name);
            for subscription in &topic.subscriptions {
                let mut borrowed: Vec<(&str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                borrowed.push(("subscription", subscription.name.as_str()));
                exposition.sample(name, &borrowed, figure(subscription));
            }
        }
    }
    exposition.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencyHistogram;

    fn sample() -> TopicSample {
        let latency = LatencyHistogram::default();
        latency.record(Duration::from_micros(700));
        latency.record(Duration::from_millis(3));
        TopicSample {
            name: TopicName::parse("persistent://acme/eu/orders").unwrap(),
            totals: Totals {
                messages_in: 10,
                bytes_in: 1_000,
                messages_out: 4,
                bytes_out: 400,
            },
            rates: Rates {
                rate_in_msgs_per_sec: 2.5,
                ..Rates::default()
            },
            producers: 1,
            subscriptions: vec![SubscriptionSample {
                name: "odd \"sub\"".into(),
                backlog_entries: 6,
                consumers: 2,
                unacked_messages: 3,
            }],
            storage_size_bytes: 1_200,
            storage_entries: 10,
            publish_latency: latency.snapshot(),
        }
    }

    #[test]
    fn every_family_is_declared_once_before_its_samples() {
        let text = render(&[
            sample(),
            TopicSample {
                name: TopicName::parse("other").unwrap(),
                ..sample()
            },
        ]);
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(declared.insert(name.to_string()), "{name} declared twice");
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = name
                    .strip_suffix("_bucket")
                    .or_else(|| name.strip_suffix("_sum"))
                    .or_else(|| name.strip_suffix("_count"))
                    .filter(|base| declared.contains(*base))
                    .unwrap_or(name);
                assert!(declared.contains(family), "{name} before its TYPE line");
                assert!(name.starts_with("magnetar_"), "{name}");
            }
        }
    }

    #[test]
    fn topic_series_carry_labels_and_values() {
        let text = render(&[sample()]);
        let labels = r#"tenant="acme",namespace="eu",topic="persistent://acme/eu/orders""#;
        for expected in [
            format!("magnetar_topic_messages_in_total{{{labels}}} 10"),
            format!("magnetar_topic_rate_in_msgs_per_second{{{labels}}} 2.5"),
            format!("magnetar_topic_storage_size_bytes{{{labels}}} 1200"),
            format!("magnetar_topic_publish_latency_seconds_bucket{{{labels},le=\"0.0005\"}} 0"),
            format!("magnetar_topic_publish_latency_seconds_bucket{{{labels},le=\"0.001\"}} 1"),
            format!("magnetar_topic_publish_latency_seconds_bucket{{{labels},le=\"+Inf\"}} 2"),
            format!("magnetar_topic_publish_latency_seconds_count{{{labels}}} 2"),
            format!("magnetar_topic_publish_latency_seconds_sum{{{labels}}} 0.0037"),
            format!(
                "magnetar_subscription_backlog_entries{{{labels},subscription=\"odd \\\"sub\\\"\"}} 6"
            ),
            "magnetar_broker_topics 1".to_string(),
            "magnetar_broker_consumers 2".to_string(),
        ] {
            assert!(text.lines().any(|line| line == expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn an_idle_broker_still_reports_its_totals() {
        let text = render(&[]);
        assert!(text.lines().any(|line| line == "magnetar_broker_topics 0"));
        assert!(!text.contains("magnetar_topic_messages_in_total{"));
    }
}
