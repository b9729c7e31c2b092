//! `/admin/v2/persistent/{tenant}/{namespace}[/{topic}]`: list, create (plain or partitioned),
//! delete, stats and internal stats.
//!
//! A topic's requests are served by its owner; other brokers redirect there. A request about
//! a partitioned topic is fanned out to its partitions (each through this broker's own API, so
//! each goes to its owner) and the answers are gathered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use futures::stream::{self, StreamExt, TryStreamExt};
use magnetar_proto::broker::ErrorCode;
use serde::{Deserialize, Serialize};

use super::client::AdminClientError;
use super::error::{codes, ApiError, ApiResult};
use super::rates::Rates;
use super::request::{self, done, ok, Params};
use super::Context;
use crate::managed_ledger::delete_log;
use crate::managed_ledger::stored::{log_key, StoredLedger};
use crate::service::namespaces;
use crate::service::ownership;
use crate::service::topic::{dedup_key, TopicStats};
use crate::service::{BrokerError, Topic};
use crate::TopicName;

/// Partition requests in flight at once during a fan-out.
const FAN_OUT_CONCURRENCY: usize = 8;
/// A topic's stats wait this long for its subscriptions' tasks to answer.
const STATS_TIMEOUT: Duration = Duration::from_secs(10);
/// Individually acknowledged ranges listed per cursor in internal stats.
const MAX_LISTED_RANGES: usize = 100;

/// The topic named by a path's three segments.
pub fn topic_name(tenant: &str, namespace: &str, local: &str) -> ApiResult<TopicName> {
    TopicName::parse(&format!("persistent://{tenant}/{namespace}/{local}"))
        .map_err(|invalid| BrokerError::InvalidName(invalid.to_string()).into())
}

/// Succeeds when this broker owns the topic (taking an unowned bundle if it is the chosen
/// one); otherwise fails with a redirect to the owner's HTTP address.
pub async fn route(context: &Context, topic: &TopicName, uri: &Uri) -> ApiResult<()> {
    let owner = context.service.lookup(topic).await?;
    if owner == context.service.address() {
        return Ok(());
    }
    let Some(http_address) = ownership::http_address_of(context.service.meta(), &owner).await?
    else {
        return Err(BrokerError::Unavailable(format!(
            "topic {topic} is served by {owner}, which registered no HTTP address"
        ))
        .into());
    };
    let path = uri
        .path_and_query()
        .map(|path| path.as_str())
        .unwrap_or("/");
    Err(ApiError::redirect(
        format!("http://{http_address}{path}"),
        &owner,
    ))
}

/// The topic, served here, if it exists (a redirect when another broker owns it).
pub async fn owned_topic(context: &Context, topic: &TopicName, uri: &Uri) -> ApiResult<Arc<Topic>> {
    route(context, topic, uri).await?;
    context
        .service
        .open_topic(topic, false)
        .await
        .map_err(|error| match error {
            // The broker's own message speaks of auto-creation, which admin calls never do.
            BrokerError::TopicNotFound(_) => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::TopicNotFound.as_str_name(),
                format!(
                    "topic {topic} does not exist; create it with `magnetar topics create {topic}`"
                ),
            ),
            other => other.into(),
        })
}

async fn log_exists(context: &Context, topic: &TopicName) -> ApiResult<bool> {
    Ok(context
        .service
        .meta()
        .get(&log_key(&topic.managed_ledger_name()))
        .await?
        .is_some())
}

/// The topics (and partitions) that have a log in the namespace.
pub async fn topic_names(
    meta: &magnetar_meta::MetaClient,
    tenant: &str,
    namespace: &str,
) -> ApiResult<Vec<String>> {
    let prefix = log_key(&format!("{tenant}/{namespace}/persistent/"));
    let mut names: Vec<String> = meta
        .list_all(&prefix)
        .await?
        .into_iter()
        .map(|kv| {
            format!(
                "persistent://{tenant}/{namespace}/{}",
                &kv.key[prefix.len()..]
            )
        })
        .collect();
    names.sort();
    Ok(names)
}

