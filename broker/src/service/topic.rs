//! A topic served by this broker: its managed ledger, its producers with deduplication, and
//! its subscriptions.
//!
//! Deduplication survives a change of owner: the highest persisted sequence id per producer is
//! snapshotted to the metadata store with the position it covers, and a new owner restores the
//! snapshot and replays the log after that position.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use magnetar_meta::MetaClient;
use magnetar_proto::broker::{Message, SendReceipt, StoredBatch};
use magnetar_proto::prost::Message as _;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use super::error::{BrokerError, BrokerResult};
use super::policies::{self, BacklogPolicy, TopicPolicies};
use super::subscription::{
    last_published_before, type_name, SubscriptionHandle, SubscriptionStats,
};
use crate::dedup::{Deduplication, Verdict};
use crate::dispatch::SubscriptionType;
use crate::managed_ledger::{
    CursorState, InitialPosition, ManagedLedger, ManagedLedgerError, Position, SubmittedAppend,
};
use crate::TopicName;

/// How often a changed deduplication state is snapshotted.
const DEDUP_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

pub fn dedup_key(ledger_name: &str) -> String {
    format!("/dedup/{ledger_name}")
}

#[derive(Serialize, Deserialize, Default)]
struct DedupSnapshot {
    ledger_id: u64,
    entry_id: i64,
    producers: BTreeMap<String, u64>,
}

struct DedupState {
    dedup: Deduplication,
    /// Every entry up to here has been fed to `dedup`.
    covered: Position,
    changed: bool,
}

/// What a send becomes once it is queued.
pub enum SendOutcome {
    /// Stored before: answer at once.
    Duplicate(SendReceipt),
    /// Queued; await it for the receipt.
    Queued(PendingSend),
    /// The same sequence id is still being stored by an earlier send; await its outcome.
    InFlight(PendingSend),
}

/// A send waiting for its entry to be durable.
///
/// Its outcome reaches the deduplication state even if nobody waits for it (the producer's
/// stream ended first): otherwise a resend would find its ids in flight forever.
pub struct PendingSend {
    topic: Arc<Topic>,
    producer: String,
    first_sequence_id: u64,
    highest_sequence_id: u64,
    count: u32,
    /// The log's failure count when the send was checked (see
    /// [`ManagedLedger::append_failures`]).
    failures_at_submit: u64,
    /// The queued append and the producer's in-flight mark before it; `None` for a resend
    /// that waits for an earlier copy, or once the outcome is recorded.
    append: Option<(SubmittedAppend, Option<u64>)>,
}

impl PendingSend {
    /// The log's failure count when this send was checked: if the count has moved since,
    /// this send may yet fail, and a later send of its producer must not overtake it.
    pub fn failures_at_submit(&self) -> u64 {
        self.failures_at_submit
    }

    pub async fn wait(mut self) -> BrokerResult<SendReceipt> {
        let Some((append, accepted_before)) = self.append.as_mut() else {
            return self.wait_for_earlier().await;
        };
        let outcome = append.await;
        let accepted_before = *accepted_before;
        // Recorded here, so dropping the send now has nothing left to record.
        self.append = None;
        self.topic.record_outcome(
            &self.producer,
            self.highest_sequence_id,
            accepted_before,
            &outcome,
        );
        let position = outcome?;
        Ok(SendReceipt {
            first_sequence_id: self.first_sequence_id,
            ledger_id: position.ledger_id,
            entry_id: position.entry_id,
            message_count: self.count,
            duplicate: false,
        })
    }

    /// Waits until the earlier send of the same sequence id is persisted (a duplicate
    /// receipt) or failed (the client must send again).
    async fn wait_for_earlier(&self) -> BrokerResult<SendReceipt> {
        loop {
            let notified = self.topic.dedup_changed.notified();
            let verdict = self
                .topic
                .dedup
                .lock()
                .dedup
                .verdict(&self.producer, self.highest_sequence_id);
            match verdict {
                Verdict::Duplicate(position) => {
                    return Ok(duplicate_receipt(
                        self.first_sequence_id,
                        self.count,
                        position,
                    ))
                }
                Verdict::Store => {
                    return Err(BrokerError::Unavailable(
                        "an earlier send of this batch failed; send it again".into(),
                    ))
                }
                Verdict::InFlight => notified.await,
            }
        }
    }
}

