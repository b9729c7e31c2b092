//! Consumers and readers: flow control by permits, acknowledgements, negative
//! acknowledgements with a redelivery delay, an optional ack timeout, a dead-letter topic, and
//! reconnection after a broker loss or a move of the topic.
//!
//! Each partition has one task that owns its stream; every partition's messages meet in one
//! queue the application receives from. The task grants the broker `receiver_queue` permits
//! and grants more as the application takes messages.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::sync::PoisonError;
use std::time::Duration;

use magnetar_proto::broker::{
    consume_request, consume_response, seek, Ack, AckRange, ConsumeRequest, ConsumeResponse,
    ErrorCode, Flow, InitialPosition as WireInitialPosition, Redeliver, Seek, Subscribe,
    SubscriptionType as WireSubscriptionType,
};
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tracing::{debug, warn};

use crate::connection::{partition_names, Backoff, Client};
use crate::error::{ClientError, Result};
use crate::message::{MessageId, OutgoingMessage, ReceivedMessage};
use crate::producer::Producer;
use crate::unpack::{EntryMessages, UnpackError};

/// How a subscription shares messages among its consumers (Pulsar's four types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionType {
    Exclusive,
    Failover,
    Shared,
    KeyShared,
}

impl SubscriptionType {
    fn to_wire(self) -> WireSubscriptionType {
        match self {
            SubscriptionType::Exclusive => WireSubscriptionType::Exclusive,
            SubscriptionType::Failover => WireSubscriptionType::Failover,
            SubscriptionType::Shared => WireSubscriptionType::Shared,
            SubscriptionType::KeyShared => WireSubscriptionType::KeyShared,
        }
    }
}

/// Where a new subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialPosition {
    Latest,
    Earliest,
}

/// Messages delivered this many times without an acknowledgement go to a dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetterPolicy {
    pub max_redeliveries: u32,
    /// Default: `<topic>-<subscription>-DLQ`.
    pub topic: Option<String>,
}

#[derive(Clone)]
struct Settings {
    subscription: String,
    kind: SubscriptionType,
    initial: InitialPosition,
    name: String,
    priority: i32,
    receiver_queue: u32,
    ack_timeout: Option<Duration>,
    nack_delay: Duration,
    dead_letter: Option<DeadLetterPolicy>,
    non_durable: bool,
    start: Option<MessageId>,
    start_inclusive: bool,
    start_publish_time_ms: u64,
}

/// Configures a consumer; `subscribe()` connects it.
pub struct ConsumerBuilder {
    client: Client,
    topic: String,
    settings: Settings,
}

impl ConsumerBuilder {
    pub(crate) fn new(client: Client, topic: &str, subscription: &str) -> Self {
        Self {
            client,
            topic: topic.to_string(),
            settings: Settings {
                subscription: subscription.to_string(),
                kind: SubscriptionType::Exclusive,
                initial: InitialPosition::Latest,
                name: String::new(),
                priority: 0,
                receiver_queue: 1000,
                ack_timeout: None,
                nack_delay: Duration::from_secs(1),
                dead_letter: None,
                non_durable: false,
                start: None,
                start_inclusive: false,
                start_publish_time_ms: 0,
            },
        }
    }

    pub fn subscription_type(mut self, kind: SubscriptionType) -> Self {
        self.settings.kind = kind;
        self
    }

    pub fn initial_position(mut self, initial: InitialPosition) -> Self {
        self.settings.initial = initial;
        self
    }

    /// The consumer's name: Failover orders consumers by priority, then name; Key_Shared
    /// gives a consumer that reconnects under its name its keys back.
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.settings.name = name.into();
        self
    }

    /// Failover: lower is preferred.
    pub fn priority_level(mut self, priority: i32) -> Self {
        self.settings.priority = priority;
        self
    }

    /// Messages the broker may send ahead of the application.
    pub fn receiver_queue_size(mut self, messages: u32) -> Self {
        self.settings.receiver_queue = messages.max(1);
        self
    }

    /// Redeliver a message not acknowledged this long after it was received.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.settings.ack_timeout = Some(timeout);
        self
    }

    /// How long after a negative acknowledgement the message is delivered again.
    pub fn negative_ack_redelivery_delay(mut self, delay: Duration) -> Self {
        self.settings.nack_delay = delay;
        self
    }

    pub fn dead_letter_policy(mut self, policy: DeadLetterPolicy) -> Self {
        self.settings.dead_letter = Some(policy);
        self
    }

    pub async fn subscribe(self) -> Result<Consumer> {
        if self.settings.subscription.is_empty() && !self.settings.non_durable {
            return Err(ClientError::InvalidArgument(
                "a subscription needs a name".into(),
            ));
        }
        Consumer::start(self.client, self.topic, self.settings).await
    }
}

