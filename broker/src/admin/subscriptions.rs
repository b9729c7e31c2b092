//! `.../{topic}/subscription/{subscription}`: create (at the earliest or latest message),
//! delete, reset the cursor (to a message id or a publish time), skip entries, peek messages.
//!
//! A subscription with a running task (a consumer has attached since the topic was loaded) is
//! moved through that task, so what it holds in memory is dropped with the old position; one
//! without is moved in its cursor directly. Creating only makes the cursor: the first consumer
//! picks the subscription's type, as in Pulsar.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use magnetar_proto::broker::StoredBatch;
use magnetar_proto::prost::Message as _;
use serde::{Deserialize, Serialize};

use super::error::{codes, ApiError, ApiResult};
use super::request::{self, done, ok, Params, Query};
use super::topics::{fan_out, owned_topic, topic_name};
use super::Context;
use crate::managed_ledger::{InitialPosition, Position};
use crate::service::subscription::{before, last_published_before, SeekTo};
use crate::service::{BrokerError, Topic};
use crate::TopicName;

/// Entries read per call while scanning the log.
const SCAN_BATCH_ENTRIES: usize = 100;
/// Most entries one skip moves over.
const MAX_SKIP_ENTRIES: u64 = 10_000_000;
/// Most messages one peek returns.
const MAX_PEEK_MESSAGES: u64 = 1_000;

type SubscriptionPath = (String, String, String, String);

/// What a partitioned topic's request does: run on every partition.
async fn partitions_of(context: &Context, topic: &TopicName) -> ApiResult<u32> {
    Ok(context.service.partitions(topic).await?)
}

/// Operations on particular entries or messages belong to one log: a partitioned topic's
/// parent is refused, naming what to do instead.
async fn refuse_partitioned(context: &Context, topic: &TopicName, why: &str) -> ApiResult<()> {
    if partitions_of(context, topic).await? > 0 {
        return Err(ApiError::invalid(format!(
            "{topic} is partitioned; {why}: name one partition, {topic}-partition-N"
        )));
    }
    Ok(())
}

fn check_exists(topic: &Topic, subscription: &str) -> ApiResult<()> {
    topic.ledger.cursor_state(subscription)?;
    Ok(())
}

/// `GET .../{topic}/subscriptions`: the subscriptions' names.
pub async fn list(
    State(context): State<Context>,
    Params((tenant, namespace, local)): Params<(String, String, String)>,
    uri: Uri,
) -> ApiResult<Response> {
    let name = topic_name(&tenant, &namespace, &local)?;
    let partitions = partitions_of(&context, &name).await?;
    if partitions > 0 {
        let answers = fan_out(
            &context,
            Method::GET,
            &name,
            partitions,
            "/subscriptions",
            None,
            &[],
        )
        .await?;
        let mut names: Vec<String> = answers
            .into_iter()
            .filter_map(|(_, value)| value)
            .filter_map(|value| serde_json::from_value::<Vec<String>>(value).ok())
            .flatten()
            .collect();
        names.sort();
        names.dedup();
        return Ok(ok(&names));
    }
    let topic = owned_topic(&context, &name, &uri).await?;
    Ok(ok(&topic.ledger.cursor_names()))
}

/// `PUT .../subscription/{subscription}[?position=earliest|latest]` (latest by default).
pub async fn create(
    State(context): State<Context>,
    Params((tenant, namespace, local, subscription)): Params<SubscriptionPath>,
    Query(query): Query,
    uri: Uri,
) -> ApiResult<Response> {
    let name = topic_name(&tenant, &namespace, &local)?;
    let initial = match query.get("position").map(String::as_str) {
        None | Some("latest") => InitialPosition::Latest,
        Some("earliest") => InitialPosition::Earliest,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "position {other:?} is unknown; use earliest or latest"
            )))
        }
    };
    let partitions = partitions_of(&context, &name).await?;
    if partitions > 0 {
        let tail = format!("/subscription/{subscription}?{}", uri.query().unwrap_or(""));
        fan_out(&context, Method::PUT, &name, partitions, &tail, None, &[]).await?;
        return Ok(done());
    }
    let topic = owned_topic(&context, &name, &uri).await?;
    if topic.ledger.cursor_names().contains(&subscription) {
        return Err(ApiError::already_exists(format!(
            "subscription {subscription} of {name} already exists"
        )));
    }
    topic.ledger.open_cursor(&subscription, initial).await?;
    Ok(done())
}

