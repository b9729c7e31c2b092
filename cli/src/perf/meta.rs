//! `magnetar perf meta`: linearizable writes/s and reads/s of the metadata store, their
//! latency, and the leader-failover time (leader stopped, time until the next write succeeds).
//!
//! By default it starts a local group of `--nodes` in-process nodes on loopback ports with
//! fsync on; `--endpoints` targets a running group instead (no failover measured then).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use magnetar_meta::{MetaClient, MetaConfig, MetaServer};

use super::report::{Figures, LatencyHistogram};

#[derive(Args)]
pub struct MetaPerfArgs {
    /// Nodes of the local group.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Writes in total (as many reads follow).
    #[arg(long, default_value_t = 20_000)]
    ops: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// A running group (comma-separated host:port) instead of a local one.
    #[arg(long)]
    endpoints: Option<String>,
    /// Turn fsync off in the local group (faster, not durable).
    #[arg(long)]
    no_sync: bool,
    /// Print only the closing JSON line.
    #[arg(long)]
    json: bool,
}

struct LocalGroup {
    _dirs: Vec<tempfile::TempDir>,
    servers: BTreeMap<u64, MetaServer>,
    endpoints: Vec<String>,
}

async fn start_local(nodes: u64, sync: bool) -> anyhow::Result<LocalGroup> {
    let mut peers = BTreeMap::new();
    for id in 1..=nodes {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
        peers.insert(id, listener.local_addr()?.to_string());
    }
    let mut dirs = Vec::new();
    let mut servers = BTreeMap::new();
    for (id, endpoint) in &peers {
        let dir = tempfile::tempdir().context("creating a data directory")?;
        let config = MetaConfig {
            id: *id,
            data_dir: dir.path().to_path_buf(),
            listen: endpoint.clone(),
            peers: peers.clone(),
            sync_writes: sync,
            ..MetaConfig::default()
        };
        servers.insert(
            *id,
            MetaServer::start(config).await.context("starting a node")?,
        );
        dirs.push(dir);
    }
    Ok(LocalGroup {
        _dirs: dirs,
        endpoints: peers.values().cloned().collect(),
        servers,
    })
}

