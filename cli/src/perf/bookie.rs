//! `magnetar perf bookie`: adds through gRPC to one bookie, every add acknowledged only after
//! the journal's fdatasync.
//!
//! W writers each own a ledger. By default they share one connection and its one AddEntries
//! stream, each subscribed to its own ledger's results: that is how the ledger client writes to
//! a bookie, all its ledgers on one connection, and how BookKeeper's client does by default
//! (one channel per bookie). `--connections N` spreads the writers round robin over N
//! connections instead, as N separate clients would. Without `--rate`, each writer keeps a
//! window of entries in flight in batches. With `--rate`, a pacing thread sends each writer's
//! entries onto its connection as they fall due, and latency counts from the scheduled time, so
//! a stall is charged to every entry it delayed.
//!
//! Before the bookie starts, three floors are measured on the same disk, so the add latency can
//! be read against each: the raw fdatasync; for a paced run, group commit at that rate by one
//! thread with no network; and the same group commit behind one loopback TCP round trip with
//! the least machinery that can carry it ([`super::socket_floor`]). The CPU the run used is
//! reported too, since on a small machine a tail can come from waiting for a CPU as well as for
//! the disk.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use magnetar_bookie::journal_record::entry_record_bytes;
use magnetar_bookie::{
    new_entry, BookieClient, BookieConfig, RouteEvent, RunningBookie, SharedAddStream, Subscription,
};
use magnetar_proto::bookie::{AddRequest, AddResult, ErrorCode};
use tokio::sync::mpsc;

use super::cpu_usage::CpuSample;
use super::pacer::{pace_batches, Schedule};
use super::raw_fsync::{measure_group_commit_floor, measure_raw_fsync};
use super::report::{spawn_progress, Figures, LatencyHistogram};
use super::socket_floor::measure_socket_floor;

/// Requests queued on one connection's stream on the client side.
const STREAM_QUEUE_REQUESTS: usize = 1024;

/// How long the group-commit floor of a paced run is measured.
const FLOOR_PROBE_DURATION: Duration = Duration::from_secs(2);

#[derive(Args)]
pub struct BookiePerfArgs {
    /// Entries to write in all.
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: u64,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 100)]
    pub entry_size: usize,
    /// Concurrent writers, each with its own ledger.
    #[arg(long, default_value_t = 16)]
    pub writers: u64,
    /// Connections the writers share, round robin, one AddEntries stream each. The default,
    /// one, is how the ledger client writes to a bookie; one per writer is as many separate
    /// clients would.
    #[arg(long, default_value_t = 1)]
    pub connections: u64,
    /// Target adds per second across all writers; unlimited when absent.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Entries per request when unlimited.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Entries in flight per writer when unlimited.
    #[arg(long, default_value_t = 4096)]
    pub window: u64,
    /// Data directory of the bookie started for the run (a temporary one when absent).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Target a running bookie instead of starting one.
    #[arg(long)]
    pub bookie: Option<String>,
    /// Threads of the async runtime that runs the writers and, unless `--bookie` is given, the
    /// bookie (default: as `magnetar bookie`, one fewer than the CPUs, at least one).
    #[arg(long)]
    pub network_threads: Option<usize>,
    /// Only print the JSON line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(mut args: BookiePerfArgs) -> anyhow::Result<()> {
    if args.writers == 0 || args.entries < args.writers || args.entry_size == 0 {
        bail!("need --writers >= 1, --entries >= --writers and --entry-size >= 1");
    }
    if args.connections == 0 {
        bail!("need --connections >= 1");
    }
    let config = BookieConfig {
        network_threads: args.network_threads.unwrap_or(0),
        ..BookieConfig::default()
    };
    let threads = config.network_thread_count();
    args.network_threads = Some(threads);
    let runtime = crate::bookie_cmd::network_runtime(threads)?;
    runtime.block_on(run_async(args))
}

/// What the disk and the loopback socket allow at a paced run's rate, in microseconds.
struct Floors {
    /// Group commit by one thread, no network.
    p50_us: u64,
    p99_us: u64,
    /// The same behind one loopback TCP round trip.
    socket_p50_us: u64,
    socket_p99_us: u64,
}

