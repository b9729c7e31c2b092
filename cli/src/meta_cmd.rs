//! `magnetar meta`: one node of the metadata store, until SIGTERM or Ctrl-C.
//!
//! Also `magnetar meta --member-add ID=ADDR --endpoints ...` and `--member-remove ID` to change
//! the membership of a running group.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use magnetar_meta::{parse_peers, MetaClient, MetaConfig, MetaServer};

#[derive(Args)]
pub struct MetaArgs {
    /// This node's id in the group (non-zero).
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// Directory of the node's RocksDB.
    #[arg(long, default_value = "data/meta")]
    data_dir: PathBuf,
    /// Address to serve clients and peers on.
    #[arg(long, default_value = "127.0.0.1:2181")]
    listen: String,
    /// Endpoint others reach this node at (default: its entry in --peers, else --listen).
    #[arg(long, default_value = "")]
    advertise: String,
    /// Initial voters as ID=HOST:PORT,... (this node included); empty = a single-node group.
    #[arg(long, default_value = "")]
    peers: String,
    /// Start as a new node joining a running group (add it with --member-add first).
    #[arg(long)]
    join: bool,
    /// Milliseconds per Raft tick; the election timeout is 10 ticks.
    #[arg(long, default_value_t = 50)]
    tick_ms: u64,
    /// Do not fsync the Raft log (benchmarks on throwaway data only).
    #[arg(long)]
    no_sync: bool,
    /// Admin: add the voter ID=HOST:PORT to the group at --endpoints, then exit.
    #[arg(long)]
    member_add: Option<String>,
    /// Admin: remove the voter ID from the group at --endpoints, then exit.
    #[arg(long)]
    member_remove: Option<u64>,
    /// Admin: endpoints of the running group, comma-separated.
    #[arg(long, default_value = "127.0.0.1:2181")]
    endpoints: String,
}

pub fn run(args: MetaArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        if args.member_add.is_some() || args.member_remove.is_some() {
            return change_membership(args).await;
        }
        serve(args).await
    })
}

async fn change_membership(args: MetaArgs) -> anyhow::Result<()> {
    let endpoints: Vec<String> = args.endpoints.split(',').map(str::to_string).collect();
    let client = MetaClient::new(&endpoints).context("connecting to the group")?;
    let members = if let Some(member) = &args.member_add {
        let peers = parse_peers(member).context("reading --member-add")?;
        let Some((id, endpoint)) = peers.into_iter().next() else {
            anyhow::bail!("--member-add needs ID=HOST:PORT");
        };
        client
            .add_member(id, &endpoint)
            .await
            .context("adding the member")?
    } else if let Some(id) = args.member_remove {
        client
            .remove_member(id)
            .await
            .context("removing the member")?
    } else {
        Vec::new()
    };
    for member in members {
        println!("{}={}", member.id, member.endpoint);
    }
    Ok(())
}

async fn serve(args: MetaArgs) -> anyhow::Result<()> {
    let config = MetaConfig {
        id: args.id,
        data_dir: args.data_dir,
        listen: args.listen,
        advertise: args.advertise,
        peers: parse_peers(&args.peers).context("reading --peers")?,
        join: args.join,
        tick_interval: Duration::from_millis(args.tick_ms),
        sync_writes: !args.no_sync,
        ..MetaConfig::default()
    };
    config.validate().context("checking the configuration")?;
    let server = MetaServer::start(config)
        .await
        .context("starting the metadata node")?;
    tracing::info!(id = server.id(), endpoint = server.endpoint(), "serving");

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
    }
    server.shutdown().await.context("shutting down")?;
    Ok(())
}