impl Drop for PendingSend {
    fn drop(&mut self) {
        let Some((append, accepted_before)) = self.append.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let topic = self.topic.clone();
        let producer = std::mem::take(&mut self.producer);
        let highest_sequence_id = self.highest_sequence_id;
        runtime.spawn(async move {
            let outcome = append.await;
            topic.record_outcome(&producer, highest_sequence_id, accepted_before, &outcome);
        });
    }
}

fn duplicate_receipt(
    first_sequence_id: u64,
    count: u32,
    position: Option<Position>,
) -> SendReceipt {
    let position = position.unwrap_or(Position::new(0, -1));
    SendReceipt {
        first_sequence_id,
        ledger_id: position.ledger_id,
        entry_id: position.entry_id,
        message_count: count,
        duplicate: true,
    }
}

/// Counters of a topic for stats and metrics.
#[derive(Default)]
pub struct TopicCounters {
    pub messages_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub entries_in: AtomicU64,
    /// Messages, and bytes of stored batches, handed to consumers (redeliveries included).
    pub messages_out: AtomicU64,
    pub bytes_out: AtomicU64,
    /// From a send's arrival to its receipt, for sends that were stored.
    pub publish_latency: crate::latency::LatencyHistogram,
}

/// A topic's figures for the admin API.
#[derive(Debug, Clone, Serialize)]
pub struct TopicStats {
    pub topic: String,
    pub messages_in: u64,
    pub bytes_in: u64,
    pub entries_in: u64,
    pub producers: Vec<String>,
    pub ledgers: Vec<u64>,
    pub last_confirmed: String,
    pub subscriptions: BTreeMap<String, SubscriptionEntryStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubscriptionEntryStats {
    #[serde(flatten)]
    pub live: SubscriptionStats,
    pub backlog_entries: u64,
    pub mark_delete: String,
}

/// A topic served by this broker.
pub struct Topic {
    pub name: TopicName,
    pub ledger: ManagedLedger,
    meta: MetaClient,
    max_message_size_bytes: usize,
    dedup: Mutex<DedupState>,
    dedup_changed: Notify,
    producers: Mutex<HashSet<String>>,
    subscriptions: Mutex<HashMap<String, SubscriptionHandle>>,
    pub counters: TopicCounters,
    policies: Mutex<TopicPolicies>,
    /// Whether a subscription is over the backlog quota, as last checked.
    quota_exceeded: watch::Sender<bool>,
}

impl Topic {
    /// Takes a topic over: its managed ledger is already open (fencing any previous owner);
    /// restores deduplication from its snapshot and the log after it.
    pub async fn load(
        name: TopicName,
        ledger: ManagedLedger,
        meta: MetaClient,
        max_message_size_bytes: usize,
    ) -> BrokerResult<Arc<Topic>> {
        let snapshot = match meta.get(&dedup_key(ledger.name())).await? {
            Some(kv) => {
                serde_json::from_slice::<DedupSnapshot>(&kv.value).unwrap_or_else(|error| {
                    warn!(topic = %name, %error, "ignoring an unreadable deduplication snapshot");
                    DedupSnapshot::default()
                })
            }
            None => DedupSnapshot::default(),
        };
        let mut dedup = Deduplication::restore(&snapshot.producers);
        let mut covered =
            Position::new(snapshot.ledger_id, snapshot.entry_id).max(ledger.earliest());
        let end = ledger.last_confirmed();
        let mut replayed = 0u64;
        while covered < end {
            let from = Position::new(covered.ledger_id, covered.entry_id + 1);
            let entries = ledger.read(from, 256).await?;
            if entries.is_empty() {
                break;
            }
            for entry in entries {
                if let Ok(batch) = StoredBatch::decode(entry.payload) {
                    let count = batch.messages.len() as u64;
                    if count > 0 {
                        dedup.persisted(
                            &batch.producer_name,
                            batch.first_sequence_id + count - 1,
                            entry.position,
                        );
                    }
                }
                covered = entry.position;
                replayed += 1;
            }
        }
        if replayed > 0 {
            info!(topic = %name, replayed, "deduplication state rebuilt from the log");
        }
        let topic = Arc::new(Topic {
            name,
            ledger,
            meta,
            max_message_size_bytes,
            dedup: Mutex::new(DedupState {
                dedup,
                covered,
                changed: replayed > 0,
            }),
            dedup_changed: Notify::new(),
            producers: Mutex::new(HashSet::new()),
            subscriptions: Mutex::new(HashMap::new()),
            counters: TopicCounters::default(),
            policies: Mutex::new(TopicPolicies::default()),
            quota_exceeded: watch::Sender::new(false),
        });
        tokio::spawn(snapshot_dedup_periodically(Arc::downgrade(&topic)));
        Ok(topic)
    }