/// Configures a reader: a consumer without a durable subscription, starting at a message id,
/// the earliest or latest message, or a publish time.
pub struct ReaderBuilder {
    inner: ConsumerBuilder,
}

impl ReaderBuilder {
    pub(crate) fn new(client: Client, topic: &str) -> Self {
        let mut inner = ConsumerBuilder::new(client, topic, "");
        inner.settings.non_durable = true;
        inner.settings.start = Some(MessageId::EARLIEST);
        Self { inner }
    }

    /// Start at this message (exclusive unless `start_inclusive`), or at
    /// [`MessageId::EARLIEST`] / [`MessageId::LATEST`].
    pub fn start_message_id(mut self, id: MessageId) -> Self {
        self.inner.settings.start = Some(id);
        self
    }

    pub fn start_inclusive(mut self, inclusive: bool) -> Self {
        self.inner.settings.start_inclusive = inclusive;
        self
    }

    /// Start at the first message published at or after this time.
    pub fn start_publish_time_ms(mut self, time_ms: u64) -> Self {
        self.inner.settings.start_publish_time_ms = time_ms.max(1);
        self
    }

    pub fn receiver_queue_size(mut self, messages: u32) -> Self {
        self.inner = self.inner.receiver_queue_size(messages);
        self
    }

    pub async fn create(self) -> Result<Reader> {
        Ok(Reader {
            consumer: Consumer::start(self.inner.client, self.inner.topic, self.inner.settings)
                .await?,
        })
    }
}

/// A reader: `next()` returns the topic's messages in order from its start.
pub struct Reader {
    consumer: Consumer,
}

impl Reader {
    pub async fn next(&self) -> Result<ReceivedMessage> {
        self.consumer.receive().await
    }

    /// Waits at most `timeout` for the next message.
    pub async fn next_timeout(&self, timeout: Duration) -> Result<Option<ReceivedMessage>> {
        self.consumer.receive_timeout(timeout).await
    }

    pub async fn seek(&self, id: MessageId) -> Result<()> {
        self.consumer.seek(id).await
    }

    pub async fn seek_publish_time(&self, time_ms: u64) -> Result<()> {
        self.consumer.seek_publish_time(time_ms).await
    }
}

/// A message with the seek generation of its partition when it arrived.
type Stamped = (u32, ReceivedMessage);

/// Most deliveries `receive` takes off the channel at once.
const RECEIVE_BATCH: usize = 256;

enum Command {
    /// This message and every earlier one.
    AckCumulative(MessageId),
    Nack(MessageId),
    Seek(seek::Target, oneshot::Sender<Result<()>>),
}

/// Individual acknowledgements waiting for the partition's task. An acknowledgement costs the
/// application a push under an uncontended lock; the task is woken when the list stops being
/// empty and sends what gathered as ranges.
type AckQueue = Arc<std::sync::Mutex<Vec<MessageId>>>;

fn take_acks(queue: &AckQueue) -> Vec<MessageId> {
    std::mem::take(&mut *queue.lock().unwrap_or_else(PoisonError::into_inner))
}

struct PartitionHandle {
    commands: mpsc::Sender<Command>,
    acks: AckQueue,
    taken: Arc<AtomicU32>,
    wake: Arc<Notify>,
    /// Taken messages that make it worth granting permits again.
    permit_batch: u32,
}

/// A consumer of one subscription (on every partition of a partitioned topic).
pub struct Consumer {
    topic: String,
    kind: SubscriptionType,
    partitions: Vec<PartitionHandle>,
    received: Mutex<mpsc::UnboundedReceiver<Result<Stamped>>>,
    /// Messages already taken off `received` and not yet handed out: `receive` takes up to
    /// [`RECEIVE_BATCH`] at a time, so most calls are one uncontended lock and a pop.
    ready: std::sync::Mutex<VecDeque<Result<Stamped>>>,
    /// Messages of a partition before a seek's completion are dropped: they carry an older
    /// generation.
    generations: Arc<Vec<AtomicU32>>,
}