/// A code of the API by its name, for errors relayed from another broker.
fn known_code(code: &str) -> &'static str {
    if let Some(code) = ErrorCode::from_str_name(code) {
        return code.as_str_name();
    }
    [
        codes::INVALID_REQUEST,
        codes::ALREADY_EXISTS,
        codes::TENANT_NOT_FOUND,
        codes::NOT_EMPTY,
        codes::BUSY,
        codes::NOT_FOUND,
    ]
    .into_iter()
    .find(|known| *known == code)
    .unwrap_or(ErrorCode::ServiceUnavailable.as_str_name())
}

/// Sends `method` to `tail` of every partition of `parent` through this broker's API; returns
/// each partition's JSON answer (`None` for an empty one, or an error code in `tolerate`).
pub async fn fan_out(
    context: &Context,
    method: Method,
    parent: &TopicName,
    partitions: u32,
    tail: &str,
    body: Option<Vec<u8>>,
    tolerate: &[&str],
) -> ApiResult<Vec<(String, Option<serde_json::Value>)>> {
    let client = context.self_client()?;
    stream::iter(0..partitions)
        .map(|index| {
            let partition = parent.partition(index);
            let path = format!(
                "/admin/v2/persistent/{}/{}/{}{tail}",
                partition.tenant, partition.namespace, partition.local
            );
            let client = client.clone();
            let method = method.clone();
            let body = body.clone();
            async move {
                let name = partition.to_string();
                let answer: ApiResult<(String, Option<serde_json::Value>)> =
                    match client.call(method, &path, body).await {
                        Ok(response) if response.body.is_empty() => Ok((name, None)),
                        Ok(response) => response
                            .json()
                            .map(|value| (name, Some(value)))
                            .map_err(|error| BrokerError::Unavailable(error.to_string()).into()),
                        Err(AdminClientError::Api { code, .. })
                            if tolerate.contains(&code.as_str()) =>
                        {
                            Ok((name, None))
                        }
                        Err(AdminClientError::Api {
                            status,
                            code,
                            message,
                        }) => Err(ApiError::new(
                            StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                            known_code(&code),
                            format!("partition {name}: {message}"),
                        )),
                        Err(error) => Err(BrokerError::Unavailable(format!(
                            "partition {name}: {error}"
                        ))
                        .into()),
                    };
                answer
            }
        })
        .buffered(FAN_OUT_CONCURRENCY)
        .try_collect()
        .await
}

/// `GET /admin/v2/persistent/{tenant}/{namespace}`: topics and partitions with a log.
pub async fn list(
    State(context): State<Context>,
    Params((tenant, namespace)): Params<(String, String)>,
) -> ApiResult<Response> {
    namespaces::validate_segment("tenant", &tenant)?;
    namespaces::validate_segment("namespace", &namespace)?;
    let meta = context.service.meta();
    namespaces::policies(meta, &tenant, &namespace).await?;
    Ok(ok(&topic_names(meta, &tenant, &namespace).await?))
}

#[derive(Serialize, Deserialize)]
pub struct PartitionedTopic {
    pub topic: String,
    pub partitions: u32,
}

/// `GET /admin/v2/persistent/{tenant}/{namespace}/partitioned`: partitioned topics.
pub async fn list_partitioned(
    State(context): State<Context>,
    Params((tenant, namespace)): Params<(String, String)>,
) -> ApiResult<Response> {
    namespaces::validate_segment("tenant", &tenant)?;
    namespaces::validate_segment("namespace", &namespace)?;
    let meta = context.service.meta();
    namespaces::policies(meta, &tenant, &namespace).await?;
    let topics: Vec<PartitionedTopic> = namespaces::list_partitioned(meta, &tenant, &namespace)
        .await?
        .into_iter()
        .map(|(topic, partitions)| PartitionedTopic { topic, partitions })
        .collect();
    Ok(ok(&topics))
}