    pub fn is_fenced(&self) -> bool {
        self.ledger.is_fenced()
    }

    /// Registers a producer; returns the highest sequence id persisted from it (-1: none).
    pub fn add_producer(&self, name: &str) -> BrokerResult<i64> {
        if !self.producers.lock().insert(name.to_string()) {
            return Err(BrokerError::ProducerBusy(name.to_string()));
        }
        let snapshot = self.dedup.lock().dedup.snapshot();
        Ok(snapshot.get(name).map_or(-1, |&id| id as i64))
    }

    pub fn remove_producer(&self, name: &str) {
        self.producers.lock().remove(name);
    }

    /// Checks and queues a batch. Batches queued by one caller are stored in call order.
    pub fn send(
        self: &Arc<Self>,
        producer: &str,
        first_sequence_id: u64,
        messages: Vec<Message>,
    ) -> BrokerResult<SendOutcome> {
        let count = messages.len() as u32;
        if count == 0 {
            return Err(BrokerError::Protocol(
                "a batch needs at least one message".into(),
            ));
        }
        if *self.quota_exceeded.borrow() && self.backlog_policy() == Some(BacklogPolicy::Reject) {
            return Err(BrokerError::BacklogQuotaExceeded(
                self.name.namespace_path(),
            ));
        }
        let highest_sequence_id = first_sequence_id + u64::from(count) - 1;
        let batch = StoredBatch {
            producer_name: producer.to_string(),
            first_sequence_id,
            publish_time_ms: now_ms(),
            messages,
        };
        let size = batch.encoded_len();
        if size > self.max_message_size_bytes {
            return Err(BrokerError::MessageTooLarge {
                size,
                limit: self.max_message_size_bytes,
            });
        }
        let mut state = self.dedup.lock();
        let pending = |failures_at_submit, append| PendingSend {
            topic: self.clone(),
            producer: producer.to_string(),
            first_sequence_id,
            highest_sequence_id,
            count,
            failures_at_submit,
            append,
        };
        match state.dedup.verdict(producer, highest_sequence_id) {
            Verdict::Duplicate(position) => {
                return Ok(SendOutcome::Duplicate(duplicate_receipt(
                    first_sequence_id,
                    count,
                    position,
                )))
            }
            Verdict::InFlight => {
                let failures = self.ledger.append_failures();
                return Ok(SendOutcome::InFlight(pending(failures, None)));
            }
            Verdict::Store => {}
        }
        let payload = Bytes::from(batch.encode_to_vec());
        // Queued under the lock, so the order of dedup decisions is the order in the log.
        let append = self.ledger.submit_append(payload)?;
        let accepted_before = state.dedup.accept(producer, highest_sequence_id);
        drop(state);
        self.counters
            .messages_in
            .fetch_add(u64::from(count), Ordering::Relaxed);
        self.counters
            .bytes_in
            .fetch_add(size as u64, Ordering::Relaxed);
        self.counters.entries_in.fetch_add(1, Ordering::Relaxed);
        let failures = append.failures_at_submit();
        Ok(SendOutcome::Queued(pending(
            failures,
            Some((append, accepted_before)),
        )))
    }

    /// Feeds a queued append's outcome to deduplication.
    fn record_outcome(
        &self,
        producer: &str,
        highest_sequence_id: u64,
        accepted_before: Option<u64>,
        outcome: &Result<Position, ManagedLedgerError>,
    ) {
        {
            let mut state = self.dedup.lock();
            match outcome {
                Ok(position) => {
                    state
                        .dedup
                        .persisted(producer, highest_sequence_id, *position);
                    state.covered = state.covered.max(*position);
                    state.changed = true;
                }
                Err(_) => state.dedup.failed(producer, accepted_before),
            }
        }
        self.dedup_changed.notify_waiters();
    }