impl Consumer {
    async fn start(client: Client, topic: String, settings: Settings) -> Result<Consumer> {
        let partitions = client.partitions(&topic).await?;
        let topics: Vec<(String, i32)> = if partitions == 0 {
            vec![(topic.clone(), -1)]
        } else {
            partition_names(&topic, partitions)
                .into_iter()
                .zip(0..)
                .collect()
        };
        let (deliver, received) = mpsc::unbounded_channel();
        let generations: Arc<Vec<AtomicU32>> =
            Arc::new(topics.iter().map(|_| AtomicU32::new(0)).collect());
        let mut handles = Vec::new();
        for (slot, (partition_topic, partition)) in topics.into_iter().enumerate() {
            let taken = Arc::new(AtomicU32::new(0));
            let wake = Arc::new(Notify::new());
            let acks = AckQueue::default();
            let (commands, inbox) = mpsc::channel(1024);
            let mut task = PartitionTask {
                client: client.clone(),
                topic_name: Arc::from(partition_topic.as_str()),
                topic: partition_topic,
                parent_topic: topic.clone(),
                partition,
                slot,
                settings: settings.clone(),
                deliver: deliver.clone(),
                taken: taken.clone(),
                wake: wake.clone(),
                acks: acks.clone(),
                granted_since: 0,
                nacked: Vec::new(),
                unacked: HashMap::new(),
                dead_letter: None,
                generations: generations.clone(),
                seek_waiter: None,
                skip_before: if settings.non_durable {
                    skip_filter(settings.start, settings.start_inclusive)
                } else {
                    None
                },
            };
            let connection = task.connect().await?;
            tokio::spawn(task.run(connection, inbox));
            handles.push(PartitionHandle {
                commands,
                acks,
                taken,
                wake,
                permit_batch: permit_batch(&settings),
            });
        }
        Ok(Consumer {
            topic,
            kind: settings.kind,
            partitions: handles,
            received: Mutex::new(received),
            ready: std::sync::Mutex::new(VecDeque::new()),
            generations,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn slot_of(&self, id: &MessageId) -> usize {
        if id.partition < 0 {
            0
        } else {
            (id.partition as usize).min(self.partitions.len() - 1)
        }
    }

    /// The next message.
    pub async fn receive(&self) -> Result<ReceivedMessage> {
        loop {
            let next = match self.take_ready() {
                Some(next) => Some(next),
                None => self.receive_more().await,
            };
            match next {
                Some(Ok((generation, message))) => {
                    if let Some(message) = self.accept(generation, message) {
                        return Ok(message);
                    }
                }
                Some(Err(error)) => return Err(error),
                None => return Err(ClientError::Closed),
            }
        }
    }

    fn take_ready(&self) -> Option<Result<Stamped>> {
        self.ready
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    /// Waits for deliveries; returns the first and keeps the rest ready. Cancel-safe: nothing
    /// is taken off the channel until the wait is over.
    async fn receive_more(&self) -> Option<Result<Stamped>> {
        let mut received = self.received.lock().await;
        // Another caller may have filled `ready` while this one waited for the lock.
        if let Some(next) = self.take_ready() {
            return Some(next);
        }
        let first = received.recv().await?;
        let mut ready = self.ready.lock().unwrap_or_else(PoisonError::into_inner);
        while ready.len() + 1 < RECEIVE_BATCH {
            match received.try_recv() {
                Ok(next) => ready.push_back(next),
                Err(_) => break,
            }
        }
        Some(first)
    }

    /// The next message, or `None` after `timeout`.
    pub async fn receive_timeout(&self, timeout: Duration) -> Result<Option<ReceivedMessage>> {
        match tokio::time::timeout(timeout, self.receive()).await {
            Ok(result) => result.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Counts the message as taken (for permits) and drops it when a seek made it stale.
    fn accept(&self, generation: u32, message: ReceivedMessage) -> Option<ReceivedMessage> {
        let slot = self.slot_of(&message.id);
        let handle = &self.partitions[slot];
        // The task is woken only when a grant is due, not for every message.
        if handle.taken.fetch_add(1, Ordering::Relaxed) + 1 >= handle.permit_batch {
            handle.wake.notify_one();
        }
        if generation != self.generations[slot].load(Ordering::Acquire) {
            return None;
        }
        Some(message)
    }

    async fn command(&self, slot: usize, command: Command) -> Result<()> {
        self.partitions[slot]
            .commands
            .send(command)
            .await
            .map_err(|_| ClientError::Closed)
    }

    pub async fn ack(&self, message: &ReceivedMessage) -> Result<()> {
        self.ack_id(message.id).await
    }

    pub async fn ack_id(&self, id: MessageId) -> Result<()> {
        let partition = &self.partitions[self.slot_of(&id)];
        if partition.commands.is_closed() {
            return Err(ClientError::Closed);
        }
        let first = {
            let mut acks = partition
                .acks
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            acks.push(id);
            acks.len() == 1
        };
        if first {
            partition.wake.notify_one();
        }
        Ok(())
    }

    /// Acknowledges this message and every earlier one (Exclusive and Failover only).
    pub async fn ack_cumulative(&self, message: &ReceivedMessage) -> Result<()> {
        if matches!(
            self.kind,
            SubscriptionType::Shared | SubscriptionType::KeyShared
        ) {
            return Err(ClientError::Broker {
                code: ErrorCode::CumulativeAckNotAllowed,
                message: "cumulative acknowledgement is not allowed on Shared or Key_Shared subscriptions; acknowledge each message".into(),
            });
        }
        self.command(
            self.slot_of(&message.id),
            Command::AckCumulative(message.id),
        )
        .await
    }

    /// The message is delivered again after the negative-ack delay.
    pub async fn nack(&self, message: &ReceivedMessage) -> Result<()> {
        self.command(self.slot_of(&message.id), Command::Nack(message.id))
            .await
    }

    /// Moves the subscription: the next message received is `id` (or the first message after
    /// [`MessageId::EARLIEST`], or the next published after [`MessageId::LATEST`]).
    pub async fn seek(&self, id: MessageId) -> Result<()> {
        self.seek_to(seek::Target::MessageId(id.to_wire())).await
    }

    /// Moves the subscription to the first message published at or after `time_ms`.
    pub async fn seek_publish_time(&self, time_ms: u64) -> Result<()> {
        self.seek_to(seek::Target::PublishTimeMs(time_ms)).await
    }

    async fn seek_to(&self, target: seek::Target) -> Result<()> {
        for slot in 0..self.partitions.len() {
            let (reply, answer) = oneshot::channel();
            self.command(slot, Command::Seek(target, reply)).await?;
            answer.await.map_err(|_| ClientError::Closed)??;
        }
        Ok(())
    }
}

struct Connection {
    requests: mpsc::Sender<ConsumeRequest>,
    responses: Streaming<ConsumeResponse>,
}

struct PartitionTask {
    client: Client,
    topic: String,
    /// The topic as each received message carries it (shared, not copied per message).
    topic_name: Arc<str>,
    parent_topic: String,
    partition: i32,
    slot: usize,
    settings: Settings,
    deliver: mpsc::UnboundedSender<Result<Stamped>>,
    taken: Arc<AtomicU32>,
    wake: Arc<Notify>,
    acks: AckQueue,
    /// Messages taken by the application since permits were last granted.
    granted_since: u32,
    nacked: Vec<(Instant, MessageId)>,
    /// Received, not acknowledged: when (for the ack timeout).
    unacked: HashMap<MessageId, Instant>,
    dead_letter: Option<Producer>,
    generations: Arc<Vec<AtomicU32>>,
    seek_waiter: Option<oneshot::Sender<Result<()>>>,
    /// Messages before this id (or at it, unless inclusive) are skipped.
    skip_before: Option<(MessageId, bool)>,
}

/// The skip filter for a start or seek at `id`: none for the earliest or latest position.
fn skip_filter(id: Option<MessageId>, inclusive: bool) -> Option<(MessageId, bool)> {
    id.filter(|id| id.ledger_id != 0 && id.ledger_id != u64::MAX)
        .map(|id| (id, inclusive))
}

/// Permits are granted again once half the receiver queue has been taken.
fn permit_batch(settings: &Settings) -> u32 {
    (settings.receiver_queue / 2).max(1)
}

/// How long a consumer that is gone waits for the broker to end its stream.
const FINISH_WAIT: Duration = Duration::from_secs(5);

/// The most message ids one acknowledgement request carries.
const MAX_ACKS_PER_REQUEST: usize = 4096;
/// The most commands the task handles before it looks at the broker's responses again.
const COMMANDS_PER_WAKE: usize = 64;

/// An entry no broker wrote (the broker checks an entry's framing before it sends it): what
/// cannot be unpacked of it is not delivered.
fn unpack_failed(topic: &str, (ledger_id, entry_id): (u64, i64), error: &UnpackError) {
    warn!(topic, ledger_id, entry_id, %error, "dropping what cannot be unpacked of a delivered entry");
}

/// Individual acknowledgements as runs of consecutive messages of one entry: an application
/// acknowledging in order sends one range per entry instead of an id per message.
fn ack_ranges(ids: &[MessageId]) -> Vec<AckRange> {
    let mut ranges: Vec<AckRange> = Vec::new();
    for id in ids {
        let index = id.batch_index.max(0) as u32;
        match ranges.last_mut() {
            Some(run)
                if run.ledger_id == id.ledger_id
                    && run.entry_id == id.entry_id
                    && run.last_index.checked_add(1) == Some(index) =>
            {
                run.last_index = index;
            }
            _ => ranges.push(AckRange {
                ledger_id: id.ledger_id,
                entry_id: id.entry_id,
                first_index: index,
                last_index: index,
            }),
        }
    }
    ranges
}

fn consume_request(kind: consume_request::Kind) -> ConsumeRequest {
    ConsumeRequest { kind: Some(kind) }
}

impl PartitionTask {
    async fn connect(&mut self) -> Result<Connection> {
        let (address, _) = self.client.lookup(&self.topic).await?;
        let mut broker = self.client.broker(&address).await?;
        let (requests, outbound) = mpsc::channel(1024);
        let settings = &self.settings;
        let start_message_id = settings.start.map(|id| {
            let mut wire = id.to_wire();
            wire.partition = self.partition;
            wire
        });
        let subscribe = Subscribe {
            topic: self.topic.clone(),
            subscription: settings.subscription.clone(),
            subscription_type: settings.kind.to_wire() as i32,
            initial_position: match settings.initial {
                InitialPosition::Latest => WireInitialPosition::Latest,
                InitialPosition::Earliest => WireInitialPosition::Earliest,
            } as i32,
            consumer_name: settings.name.clone(),
            priority_level: settings.priority,
            non_durable: settings.non_durable,
            start_message_id: if settings.non_durable {
                start_message_id
            } else {
                None
            },
            start_publish_time_ms: settings.start_publish_time_ms,
            start_inclusive: settings.start_inclusive,
        };
        let _ = requests
            .send(consume_request(consume_request::Kind::Subscribe(subscribe)))
            .await;
        let mut responses = match broker.consume(ReceiverStream::new(outbound)).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                self.client.drop_connection(&address);
                return Err(ClientError::Unreachable {
                    address,
                    reason: status.message().to_string(),
                });
            }
        };
        match responses.message().await {
            Ok(Some(ConsumeResponse {
                kind: Some(consume_response::Kind::Subscribed(_)),
            })) => {}
            Ok(Some(ConsumeResponse {
                kind: Some(consume_response::Kind::Closed(error)),
            })) => return Err(ClientError::from_wire(&error)),
            Ok(_) => return Err(ClientError::Closed),
            Err(status) => {
                self.client.drop_connection(&address);
                return Err(ClientError::Unreachable {
                    address,
                    reason: status.message().to_string(),
                });
            }
        }
        let _ = requests
            .send(consume_request(consume_request::Kind::Flow(Flow {
                permits: self.settings.receiver_queue,
            })))
            .await;
        self.granted_since = 0;
        self.taken.store(0, Ordering::Relaxed);
        // Whatever was out at this consumer is redelivered by the broker.
        self.unacked.clear();
        Ok(Connection {
            requests,
            responses,
        })
    }

    async fn reconnect(&mut self) -> Option<Connection> {
        let mut backoff = Backoff::new();
        loop {
            backoff.wait().await;
            if self.deliver.is_closed() {
                return None;
            }
            match self.connect().await {
                Ok(connection) => {
                    debug!(topic = %self.topic, "consumer reconnected");
                    return Some(connection);
                }
                Err(error)
                    if error.is_retryable() || error.code() == Some(ErrorCode::ConsumerBusy) =>
                {
                    debug!(topic = %self.topic, %error, "consumer reconnect failed; retrying")
                }
                Err(error) => {
                    warn!(topic = %self.topic, %error, "consumer cannot reconnect");
                    let _ = self.deliver.send(Err(error));
                    return None;
                }
            }
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        let nack = self.nacked.iter().map(|(due, _)| *due).min();
        let timeout = self.settings.ack_timeout.and_then(|timeout| {
            self.unacked
                .values()
                .min()
                .map(|received| *received + timeout)
        });
        match (nack, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    async fn run(mut self, mut connection: Connection, mut inbox: mpsc::Receiver<Command>) {
        let mut backoff = Backoff::new();
        loop {
            let timer = self.next_timer();
            let wake = self.wake.clone();
            let broken = tokio::select! {
                response = connection.responses.message() => match response {
                    Ok(Some(ConsumeResponse { kind: Some(kind) })) => !self.handle(kind, &connection).await,
                    Ok(_) | Err(_) => true,
                },
                command = inbox.recv() => match command {
                    Some(command) => !self.commands(command, &mut inbox, &connection).await,
                    None => {
                        self.finish(connection).await;
                        return;
                    }
                },
                _ = wake.notified() => {
                    !(self.send_acks(&connection).await && self.grant_permits(&connection).await)
                }
                _ = tokio::time::sleep_until(timer.unwrap_or_else(Instant::now)), if timer.is_some() => {
                    !self.redeliver_due(&connection).await
                }
            };
            if self.deliver.is_closed() {
                if !broken {
                    self.finish(connection).await;
                }
                return;
            }
            if broken {
                // End the old stream first, so the broker lets the consumer go (an Exclusive
                // subscription refuses a second consumer while the first is attached).
                let (ended, _) = mpsc::channel(1);
                drop(std::mem::replace(&mut connection.requests, ended));
                match self.reconnect().await {
                    Some(fresh) => {
                        connection = fresh;
                        backoff.reset();
                    }
                    None => return,
                }
            }
        }
    }

    async fn grant_permits(&mut self, connection: &Connection) -> bool {
        let taken = self.taken.swap(0, Ordering::Relaxed);
        self.granted_since += taken;
        if self.granted_since >= permit_batch(&self.settings) {
            let permits = std::mem::take(&mut self.granted_since);
            return connection
                .requests
                .send(consume_request(consume_request::Kind::Flow(Flow {
                    permits,
                })))
                .await
                .is_ok();
        }
        true
    }

    async fn handle(&mut self, kind: consume_response::Kind, connection: &Connection) -> bool {
        match kind {
            consume_response::Kind::Deliveries(deliveries) => {
                let generation = self.generations[self.slot].load(Ordering::Acquire);
                for entry in deliveries.entries {
                    let position = (entry.ledger_id, entry.entry_id);
                    let messages = EntryMessages::new(entry, &self.topic_name, self.partition);
                    let messages = match messages {
                        Ok(messages) => messages,
                        Err(error) => {
                            unpack_failed(&self.topic, position, &error);
                            continue;
                        }
                    };
                    for message in messages {
                        let message = match message {
                            Ok(message) => message,
                            Err(error) => {
                                unpack_failed(&self.topic, position, &error);
                                break;
                            }
                        };
                        if let Some((from, inclusive)) = self.skip_before {
                            // The broker sends whole entries: a start or seek inside a batch skips
                            // the batch's earlier messages (acknowledging them for a subscription,
                            // so the entry can complete).
                            let key = (
                                message.id.ledger_id,
                                message.id.entry_id,
                                message.id.batch_index,
                            );
                            let from = (from.ledger_id, from.entry_id, from.batch_index);
                            if key < from || (key == from && !inclusive) {
                                self.take_unseen(message.id, connection).await;
                                continue;
                            }
                        }
                        let exhausted = self.settings.dead_letter.as_ref().is_some_and(|policy| {
                            message.redelivery_count >= policy.max_redeliveries
                        });
                        if exhausted && self.dead_letter(&message).await.is_ok() {
                            self.take_unseen(message.id, connection).await;
                            continue;
                        }
                        if self.settings.ack_timeout.is_some() {
                            self.unacked.insert(message.id, Instant::now());
                        }
                        if self.deliver.send(Ok((generation, message))).is_err() {
                            return true;
                        }
                    }
                }
                // Messages skipped above took permits the application never sees.
                self.grant_permits(connection).await
            }
            consume_response::Kind::Active(active) => {
                debug!(topic = %self.topic, active, "failover state changed");
                true
            }
            consume_response::Kind::SeekDone(_) => {
                self.generations[self.slot].fetch_add(1, Ordering::AcqRel);
                self.unacked.clear();
                self.nacked.clear();
                // The dropped messages' permits come back.
                let ok = connection
                    .requests
                    .send(consume_request(consume_request::Kind::Flow(Flow {
                        permits: self.settings.receiver_queue,
                    })))
                    .await
                    .is_ok();
                if let Some(waiter) = self.seek_waiter.take() {
                    let _ = waiter.send(Ok(()));
                }
                ok
            }
            consume_response::Kind::Error(error) => {
                let error = ClientError::from_wire(&error);
                if let Some(waiter) = self.seek_waiter.take() {
                    let _ = waiter.send(Err(error));
                } else {
                    warn!(topic = %self.topic, %error, "the broker refused a consumer request");
                }
                true
            }
            consume_response::Kind::Closed(error) => {
                debug!(topic = %self.topic, message = %error.message, "consumer closed by the broker");
                false
            }
            consume_response::Kind::Subscribed(_) => true,
        }
    }

    /// A message the application never sees (before a start or seek position, or moved to the
    /// dead-letter topic): acknowledged for a subscription, and its permit counted as taken.
    async fn take_unseen(&mut self, id: MessageId, connection: &Connection) {
        if !self.settings.non_durable {
            let _ = connection
                .requests
                .send(consume_request(consume_request::Kind::Ack(Ack {
                    message_ids: vec![id.to_wire()],
                    ..Ack::default()
                })))
                .await;
        }
        self.taken.fetch_add(1, Ordering::Relaxed);
    }

    async fn dead_letter(&mut self, message: &ReceivedMessage) -> Result<()> {
        if self.dead_letter.is_none() {
            let topic = self
                .settings
                .dead_letter
                .as_ref()
                .and_then(|policy| policy.topic.clone())
                .unwrap_or_else(|| {
                    format!("{}-{}-DLQ", self.parent_topic, self.settings.subscription)
                });
            self.dead_letter = Some(self.client.producer(&topic).create().await?);
        }
        let Some(producer) = &self.dead_letter else {
            return Err(ClientError::Closed);
        };
        let mut outgoing = OutgoingMessage::new(message.payload.clone());
        outgoing.key = message.key.clone();
        outgoing.properties = message.properties.clone();
        outgoing.event_time_ms = message.event_time_ms;
        outgoing
            .properties
            .insert("ORIGIN_MESSAGE_ID".into(), message.id.to_string());
        producer.send(outgoing).await.map(|_| ())
    }

    /// Handles `first` and whatever else is queued now, after the acknowledgements made before
    /// them. Cumulative acknowledgements queued one after another go out as the latest one.
    async fn commands(
        &mut self,
        first: Command,
        inbox: &mut mpsc::Receiver<Command>,
        connection: &Connection,
    ) -> bool {
        if !self.send_acks(connection).await {
            return false;
        }
        let mut next = Some(first);
        let mut handled = 0;
        while let Some(command) = next.take() {
            handled += 1;
            let ok = match command {
                Command::AckCumulative(mut through) => {
                    loop {
                        match inbox.try_recv() {
                            Ok(Command::AckCumulative(later)) => through = later,
                            Ok(other) => {
                                next = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.acknowledge(vec![through], true, connection).await
                }
                other => self.command(other, connection).await,
            };
            if !ok {
                return false;
            }
            // Bounded, so a busy application does not keep responses waiting.
            if next.is_none() && handled < COMMANDS_PER_WAKE {
                next = inbox.try_recv().ok();
            }
        }
        true
    }

    /// The consumer is gone: sends what it acknowledged, ends the stream, and waits for the
    /// broker to end its side. Dropping the stream instead would cancel it, and the broker
    /// could lose the last acknowledgements and redeliver what was acknowledged.
    async fn finish(&mut self, connection: Connection) {
        self.send_acks(&connection).await;
        let Connection {
            requests,
            mut responses,
        } = connection;
        drop(requests);
        let drained = async { while let Ok(Some(_)) = responses.message().await {} };
        let _ = tokio::time::timeout(FINISH_WAIT, drained).await;
    }

    /// Sends the individual acknowledgements queued since the last call.
    async fn send_acks(&mut self, connection: &Connection) -> bool {
        let ids = take_acks(&self.acks);
        for chunk in ids.chunks(MAX_ACKS_PER_REQUEST) {
            if !self.acknowledge(chunk.to_vec(), false, connection).await {
                return false;
            }
        }
        true
    }

    /// Sends one acknowledgement request for `ids` (cumulative: through the one id).
    async fn acknowledge(
        &mut self,
        ids: Vec<MessageId>,
        cumulative: bool,
        connection: &Connection,
    ) -> bool {
        if !self.unacked.is_empty() {
            for id in &ids {
                self.unacked.remove(id);
            }
            if cumulative {
                if let Some(through) = ids.first() {
                    self.unacked.retain(|id, _| id > through);
                }
            }
        }
        let request = consume_request::Kind::Ack(if cumulative {
            Ack {
                message_ids: ids.into_iter().map(MessageId::to_wire).collect(),
                cumulative,
                ranges: Vec::new(),
            }
        } else {
            Ack {
                message_ids: Vec::new(),
                cumulative,
                ranges: ack_ranges(&ids),
            }
        });
        connection
            .requests
            .send(consume_request(request))
            .await
            .is_ok()
    }

    async fn command(&mut self, command: Command, connection: &Connection) -> bool {
        let request = match command {
            Command::AckCumulative(through) => {
                return self.acknowledge(vec![through], true, connection).await;
            }
            Command::Nack(id) => {
                self.unacked.remove(&id);
                self.nacked
                    .push((Instant::now() + self.settings.nack_delay, id));
                return true;
            }
            Command::Seek(target, reply) => {
                self.seek_waiter = Some(reply);
                self.skip_before = match &target {
                    seek::Target::MessageId(id) => {
                        skip_filter(Some(MessageId::from_wire(id, self.partition)), true)
                    }
                    seek::Target::PublishTimeMs(_) => None,
                };
                consume_request::Kind::Seek(Seek {
                    target: Some(target),
                })
            }
        };
        connection
            .requests
            .send(consume_request(request))
            .await
            .is_ok()
    }

    async fn redeliver_due(&mut self, connection: &Connection) -> bool {
        let now = Instant::now();
        let mut due: Vec<MessageId> = Vec::new();
        self.nacked.retain(|(at, id)| {
            if *at <= now {
                due.push(*id);
                false
            } else {
                true
            }
        });
        if let Some(timeout) = self.settings.ack_timeout {
            self.unacked.retain(|id, received| {
                if *received + timeout <= now {
                    due.push(*id);
                    false
                } else {
                    true
                }
            });
        }
        if due.is_empty() {
            return true;
        }
        connection
            .requests
            .send(consume_request(consume_request::Kind::Redeliver(
                Redeliver {
                    message_ids: due.into_iter().map(MessageId::to_wire).collect(),
                },
            )))
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(entry_id: i64, batch_index: i32) -> MessageId {
        MessageId {
            partition: -1,
            ledger_id: 4,
            entry_id,
            batch_index,
        }
    }

    #[test]
    fn consecutive_acknowledgements_of_an_entry_become_one_range() {
        let ids = [
            id(0, 0),
            id(0, 1),
            id(0, 2),
            id(0, 4),
            id(1, 0),
            id(1, 1),
            id(0, 3),
        ];
        let runs: Vec<(i64, u32, u32)> = ack_ranges(&ids)
            .iter()
            .map(|range| (range.entry_id, range.first_index, range.last_index))
            .collect();
        assert_eq!(runs, vec![(0, 0, 2), (0, 4, 4), (1, 0, 1), (0, 3, 3)]);
        assert!(ack_ranges(&[]).is_empty());
    }
}
