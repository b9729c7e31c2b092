//! A subscription: one task that reads the topic's log after its cursor, hands messages to its
//! consumers by permits (the [`Dispatcher`] decides who, [`Pending`] remembers what is out),
//! and turns acknowledgements into cursor updates. A reader is the same task without a durable
//! cursor.
//!
//! Consumers talk to the task through a bounded command channel and hear from it through
//! their own bounded event channel; the task never waits on a consumer.

use std::collections::HashMap;
use std::time::Duration;

use magnetar_proto::broker::{EntryDelivery, StoredBatch};
use magnetar_proto::prost::Message as _;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::error::{BrokerError, BrokerResult};
use super::pending::{Assigned, IndexRange, MessageRef, Pending};
use super::stored_batch::ReadBatch;
use crate::dispatch::{ConsumerSlot, Dispatcher, JoinRefused, SubscriptionType};
use crate::managed_ledger::{CursorState, ManagedLedger, ManagedLedgerResult, Position};

/// Entries read from the log per read call.
const READ_BATCH_ENTRIES: usize = 100;
/// Messages a subscription holds unacknowledged before it stops reading ahead.
const MAX_UNACKED_MESSAGES: usize = 200_000;
/// Events queued for one consumer; a consumer this far behind is disconnected (its messages
/// go to the others, or wait for it to come back).
pub const CONSUMER_EVENT_QUEUE: usize = 4096;
/// How long to wait before reading again after the log failed a read.
const READ_RETRY: Duration = Duration::from_millis(100);

/// What a consumer hears from its subscription.
#[derive(Debug)]
pub enum ConsumerEvent {
    Deliveries(Deliveries),
    /// Failover: whether this consumer is now the active one.
    Active(bool),
    /// A seek finished; what follows comes from the new position.
    SeekDone,
    /// A request failed; the consumer stays open.
    Error(BrokerError),
    /// The consumer was closed by the broker.
    Closed(BrokerError),
}

/// Entries (whole or in part) for one consumer.
#[derive(Debug, Default)]
pub struct Deliveries {
    pub entries: Vec<EntryDelivery>,
    pub message_count: u64,
    /// Bytes of the entries as stored.
    pub bytes: u64,
}

/// A consumer joining a subscription.
pub struct ConsumerLink {
    pub id: u64,
    pub name: String,
    pub priority: i32,
    pub events: mpsc::Sender<ConsumerEvent>,
}

/// Where a seek moves the subscription: everything after this position is delivered next.
#[derive(Debug, Clone, Copy)]
pub enum SeekTo {
    After(Position),
    PublishTime(u64),
}

/// A subscription's figures for stats.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SubscriptionStats {
    pub kind: String,
    pub durable: bool,
    pub consumers: Vec<String>,
    pub unacked_messages: usize,
    pub waiting_messages: usize,
    pub last_read: String,
}

enum Command {
    Join {
        link: ConsumerLink,
        reply: oneshot::Sender<BrokerResult<()>>,
    },
    Leave {
        id: u64,
    },
    Flow {
        id: u64,
        permits: u32,
    },
    Ack {
        ranges: Vec<IndexRange>,
        cumulative: bool,
    },
    Redeliver {
        id: u64,
        messages: Option<Vec<MessageRef>>,
    },
    Seek {
        to: SeekTo,
        reply: oneshot::Sender<BrokerResult<()>>,
    },
    Stats {
        reply: oneshot::Sender<SubscriptionStats>,
    },
    ExpireThrough {
        through: Position,
        reply: oneshot::Sender<BrokerResult<()>>,
    },
}

/// A handle on a running subscription; cheap to clone.
#[derive(Clone)]
pub struct SubscriptionHandle {
    commands: mpsc::Sender<Command>,
    kind: SubscriptionType,
}

pub fn type_name(kind: SubscriptionType) -> &'static str {
    match kind {
        SubscriptionType::Exclusive => "Exclusive",
        SubscriptionType::Failover => "Failover",
        SubscriptionType::Shared => "Shared",
        SubscriptionType::KeyShared => "Key_Shared",
    }
}

impl SubscriptionHandle {
    /// Starts the task of a subscription whose cursor is at `cursor_state` (durable, named
    /// `cursor`), or of a reader starting after `start` when `cursor` is `None`.
    pub fn start(
        ledger: ManagedLedger,
        cursor: Option<String>,
        kind: SubscriptionType,
        cursor_state: CursorState,
        topic: String,
    ) -> Self {
        let (commands, inbox) = mpsc::channel(1024);
        let task = SubscriptionTask {
            ledger,
            last_read: cursor_state.mark_delete(),
            cursor,
            skip: Some(cursor_state),
            dispatcher: Dispatcher::new(kind),
            pending: Pending::new(),
            consumers: HashMap::new(),
            active: None,
            retry_read_at: None,
            topic,
            ever_joined: false,
        };
        tokio::spawn(task.run(inbox));
        Self { commands, kind }
    }

