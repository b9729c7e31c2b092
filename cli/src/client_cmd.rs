//! `magnetar produce` and `magnetar consume`: the data commands, through the client library.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use magnetar_client::{Client, InitialPosition, OutgoingMessage, SubscriptionType};

/// Where the CLI finds a broker when no `--service-url` is given: standalone's address.
pub const DEFAULT_SERVICE_URL: &str = "127.0.0.1:6660";

#[derive(Args)]
pub struct ProduceArgs {
    /// Topic: `persistent://tenant/namespace/topic`, or a bare name in public/default.
    pub topic: String,
    /// Message text (repeat -m for several messages).
    #[arg(short = 'm', long = "message", required = true)]
    pub messages: Vec<String>,
    /// Send the messages this many times.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub count: u64,
    /// Message key (routing for partitioned topics, ordering for Key_Shared).
    #[arg(long)]
    pub key: Option<String>,
    /// Any broker of the cluster.
    #[arg(long, env = "MAGNETAR_SERVICE_URL", default_value = DEFAULT_SERVICE_URL)]
    pub service_url: String,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TypeArg {
    Exclusive,
    Failover,
    Shared,
    KeyShared,
}

impl From<TypeArg> for SubscriptionType {
    fn from(kind: TypeArg) -> Self {
        match kind {
            TypeArg::Exclusive => SubscriptionType::Exclusive,
            TypeArg::Failover => SubscriptionType::Failover,
            TypeArg::Shared => SubscriptionType::Shared,
            TypeArg::KeyShared => SubscriptionType::KeyShared,
        }
    }
}

#[derive(Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Subscription name.
    #[arg(short = 's', long)]
    pub subscription: String,
    #[arg(short = 't', long = "type", value_enum, default_value = "exclusive")]
    pub subscription_type: TypeArg,
    /// Stop after this many messages (0: run until interrupted).
    #[arg(short = 'n', long, default_value_t = 1)]
    pub count: u64,
    /// A new subscription starts at the earliest message instead of the next one published.
    #[arg(long)]
    pub earliest: bool,
    /// Print only a count at the end, not each message.
    #[arg(long)]
    pub quiet: bool,
    #[arg(long, env = "MAGNETAR_SERVICE_URL", default_value = DEFAULT_SERVICE_URL)]
    pub service_url: String,
}

/// How long `produce` and `consume` wait for a broker that is not reachable yet (one still
/// starting, as when a cluster and a client are started together).
const CONNECT_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

async fn connect(url: &str) -> anyhow::Result<Client> {
    let deadline = tokio::time::Instant::now() + CONNECT_PATIENCE;
    let mut told = false;
    loop {
        match Client::connect(url).await {
            Ok(client) => return Ok(client),
            Err(error) if error.is_retryable() && tokio::time::Instant::now() < deadline => {
                if !told {
                    eprintln!("waiting up to {CONNECT_PATIENCE:?} for a broker at {url} ...");
                    told = true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(error) => {
                return Err(error).with_context(|| format!("connecting to {url}"));
            }
        }
    }
}

pub fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let client = connect(&args.service_url).await?;
        let producer = client
            .producer(&args.topic)
            .create()
            .await
            .with_context(|| format!("creating a producer on {}", args.topic))?;
        let total = args.count * args.messages.len() as u64;
        let started = Instant::now();
        let mut last_report = Instant::now();
        let mut receipts = Vec::new();
        let mut sent = 0u64;
        for _ in 0..args.count {
            for text in &args.messages {
                let mut message = OutgoingMessage::new(text.clone().into_bytes());
                message.key = args.key.clone();
                receipts.push(producer.send_async(message).await?);
                sent += 1;
                if last_report.elapsed() >= Duration::from_secs(1) {
                    eprintln!("  {sent}/{total} sent");
                    last_report = Instant::now();
                }
            }
        }
        let mut last_id = None;
        for receipt in receipts {
            last_id = Some(receipt.await.context("a message was not stored")?);
        }
        if let Some(id) = last_id {
            println!(
                "{total} message(s) published to {} in {} ms; last id {id}",
                args.topic,
                started.elapsed().as_millis()
            );
        }
        Ok(())
    })
}

pub fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let client = connect(&args.service_url).await?;
        let consumer = client
            .consumer(&args.topic, &args.subscription)
            .subscription_type(args.subscription_type.into())
            .initial_position(if args.earliest {
                InitialPosition::Earliest
            } else {
                InitialPosition::Latest
            })
            .subscribe()
            .await
            .with_context(|| format!("subscribing to {}", args.topic))?;
        let mut received = 0u64;
        let mut last_report = Instant::now();
        while args.count == 0 || received < args.count {
            let message = tokio::select! {
                message = consumer.receive() => message.context("receiving")?,
                _ = tokio::signal::ctrl_c() => break,
            };
            if !args.quiet {
                let key = message.key.as_deref().unwrap_or("");
                println!("{} key={key} {}", message.id, message.text());
            }
            consumer.ack(&message).await.context("acknowledging")?;
            received += 1;
            if args.quiet && last_report.elapsed() >= Duration::from_secs(1) {
                eprintln!("  {received} received");
                last_report = Instant::now();
            }
        }
        eprintln!("{received} message(s) received from {}", args.topic);
        Ok(())
    })
}
