//! `magnetar perf produce|consume|e2e`: publish and consume through the client library,
//! against an in-process standalone (the default) or a running cluster (`--service-url`).
//!
//! Each message's payload starts with its send time (microseconds since the run began), so a
//! consumer in the same process measures end-to-end latency with one clock. With `--rate`, a
//! pacing thread releases each message when it falls due, and both latencies run from then.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use magnetar_client::{Client, InitialPosition, OutgoingMessage, SendReceipt, SubscriptionType};
use tokio::sync::mpsc;

use super::pacer::pace;
use super::report::{Figures, LatencyHistogram};
use crate::standalone::{self, StandaloneArgs};

#[derive(Args, Clone)]
pub struct PubSubPerfArgs {
    /// Topic to use (a fresh name per run by default).
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions of the topic (created when > 0 and the topic is new).
    #[arg(long, default_value_t = 0)]
    pub partitions: u32,
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Payload size in bytes (at least 8).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Total messages per second over all producers (0: as fast as possible).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Largest batch in messages (1: batching off).
    #[arg(long, default_value_t = 1000)]
    pub batch_max_messages: usize,
    /// Longest a batch waits for more messages, in microseconds.
    #[arg(long, default_value_t = 1000)]
    pub batch_delay_us: u64,
    /// A running cluster's broker(s); default: start a standalone in this process.
    #[arg(long)]
    pub service_url: Option<String>,
    /// Data directory of the in-process standalone (default: a temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Print only the final JSON line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Produce,
    Consume,
    EndToEnd,
}

#[derive(Default)]
struct Window {
    publish: LatencyHistogram,
    end_to_end: LatencyHistogram,
}

struct Shared {
    started: Instant,
    published: AtomicU64,
    consumed: AtomicU64,
    errors: AtomicU64,
    /// Since the last progress line.
    window: Mutex<Window>,
    total: Mutex<Window>,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Adds a task's latencies to the progress window and the totals.
    fn merge(&self, local: &Window) {
        for window in [&self.window, &self.total] {
            if let Ok(mut window) = window.lock() {
                window.publish.merge(&local.publish);
                window.end_to_end.merge(&local.end_to_end);
            }
        }
    }
}

/// One task's latencies, handed to [`Shared`] in bulk: two locks per message would cost more
/// than the message does at a million a second.
#[derive(Default)]
struct LocalWindow {
    window: Window,
    records: usize,
    merged_at_us: u64,
}

impl LocalWindow {
    const RECORDS_PER_MERGE: usize = 16_384;
    const MERGE_INTERVAL_US: u64 = 20_000;

    fn record(
        &mut self,
        shared: &Shared,
        now_us: u64,
        publish_us: Option<u64>,
        end_to_end_us: Option<u64>,
    ) {
        if let Some(latency) = publish_us {
            self.window.publish.record_us(latency);
        }
        if let Some(latency) = end_to_end_us {
            self.window.end_to_end.record_us(latency);
        }
        self.records += 1;
        if self.records >= Self::RECORDS_PER_MERGE
            || now_us.saturating_sub(self.merged_at_us) >= Self::MERGE_INTERVAL_US
        {
            self.merge_into(shared, now_us);
        }
    }

    fn merge_into(&mut self, shared: &Shared, now_us: u64) {
        if self.records > 0 {
            shared.merge(&self.window);
            self.window = Window::default();
            self.records = 0;
        }
        self.merged_at_us = now_us;
    }
}

pub fn run(mode: Mode, args: PubSubPerfArgs) -> anyhow::Result<()> {
    if args.size < 8 {
        anyhow::bail!("--size must be at least 8 bytes (the payload carries its send time)");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run_async(mode, args))
}

