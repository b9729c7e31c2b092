//! `magnetar perf ledger`: replicated adds through the ledger client (ensembles, quorums,
//! in-order completion), against bookies it starts with an embedded metadata store, or
//! against the bookies registered in an existing store (`--meta`).
//!
//! Each writer owns a ledger. An issuing task queues adds (released by a pacing thread with
//! `--rate`, else as fast as the window allows) and a collecting task awaits them in entry
//! order; latency runs from the scheduled time (paced) or the queueing time (unlimited) to
//! completion.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use magnetar_bookie::ledger::{LedgerClient, LedgerClientConfig, LedgerOptions, PendingAdd};
use magnetar_bookie::{BookieConfig, RunningBookie};
use magnetar_meta::{MetaClient, MetaConfig, MetaServer};
use tokio::sync::mpsc;

use super::pacer::pace;
use super::report::{spawn_progress, Figures, LatencyHistogram};

#[derive(Args)]
pub struct LedgerPerfArgs {
    /// Bookies to start locally (ignored with --meta).
    #[arg(long, default_value_t = 3)]
    pub bookies: usize,
    /// Ensemble size E.
    #[arg(long, default_value_t = 3)]
    pub ensemble: usize,
    /// Write quorum Qw.
    #[arg(long, default_value_t = 3)]
    pub write_quorum: usize,
    /// Ack quorum Qa.
    #[arg(long, default_value_t = 2)]
    pub ack_quorum: usize,
    /// Entries to write in all.
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: u64,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 100)]
    pub entry_size: usize,
    /// Target adds per second across all writers; unlimited when absent.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Concurrent writers, each with its own ledger.
    #[arg(long, default_value_t = 1)]
    pub writers: u64,
    /// Adds in flight per writer.
    #[arg(long, default_value_t = 10_000)]
    pub window: usize,
    /// Use the bookies registered in this metadata store (comma-separated endpoints)
    /// instead of starting any.
    #[arg(long, value_delimiter = ',')]
    pub meta: Vec<String>,
    /// Only print the JSON line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: LedgerPerfArgs) -> anyhow::Result<()> {
    if args.writers == 0 || args.entries < args.writers || args.entry_size == 0 {
        bail!("need --writers >= 1, --entries >= --writers and --entry-size >= 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(args))
}

/// What runs locally for the benchmark, stopped at the end.
struct LocalCluster {
    _dir: tempfile::TempDir,
    meta: MetaServer,
    bookies: Vec<RunningBookie>,
}

async fn start_local(count: usize) -> anyhow::Result<LocalCluster> {
    let dir = tempfile::tempdir_in(std::env::current_dir().unwrap_or_else(|_| ".".into()))
        .context("creating a temporary data directory")?;
    let meta = MetaServer::start(MetaConfig {
        data_dir: dir.path().join("meta"),
        listen: "127.0.0.1:0".into(),
        ..MetaConfig::default()
    })
    .await
    .context("starting the embedded metadata store")?;
    let mut bookies = Vec::new();
    for index in 0..count {
        let config = BookieConfig {
            data_dir: dir.path().join(format!("bookie-{index}")),
            listen: "127.0.0.1:0".parse()?,
            meta_endpoints: vec![meta.endpoint().to_string()],
            ..BookieConfig::default()
        };
        bookies.push(
            RunningBookie::start(config)
                .await
                .with_context(|| format!("starting bookie {index}"))?,
        );
    }
    Ok(LocalCluster {
        _dir: dir,
        meta,
        bookies,
    })
}

struct WriterOutcome {
    latencies: LatencyHistogram,
    failures: u64,
}

async fn run_async(args: LedgerPerfArgs) -> anyhow::Result<()> {
    let local = if args.meta.is_empty() {
        Some(start_local(args.bookies).await?)
    } else {
        None
    };
    let endpoints = match &local {
        Some(cluster) => vec![cluster.meta.endpoint().to_string()],
        None => args.meta.clone(),
    };
    let client = LedgerClient::new(
        MetaClient::new(&endpoints).context("connecting to the metadata store")?,
        LedgerClientConfig {
            max_in_flight_entries: args.window.max(1),
            ..LedgerClientConfig::default()
        },
    );
    let options = LedgerOptions {
        ensemble_size: args.ensemble,
        write_quorum: args.write_quorum,
        ack_quorum: args.ack_quorum,
        ..LedgerOptions::default()
    };
    let payload = Bytes::from(vec![0xa5u8; args.entry_size]);
    let acked = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    let mut ledgers = Vec::new();
    for _ in 0..args.writers {
        ledgers.push(
            client
                .create(options.clone())
                .await
                .context("creating a ledger")?,
        );
    }
    let started = Instant::now();
    let mut schedules = Vec::new();
    for (index, writer) in ledgers.into_iter().enumerate() {
        let index = index as u64;
        let quota = args.entries / args.writers + u64::from(index < args.entries % args.writers);
        let schedule = args.rate.map(|_| {
            let (sender, receiver) = mpsc::unbounded_channel();
            schedules.push(sender);
            receiver
        });
        writers.push(tokio::spawn(write(
            writer,
            quota,
            payload.clone(),
            schedule,
            args.window,
            acked.clone(),
        )));
    }
    let pacer = args.rate.map(|rate| {
        let total = args.entries;
        std::thread::spawn(move || pace(total, rate.max(1) as f64, started, schedules))
    });

    let progress = spawn_progress(acked.clone(), args.entries, args.json);
    let mut latencies = LatencyHistogram::new();
    let mut failures = 0;
    for writer in writers {
        let outcome = writer.await.context("a writer task failed")??;
        latencies.merge(&outcome.latencies);
        failures += outcome.failures;
    }
    let elapsed = started.elapsed();
    progress.abort();
    if let Some(pacer) = pacer {
        let _ = pacer.join();
    }
    if let Some(cluster) = local {
        for bookie in cluster.bookies {
            bookie.shutdown().await?;
        }
        cluster.meta.shutdown().await?;
    }

    let seconds = elapsed.as_secs_f64();
    let acknowledged = latencies.count();
    let adds_per_sec = acknowledged as f64 / seconds;
    let mb_per_sec = adds_per_sec * args.entry_size as f64 / 1_000_000.0;
    if !args.json {
        println!(
            "{acknowledged} adds of {} bytes, E/Qw/Qa {}/{}/{}, {} writer(s), in {seconds:.2} s{}",
            args.entry_size,
            args.ensemble,
            args.write_quorum,
            args.ack_quorum,
            args.writers,
            args.rate
                .map(|rate| format!(" at a target of {rate}/s"))
                .unwrap_or_default()
        );
        println!("throughput: {adds_per_sec:.0} adds/s, {mb_per_sec:.2} MB/s");
        println!(
            "add latency: p50 {} us, p99 {} us, p99.9 {} us",
            latencies.percentile_us(50.0),
            latencies.percentile_us(99.0),
            latencies.percentile_us(99.9)
        );
        if failures > 0 {
            println!("failed adds: {failures}");
        }
    }
    let mut figures = Figures::default();
    figures
        .set("entries", acknowledged)
        .set("entry_size", args.entry_size as u64)
        .set("bookies", args.bookies as u64)
        .set("ensemble", args.ensemble as u64)
        .set("write_quorum", args.write_quorum as u64)
        .set("ack_quorum", args.ack_quorum as u64)
        .set("writers", args.writers)
        .set("rate", args.rate.unwrap_or(0))
        .set_f64("adds_per_sec", adds_per_sec)
        .set_f64("mb_per_sec", mb_per_sec)
        .set("add_p50_us", latencies.percentile_us(50.0))
        .set("add_p99_us", latencies.percentile_us(99.0))
        .set("add_p999_us", latencies.percentile_us(99.9))
        .set("failed_adds", failures);
    figures.print_json_line();
    if failures > 0 {
        bail!("{failures} adds failed");
    }
    Ok(())
}

/// One writer: issues `quota` adds (as the pacer releases them when there is a `schedule`, each
/// add's latency counted from when it fell due) and awaits them in order in a second task, at
/// most `window` outstanding.
async fn write(
    writer: magnetar_bookie::LedgerWriter,
    quota: u64,
    payload: Bytes,
    mut schedule: Option<mpsc::UnboundedReceiver<(u64, Instant)>>,
    window: usize,
    acked: Arc<AtomicU64>,
) -> anyhow::Result<WriterOutcome> {
    let (issued, mut to_collect) = mpsc::channel::<(Instant, PendingAdd)>(window.max(1));
    let collector = tokio::spawn(async move {
        let mut outcome = WriterOutcome {
            latencies: LatencyHistogram::new(),
            failures: 0,
        };
        while let Some((since, add)) = to_collect.recv().await {
            match add.await {
                Ok(_) => {
                    outcome
                        .latencies
                        .record_us(since.elapsed().as_micros() as u64);
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => outcome.failures += 1,
            }
        }
        outcome
    });
    for _ in 0..quota {
        let since = match schedule.as_mut() {
            Some(schedule) => match schedule.recv().await {
                Some((_, due)) => due,
                None => break,
            },
            None => Instant::now(),
        };
        let add = writer.add_pipelined(payload.clone()).await?;
        if issued.send((since, add)).await.is_err() {
            break;
        }
    }
    drop(issued);
    let outcome = collector.await.context("the collecting task failed")?;
    writer.close().await.context("closing the ledger")?;
    Ok(outcome)
}