/// `PUT .../{topic}`: creates a topic that is not partitioned.
pub async fn create(
    State(context): State<Context>,
    Params((tenant, namespace, local)): Params<(String, String, String)>,
    uri: Uri,
) -> ApiResult<Response> {
    let topic = topic_name(&tenant, &namespace, &local)?;
    if context.service.partitions(&topic).await? > 0 {
        return Err(ApiError::already_exists(format!(
            "{topic} exists as a partitioned topic"
        )));
    }
    route(&context, &topic, &uri).await?;
    if log_exists(&context, &topic).await? {
        return Err(ApiError::already_exists(format!("{topic} already exists")));
    }
    context.service.open_topic(&topic, true).await?;
    Ok(done())
}

/// `DELETE .../{topic}`: deletes a topic with no producers or consumers connected (a
/// partitioned topic's partitions and then the topic itself).
pub async fn delete(
    State(context): State<Context>,
    Params((tenant, namespace, local)): Params<(String, String, String)>,
    uri: Uri,
) -> ApiResult<Response> {
    let topic = topic_name(&tenant, &namespace, &local)?;
    if context.service.partitions(&topic).await? > 0 {
        return delete_partitioned_topic(&context, &topic).await;
    }
    let topic = owned_topic(&context, &topic, &uri).await?;
    let stats = topic_stats(&topic).await?;
    let consumers: usize = stats
        .subscriptions
        .values()
        .map(|subscription| subscription.live.consumers.len())
        .sum();
    if !stats.producers.is_empty() || consumers > 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            codes::BUSY,
            format!(
                "{} has {} producer(s) and {consumers} consumer(s) connected; close them first",
                topic.name,
                stats.producers.len()
            ),
        ));
    }
    // Closed first, so nothing more is written to the log being deleted.
    topic.close().await?;
    context.service.forget_topic(&topic.name);
    let ledger_name = topic.name.managed_ledger_name();
    delete_log(context.service.ledgers(), &ledger_name).await?;
    context
        .service
        .meta()
        .delete(&dedup_key(&ledger_name), None)
        .await?;
    Ok(done())
}

#[derive(Serialize)]
struct Partitions {
    partitions: u32,
}

/// `GET .../{topic}/partitions`: `{"partitions": N}` (0: not partitioned).
pub async fn get_partitions(
    State(context): State<Context>,
    Params((tenant, namespace, local)): Params<(String, String, String)>,
) -> ApiResult<Response> {
    let topic = topic_name(&tenant, &namespace, &local)?;
    namespaces::policies(context.service.meta(), &topic.tenant, &topic.namespace).await?;
    Ok(ok(&Partitions {
        partitions: context.service.partitions(&topic).await?,
    }))
}

/// The partition count as a bare number (Pulsar's form) or an object.
#[derive(Deserialize)]
#[serde(untagged)]
enum PartitionsBody {
    Count(u32),
    Object { partitions: u32 },
}