/// `DELETE .../subscription/{subscription}`: only without connected consumers.
pub async fn delete(
    State(context): State<Context>,
    Params((tenant, namespace, local, subscription)): Params<SubscriptionPath>,
    uri: Uri,
) -> ApiResult<Response> {
    let name = topic_name(&tenant, &namespace, &local)?;
    let partitions = partitions_of(&context, &name).await?;
    if partitions > 0 {
        let tail = format!("/subscription/{subscription}");
        fan_out(
            &context,
            Method::DELETE,
            &name,
            partitions,
            &tail,
            None,
            &[],
        )
        .await?;
        return Ok(done());
    }
    let topic = owned_topic(&context, &name, &uri).await?;
    check_exists(&topic, &subscription)?;
    if let Some(handle) = topic.existing_subscription(&subscription) {
        let consumers = handle
            .stats()
            .await
            .map(|stats| stats.consumers.len())
            .unwrap_or(0);
        if consumers > 0 {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                codes::BUSY,
                format!(
                    "subscription {subscription} has {consumers} consumer(s) connected; close them first"
                ),
            ));
        }
    }
    topic.delete_subscription(&subscription).await?;
    Ok(done())
}

/// Moves the subscription so that everything after `after` is delivered next.
async fn move_to(topic: &Topic, subscription: &str, to: SeekTo) -> ApiResult<Position> {
    check_exists(topic, subscription)?;
    match topic.existing_subscription(subscription) {
        Some(handle) => handle.seek(to).await?,
        None => {
            let after = match to {
                SeekTo::After(position) => position,
                SeekTo::PublishTime(time_ms) => {
                    last_published_before(&topic.ledger, topic.ledger.earliest(), time_ms).await?
                }
            };
            topic.ledger.reset_cursor(subscription, after)?;
        }
    }
    Ok(topic.ledger.cursor_state(subscription)?.mark_delete())
}

#[derive(Serialize)]
struct Moved {
    mark_delete: String,
}

/// `POST .../subscription/{subscription}/resetcursor/{timestamp}`: messages published at or
/// after the timestamp (milliseconds since the Unix epoch) are delivered again.
pub async fn reset_to_time(
    State(context): State<Context>,
    Params((tenant, namespace, local, subscription, timestamp)): Params<(
        String,
        String,
        String,
        String,
        String,
    )>,
    uri: Uri,
) -> ApiResult<Response> {
    let name = topic_name(&tenant, &namespace, &local)?;
    let time_ms: u64 = timestamp.parse().map_err(|_| {
        ApiError::invalid(format!(
            "the timestamp must be milliseconds since the Unix epoch, not {timestamp:?}"
        ))
    })?;
    let partitions = partitions_of(&context, &name).await?;
    if partitions > 0 {
        let tail = format!("/subscription/{subscription}/resetcursor/{time_ms}");
        fan_out(&context, Method::POST, &name, partitions, &tail, None, &[]).await?;
        return Ok(done());
    }
    let topic = owned_topic(&context, &name, &uri).await?;
    let mark_delete = move_to(&topic, &subscription, SeekTo::PublishTime(time_ms)).await?;
    Ok(ok(&Moved {
        mark_delete: mark_delete.to_string(),
    }))
}