    pub fn kind(&self) -> SubscriptionType {
        self.kind
    }

    async fn send(&self, command: Command) -> BrokerResult<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| BrokerError::Unavailable("the subscription is closing".into()))
    }

    pub async fn join(&self, link: ConsumerLink) -> BrokerResult<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Join { link, reply }).await?;
        answer
            .await
            .unwrap_or_else(|_| Err(BrokerError::Unavailable("the subscription closed".into())))
    }

    pub async fn leave(&self, id: u64) {
        let _ = self.send(Command::Leave { id }).await;
    }

    pub async fn flow(&self, id: u64, permits: u32) -> BrokerResult<()> {
        self.send(Command::Flow { id, permits }).await
    }

    /// Individual acknowledgements of `ranges`, or with `cumulative` of everything through the
    /// one message `ranges` names.
    pub async fn ack(&self, ranges: Vec<IndexRange>, cumulative: bool) -> BrokerResult<()> {
        if cumulative
            && matches!(
                self.kind,
                SubscriptionType::Shared | SubscriptionType::KeyShared
            )
        {
            return Err(BrokerError::CumulativeAckNotAllowed(type_name(self.kind)));
        }
        if cumulative && !matches!(ranges.as_slice(), [only] if only.first == only.last) {
            return Err(BrokerError::Protocol(
                "a cumulative acknowledgement names exactly one message".into(),
            ));
        }
        if ranges.iter().any(|range| range.first > range.last) {
            return Err(BrokerError::Protocol(
                "an acknowledged range ends before it starts".into(),
            ));
        }
        self.send(Command::Ack { ranges, cumulative }).await
    }

    pub async fn redeliver(&self, id: u64, messages: Option<Vec<MessageRef>>) -> BrokerResult<()> {
        self.send(Command::Redeliver { id, messages }).await
    }

    pub async fn seek(&self, to: SeekTo) -> BrokerResult<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Seek { to, reply }).await?;
        answer
            .await
            .unwrap_or_else(|_| Err(BrokerError::Unavailable("the subscription closed".into())))
    }

    pub async fn stats(&self) -> Option<SubscriptionStats> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Stats { reply }).await.ok()?;
        answer.await.ok()
    }

    /// Message TTL: acknowledges every entry up to and including `through`, whether waiting
    /// or out at a consumer (a consumer's later ack of one is ignored).
    pub async fn expire_through(&self, through: Position) -> BrokerResult<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::ExpireThrough { through, reply }).await?;
        answer
            .await
            .unwrap_or_else(|_| Err(BrokerError::Unavailable("the subscription closed".into())))
    }

    /// Whether the task has stopped (a reader whose consumer left).
    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }
}

/// The last entry after `after` published before `time_ms` (`after` itself when there is
/// none): where a cursor goes to deliver next what was published from `time_ms` on. Entries
/// are in publish order, so the scan stops at the first one that is not older.
pub async fn last_published_before(
    ledger: &ManagedLedger,
    after: Position,
    time_ms: u64,
) -> ManagedLedgerResult<Position> {
    let mut last = after;
    let end = ledger.last_confirmed();
    while last < end {
        let from = Position::new(last.ledger_id, last.entry_id + 1);
        let entries = ledger.read(from, READ_BATCH_ENTRIES).await?;
        if entries.is_empty() {
            break;
        }
        for entry in entries {
            // An entry that is not a batch has no publish time: it counts as old, so it never
            // holds a cursor back.
            let published = StoredBatch::decode(entry.payload)
                .map(|batch| batch.publish_time_ms)
                .unwrap_or(0);
            if published >= time_ms {
                return Ok(last);
            }
            last = entry.position;
        }
    }
    Ok(last)
}

/// The position before `position`: what a cursor's mark-delete must be for `position` to be
/// delivered next.
pub fn before(position: Position) -> Position {
    if position.entry_id > 0 {
        Position::new(position.ledger_id, position.entry_id - 1)
    } else {
        Position::before_ledger(position.ledger_id)
    }
}

struct ConsumerEntry {
    name: String,
    events: mpsc::Sender<ConsumerEvent>,
}

struct SubscriptionTask {
    ledger: ManagedLedger,
    /// The durable cursor's name; `None` for a reader.
    cursor: Option<String>,
    /// The last entry read from the log.
    last_read: Position,
    /// The cursor as it was when the task started (or last seeked): entries it acknowledged
    /// individually are skipped when read.
    skip: Option<CursorState>,
    dispatcher: Dispatcher,
    pending: Pending,
    consumers: HashMap<u64, ConsumerEntry>,
    /// Failover: the consumer told it is active.
    active: Option<u64>,
    retry_read_at: Option<tokio::time::Instant>,
    topic: String,
    /// A reader stops when its consumer leaves, not before it joined.
    ever_joined: bool,
}

