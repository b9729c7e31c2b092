//! `magnetar tenants|namespaces|topics ...`: the admin commands, over a broker's HTTP admin
//! API (any broker: topic requests are redirected to the topic's owner).

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use magnetar_broker::admin::{AdminClient, AdminClientError, Method};
use magnetar_broker::TopicName;
use serde_json::{json, Value};

/// Where the CLI finds the admin API when no `--admin-url` is given: standalone's address.
pub const DEFAULT_ADMIN_URL: &str = "http://127.0.0.1:8080";

#[derive(Args)]
pub struct AdminUrl {
    /// Any broker's HTTP address.
    #[arg(
        long,
        global = true,
        env = "MAGNETAR_ADMIN_URL",
        default_value = DEFAULT_ADMIN_URL
    )]
    pub admin_url: String,
}

#[derive(Args)]
pub struct TenantsArgs {
    #[command(subcommand)]
    pub command: TenantsCommand,
    #[command(flatten)]
    pub admin: AdminUrl,
}

#[derive(Subcommand)]
pub enum TenantsCommand {
    /// List the tenants.
    List,
    /// Create a tenant.
    Create { tenant: String },
    /// Delete a tenant that has no namespaces left.
    Delete { tenant: String },
}

#[derive(Args)]
pub struct NamespacesArgs {
    #[command(subcommand)]
    pub command: NamespacesCommand,
    #[command(flatten)]
    pub admin: AdminUrl,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum BacklogPolicyArg {
    /// Hold producers' sends until consumers catch up.
    ProducerRequestHold,
    /// Refuse producers' sends with BACKLOG_QUOTA_EXCEEDED.
    ProducerException,
}

#[derive(Subcommand)]
pub enum NamespacesCommand {
    /// List a tenant's namespaces.
    List { tenant: String },
    /// Create a namespace (`tenant/namespace`).
    Create {
        namespace: String,
        /// Bundles (hash ranges) the namespace is split into: the unit of ownership.
        #[arg(long)]
        bundles: Option<u32>,
    },
    /// Delete a namespace that has no topics left.
    Delete { namespace: String },
    /// Show a namespace's policies.
    Policies { namespace: String },
    /// Keep consumed messages for a time and up to a size (0 and 0: delete once consumed).
    SetRetention {
        namespace: String,
        #[arg(long, default_value_t = 0)]
        minutes: u64,
        #[arg(long, default_value_t = 0)]
        size_mb: u64,
    },
    /// Expire unconsumed messages after this many seconds (0: never).
    SetTtl {
        namespace: String,
        #[arg(long)]
        seconds: u64,
    },
    /// Limit each subscription's backlog, in entries (0: no limit).
    SetBacklogQuota {
        namespace: String,
        #[arg(long)]
        limit_entries: u64,
        #[arg(long, value_enum, default_value = "producer-exception")]
        policy: BacklogPolicyArg,
    },
}

#[derive(Args)]
pub struct TopicsArgs {
    #[command(subcommand)]
    pub command: TopicsCommand,
    #[command(flatten)]
    pub admin: AdminUrl,
}

#[derive(Subcommand)]
pub enum TopicsCommand {
    /// List a namespace's topics (`tenant/namespace`), partitioned ones included.
    List { namespace: String },
    /// Create a topic, partitioned with `--partitions N`.
    Create {
        topic: String,
        #[arg(long)]
        partitions: Option<u32>,
    },
    /// Delete a topic (all partitions of a partitioned one); it must have no clients.
    Delete { topic: String },
    /// Rates, producers, subscriptions with their backlogs, storage, publish latency.
    Stats { topic: String },
    /// The log's ledgers and the cursors' positions.
    InternalStats { topic: String },
    /// List the topic's subscriptions.
    Subscriptions { topic: String },
    /// Create a subscription at the latest (or, with --earliest, the first) message.
    CreateSubscription {
        topic: String,
        #[arg(short = 's', long)]
        subscription: String,
        #[arg(long)]
        earliest: bool,
    },
    /// Delete a subscription that has no consumers connected.
    DeleteSubscription {
        topic: String,
        #[arg(short = 's', long)]
        subscription: String,
    },
    /// Move a subscription to a publish time or a message id; what follows is delivered again.
    ResetCursor {
        topic: String,
        #[arg(short = 's', long)]
        subscription: String,
        /// Publish time in milliseconds since the Unix epoch.
        #[arg(long, conflicts_with_all = ["message_id", "minutes_ago"])]
        time: Option<u64>,
        /// The publish time this many minutes ago.
        #[arg(long, conflicts_with = "message_id")]
        minutes_ago: Option<u64>,
        /// A message id as `ledger:entry`.
        #[arg(long)]
        message_id: Option<String>,
    },
    /// Acknowledge the next N entries of a subscription without delivering them.
    Skip {
        topic: String,
        #[arg(short = 's', long)]
        subscription: String,
        #[arg(short = 'n', long)]
        count: u64,
    },
    /// Show the next N messages of a subscription without acknowledging them.
    Peek {
        topic: String,
        #[arg(short = 's', long)]
        subscription: String,
        #[arg(short = 'n', long, default_value_t = 1)]
        count: u64,
    },
}

fn client(admin: &AdminUrl) -> anyhow::Result<AdminClient> {
    AdminClient::new(&admin.admin_url).with_context(|| {
        format!(
            "--admin-url {:?} is not usable; give http://host:port",
            admin.admin_url
        )
    })
}

/// Turns a client error into one that says what to do next.
fn explain(error: AdminClientError, url: &str) -> anyhow::Error {
    match error {
        AdminClientError::Connect { .. } | AdminClientError::Timeout { .. } => anyhow::anyhow!(
            "{error}\nis the broker running? start one with `magnetar standalone`, or point \
             --admin-url (now {url}) at a broker's HTTP address"
        ),
        other => anyhow::Error::new(other),
    }
}

async fn call(
    client: &AdminClient,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Option<Value>> {
    let body = body.map(|value| value.to_string().into_bytes());
    let response = client
        .call(method, path, body)
        .await
        .map_err(|error| explain(error, client.base_url()))?;
    if response.body.is_empty() {
        return Ok(None);
    }
    Ok(Some(response.json().map_err(anyhow::Error::new)?))
}

/// Prints a line; a closed stdout (`| head`) ends the output quietly instead of panicking.
fn print_line(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn print_json(value: &Option<Value>) -> anyhow::Result<()> {
    if let Some(value) = value {
        print_line(&serde_json::to_string_pretty(value)?);
    }
    Ok(())
}

fn print_list(value: &Option<Value>) {
    if let Some(Value::Array(items)) = value {
        for item in items {
            match item {
                Value::String(text) => print_line(text),
                other => print_line(&other.to_string()),
            }
        }
    }
}

/// `tenant/namespace`, checked.
fn namespace_path(namespace: &str) -> anyhow::Result<String> {
    match namespace.split_once('/') {
        Some((tenant, name)) if !tenant.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(format!("{tenant}/{name}"))
        }
        _ => bail!("expected tenant/namespace, e.g. public/default; got {namespace:?}"),
    }
}

/// The API path of a topic: `/admin/v2/persistent/tenant/namespace/topic`.
fn topic_path(topic: &str) -> anyhow::Result<String> {
    let name = TopicName::parse(topic)?;
    Ok(format!(
        "/admin/v2/persistent/{}/{}/{}",
        name.tenant, name.namespace, name.local
    ))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn tenants(args: TenantsArgs) -> anyhow::Result<()> {
    let client = client(&args.admin)?;
    runtime()?.block_on(async move {
        match args.command {
            TenantsCommand::List => {
                print_list(&call(&client, Method::GET, "/admin/v2/tenants", None).await?)
            }
            TenantsCommand::Create { tenant } => {
                call(
                    &client,
                    Method::PUT,
                    &format!("/admin/v2/tenants/{tenant}"),
                    None,
                )
                .await?;
                println!("created tenant {tenant}");
            }
            TenantsCommand::Delete { tenant } => {
                call(
                    &client,
                    Method::DELETE,
                    &format!("/admin/v2/tenants/{tenant}"),
                    None,
                )
                .await?;
                println!("deleted tenant {tenant}");
            }
        }
        Ok(())
    })
}

pub fn namespaces(args: NamespacesArgs) -> anyhow::Result<()> {
    let client = client(&args.admin)?;
    runtime()?.block_on(async move {
        let base = "/admin/v2/namespaces";
        match args.command {
            NamespacesCommand::List { tenant } => {
                print_list(&call(&client, Method::GET, &format!("{base}/{tenant}"), None).await?)
            }
            NamespacesCommand::Create { namespace, bundles } => {
                let path = namespace_path(&namespace)?;
                let body = bundles.map(|bundles| json!({ "bundles": bundles }));
                call(&client, Method::PUT, &format!("{base}/{path}"), body).await?;
                println!("created namespace {path}");
            }
            NamespacesCommand::Delete { namespace } => {
                let path = namespace_path(&namespace)?;
                call(&client, Method::DELETE, &format!("{base}/{path}"), None).await?;
                println!("deleted namespace {path}");
            }
            NamespacesCommand::Policies { namespace } => {
                let path = namespace_path(&namespace)?;
                print_json(
                    &call(
                        &client,
                        Method::GET,
                        &format!("{base}/{path}/policies"),
                        None,
                    )
                    .await?,
                )?;
            }
            NamespacesCommand::SetRetention {
                namespace,
                minutes,
                size_mb,
            } => {
                let path = namespace_path(&namespace)?;
                let body = json!({ "retention_minutes": minutes, "retention_size_mb": size_mb });
                call(
                    &client,
                    Method::POST,
                    &format!("{base}/{path}/retention"),
                    Some(body),
                )
                .await?;
                println!("retention of {path}: {minutes} minutes, {size_mb} MB");
            }
            NamespacesCommand::SetTtl { namespace, seconds } => {
                let path = namespace_path(&namespace)?;
                call(
                    &client,
                    Method::POST,
                    &format!("{base}/{path}/messageTTL"),
                    Some(json!(seconds)),
                )
                .await?;
                println!("message TTL of {path}: {seconds} s");
            }
            NamespacesCommand::SetBacklogQuota {
                namespace,
                limit_entries,
                policy,
            } => {
                let path = namespace_path(&namespace)?;
                let policy = match policy {
                    BacklogPolicyArg::ProducerRequestHold => "producer_request_hold",
                    BacklogPolicyArg::ProducerException => "producer_exception",
                };
                let body = json!({ "limit_entries": limit_entries, "policy": policy });
                call(
                    &client,
                    Method::POST,
                    &format!("{base}/{path}/backlogQuota"),
                    Some(body),
                )
                .await?;
                println!("backlog quota of {path}: {limit_entries} entries, {policy}");
            }
        }
        Ok(())
    })
}

/// `ledger:entry`.
fn parse_message_id(text: &str) -> anyhow::Result<Value> {
    let parsed = text.split_once(':').and_then(|(ledger, entry)| {
        Some((ledger.parse::<u64>().ok()?, entry.parse::<i64>().ok()?))
    });
    match parsed {
        Some((ledger_id, entry_id)) => Ok(json!({ "ledger_id": ledger_id, "entry_id": entry_id })),
        None => bail!(
            "a message id is ledger:entry, e.g. 12:0 (see `magnetar topics peek`); got {text:?}"
        ),
    }
}

pub fn topics(args: TopicsArgs) -> anyhow::Result<()> {
    let client = client(&args.admin)?;
    runtime()?.block_on(async move {
        match args.command {
            TopicsCommand::List { namespace } => {
                let path = namespace_path(&namespace)?;
                let base = format!("/admin/v2/persistent/{path}");
                print_list(&call(&client, Method::GET, &base, None).await?);
                let partitioned =
                    call(&client, Method::GET, &format!("{base}/partitioned"), None).await?;
                if let Some(Value::Array(items)) = partitioned {
                    for item in items {
                        print_line(&format!(
                            "{} (partitioned, {} partitions)",
                            item["topic"].as_str().unwrap_or_default(),
                            item["partitions"]
                        ));
                    }
                }
            }
            TopicsCommand::Create { topic, partitions } => {
                let path = topic_path(&topic)?;
                match partitions {
                    Some(count) => {
                        call(
                            &client,
                            Method::PUT,
                            &format!("{path}/partitions"),
                            Some(json!(count)),
                        )
                        .await?;
                        println!("created {topic} with {count} partitions");
                    }
                    None => {
                        call(&client, Method::PUT, &path, None).await?;
                        println!("created {topic}");
                    }
                }
            }
            TopicsCommand::Delete { topic } => {
                call(&client, Method::DELETE, &topic_path(&topic)?, None).await?;
                println!("deleted {topic}");
            }
            TopicsCommand::Stats { topic } => {
                let path = format!("{}/stats", topic_path(&topic)?);
                print_json(&call(&client, Method::GET, &path, None).await?)?;
            }
            TopicsCommand::InternalStats { topic } => {
                let path = format!("{}/internalStats", topic_path(&topic)?);
                print_json(&call(&client, Method::GET, &path, None).await?)?;
            }
            TopicsCommand::Subscriptions { topic } => {
                let path = format!("{}/subscriptions", topic_path(&topic)?);
                print_list(&call(&client, Method::GET, &path, None).await?);
            }
            TopicsCommand::CreateSubscription {
                topic,
                subscription,
                earliest,
            } => {
                let position = if earliest { "earliest" } else { "latest" };
                let path = format!(
                    "{}/subscription/{subscription}?position={position}",
                    topic_path(&topic)?
                );
                call(&client, Method::PUT, &path, None).await?;
                println!(
                    "created subscription {subscription} on {topic} at the {position} message"
                );
            }
            TopicsCommand::DeleteSubscription {
                topic,
                subscription,
            } => {
                let path = format!("{}/subscription/{subscription}", topic_path(&topic)?);
                call(&client, Method::DELETE, &path, None).await?;
                println!("deleted subscription {subscription} of {topic}");
            }
            TopicsCommand::ResetCursor {
                topic,
                subscription,
                time,
                minutes_ago,
                message_id,
            } => {
                let base = format!(
                    "{}/subscription/{subscription}/resetcursor",
                    topic_path(&topic)?
                );
                let answer = match (time, minutes_ago, message_id) {
                    (Some(time_ms), _, _) => {
                        call(&client, Method::POST, &format!("{base}/{time_ms}"), None).await?
                    }
                    (None, Some(minutes), _) => {
                        let now_ms = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)?
                            .as_millis() as u64;
                        let time_ms = now_ms.saturating_sub(minutes * 60_000);
                        call(&client, Method::POST, &format!("{base}/{time_ms}"), None).await?
                    }
                    (None, None, Some(id)) => {
                        call(&client, Method::POST, &base, Some(parse_message_id(&id)?)).await?
                    }
                    (None, None, None) => {
                        bail!(
                            "say where to: --time MS, --minutes-ago M or --message-id LEDGER:ENTRY"
                        )
                    }
                };
                print_json(&answer)?;
            }
            TopicsCommand::Skip {
                topic,
                subscription,
                count,
            } => {
                let path = format!(
                    "{}/subscription/{subscription}/skip/{count}",
                    topic_path(&topic)?
                );
                print_json(&call(&client, Method::POST, &path, None).await?)?;
            }
            TopicsCommand::Peek {
                topic,
                subscription,
                count,
            } => {
                let path = format!(
                    "{}/subscription/{subscription}/peek/{count}",
                    topic_path(&topic)?
                );
                print_json(&call(&client, Method::GET, &path, None).await?)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_expand_bare_names_and_check_namespaces() {
        assert_eq!(
            topic_path("orders").unwrap(),
            "/admin/v2/persistent/public/default/orders"
        );
        assert_eq!(
            topic_path("persistent://acme/eu/clicks").unwrap(),
            "/admin/v2/persistent/acme/eu/clicks"
        );
        assert!(topic_path("a b").is_err());
        assert_eq!(namespace_path("acme/eu").unwrap(), "acme/eu");
        for bad in ["acme", "acme/", "/eu", "a/b/c"] {
            assert!(namespace_path(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_message_id("12:3").unwrap()["entry_id"], 3);
        assert!(parse_message_id("12").is_err());
    }
}