/// A message id in a reset's body.
#[derive(Deserialize)]
struct MessageIdBody {
    #[serde(alias = "ledgerId")]
    ledger_id: u64,
    #[serde(alias = "entryId")]
    entry_id: i64,
}

/// `POST .../subscription/{subscription}/resetcursor` with `{"ledger_id": L, "entry_id": E}`:
/// that message and everything after it are delivered again (or skipped up to it).
pub async fn reset_to_message(
    State(context): State<Context>,
    Params((tenant, namespace, local, subscription)): Params<SubscriptionPath>,
    uri: Uri,
    body: Bytes,
) -> ApiResult<Response> {
    let name = topic_name(&tenant, &namespace, &local)?;
    let id: MessageIdBody = request::body(&body, r#"{"ledger_id": 12, "entry_id": 0}"#)?;
    refuse_partitioned(&context, &name, "a message id belongs to one partition").await?;
    if id.entry_id < 0 {
        return Err(
            BrokerError::InvalidMessageId(format!("{}:{}", id.ledger_id, id.entry_id)).into(),
        );
    }
    let topic = owned_topic(&context, &name, &uri).await?;
    let position = Position::new(id.ledger_id, id.entry_id);
    if !topic
        .ledger
        .ledgers()
        .iter()
        .any(|ledger| ledger.ledger_id == id.ledger_id)
    {
        return Err(BrokerError::InvalidMessageId(format!(
            "{position} (ledger {} is not in the log of {name})",
            id.ledger_id
        ))
        .into());
    }
    let mark_delete = move_to(&topic, &subscription, SeekTo::After(before(position))).await?;
    Ok(ok(&Moved {
        mark_delete: mark_delete.to_string(),
    }))
}

#[derive(Serialize)]
struct Skipped {
    skipped_entries: u64,
    mark_delete: String,
}

/// `POST .../subscription/{subscription}/skip/{count}`: acknowledges the next `count`
/// unacknowledged entries. An entry is what a producer sent at once (a batch), as in
/// Pulsar, whose skip also counts entries.
pub async fn skip(
    State(context): State<Context>,
    Params((tenant, namespace, local, subscription, count)): Params<(
        String,
        String,
        String,
        String,
        String,
    )>,
    uri: Uri,
) -> ApiResult<Response> {
    let name = topic_name(&tenant, &namespace, &local)?;
    let count = request::count(&count, "the number of entries to skip", MAX_SKIP_ENTRIES)?;
    refuse_partitioned(&context, &name, "skip counts the entries of one log").await?;
    let topic = owned_topic(&context, &name, &uri).await?;
    let cursor = topic.ledger.cursor_state(&subscription)?;
    let end = topic.ledger.last_confirmed();
    let mut last = cursor.mark_delete();
    let mut skipped = 0u64;
    'scan: while skipped < count && last < end {
        let from = Position::new(last.ledger_id, last.entry_id + 1);
        let entries = topic.ledger.read(from, SCAN_BATCH_ENTRIES).await?;
        if entries.is_empty() {
            break;
        }
        for entry in entries {
            if !cursor.is_acked(entry.position) {
                if skipped == count {
                    break 'scan;
                }
                skipped += 1;
            }
            last = entry.position;
        }
    }
    let mark_delete = if skipped == 0 {
        cursor.mark_delete()
    } else {
        match topic.existing_subscription(&subscription) {
            Some(_) => move_to(&topic, &subscription, SeekTo::After(last)).await?,
            None => {
                // Kept as an acknowledgement, so entries acknowledged further on stay so.
                topic.ledger.ack_cumulative(&subscription, last)?;
                topic.ledger.cursor_state(&subscription)?.mark_delete()
            }
        }
    };
    Ok(ok(&Skipped {
        skipped_entries: skipped,
        mark_delete: mark_delete.to_string(),
    }))
}

