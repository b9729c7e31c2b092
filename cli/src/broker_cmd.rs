//! `magnetar broker`: one stateless broker, until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use magnetar_broker::{BrokerConfig, RunningBroker};

use crate::bookie_cmd::wait_for_stop_signal;

#[derive(Args)]
pub struct BrokerArgs {
    /// Metadata store endpoints (`host:port`, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub meta: Vec<String>,
    /// Address to serve the client protocol (gRPC) on.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address to serve HTTP on: the admin API and Prometheus metrics (default 127.0.0.1:8080).
    #[arg(long)]
    pub http_listen: Option<SocketAddr>,
    /// Address clients are told to reach this broker at (default: the bound address).
    #[arg(long)]
    pub advertise_address: Option<String>,
    /// Ensemble size, write quorum and ack quorum of new ledgers, as E/Qw/Qa (e.g. 3/3/2).
    #[arg(long)]
    pub quorum: Option<String>,
    /// Session TTL in milliseconds: how long a dead broker keeps its topics.
    #[arg(long)]
    pub session_ttl_ms: Option<u64>,
    /// Refuse producers and consumers on topics that do not exist yet.
    #[arg(long)]
    pub no_auto_create_topics: bool,
    /// A TOML file with any field of the broker's configuration; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Reads `E/Qw/Qa`.
pub fn parse_quorum(text: &str) -> anyhow::Result<(usize, usize, usize)> {
    let parts: Vec<&str> = text.split('/').collect();
    let [ensemble, write, ack] = parts.as_slice() else {
        anyhow::bail!("--quorum takes E/Qw/Qa, for example 3/3/2; got {text:?}");
    };
    let number = |part: &str| {
        part.trim()
            .parse::<usize>()
            .with_context(|| format!("--quorum: {part:?} is not a number"))
    };
    Ok((number(ensemble)?, number(write)?, number(ack)?))
}

impl BrokerArgs {
    pub fn config(&self) -> anyhow::Result<BrokerConfig> {
        let mut config = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading broker config {}", path.display()))?;
                toml::from_str(&text)
                    .with_context(|| format!("parsing broker config {}", path.display()))?
            }
            None => BrokerConfig::default(),
        };
        if !self.meta.is_empty() {
            config.meta_endpoints = self.meta.clone();
        }
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(http_listen) = self.http_listen {
            config.http_listen = http_listen;
        }
        if let Some(address) = &self.advertise_address {
            config.advertise_address = address.clone();
        }
        if let Some(quorum) = &self.quorum {
            (config.ensemble_size, config.write_quorum, config.ack_quorum) = parse_quorum(quorum)?;
        }
        if let Some(ttl) = self.session_ttl_ms {
            config.session_ttl_ms = ttl;
        }
        if self.no_auto_create_topics {
            config.auto_create_topics = false;
        }
        config
            .validate()
            .map_err(|reason| anyhow::anyhow!("invalid broker configuration: {reason}"))?;
        Ok(config)
    }
}

pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let broker = RunningBroker::start(config)
            .await
            .context("starting the broker (is the metadata store running and reachable?)")?;
        // Tests and scripts wait for this line to know the broker is serving.
        println!(
            "broker listening on {}, admin API and metrics on {}",
            broker.local_addr(),
            broker.admin_url()
        );
        wait_for_stop_signal().await?;
        broker.shutdown().await;
        Ok(())
    })
}
