//! `magnetar standalone`: the metadata store (one node), one bookie and one broker in one
//! process, with data kept under one directory across restarts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use magnetar_bookie::{BookieConfig, RunningBookie};
use magnetar_broker::{BrokerConfig, RunningBroker};
use magnetar_meta::{MetaConfig, MetaServer};

use crate::bookie_cmd::wait_for_stop_signal;
use crate::broker_cmd::parse_quorum;

#[derive(Args)]
pub struct StandaloneArgs {
    /// Where every role keeps its data (created if missing; reused on restart).
    #[arg(long, default_value = "data/standalone")]
    pub data_dir: PathBuf,
    /// The broker's client address.
    #[arg(long, default_value = "127.0.0.1:6660")]
    pub listen: SocketAddr,
    /// Address of the HTTP admin API and Prometheus metrics.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_listen: SocketAddr,
    /// The metadata store's address.
    #[arg(long, default_value = "127.0.0.1:2181")]
    pub meta_listen: String,
    /// The bookie's address.
    #[arg(long, default_value = "127.0.0.1:3181")]
    pub bookie_listen: SocketAddr,
    /// E/Qw/Qa of new ledgers; one bookie allows only 1/1/1.
    #[arg(long, default_value = "1/1/1")]
    pub quorum: String,
}

pub fn run(args: StandaloneArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

/// Every role of a standalone Magnetar, running in this process.
pub struct Standalone {
    pub meta: MetaServer,
    pub bookie: RunningBookie,
    pub broker: RunningBroker,
}

impl Standalone {
    pub async fn stop(self) -> anyhow::Result<()> {
        self.broker.shutdown().await;
        self.bookie
            .shutdown()
            .await
            .context("stopping the bookie")?;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.meta.shutdown()).await;
        Ok(())
    }
}

async fn serve(args: StandaloneArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let data_dir = args.data_dir.clone();
    let standalone = start(args).await?;
    // Tests and scripts wait for this line.
    println!(
        "magnetar standalone ready in {} ms: broker {}, admin {}, bookie {}, metadata {}, data in {}",
        started.elapsed().as_millis(),
        standalone.broker.local_addr(),
        standalone.broker.admin_url(),
        standalone.bookie.local_addr(),
        standalone.meta.endpoint(),
        data_dir.display()
    );
    wait_for_stop_signal().await?;
    eprintln!("stopping: closing topics, then the bookie and the metadata store");
    standalone.stop().await
}

/// Starts the metadata store, the bookie and the broker.
pub async fn start(args: StandaloneArgs) -> anyhow::Result<Standalone> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating the data directory {}", args.data_dir.display()))?;
    let meta = MetaServer::start(MetaConfig {
        data_dir: args.data_dir.join("meta"),
        listen: args.meta_listen.clone(),
        ..MetaConfig::default()
    })
    .await
    .with_context(|| {
        format!(
            "starting the metadata store on {} (is another Magnetar running? pick --meta-listen)",
            args.meta_listen
        )
    })?;
    let meta_endpoint = meta.endpoint().to_string();
    let bookie = RunningBookie::start(BookieConfig {
        data_dir: args.data_dir.join("bookie"),
        listen: args.bookie_listen,
        meta_endpoints: vec![meta_endpoint.clone()],
        ..BookieConfig::default()
    })
    .await
    .with_context(|| format!("starting the bookie on {}", args.bookie_listen))?;
    let (ensemble_size, write_quorum, ack_quorum) = parse_quorum(&args.quorum)?;
    let broker = RunningBroker::start(BrokerConfig {
        listen: args.listen,
        http_listen: args.http_listen,
        meta_endpoints: vec![meta_endpoint.clone()],
        ensemble_size,
        write_quorum,
        ack_quorum,
        // One process: nobody else can take its topics, so a short session costs nothing.
        session_ttl_ms: 5_000,
        ..BrokerConfig::default()
    })
    .await
    .with_context(|| format!("starting the broker on {}", args.listen))?;
    Ok(Standalone {
        meta,
        bookie,
        broker,
    })
}