/// Measures both floors of a paced run, one after the other on a blocking thread, printing
/// each unless `quiet`.
async fn measure_floors(
    dir: PathBuf,
    rate: u64,
    entry_size: usize,
    quiet: bool,
) -> anyhow::Result<Floors> {
    tokio::task::spawn_blocking(move || {
        let record_bytes = entry_record_bytes(entry_size);
        let (p50_us, p99_us) =
            measure_group_commit_floor(&dir, rate, record_bytes, FLOOR_PROBE_DURATION)?;
        if !quiet {
            println!(
                "group commit floor at {rate}/s (one thread, no network): \
                 p50 {p50_us} us, p99 {p99_us} us"
            );
        }
        let (socket_p50_us, socket_p99_us) =
            measure_socket_floor(&dir, rate, record_bytes, FLOOR_PROBE_DURATION)?;
        if !quiet {
            println!(
                "group commit behind one loopback TCP round trip (no gRPC): \
                 p50 {socket_p50_us} us, p99 {socket_p99_us} us"
            );
        }
        Ok(Floors {
            p50_us,
            p99_us,
            socket_p50_us,
            socket_p99_us,
        })
    })
    .await?
}

struct WriterOutcome {
    latencies: LatencyHistogram,
    failures: u64,
}

async fn run_async(args: BookiePerfArgs) -> anyhow::Result<()> {
    let temporary = tempfile::tempdir_in(std::env::current_dir().unwrap_or_else(|_| ".".into()))
        .context("creating a temporary data directory")?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temporary.path().to_path_buf());
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;

    let (raw_p50_us, raw_p99_us) = tokio::task::spawn_blocking({
        let dir = data_dir.clone();
        move || measure_raw_fsync(&dir, 2000)
    })
    .await??;
    if !args.json {
        println!(
            "raw 4 KiB write+fdatasync on {}: p50 {raw_p50_us} us, p99 {raw_p99_us} us",
            data_dir.display()
        );
    }
    let floor = match args.rate {
        Some(rate) => {
            Some(measure_floors(data_dir.clone(), rate, args.entry_size, args.json).await?)
        }
        None => None,
    };

    let (bookie, address) = match &args.bookie {
        Some(address) => (None, address.clone()),
        None => {
            let config = BookieConfig {
                data_dir: data_dir.join("bookie"),
                listen: "127.0.0.1:0".parse()?,
                ..BookieConfig::default()
            };
            let bookie = RunningBookie::start(config)
                .await
                .context("starting the bookie")?;
            let address = bookie.local_addr().to_string();
            (Some(bookie), address)
        }
    };
    let client = BookieClient::connect(&address).await?;
    let info_before = client.info().await?;
    let mut streams = Vec::new();
    for _ in 0..connection_count(&args) {
        let connection = BookieClient::connect(&address).await?;
        streams.push(SharedAddStream::open(&connection, STREAM_QUEUE_REQUESTS).await?);
    }

    let payload = Bytes::from(vec![0xa5u8; args.entry_size]);
    let acked = Arc::new(AtomicU64::new(0));
    let ledger_base = 1_000_000 + u64::from(std::process::id()) * 1_000;
    let cpu_before = CpuSample::take();
    let started = Instant::now();
    let schedule = args
        .rate
        .map(|rate| Schedule::new(started, rate.max(1) as f64));
    let mut writers = Vec::new();
    let mut paced_requests = Vec::new();
    for writer in 0..args.writers {
        let quota = args.entries / args.writers + u64::from(writer < args.entries % args.writers);
        let stream = streams[(writer % streams.len() as u64) as usize].clone();
        let ledger_id = ledger_base + writer;
        let acked = acked.clone();
        match schedule {
            None => writers.push(tokio::spawn(write_unlimited(
                stream,
                ledger_id,
                quota,
                payload.clone(),
                args.batch,
                args.window,
                acked,
            ))),
            Some(schedule) => {
                // Subscribed before the pacer sends anything, so no result goes unrouted.
                let (subscription, route) = join(&stream, ledger_id)?;
                paced_requests.push((ledger_id, stream.requests().clone()));
                let due = move |entry_id: u64| schedule.due(entry_id * args.writers + writer);
                writers.push(tokio::spawn(await_paced(
                    subscription,
                    route,
                    quota,
                    due,
                    acked,
                )));
            }
        }
    }

    let pacer = schedule.map(|schedule| {
        let total = args.entries;
        let payload = payload.clone();
        std::thread::spawn(move || send_paced(total, schedule, paced_requests, payload))
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
    let cpu = CpuSample::take().since(&cpu_before);
    progress.abort();
    if let Some(pacer) = pacer {
        let _ = pacer.join();
    }
    let info_after = client.info().await?;
    let bookie_in_process = bookie.is_some();
    if let Some(bookie) = bookie {
        bookie.shutdown().await?;
    }

    let seconds = elapsed.as_secs_f64();
    let acknowledged = latencies.count();
    let adds_per_sec = acknowledged as f64 / seconds;
    let mb_per_sec = adds_per_sec * args.entry_size as f64 / 1_000_000.0;
    let fsyncs = info_after.journal_fsyncs - info_before.journal_fsyncs;
    let journaled = info_after.journal_entries - info_before.journal_entries;
    let fsyncs_per_sec = fsyncs as f64 / seconds;
    let cpu_us_per_add = cpu.process_us as f64 / acknowledged.max(1) as f64;
    let entries_per_fsync = if fsyncs == 0 {
        0.0
    } else {
        journaled as f64 / fsyncs as f64
    };
    if !args.json {
        println!(
            "{acknowledged} adds of {} bytes by {} writers in {seconds:.2} s{}",
            args.entry_size,
            args.writers,
            args.rate
                .map(|rate| format!(" at a target of {rate}/s"))
                .unwrap_or_default()
        );
        println!("throughput: {adds_per_sec:.0} adds/s, {mb_per_sec:.2} MB/s");
        println!(
            "add latency: p50 {} us, p99 {} us, p99.9 {} us (raw fdatasync p50 {raw_p50_us} us, p99 {raw_p99_us} us)",
            latencies.percentile_us(50.0),
            latencies.percentile_us(99.0),
            latencies.percentile_us(99.9)
        );
        println!("journal: {fsyncs_per_sec:.0} fsyncs/s, {entries_per_fsync:.1} entries per fsync");
        println!(
            "cpu: this process ({}) {:.2} cores, {:.1} us per add; machine {}",
            if bookie_in_process {
                "writers and bookie"
            } else {
                "writers only"
            },
            cpu.process_cores,
            cpu_us_per_add,
            cpu.machine_busy_percent
                .map(|busy| format!("{busy:.0}% busy over all its CPUs"))
                .unwrap_or_else(|| "busy share unknown (no /proc/stat)".into())
        );
        if failures > 0 {
            println!("failed adds: {failures}");
        }
    }
    let mut figures = Figures::default();
    figures
        .set("entries", acknowledged)
        .set("entry_size", args.entry_size as u64)
        .set("writers", args.writers)
        .set("connections", connection_count(&args))
        .set("network_threads", args.network_threads.unwrap_or(0) as u64)
        .set("rate", args.rate.unwrap_or(0))
        .set_f64("adds_per_sec", adds_per_sec)
        .set_f64("mb_per_sec", mb_per_sec)
        .set("add_p50_us", latencies.percentile_us(50.0))
        .set("add_p99_us", latencies.percentile_us(99.0))
        .set("add_p999_us", latencies.percentile_us(99.9))
        .set_f64("fsyncs_per_sec", fsyncs_per_sec)
        .set_f64("entries_per_fsync", entries_per_fsync)
        .set("raw_fsync_p50_us", raw_p50_us)
        .set("raw_fsync_p99_us", raw_p99_us)
        .set("failed_adds", failures)
        .set_f64("process_cpu_cores", cpu.process_cores)
        .set_f64("process_cpu_us_per_add", cpu_us_per_add);
    if let Some(busy) = cpu.machine_busy_percent {
        figures.set_f64("machine_cpu_busy_pct", busy);
    }
    if let Some(floor) = floor {
        figures
            .set("floor_p50_us", floor.p50_us)
            .set("floor_p99_us", floor.p99_us)
            .set("socket_floor_p50_us", floor.socket_p50_us)
            .set("socket_floor_p99_us", floor.socket_p99_us);
    }
    figures.print_json_line();
    if failures > 0 {
        bail!("{failures} adds failed");
    }
    Ok(())
}

fn connection_count(args: &BookiePerfArgs) -> u64 {
    args.connections.min(args.writers)
}

/// Keeps up to `window` entries in flight in requests of `batch`.
async fn write_unlimited(
    stream: SharedAddStream,
    ledger_id: u64,
    quota: u64,
    payload: Bytes,
    batch: usize,
    window: u64,
    acked: Arc<AtomicU64>,
) -> anyhow::Result<WriterOutcome> {
    let (_subscription, mut route) = join(&stream, ledger_id)?;
    let mut sent_at = Vec::with_capacity(quota as usize);
    let mut outcome = WriterOutcome {
        latencies: LatencyHistogram::new(),
        failures: 0,
    };
    let (mut sent, mut done) = (0u64, 0u64);
    while done < quota {
        while sent < quota && sent - done < window {
            let count = (batch as u64).min(quota - sent).min(window - (sent - done));
            let now = Instant::now();
            let entries = (sent..sent + count)
                .map(|entry_id| {
                    new_entry(ledger_id, entry_id, entry_id as i64 - 1, payload.clone())
                })
                .collect();
            sent_at.extend(std::iter::repeat_n(now, count as usize));
            stream
                .requests()
                .send(AddRequest {
                    entries,
                    ..AddRequest::default()
                })
                .await
                .context("the bookie closed the add stream")?;
            sent += count;
        }
        let results = next_results(&mut route).await?;
        done += record(
            &results,
            |entry_id| sent_at.get(entry_id as usize).copied(),
            &mut outcome,
        );
        acked.fetch_add(results.len() as u64, Ordering::Relaxed);
    }
    Ok(outcome)
}

/// The pacer's side of a paced run: entry k overall belongs to writer `k mod W` as its entry
/// `k / W`. Whenever entries fall due, each writer with entries among them gets one request
/// holding them all, sent from this thread straight onto the writer's connection, as an
/// application thread hands adds to an async client.
fn send_paced(
    total: u64,
    schedule: Schedule,
    writers: Vec<(u64, mpsc::Sender<AddRequest>)>,
    payload: Bytes,
) {
    let writer_count = writers.len() as u64;
    pace_batches(total, schedule, |batch| {
        let mut due: Vec<Vec<_>> = vec![Vec::new(); writers.len()];
        for sequence in batch {
            let (ledger_id, _) = &writers[(sequence % writer_count) as usize];
            let entry_id = sequence / writer_count;
            due[(sequence % writer_count) as usize].push(new_entry(
                *ledger_id,
                entry_id,
                entry_id as i64 - 1,
                payload.clone(),
            ));
        }
        writers
            .iter()
            .zip(due)
            .filter(|(_, entries)| !entries.is_empty())
            .all(|((_, requests), entries)| {
                requests
                    .blocking_send(AddRequest {
                        entries,
                        ..AddRequest::default()
                    })
                    .is_ok()
            })
    });
}

/// A paced writer's side: collects its ledger's results, each timed from when its entry fell
/// due (`due(entry_id)`).
async fn await_paced(
    _subscription: Subscription,
    mut route: mpsc::UnboundedReceiver<RouteEvent>,
    quota: u64,
    due: impl Fn(u64) -> Instant,
    acked: Arc<AtomicU64>,
) -> anyhow::Result<WriterOutcome> {
    let mut outcome = WriterOutcome {
        latencies: LatencyHistogram::new(),
        failures: 0,
    };
    let mut done = 0u64;
    while done < quota {
        let results = next_results(&mut route).await?;
        let start_of = |entry_id| (entry_id < quota).then(|| due(entry_id));
        done += record(&results, start_of, &mut outcome);
        acked.fetch_add(results.len() as u64, Ordering::Relaxed);
    }
    Ok(outcome)
}

/// Subscribes a writer's ledger on its connection's shared stream.
fn join(
    stream: &SharedAddStream,
    ledger_id: u64,
) -> anyhow::Result<(Subscription, mpsc::UnboundedReceiver<RouteEvent>)> {
    stream
        .subscribe(ledger_id)
        .context("the bookie ended the add stream before the run began")
}

/// The next results for a writer's ledger. Cancel-safe (only the receive awaits).
async fn next_results(
    route: &mut mpsc::UnboundedReceiver<RouteEvent>,
) -> anyhow::Result<Vec<AddResult>> {
    match route.recv().await {
        Some(RouteEvent::Results(results)) => Ok(results),
        Some(RouteEvent::Ended { reason }) => bail!("{reason}"),
        None => bail!("the bookie ended the add stream"),
    }
}

/// Records each result's latency from the start `start_of` gives its entry (a failure when the
/// result is not OK or has no start); returns how many results there were.
fn record(
    results: &[AddResult],
    start_of: impl Fn(u64) -> Option<Instant>,
    outcome: &mut WriterOutcome,
) -> u64 {
    let now = Instant::now();
    for result in results {
        let start = (result.code == ErrorCode::Ok as i32)
            .then(|| start_of(result.entry_id))
            .flatten();
        match start {
            Some(start) => outcome
                .latencies
                .record_us(now.duration_since(start).as_micros() as u64),
            None => outcome.failures += 1,
        }
    }
    results.len() as u64
}