async fn run_async(mode: Mode, args: PubSubPerfArgs) -> anyhow::Result<()> {
    let mut temporary = None;
    let (url, standalone) = match &args.service_url {
        Some(url) => (url.clone(), None),
        None => {
            let data_dir = match &args.data_dir {
                Some(dir) => dir.clone(),
                None => {
                    let dir = tempfile::tempdir().context("creating a temporary data directory")?;
                    let path = dir.path().to_path_buf();
                    temporary = Some(dir);
                    path
                }
            };
            let ports = [free_port()?, free_port()?, free_port()?];
            let standalone = standalone::start(StandaloneArgs {
                data_dir,
                listen: format!("127.0.0.1:{}", ports[0]).parse()?,
                // Any free port: a benchmark must not collide with a standalone already up.
                http_listen: "127.0.0.1:0".parse()?,
                meta_listen: format!("127.0.0.1:{}", ports[1]),
                bookie_listen: format!("127.0.0.1:{}", ports[2]).parse()?,
                quorum: "1/1/1".into(),
            })
            .await?;
            (standalone.broker.address().to_string(), Some(standalone))
        }
    };
    let client = Client::connect(&url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let topic = args.topic.clone().unwrap_or_else(|| {
        format!(
            "persistent://public/default/perf-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|elapsed| elapsed.as_millis())
                .unwrap_or(0)
        )
    });
    if args.partitions > 0 {
        if let Some(standalone) = &standalone {
            create_partitions(standalone, &topic, args.partitions).await?;
        } else {
            eprintln!("note: --partitions applies to the in-process standalone only; create the partitioned topic with the admin API first");
        }
    }
    let shared = Arc::new(Shared {
        started: Instant::now(),
        published: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        window: Mutex::new(Window::default()),
        total: Mutex::new(Window::default()),
    });

    let consuming = mode != Mode::Produce;
    let producing = mode != Mode::Consume;
    let mut consumer_tasks = Vec::new();
    if consuming {
        for index in 0..args.consumers.max(1) {
            let consumer = client
                .consumer(&topic, "perf")
                .subscription_type(if args.consumers > 1 {
                    SubscriptionType::Shared
                } else {
                    SubscriptionType::Exclusive
                })
                .consumer_name(format!("perf-{index}"))
                .initial_position(InitialPosition::Earliest)
                .receiver_queue_size(10_000)
                .subscribe()
                .await
                .context("subscribing")?;
            let shared = shared.clone();
            consumer_tasks.push(tokio::spawn(async move {
                let mut local = LocalWindow::default();
                // What a task holds unmerged when the run ends (under 20 ms of records) is
                // left out of the percentiles; the counts are exact.
                while let Ok(message) = consumer.receive().await {
                    let sent_us = message
                        .payload
                        .get(..8)
                        .map(|bytes| u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8])))
                        .unwrap_or(0);
                    let now_us = shared.now_us();
                    local.record(&shared, now_us, None, Some(now_us.saturating_sub(sent_us)));
                    shared.consumed.fetch_add(1, Ordering::Relaxed);
                    if consumer.ack(&message).await.is_err() {
                        break;
                    }
                }
            }));
        }
    }

    let progress = tokio::spawn(report_progress(shared.clone(), args.size, args.json));
    let duration = Duration::from_secs(args.duration.max(1));
    let mut producer_tasks = Vec::new();
    let mut schedules = Vec::new();
    if producing {
        let producers = args.producers.max(1);
        for _ in 0..producers {
            // With `--rate`, a pacing thread releases each message when it falls due.
            let mut schedule = (args.rate > 0).then(|| {
                let (sender, receiver) = mpsc::unbounded_channel::<(u64, Instant)>();
                schedules.push(sender);
                receiver
            });
            let producer = client
                .producer(&topic)
                .batch_max_messages(args.batch_max_messages)
                .batch_delay(Duration::from_micros(args.batch_delay_us))
                .max_pending_messages(200_000)
                .create()
                .await
                .context("creating a producer")?;
            let shared = shared.clone();
            let size = args.size;
            producer_tasks.push(tokio::spawn(async move {
                let (receipts, mut waiting) = mpsc::channel::<(u64, SendReceipt)>(200_000);
                let drain_shared = shared.clone();
                // Receipts resolve in order: one task awaits them in turn.
                let drainer = tokio::spawn(async move {
                    let mut local = LocalWindow::default();
                    while let Some((sent_us, receipt)) = waiting.recv().await {
                        match receipt.await {
                            Ok(_) => {
                                let now_us = drain_shared.now_us();
                                let latency = now_us.saturating_sub(sent_us);
                                local.record(&drain_shared, now_us, Some(latency), None);
                                drain_shared.published.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => {
                                drain_shared.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    local.merge_into(&drain_shared, drain_shared.now_us());
                });
                let mut filler = vec![0u8; size];
                let begin = Instant::now();
                let mut sent = 0u64;
                loop {
                    // Latency runs from when the message fell due (paced) or was made.
                    let since = match schedule.as_mut() {
                        Some(schedule) => match schedule.recv().await {
                            Some((_, due)) => due,
                            None => break,
                        },
                        None => Instant::now(),
                    };
                    if schedule.is_none() && since.duration_since(begin) >= duration {
                        break;
                    }
                    let sent_us = since.duration_since(shared.started).as_micros() as u64;
                    filler[..8].copy_from_slice(&sent_us.to_le_bytes());
                    let message = OutgoingMessage::new(Bytes::copy_from_slice(&filler));
                    match producer.send_async(message).await {
                        Ok(receipt) => {
                            if receipts.send((sent_us, receipt)).await.is_err() {
                                break;
                            }
                        }
                        Err(_) => {
                            shared.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    sent += 1;
                }
                drop(receipts);
                let _ = drainer.await;
                let _ = producer.flush().await;
                sent
            }));
        }
    } else {
        tokio::time::sleep(duration).await;
    }
    let pacer = (args.rate > 0 && producing).then(|| {
        let total = args.rate * duration.as_secs();
        let start = Instant::now();
        std::thread::spawn(move || pace(total, args.rate as f64, start, schedules))
    });
    let mut sent = 0;
    for task in producer_tasks {
        sent += task.await.unwrap_or(0);
    }
    if let Some(pacer) = pacer {
        let _ = pacer.join();
    }
    let publish_elapsed = shared.started.elapsed();
    if consuming && producing {
        // Let consumers catch up with what was published, up to a bound.
        let deadline = Instant::now() + Duration::from_secs(30);
        while shared.consumed.load(Ordering::Relaxed) < shared.published.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let consume_elapsed = shared.started.elapsed();
    progress.abort();
    for task in consumer_tasks {
        task.abort();
    }

    let published = shared.published.load(Ordering::Relaxed);
    let consumed = shared.consumed.load(Ordering::Relaxed);
    let total = std::mem::take(
        &mut *shared
            .total
            .lock()
            .map_err(|_| anyhow::anyhow!("a benchmark task panicked"))?,
    );
    let publish_rate = published as f64 / publish_elapsed.as_secs_f64();
    let consume_rate = consumed as f64 / consume_elapsed.as_secs_f64();
    let mut figures = Figures::default();
    figures
        .set("topic", topic.clone())
        .set(
            "mode",
            match mode {
                Mode::Produce => "produce",
                Mode::Consume => "consume",
                Mode::EndToEnd => "e2e",
            },
        )
        .set("size_bytes", args.size as u64)
        .set("producers", args.producers as u64)
        .set("consumers", args.consumers as u64)
        .set("partitions", u64::from(args.partitions))
        .set("rate_target", args.rate)
        .set("messages_sent", sent)
        .set("messages_published", published)
        .set("messages_consumed", consumed)
        .set("errors", shared.errors.load(Ordering::Relaxed))
        .set_f64("publish_msgs_per_sec", publish_rate)
        .set_f64(
            "publish_mb_per_sec",
            publish_rate * args.size as f64 / 1_000_000.0,
        )
        .set("publish_p50_us", total.publish.percentile_us(50.0))
        .set("publish_p99_us", total.publish.percentile_us(99.0))
        .set("publish_p999_us", total.publish.percentile_us(99.9))
        .set("e2e_p50_us", total.end_to_end.percentile_us(50.0))
        .set("e2e_p99_us", total.end_to_end.percentile_us(99.0))
        .set("e2e_p999_us", total.end_to_end.percentile_us(99.9))
        .set_f64("consume_msgs_per_sec", consume_rate);
    if !args.json {
        eprintln!(
            "published {published} msgs ({publish_rate:.0}/s), consumed {consumed} ({consume_rate:.0}/s)"
        );
    }
    figures.print_json_line();
    drop(client);
    if let Some(standalone) = standalone {
        standalone.stop().await?;
    }
    drop(temporary);
    Ok(())
}

async fn create_partitions(
    standalone: &standalone::Standalone,
    topic: &str,
    partitions: u32,
) -> anyhow::Result<()> {
    let meta = magnetar_meta::MetaClient::new(&[standalone.meta.endpoint().to_string()])?;
    let name = magnetar_broker::TopicName::parse(topic)?;
    magnetar_broker::service::namespaces::create_partitioned(&meta, &name, partitions)
        .await
        .context("creating the partitioned topic")?;
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Once a second: rates and latency percentiles of the last second.
async fn report_progress(shared: Arc<Shared>, size: usize, quiet: bool) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let (mut last_published, mut last_consumed) = (0, 0);
    loop {
        ticker.tick().await;
        let published = shared.published.load(Ordering::Relaxed);
        let consumed = shared.consumed.load(Ordering::Relaxed);
        let window = match shared.window.lock() {
            Ok(mut window) => std::mem::take(&mut *window),
            Err(_) => return,
        };
        if !quiet {
            let rate = published - last_published;
            eprintln!(
                "  publish {rate} msgs/s {:.1} MB/s p50 {} us p99 {} us p999 {} us | consume {} msgs/s e2e p50 {} us p99 {} us p999 {} us",
                rate as f64 * size as f64 / 1e6,
                window.publish.percentile_us(50.0),
                window.publish.percentile_us(99.0),
                window.publish.percentile_us(99.9),
                consumed - last_consumed,
                window.end_to_end.percentile_us(50.0),
                window.end_to_end.percentile_us(99.0),
                window.end_to_end.percentile_us(99.9),
            );
        }
        last_published = published;
        last_consumed = consumed;
    }
}