/// `PUT .../{topic}/partitions` with `N`: creates a partitioned topic and its partitions.
pub async fn create_partitioned(
    State(context): State<Context>,
    Params((tenant, namespace, local)): Params<(String, String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let topic = topic_name(&tenant, &namespace, &local)?;
    let partitions = match request::body::<PartitionsBody>(&body, "4")? {
        PartitionsBody::Count(count) | PartitionsBody::Object { partitions: count } => count,
    };
    if topic.partition_index().is_some() {
        return Err(ApiError::invalid(format!(
            "{topic} names a partition; a partitioned topic's name cannot end in -partition-N"
        )));
    }
    if log_exists(&context, &topic).await? {
        return Err(ApiError::already_exists(format!(
            "{topic} exists as a topic that is not partitioned"
        )));
    }
    if !namespaces::create_partitioned(context.service.meta(), &topic, partitions)
        .await
        .map_err(|error| match error {
            BrokerError::Protocol(message) => ApiError::invalid(message),
            other => other.into(),
        })?
    {
        return Err(ApiError::already_exists(format!("{topic} already exists")));
    }
    // Each partition is created by its owner, so producers with auto-creation off can use it.
    fan_out(
        &context,
        Method::PUT,
        &topic,
        partitions,
        "",
        None,
        &[codes::ALREADY_EXISTS],
    )
    .await?;
    Ok(done())
}

/// `DELETE .../{topic}/partitions`: deletes every partition, then the partitioned topic.
pub async fn delete_partitioned(
    State(context): State<Context>,
    Params((tenant, namespace, local)): Params<(String, String, String)>,
) -> ApiResult<Response> {
    let topic = topic_name(&tenant, &namespace, &local)?;
    delete_partitioned_topic(&context, &topic).await
}

async fn delete_partitioned_topic(context: &Context, topic: &TopicName) -> ApiResult<Response> {
    let partitions = context.service.partitions(topic).await?;
    if partitions == 0 {
        return Err(BrokerError::TopicNotFound(format!("{topic} (as a partitioned topic)")).into());
    }
    fan_out(
        context,
        Method::DELETE,
        topic,
        partitions,
        "",
        None,
        &[ErrorCode::TopicNotFound.as_str_name()],
    )
    .await?;
    namespaces::delete_partitioned(context.service.meta(), topic).await?;
    Ok(done())
}

/// A topic's stats as the API shows them.
#[derive(Serialize)]
pub struct TopicStatsView {
    #[serde(flatten)]
    pub stats: TopicStats,
    pub messages_out: u64,
    pub bytes_out: u64,
    #[serde(flatten)]
    pub rates: Rates,
    pub storage_size_bytes: u64,
    pub storage_entries: u64,
    /// Upper bounds of the histogram buckets holding the quantile (None: no publishes yet).
    pub publish_latency_p50_us: Option<u64>,
    pub publish_latency_p99_us: Option<u64>,
    pub publish_latency_p999_us: Option<u64>,
}

async fn topic_stats(topic: &Topic) -> ApiResult<TopicStats> {
    tokio::time::timeout(STATS_TIMEOUT, topic.stats())
        .await
        .map_err(|_| {
            BrokerError::Unavailable(format!(
                "the subscriptions of {} did not report within {STATS_TIMEOUT:?}",
                topic.name
            ))
            .into()
        })
}

/// The stats of a topic served here.
pub async fn stats_view(context: &Context, topic: &Topic) -> ApiResult<TopicStatsView> {
    let mut stats = topic_stats(topic).await?;
    for subscription in stats.subscriptions.values_mut() {
        if subscription.live.kind.is_empty() {
            // No consumer attached since the topic was loaded: a cursor without a task, so
            // durable, with its type still to be chosen by its first consumer.
            subscription.live.durable = true;
        }
    }
    let counters = &topic.counters;
    let ledgers = topic.ledger.ledgers();
    let latency = counters.publish_latency.snapshot();
    Ok(TopicStatsView {
        stats,
        messages_out: counters
            .messages_out
            .load(std::sync::atomic::Ordering::Relaxed),
        bytes_out: counters
            .bytes_out
            .load(std::sync::atomic::Ordering::Relaxed),
        rates: context.rates.rates(&topic.name),
        storage_size_bytes: ledgers.iter().map(|ledger| ledger.size_bytes).sum(),
        storage_entries: ledgers.iter().map(|ledger| ledger.entries).sum(),
        publish_latency_p50_us: latency.quantile_upper_bound_us(0.5),
        publish_latency_p99_us: latency.quantile_upper_bound_us(0.99),
        publish_latency_p999_us: latency.quantile_upper_bound_us(0.999),
    })
}

#[derive(Serialize)]
struct PartitionedStats {
    topic: String,
    partitions: u32,
    per_partition: BTreeMap<String, serde_json::Value>,
}

/// Gathers `tail` (stats or internal stats) of every partition.
/// What a per-topic view reads: the log this broker owns, or, for a partitioned topic, the
/// view already gathered from every partition.
enum OneLog {
    Owned(Arc<Topic>),
    Partitioned(Response),
}

/// Resolves a view request: a partitioned topic is answered with `tail` fetched from each
/// partition; any other topic is served (or redirected) by its owner.
async fn log_or_partitions(
    context: &Context,
    tenant: &str,
    namespace: &str,
    local: &str,
    uri: &Uri,
    tail: &str,
) -> ApiResult<OneLog> {
    let name = topic_name(tenant, namespace, local)?;
    let partitions = context.service.partitions(&name).await?;
    if partitions > 0 {
        return Ok(OneLog::Partitioned(
            partitioned_view(context, &name, partitions, tail).await?,
        ));
    }
    Ok(OneLog::Owned(owned_topic(context, &name, uri).await?))
}

async fn partitioned_view(
    context: &Context,
    topic: &TopicName,
    partitions: u32,
    tail: &str,
) -> ApiResult<Response> {
    let answers = fan_out(context, Method::GET, topic, partitions, tail, None, &[]).await?;
    Ok(ok(&PartitionedStats {
        topic: topic.to_string(),
        partitions,
        per_partition: answers
            .into_iter()
            .map(|(name, value)| (name, value.unwrap_or_default()))
            .collect(),
    }))
}

/// `GET .../{topic}/stats`: rates, producers, subscriptions with backlogs, storage.
pub async fn stats(
    State(context): State<Context>,
    Params((tenant, namespace, local)): Params<(String, String, String)>,
    uri: Uri,
) -> ApiResult<Response> {
    let topic =
        match log_or_partitions(&context, &tenant, &namespace, &local, &uri, "/stats").await? {
            OneLog::Owned(topic) => topic,
            OneLog::Partitioned(view) => return Ok(view),
        };
    Ok(ok(&stats_view(&context, &topic).await?))
}

/// A ledger of the log in internal stats.
#[derive(Serialize)]
struct LedgerView {
    ledger_id: u64,
    entries: u64,
    size_bytes: u64,
    created_at_ms: u64,
    closed_at_ms: Option<u64>,
    /// The ledger being written.
    open: bool,
}

/// A cursor in internal stats.
#[derive(Serialize)]
struct CursorView {
    mark_delete: String,
    acked_range_count: usize,
    /// The first individually acknowledged ranges after the mark-delete position.
    acked_ranges: Vec<String>,
    backlog_entries: u64,
}

#[derive(Serialize)]
struct InternalStats {
    managed_ledger: String,
    number_of_entries: u64,
    total_size_bytes: u64,
    last_confirmed: String,
    ledgers: Vec<LedgerView>,
    cursors: BTreeMap<String, CursorView>,
}

fn ledger_view(ledger: &StoredLedger) -> LedgerView {
    LedgerView {
        ledger_id: ledger.ledger_id,
        entries: ledger.entries,
        size_bytes: ledger.size_bytes,
        created_at_ms: ledger.created_at_ms,
        closed_at_ms: ledger.closed_at_ms,
        open: ledger.closed_at_ms.is_none(),
    }
}

/// `GET .../{topic}/internalStats`: the log's ledgers and the cursors' positions.
pub async fn internal_stats(
    State(context): State<Context>,
    Params((tenant, namespace, local)): Params<(String, String, String)>,
    uri: Uri,
) -> ApiResult<Response> {
    let topic = match log_or_partitions(
        &context,
        &tenant,
        &namespace,
        &local,
        &uri,
        "/internalStats",
    )
    .await?
    {
        OneLog::Owned(topic) => topic,
        OneLog::Partitioned(view) => return Ok(view),
    };
    let ledger = &topic.ledger;
    let ledgers = ledger.ledgers();
    let mut cursors = BTreeMap::new();
    for cursor in ledger.cursor_names() {
        let Ok(state) = ledger.cursor_state(&cursor) else {
            continue; // deleted meanwhile
        };
        cursors.insert(
            cursor.clone(),
            CursorView {
                mark_delete: state.mark_delete().to_string(),
                acked_range_count: state.acked_range_count(),
                acked_ranges: state
                    .acked_ranges()
                    .take(MAX_LISTED_RANGES)
                    .map(|(first, last)| format!("{first}..{last}"))
                    .collect(),
                backlog_entries: ledger.backlog_entries(&cursor).unwrap_or(0),
            },
        );
    }
    Ok(ok(&InternalStats {
        managed_ledger: ledger.name().to_string(),
        number_of_entries: ledgers.iter().map(|l| l.entries).sum(),
        total_size_bytes: ledgers.iter().map(|l| l.size_bytes).sum(),
        last_confirmed: ledger.last_confirmed().to_string(),
        ledgers: ledgers.iter().map(ledger_view).collect(),
        cursors,
    }))
}
