//! `magnetar bookie`: one ledger storage node, until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use magnetar_bookie::{BookieConfig, RunningBookie};

#[derive(Args)]
pub struct BookieArgs {
    /// Data directory (journal, entry logs, index). Created if missing.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to serve gRPC on.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// A TOML file with any field of the bookie's configuration; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Size of each preallocated journal file, in bytes.
    #[arg(long)]
    pub journal_file_size_bytes: Option<u64>,
    /// Flush the write cache to entry logs past this many bytes.
    #[arg(long)]
    pub write_cache_flush_bytes: Option<usize>,
    /// Start a new entry log past this size, in bytes.
    #[arg(long)]
    pub entry_log_size_bytes: Option<u64>,
    /// Turn read-only below this much free disk space, in bytes.
    #[arg(long)]
    pub min_free_space_bytes: Option<u64>,
    /// Metadata store endpoints (`host:port`, comma-separated): register there so ledger
    /// clients can place ensembles on this bookie.
    #[arg(long, value_delimiter = ',')]
    pub meta: Vec<String>,
    /// Address to publish in the registration (default: the bound listen address).
    #[arg(long)]
    pub advertise_address: Option<String>,
    /// Rack (failure domain) label to publish in the registration.
    #[arg(long)]
    pub rack: Option<String>,
    /// Registration session TTL in milliseconds: how long a dead bookie stays listed.
    #[arg(long)]
    pub registration_ttl_ms: Option<u64>,
    /// Threads serving gRPC (default: one fewer than the CPUs, at least one).
    #[arg(long)]
    pub network_threads: Option<usize>,
}

impl BookieArgs {
    /// The configuration: defaults, then the TOML file, then flags.
    pub fn config(&self) -> anyhow::Result<BookieConfig> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading bookie config {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing bookie config {}", path.display()))?
            }
            None => BookieConfig::default(),
        };
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(bytes) = self.journal_file_size_bytes {
            config.journal_file_size_bytes = bytes;
        }
        if let Some(bytes) = self.write_cache_flush_bytes {
            config.write_cache_flush_bytes = bytes;
        }
        if let Some(bytes) = self.entry_log_size_bytes {
            config.entry_log_size_bytes = bytes;
        }
        if let Some(bytes) = self.min_free_space_bytes {
            config.min_free_space_bytes = bytes;
        }
        if !self.meta.is_empty() {
            config.meta_endpoints = self.meta.clone();
        }
        if let Some(address) = &self.advertise_address {
            config.advertise_address = address.clone();
        }
        if let Some(rack) = &self.rack {
            config.rack = rack.clone();
        }
        if let Some(ttl_ms) = self.registration_ttl_ms {
            config.registration_ttl = std::time::Duration::from_millis(ttl_ms);
        }
        if let Some(threads) = self.network_threads {
            config.network_threads = threads;
        }
        config
            .validate()
            .context("checking the bookie configuration")?;
        Ok(config)
    }
}

pub fn run(args: BookieArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let threads = config.network_thread_count();
    let runtime = network_runtime(threads)?;
    tracing::info!(threads, "serving gRPC on this many threads");
    runtime.block_on(async move {
        let bookie = RunningBookie::start(config)
            .await
            .context("starting the bookie")?;
        // Tests and scripts wait for this line to know the bookie is serving.
        println!("bookie listening on {}", bookie.local_addr());
        wait_for_stop_signal().await?;
        bookie
            .shutdown()
            .await
            .context("shutting the bookie down")?;
        Ok(())
    })
}

/// The async runtime a bookie serves gRPC on, with `threads` workers.
pub fn network_runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_stop_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}