    /// The subscription `name`, created (with its durable cursor) if it does not exist.
    pub async fn subscription(
        &self,
        name: &str,
        kind: SubscriptionType,
        initial: InitialPosition,
        has_consumers: impl Fn(&SubscriptionHandle) -> bool,
    ) -> BrokerResult<SubscriptionHandle> {
        if let Some(existing) = self.subscriptions.lock().get(name).cloned() {
            if existing.kind() == kind {
                return Ok(existing);
            }
            if has_consumers(&existing) {
                return Err(BrokerError::SubscriptionTypeMismatch {
                    name: name.to_string(),
                    existing: type_name(existing.kind()),
                    requested: type_name(kind),
                });
            }
        }
        let state = self.ledger.open_cursor(name, initial).await?;
        let handle = SubscriptionHandle::start(
            self.ledger.clone(),
            Some(name.to_string()),
            kind,
            state,
            self.name.to_string(),
        );
        let mut subscriptions = self.subscriptions.lock();
        // Another consumer may have created it meanwhile: keep the first.
        if let Some(existing) = subscriptions.get(name) {
            if existing.kind() == kind {
                return Ok(existing.clone());
            }
        }
        subscriptions.insert(name.to_string(), handle.clone());
        Ok(handle)
    }

    /// A reader's subscription: no durable cursor, starting after `after`.
    pub fn reader(&self, after: Position) -> SubscriptionHandle {
        SubscriptionHandle::start(
            self.ledger.clone(),
            None,
            SubscriptionType::Exclusive,
            CursorState::new(after),
            self.name.to_string(),
        )
    }

    /// Deletes a subscription and its cursor.
    pub async fn delete_subscription(&self, name: &str) -> BrokerResult<()> {
        self.subscriptions.lock().remove(name);
        match self.ledger.delete_cursor(name).await {
            Ok(()) => Ok(()),
            Err(ManagedLedgerError::NoSuchCursor { .. }) => {
                Err(BrokerError::SubscriptionNotFound(name.to_string()))
            }
            Err(error) => Err(error.into()),
        }
    }

    /// The subscription `name` if it exists (its cursor may exist without a running task).
    pub fn existing_subscription(&self, name: &str) -> Option<SubscriptionHandle> {
        self.subscriptions.lock().get(name).cloned()
    }

    pub async fn stats(&self) -> TopicStats {
        let handles: Vec<(String, Option<SubscriptionHandle>)> = {
            let subscriptions = self.subscriptions.lock();
            self.ledger
                .cursor_names()
                .into_iter()
                .map(|name| {
                    let handle = subscriptions.get(&name).cloned();
                    (name, handle)
                })
                .collect()
        };
        let mut subscriptions = BTreeMap::new();
        for (name, handle) in handles {
            let live = match handle {
                Some(handle) => handle.stats().await.unwrap_or_default(),
                None => SubscriptionStats::default(),
            };
            let backlog_entries = self.ledger.backlog_entries(&name).unwrap_or(0);
            let mark_delete = self
                .ledger
                .cursor_state(&name)
                .map(|state| state.mark_delete().to_string())
                .unwrap_or_default();
            subscriptions.insert(
                name,
                SubscriptionEntryStats {
                    live,
                    backlog_entries,
                    mark_delete,
                },
            );
        }
        TopicStats {
            topic: self.name.to_string(),
            messages_in: self.counters.messages_in.load(Ordering::Relaxed),
            bytes_in: self.counters.bytes_in.load(Ordering::Relaxed),
            entries_in: self.counters.entries_in.load(Ordering::Relaxed),
            producers: self.producers.lock().iter().cloned().collect(),
            ledgers: self.ledger.ledger_ids(),
            last_confirmed: self.ledger.last_confirmed().to_string(),
            subscriptions,
        }
    }