async fn leader_of(group: &LocalGroup) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        for server in group.servers.values() {
            if let Ok(status) = server.status().await {
                if status.leader_id == status.id {
                    return Ok(status.id);
                }
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "no leader elected within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `total` operations over `clients` tasks; returns (elapsed, latencies, failures).
async fn run_phase<F, Fut>(
    clients: &[MetaClient],
    total: usize,
    operation: F,
) -> (Duration, LatencyHistogram, usize)
where
    F: Fn(MetaClient, usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let operation = Arc::new(operation);
    let started = Instant::now();
    let mut tasks = Vec::new();
    let per_client = total.div_ceil(clients.len());
    for (number, client) in clients.iter().enumerate() {
        let client = client.clone();
        let operation = operation.clone();
        tasks.push(tokio::spawn(async move {
            let mut histogram = LatencyHistogram::new();
            let mut failures = 0;
            for i in 0..per_client {
                let began = Instant::now();
                if operation(client.clone(), number, i).await {
                    histogram.record_us(began.elapsed().as_micros() as u64);
                } else {
                    failures += 1;
                }
            }
            (histogram, failures)
        }));
    }
    let mut histogram = LatencyHistogram::new();
    let mut failures = 0;
    for task in tasks {
        if let Ok((partial, failed)) = task.await {
            histogram.merge(&partial);
            failures += failed;
        }
    }
    (started.elapsed(), histogram, failures)
}

pub fn run(args: MetaPerfArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.clients > 0 && args.ops > 0,
        "--clients and --ops must be positive"
    );
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(measure(args))
}

async fn measure(args: MetaPerfArgs) -> anyhow::Result<()> {
    let say = |line: String| {
        if !args.json {
            eprintln!("{line}");
        }
    };
    let mut local = None;
    let endpoints = match &args.endpoints {
        Some(list) => list.split(',').map(str::to_string).collect(),
        None => {
            let group = start_local(args.nodes, !args.no_sync).await?;
            let endpoints = group.endpoints.clone();
            let leader = leader_of(&group).await?;
            say(format!(
                "local group of {} nodes, node {leader} leads",
                args.nodes
            ));
            local = Some(group);
            endpoints
        }
    };
    say(format!(
        "metadata store at {} ({} clients, {} writes, {} B values, fsync {})",
        endpoints.join(","),
        args.clients,
        args.ops,
        args.value_bytes,
        if args.no_sync { "off" } else { "on" }
    ));
    let clients: Vec<MetaClient> = (0..args.clients)
        .map(|_| MetaClient::new(&endpoints).map(|c| c.with_timeout(Duration::from_secs(10))))
        .collect::<Result<_, _>>()?;
    // Warm-up: every client finds the leader.
    for client in &clients {
        client.get("/perf/warm-up").await.context("warming up")?;
    }

    let value = bytes::Bytes::from(vec![b'v'; args.value_bytes]);
    let (write_time, writes, write_failures) = run_phase(&clients, args.ops, move |c, n, i| {
        let value = value.clone();
        async move {
            c.put(&format!("/perf/{n}/{}", i % 1000), value)
                .await
                .is_ok()
        }
    })
    .await;
    let writes_per_sec = writes.count() as f64 / write_time.as_secs_f64();
    say(format!(
        "writes: {writes_per_sec:.0}/s, p50 {} us, p99 {} us, {write_failures} failed",
        writes.percentile_us(50.0),
        writes.percentile_us(99.0)
    ));

    let (read_time, reads, read_failures) = run_phase(&clients, args.ops, |c, n, i| async move {
        c.get(&format!("/perf/{n}/{}", i % 1000)).await.is_ok()
    })
    .await;
    let reads_per_sec = reads.count() as f64 / read_time.as_secs_f64();
    say(format!(
        "reads: {reads_per_sec:.0}/s, p50 {} us, p99 {} us, {read_failures} failed",
        reads.percentile_us(50.0),
        reads.percentile_us(99.0)
    ));

    let mut figures = Figures::default();
    if let Some(mut group) = local {
        let leader = leader_of(&group).await?;
        let election_timeout = MetaConfig::default().election_timeout();
        let client = clients[0].clone();
        let killed_at = Instant::now();
        if let Some(server) = group.servers.remove(&leader) {
            server.shutdown().await.context("stopping the leader")?;
        }
        let deadline = killed_at + Duration::from_secs(30);
        loop {
            if client.put("/perf/failover", "after").await.is_ok() {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no write succeeded 30 s after failover"
            );
        }
        let failover = killed_at.elapsed();
        say(format!(
            "failover: {} ms until the next write succeeded (election timeout {} ms)",
            failover.as_millis(),
            election_timeout.as_millis()
        ));
        figures.set("failover_ms", failover.as_millis() as u64);
        for server in group.servers.into_values() {
            let _ = server.shutdown().await;
        }
    } else {
        figures.set("failover_ms", serde_json::Value::Null);
    }
    figures
        .set("nodes", args.nodes)
        .set("clients", args.clients as u64)
        .set("ops", args.ops as u64)
        .set("value_bytes", args.value_bytes as u64)
        .set("fsync", !args.no_sync)
        .set_f64("writes_per_sec", writes_per_sec)
        .set_f64("reads_per_sec", reads_per_sec)
        .set("write_p50_us", writes.percentile_us(50.0))
        .set("write_p99_us", writes.percentile_us(99.0))
        .set("read_p50_us", reads.percentile_us(50.0))
        .set("read_p99_us", reads.percentile_us(99.0))
        .set("write_failures", write_failures as u64)
        .set("read_failures", read_failures as u64);
    figures.print_json_line();
    Ok(())
}