impl SubscriptionTask {
    async fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        loop {
            self.read_and_dispatch().await;
            let want_more = self.wants_to_read();
            let retry_at = self.retry_read_at;
            let ledger = self.ledger.clone();
            let last_read = self.last_read;
            tokio::select! {
                command = inbox.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                _ = ledger.wait_for_entry_after(last_read, Duration::from_secs(30)),
                    if want_more && retry_at.is_none() => {}
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)),
                    if retry_at.is_some() => {
                    self.retry_read_at = None;
                }
            }
            if self.cursor.is_none() && self.ever_joined && self.consumers.is_empty() {
                // A reader lives as long as its one consumer.
                break;
            }
        }
        debug!(topic = %self.topic, "subscription task stopped");
    }

    fn wants_to_read(&self) -> bool {
        self.dispatcher.any_permits()
            && self.pending.waiting_messages() < READ_BATCH_ENTRIES
            && self.pending.unacked_messages() < MAX_UNACKED_MESSAGES
    }

    /// Dispatches what is waiting, then reads and dispatches more while consumers have
    /// permits and the log has entries.
    async fn read_and_dispatch(&mut self) {
        loop {
            self.dispatch();
            if !self.wants_to_read()
                || self.retry_read_at.is_some()
                || self.ledger.last_confirmed() <= self.last_read
            {
                return;
            }
            let from = Position::new(self.last_read.ledger_id, self.last_read.entry_id + 1);
            let entries = match self.ledger.read(from, READ_BATCH_ENTRIES).await {
                Ok(entries) => entries,
                Err(error) => {
                    warn!(topic = %self.topic, %error, "reading the log failed; retrying");
                    self.retry_read_at = Some(tokio::time::Instant::now() + READ_RETRY);
                    return;
                }
            };
            if entries.is_empty() {
                // The log's end is not readable yet (its last entries are still being
                // confirmed to the bookies): wait a little rather than spin.
                self.retry_read_at = Some(tokio::time::Instant::now() + Duration::from_millis(1));
                return;
            }
            // Only Key_Shared needs each message's key.
            let key_shared = self.dispatcher.kind() == SubscriptionType::KeyShared;
            for entry in entries {
                self.last_read = entry.position;
                if self
                    .skip
                    .as_ref()
                    .is_some_and(|cursor| cursor.is_acked(entry.position))
                {
                    continue;
                }
                match ReadBatch::parse(entry.payload, key_shared) {
                    Ok(batch) => {
                        if !self.pending.add(entry.position, batch) {
                            self.ack_entry(entry.position);
                        }
                    }
                    Err(error) => {
                        // Not written by a broker (or damaged): skip it rather than block
                        // the subscription forever.
                        warn!(topic = %self.topic, position = %entry.position, %error,
                            "skipping an entry that is not a message batch");
                        self.ack_entry(entry.position);
                    }
                }
            }
        }
    }

    fn dispatch(&mut self) {
        let assigned = self.pending.dispatch(&mut self.dispatcher);
        if assigned.is_empty() {
            return;
        }
        let mut by_consumer: HashMap<u64, Deliveries> = HashMap::new();
        for Assigned {
            consumer,
            position,
            batch,
            indexes,
            redelivery_counts,
            message_count,
        } in assigned
        {
            let deliveries = by_consumer.entry(consumer).or_default();
            deliveries.message_count += u64::from(message_count);
            deliveries.bytes += batch.len() as u64;
            deliveries.entries.push(EntryDelivery {
                ledger_id: position.ledger_id,
                entry_id: position.entry_id,
                batch,
                indexes: indexes.unwrap_or_default(),
                redelivery_counts,
            });
        }
        for (consumer, deliveries) in by_consumer {
            let Some(entry) = self.consumers.get(&consumer) else {
                continue;
            };
            if entry
                .events
                .try_send(ConsumerEvent::Deliveries(deliveries))
                .is_err()
            {
                warn!(topic = %self.topic, consumer = %entry.name,
                    "consumer is not reading its stream; disconnecting it");
                self.remove_consumer(consumer);
            }
        }
    }

    fn ack_entry(&mut self, position: Position) {
        if let Some(cursor) = &self.cursor {
            if let Err(error) = self.ledger.ack(cursor, position) {
                warn!(topic = %self.topic, %error, "acknowledging in the cursor failed");
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Join { link, reply } => {
                let result = self.join(link);
                let _ = reply.send(result);
                self.update_active();
            }
            Command::Leave { id } => {
                self.remove_consumer(id);
            }
            Command::Flow { id, permits } => self.dispatcher.add_permits(id, permits),
            Command::Ack { ranges, cumulative } => self.ack(ranges, cumulative),
            Command::Redeliver { id, messages } => {
                self.pending.redeliver(id, messages.as_deref());
            }
            Command::Seek { to, reply } => {
                let result = self.seek(to).await;
                let _ = reply.send(result);
            }
            Command::ExpireThrough { through, reply } => {
                let _ = reply.send(self.expire_through(through));
            }
            Command::Stats { reply } => {
                let _ = reply.send(SubscriptionStats {
                    kind: type_name(self.dispatcher.kind()).to_string(),
                    durable: self.cursor.is_some(),
                    consumers: self.consumers.values().map(|c| c.name.clone()).collect(),
                    unacked_messages: self.pending.unacked_messages(),
                    waiting_messages: self.pending.waiting_messages(),
                    last_read: self.last_read.to_string(),
                });
            }
        }
    }

    fn join(&mut self, link: ConsumerLink) -> BrokerResult<()> {
        let joins_others = !self.consumers.is_empty();
        self.dispatcher
            .add_consumer(ConsumerSlot {
                id: link.id,
                name: link.name.clone(),
                priority: link.priority,
                permits: 0,
            })
            .map_err(|refused| match refused {
                JoinRefused::ExclusiveTaken => BrokerError::ConsumerBusy(
                    self.cursor.clone().unwrap_or_else(|| "reader".into()),
                ),
                JoinRefused::DuplicateId(id) => {
                    BrokerError::Protocol(format!("consumer id {id} is already connected"))
                }
            })?;
        self.ever_joined = true;
        if joins_others && self.dispatcher.kind() == SubscriptionType::KeyShared {
            self.pending.hold_after(link.id, self.last_read);
        }
        self.consumers.insert(
            link.id,
            ConsumerEntry {
                name: link.name,
                events: link.events,
            },
        );
        Ok(())
    }

    fn remove_consumer(&mut self, id: u64) {
        if self.consumers.remove(&id).is_none() {
            return;
        }
        self.dispatcher.remove_consumer(id);
        self.pending.release(id);
        self.pending.redeliver(id, None);
        self.update_active();
    }

    /// Failover: tells consumers when the active one changes; the old one's unacknowledged
    /// messages go to the new one.
    fn update_active(&mut self) {
        if self.dispatcher.kind() != SubscriptionType::Failover {
            return;
        }
        let now_active = self.dispatcher.active_consumer().map(|c| c.id);
        if now_active == self.active {
            return;
        }
        if let Some(previous) = self.active {
            self.pending.redeliver(previous, None);
            if let Some(entry) = self.consumers.get(&previous) {
                let _ = entry.events.try_send(ConsumerEvent::Active(false));
            }
        }
        if let Some(current) = now_active {
            if let Some(entry) = self.consumers.get(&current) {
                let _ = entry.events.try_send(ConsumerEvent::Active(true));
            }
        }
        self.active = now_active;
    }

    fn ack(&mut self, ranges: Vec<IndexRange>, cumulative: bool) {
        if cumulative {
            let Some(only) = ranges.first() else {
                return;
            };
            let through = MessageRef {
                position: only.position,
                index: only.last,
            };
            self.pending.ack_through(through);
            let mark_delete = if self.pending.contains(through.position) {
                before(through.position)
            } else {
                through.position
            };
            if let Some(cursor) = &self.cursor {
                if let Err(error) = self.ledger.ack_cumulative(cursor, mark_delete) {
                    warn!(topic = %self.topic, %error, "cumulative acknowledgement failed");
                }
            }
            return;
        }
        for range in ranges {
            if let Some(position) = self.pending.ack_range(range) {
                self.ack_entry(position);
            }
        }
    }

    async fn seek(&mut self, to: SeekTo) -> BrokerResult<()> {
        let after = match to {
            SeekTo::After(position) => position,
            SeekTo::PublishTime(time_ms) => {
                last_published_before(&self.ledger, self.ledger.earliest(), time_ms).await?
            }
        };
        if let Some(cursor) = &self.cursor {
            self.ledger.reset_cursor(cursor, after)?;
        }
        self.pending.clear();
        self.last_read = after;
        self.skip = None;
        self.retry_read_at = None;
        for entry in self.consumers.values() {
            let _ = entry.events.try_send(ConsumerEvent::SeekDone);
        }
        Ok(())
    }

    fn expire_through(&mut self, through: Position) -> BrokerResult<()> {
        let Some(cursor) = &self.cursor else {
            return Ok(());
        };
        self.pending.ack_through(MessageRef {
            position: through,
            index: u32::MAX,
        });
        self.ledger.ack_cumulative(cursor, through)?;
        if self.last_read < through {
            self.last_read = through;
        }
        Ok(())
    }
}