    /// Applies the namespace's policies: retention (trimming what it no longer keeps), message
    /// TTL (expiring old entries in every subscription) and the backlog quota.
    pub async fn apply_policies(&self, policies: TopicPolicies) {
        *self.policies.lock() = policies;
        self.ledger.set_retention(policies.retention);
        if let Some(ttl) = policies.message_ttl {
            self.expire_messages(policies::ttl_cutoff_ms(ttl, now_ms()))
                .await;
        }
        if let Err(error) = self.ledger.trim().await {
            warn!(topic = %self.name, %error, "retention failed; will retry");
        }
        self.check_backlog_quota();
    }

    /// Acknowledges, in every subscription, the entries published before `cutoff_ms`.
    async fn expire_messages(&self, cutoff_ms: u64) {
        for cursor in self.ledger.cursor_names() {
            let Ok(state) = self.ledger.cursor_state(&cursor) else {
                continue;
            };
            let mark_delete = state.mark_delete();
            let through = match last_published_before(&self.ledger, mark_delete, cutoff_ms).await {
                Ok(through) => through,
                Err(error) => {
                    warn!(topic = %self.name, %cursor, %error, "message TTL check failed");
                    continue;
                }
            };
            if through <= mark_delete {
                continue;
            }
            let running = self.subscriptions.lock().get(&cursor).cloned();
            let outcome = match running {
                // The subscription's task also forgets what it holds of those entries.
                Some(handle) => handle.expire_through(through).await,
                None => self
                    .ledger
                    .ack_cumulative(&cursor, through)
                    .map_err(BrokerError::from),
            };
            match outcome {
                Ok(()) => {
                    info!(topic = %self.name, %cursor, %through, "message TTL expired entries")
                }
                Err(error) => {
                    warn!(topic = %self.name, %cursor, %error, "message TTL expiry failed")
                }
            }
        }
    }

    /// Re-evaluates the backlog quota; returns whether sends are now refused or held.
    pub fn check_backlog_quota(&self) -> bool {
        let quota = self.policies.lock().backlog_quota;
        let exceeded = policies::quota_exceeded(quota, self.ledger.max_backlog_entries());
        self.quota_exceeded.send_if_modified(|current| {
            let changed = *current != exceeded;
            *current = exceeded;
            changed
        });
        exceeded
    }

    fn backlog_policy(&self) -> Option<BacklogPolicy> {
        self.policies.lock().backlog_quota.map(|quota| quota.policy)
    }

    /// Whether producers must wait (`producer_request_hold` and over the quota): their
    /// streams stop reading sends until the quota check finds the backlog under it again.
    pub fn holds_producers(&self) -> bool {
        *self.quota_exceeded.borrow() && self.backlog_policy() == Some(BacklogPolicy::Hold)
    }

    /// Changes whenever the quota check's answer changes.
    pub fn quota_watch(&self) -> watch::Receiver<bool> {
        self.quota_exceeded.subscribe()
    }

    /// Writes the deduplication snapshot now if it changed.
    pub async fn snapshot_dedup(&self) -> BrokerResult<()> {
        let snapshot = {
            let mut state = self.dedup.lock();
            if !state.changed {
                return Ok(());
            }
            state.changed = false;
            DedupSnapshot {
                ledger_id: state.covered.ledger_id,
                entry_id: state.covered.entry_id,
                producers: state.dedup.snapshot(),
            }
        };
        let value = serde_json::to_vec(&snapshot).unwrap_or_default();
        if let Err(error) = self.meta.put(&dedup_key(self.ledger.name()), value).await {
            self.dedup.lock().changed = true;
            return Err(error.into());
        }
        Ok(())
    }

    /// Stops serving: persists cursors and the deduplication snapshot, closes the log.
    pub async fn close(&self) -> BrokerResult<()> {
        self.snapshot_dedup().await?;
        self.ledger.close().await?;
        Ok(())
    }
}

async fn snapshot_dedup_periodically(topic: std::sync::Weak<Topic>) {
    loop {
        tokio::time::sleep(DEDUP_SNAPSHOT_INTERVAL).await;
        let Some(topic) = topic.upgrade() else {
            return;
        };
        if topic.is_fenced() {
            return;
        }
        if let Err(error) = topic.snapshot_dedup().await {
            warn!(topic = %topic.name, %error, "deduplication snapshot failed; will retry");
        }
    }
}