/// A message as peek shows it.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct PeekedMessage {
    pub message_id: String,
    pub publish_time_ms: u64,
    pub producer_name: String,
    pub sequence_id: u64,
    pub key: Option<String>,
    pub properties: std::collections::BTreeMap<String, String>,
    pub event_time_ms: u64,
    /// The payload as text when it is UTF-8.
    pub payload: Option<String>,
    /// The payload in hexadecimal when it is not.
    pub payload_hex: Option<String>,
}

/// The first `count` messages the subscription has not acknowledged, in order.
async fn peek_messages(
    topic: &Topic,
    subscription: &str,
    count: u64,
) -> ApiResult<Vec<PeekedMessage>> {
    let cursor = topic.ledger.cursor_state(subscription)?;
    let end = topic.ledger.last_confirmed();
    let mut last = cursor.mark_delete();
    let mut messages = Vec::new();
    while (messages.len() as u64) < count && last < end {
        let from = Position::new(last.ledger_id, last.entry_id + 1);
        let entries = topic.ledger.read(from, SCAN_BATCH_ENTRIES).await?;
        if entries.is_empty() {
            break;
        }
        for entry in entries {
            last = entry.position;
            if cursor.is_acked(entry.position) {
                continue;
            }
            let Ok(batch) = StoredBatch::decode(entry.payload) else {
                continue; // not a message batch; the subscription skips it too
            };
            for (index, message) in batch.messages.into_iter().enumerate() {
                if messages.len() as u64 >= count {
                    break;
                }
                let (payload, payload_hex) = match String::from_utf8(message.payload.to_vec()) {
                    Ok(text) => (Some(text), None),
                    Err(_) => (
                        None,
                        Some(
                            message
                                .payload
                                .iter()
                                .map(|byte| format!("{byte:02x}"))
                                .collect(),
                        ),
                    ),
                };
                messages.push(PeekedMessage {
                    message_id: format!(
                        "{}:{}:{index}",
                        entry.position.ledger_id, entry.position.entry_id
                    ),
                    publish_time_ms: batch.publish_time_ms,
                    producer_name: batch.producer_name.clone(),
                    sequence_id: batch.first_sequence_id + index as u64,
                    key: message.key,
                    properties: message.properties.into_iter().collect(),
                    event_time_ms: message.event_time_ms,
                    payload,
                    payload_hex,
                });
            }
        }
    }
    Ok(messages)
}

/// `GET .../subscription/{subscription}/peek/{count}`: the next `count` messages, without
/// acknowledging them.
pub async fn peek(
    State(context): State<Context>,
    Params((tenant, namespace, local, subscription, count)): Params<(
        String,
        String,
        String,
        String,
        String,
    )>,
    uri: Uri,
) -> ApiResult<Response> {
    let name = topic_name(&tenant, &namespace, &local)?;
    let count = request::count(&count, "the number of messages to peek", MAX_PEEK_MESSAGES)?;
    refuse_partitioned(&context, &name, "peek reads the messages of one log").await?;
    let topic = owned_topic(&context, &name, &uri).await?;
    Ok(ok(&peek_messages(&topic, &subscription, count).await?))
}

/// `GET .../subscription/{subscription}/position/{index}`: the `index`-th (from 1) message
/// not acknowledged yet, as Pulsar's `peekNthMessage`.
pub async fn message_at(
    State(context): State<Context>,
    Params((tenant, namespace, local, subscription, index)): Params<(
        String,
        String,
        String,
        String,
        String,
    )>,
    uri: Uri,
) -> ApiResult<Response> {
    let name = topic_name(&tenant, &namespace, &local)?;
    let index = request::count(&index, "the message position", MAX_PEEK_MESSAGES)?;
    let topic = owned_topic(&context, &name, &uri).await?;
    let messages = peek_messages(&topic, &subscription, index).await?;
    match messages.into_iter().nth(index as usize - 1) {
        Some(message) => Ok(ok(&message)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("subscription {subscription} has fewer than {index} messages waiting"),
        )),
    }
}
