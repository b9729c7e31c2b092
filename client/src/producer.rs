//! Producers: batching, sequence ids, in-order receipts, and reconnection that resends what was
//! not acknowledged (the broker's deduplication makes the resend safe).
//!
//! Each partition has one task that owns its stream. Messages are gathered into a batch until
//! it holds `batch_max_messages` or `batch_max_bytes`, or `batch_delay` has passed since its
//! first message; a batch is stored by the broker as one entry.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use magnetar_proto::broker::{
    produce_request, produce_response, ErrorCode, Message, OpenProducer, ProduceRequest,
    ProduceResponse, SendBatch,
};
use tokio::sync::{mpsc, oneshot, Semaphore, TryAcquireError};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tracing::{debug, warn};

use crate::connection::{partition_for_key, partition_names, Backoff, Client};
use crate::error::{ClientError, Result};
use crate::message::{MessageId, OutgoingMessage};

/// Configures a producer; `create()` connects it.
pub struct ProducerBuilder {
    client: Client,
    topic: String,
    name: Option<String>,
    settings: Settings,
}

#[derive(Clone)]
struct Settings {
    batch_max_messages: usize,
    batch_max_bytes: usize,
    batch_delay: Duration,
    max_pending_messages: usize,
}

impl ProducerBuilder {
    pub(crate) fn new(client: Client, topic: &str) -> Self {
        Self {
            client,
            topic: topic.to_string(),
            name: None,
            settings: Settings {
                batch_max_messages: 1000,
                batch_max_bytes: 128 * 1024,
                batch_delay: Duration::from_millis(1),
                max_pending_messages: 100_000,
            },
        }
    }

    /// The producer's name: sequence ids and deduplication are per name, so a restarted
    /// application that reuses its name has its resends recognised. Default: the broker names
    /// it.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Batching on (the default) or off (every message its own entry).
    pub fn batching(mut self, enabled: bool) -> Self {
        if !enabled {
            self.settings.batch_max_messages = 1;
        }
        self
    }

    pub fn batch_max_messages(mut self, messages: usize) -> Self {
        self.settings.batch_max_messages = messages.max(1);
        self
    }

    pub fn batch_max_bytes(mut self, bytes: usize) -> Self {
        self.settings.batch_max_bytes = bytes.max(1);
        self
    }

    /// How long a batch waits for more messages after its first one.
    pub fn batch_delay(mut self, delay: Duration) -> Self {
        self.settings.batch_delay = delay;
        self
    }

    /// Messages sent but not yet acknowledged before `send` waits.
    pub fn max_pending_messages(mut self, messages: usize) -> Self {
        self.settings.max_pending_messages = messages.max(1);
        self
    }

    /// Connects: one stream per partition of a partitioned topic.
    pub async fn create(self) -> Result<Producer> {
        let partitions = self.client.partitions(&self.topic).await?;
        let topics: Vec<(String, i32)> = if partitions == 0 {
            vec![(self.topic.clone(), -1)]
        } else {
            partition_names(&self.topic, partitions)
                .into_iter()
                .zip(0..)
                .collect()
        };
        let mut tasks = Vec::with_capacity(topics.len());
        for (topic, partition) in topics {
            let name = self.name.as_ref().map(|name| {
                if partition >= 0 {
                    format!("{name}-{partition}")
                } else {
                    name.clone()
                }
            });
            tasks.push(
                PartitionTask::start(
                    self.client.clone(),
                    topic,
                    partition,
                    name,
                    self.settings.clone(),
                )
                .await?,
            );
        }
        Ok(Producer {
            topic: self.topic,
            partitions: tasks,
            round_robin: AtomicUsize::new(0),
            batch_max_messages: self.settings.batch_max_messages,
        })
    }
}

enum Command {
    Send(OutgoingMessage, oneshot::Sender<Result<MessageId>>),
    Flush(oneshot::Sender<()>),
}

struct PartitionHandle {
    commands: CommandSender,
    name: String,
}

/// Commands queued for a partition's task that a sender may add before it waits.
const COMMAND_QUEUE_BOUND: usize = 1024;

/// The sending side of a partition task's commands: an unbounded channel whose length a
/// semaphore bounds. A sender takes a permit with one atomic operation when one is free, and
/// the task gives permits back once per wake-up for every command it took; a bounded channel
/// would give each back on its own, under a lock, on this per-message path.
struct CommandSender {
    commands: mpsc::UnboundedSender<Command>,
    room: Arc<Semaphore>,
}

impl CommandSender {
    async fn send(&self, command: Command) -> Result<()> {
        let permit = match self.room.try_acquire() {
            Ok(permit) => permit,
            Err(TryAcquireError::NoPermits) => {
                self.room.acquire().await.map_err(|_| ClientError::Closed)?
            }
            Err(TryAcquireError::Closed) => return Err(ClientError::Closed),
        };
        permit.forget();
        self.commands.send(command).map_err(|_| ClientError::Closed)
    }
}

/// The task's side of [`CommandSender`]. Dropping it wakes any sender waiting for room.
struct CommandInbox {
    commands: mpsc::UnboundedReceiver<Command>,
    room: Arc<Semaphore>,
}

fn command_queue() -> (CommandSender, CommandInbox) {
    let (commands, inbox) = mpsc::unbounded_channel();
    let room = Arc::new(Semaphore::new(COMMAND_QUEUE_BOUND));
    (
        CommandSender {
            commands,
            room: room.clone(),
        },
        CommandInbox {
            commands: inbox,
            room,
        },
    )
}

impl CommandInbox {
    /// Gives back the room of `taken` commands.
    fn release(&self, taken: usize) {
        if taken > 0 {
            self.room.add_permits(taken);
        }
    }
}

impl Drop for CommandInbox {
    fn drop(&mut self) {
        self.room.close();
    }
}

/// A producer on one topic (all its partitions); cheap to share behind an `Arc`.
pub struct Producer {
    topic: String,
    partitions: Vec<PartitionHandle>,
    round_robin: AtomicUsize,
    batch_max_messages: usize,
}

/// The receipt of a queued message: resolves with its id once it is durable.
pub struct SendReceipt {
    answer: oneshot::Receiver<Result<MessageId>>,
}

impl Future for SendReceipt {
    type Output = Result<MessageId>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.answer)
            .poll(context)
            .map(|answer| answer.unwrap_or(Err(ClientError::Closed)))
    }
}

impl Producer {
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The producer's name (of its first partition's stream).
    pub fn name(&self) -> &str {
        &self.partitions[0].name
    }

    /// Sends a message and waits until it is durable; returns its id.
    pub async fn send(&self, message: impl Into<OutgoingMessage>) -> Result<MessageId> {
        self.send_async(message).await?.await
    }

    /// Queues a message (waiting only while too many are pending) and returns its receipt.
    /// Messages queued by one caller are stored in the order queued (per partition).
    pub async fn send_async(&self, message: impl Into<OutgoingMessage>) -> Result<SendReceipt> {
        let message = message.into();
        let partition = match &message.key {
            _ if self.partitions.len() == 1 => 0,
            Some(key) => partition_for_key(key, self.partitions.len()),
            // Round robin per batch's worth of messages, so batches stay full.
            None => {
                let turn = self.round_robin.fetch_add(1, Ordering::Relaxed);
                (turn / self.batch_max_messages) % self.partitions.len()
            }
        };
        let (reply, answer) = oneshot::channel();
        self.partitions[partition]
            .commands
            .send(Command::Send(message, reply))
            .await?;
        Ok(SendReceipt { answer })
    }

    /// Sends whatever is batched now and waits until everything queued so far is durable.
    pub async fn flush(&self) -> Result<()> {
        for partition in &self.partitions {
            let (reply, answer) = oneshot::channel();
            partition.commands.send(Command::Flush(reply)).await?;
            answer.await.map_err(|_| ClientError::Closed)?;
        }
        Ok(())
    }

    /// Flushes, then closes the producer's streams.
    pub async fn close(self) -> Result<()> {
        self.flush().await
    }
}

/// The most messages a batch reserves room for when it starts.
const MAX_PREALLOCATED_BATCH: usize = 4096;

struct InFlight {
    first_sequence_id: u64,
    messages: Vec<Message>,
    waiters: Vec<oneshot::Sender<Result<MessageId>>>,
}

struct Connection {
    requests: mpsc::Sender<ProduceRequest>,
    responses: Streaming<ProduceResponse>,
}

struct PartitionTask {
    client: Client,
    topic: String,
    partition: i32,
    name: Option<String>,
    settings: Settings,
    next_sequence_id: u64,
    building: Vec<Message>,
    building_waiters: Vec<oneshot::Sender<Result<MessageId>>>,
    building_bytes: usize,
    batch_deadline: Option<Instant>,
    in_flight: VecDeque<InFlight>,
    in_flight_messages: usize,
    flush_waiters: Vec<oneshot::Sender<()>>,
    /// The broker's limit on a stored batch.
    max_message_size_bytes: usize,
}

impl PartitionTask {
    async fn start(
        client: Client,
        topic: String,
        partition: i32,
        name: Option<String>,
        settings: Settings,
    ) -> Result<PartitionHandle> {
        let mut task = PartitionTask {
            client,
            topic,
            partition,
            name,
            settings,
            next_sequence_id: 0,
            building: Vec::new(),
            building_waiters: Vec::new(),
            building_bytes: 0,
            batch_deadline: None,
            in_flight: VecDeque::new(),
            in_flight_messages: 0,
            flush_waiters: Vec::new(),
            max_message_size_bytes: usize::MAX,
        };
        // The first connection's failure is the caller's to see.
        let connection = task.connect().await?;
        let name = task.name.clone().unwrap_or_default();
        let (commands, inbox) = command_queue();
        tokio::spawn(task.run(connection, inbox));
        Ok(PartitionHandle { commands, name })
    }

    async fn connect(&mut self) -> Result<Connection> {
        let (address, _) = self.client.lookup(&self.topic).await?;
        let mut broker = self.client.broker(&address).await?;
        let (requests, outbound) = mpsc::channel(1024);
        let open = ProduceRequest {
            kind: Some(produce_request::Kind::Open(OpenProducer {
                topic: self.topic.clone(),
                producer_name: self.name.clone().unwrap_or_default(),
            })),
        };
        let _ = requests.send(open).await;
        let mut responses = match broker.produce(ReceiverStream::new(outbound)).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                self.client.drop_connection(&address);
                return Err(ClientError::Unreachable {
                    address,
                    reason: status.message().to_string(),
                });
            }
        };
        let opened = match responses.message().await {
            Ok(Some(ProduceResponse {
                kind: Some(produce_response::Kind::Opened(opened)),
            })) => opened,
            Ok(Some(ProduceResponse {
                kind: Some(produce_response::Kind::Closed(error)),
            })) => return Err(ClientError::from_wire(&error)),
            Ok(_) => return Err(ClientError::Closed),
            Err(status) => {
                self.client.drop_connection(&address);
                return Err(ClientError::Unreachable {
                    address,
                    reason: status.message().to_string(),
                });
            }
        };
        self.name = Some(opened.producer_name);
        self.max_message_size_bytes = (opened.max_message_size_bytes as usize).max(1024) - 512;
        let continue_from = (opened.last_sequence_id + 1).max(0) as u64;
        self.next_sequence_id = self.next_sequence_id.max(continue_from);
        // Resend everything not acknowledged, in order; duplicates are recognised.
        for batch in &self.in_flight {
            let _ = requests.send(send_request(batch)).await;
        }
        Ok(Connection {
            requests,
            responses,
        })
    }

    async fn reconnect(&mut self) -> Option<Connection> {
        let mut backoff = Backoff::new();
        loop {
            backoff.wait().await;
            match self.connect().await {
                Ok(connection) => {
                    debug!(topic = %self.topic, "producer reconnected");
                    return Some(connection);
                }
                // PRODUCER_BUSY: the broker has not yet torn down this producer's previous
                // stream; it will shortly.
                Err(error)
                    if error.is_retryable() || error.code() == Some(ErrorCode::ProducerBusy) =>
                {
                    debug!(topic = %self.topic, %error, "producer reconnect failed; retrying")
                }
                Err(error) => {
                    warn!(topic = %self.topic, %error, "producer cannot reconnect");
                    self.fail_everything(error);
                    return None;
                }
            }
        }
    }

    fn fail_everything(&mut self, error: ClientError) {
        for batch in self.in_flight.drain(..) {
            for waiter in batch.waiters {
                let _ = waiter.send(Err(error.clone()));
            }
        }
        for waiter in self.building_waiters.drain(..) {
            let _ = waiter.send(Err(error.clone()));
        }
        self.building.clear();
        self.in_flight_messages = 0;
    }

    async fn run(mut self, mut connection: Connection, mut inbox: CommandInbox) {
        let mut inbox_open = true;
        loop {
            let room = self.has_room();
            let deadline = self.batch_deadline;
            let mut broken = false;
            tokio::select! {
                command = inbox.commands.recv(), if inbox_open && room => match command {
                    Some(command) => {
                        broken |= !self.command(command, &connection).await;
                        let mut taken = 1;
                        // Take whatever else is queued now, in one wake-up: at high rates
                        // this is most of a batch, and the select above runs once for it.
                        while !broken && self.has_room() {
                            match inbox.commands.try_recv() {
                                Ok(command) => {
                                    taken += 1;
                                    broken |= !self.command(command, &connection).await;
                                }
                                Err(_) => break,
                            }
                        }
                        inbox.release(taken);
                        if !broken && self.batch_due() {
                            broken |= !self.send_batch(&connection).await;
                        }
                    }
                    None => {
                        inbox_open = false;
                        broken |= !self.send_batch(&connection).await;
                    }
                },
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    broken |= !self.send_batch(&connection).await;
                }
                response = connection.responses.message() => match response {
                    Ok(Some(ProduceResponse { kind: Some(kind) })) => broken |= !self.handle(kind),
                    Ok(_) | Err(_) => broken = true,
                },
            }
            if !inbox_open && self.in_flight.is_empty() && self.building.is_empty() {
                return;
            }
            if broken {
                // End the old stream first: the broker frees this producer's name only once it
                // ends, and until then a new stream is refused with PRODUCER_BUSY.
                let (ended, _) = mpsc::channel(1);
                drop(std::mem::replace(&mut connection.requests, ended));
                match self.reconnect().await {
                    Some(fresh) => connection = fresh,
                    None => {
                        if !inbox_open {
                            return;
                        }
                    }
                }
            }
        }
    }

    fn has_room(&self) -> bool {
        self.in_flight_messages + self.building.len() < self.settings.max_pending_messages
    }

    /// Handles one command from the producer's handle; returns false when the stream broke.
    async fn command(&mut self, command: Command, connection: &Connection) -> bool {
        match command {
            Command::Send(message, waiter) => {
                let mut ok = true;
                if self.building_bytes + message.encoded_len_estimate()
                    > self.max_message_size_bytes
                {
                    // With this message the batch would be refused whole.
                    ok &= self.send_batch(connection).await;
                }
                self.add(message, waiter);
                if self.batch_full() {
                    ok &= self.send_batch(connection).await;
                }
                ok
            }
            Command::Flush(reply) => {
                let ok = self.send_batch(connection).await;
                if self.in_flight.is_empty() {
                    let _ = reply.send(());
                } else {
                    self.flush_waiters.push(reply);
                }
                ok
            }
        }
    }

    fn add(&mut self, message: OutgoingMessage, waiter: oneshot::Sender<Result<MessageId>>) {
        let size = message.encoded_len_estimate();
        if size > self.max_message_size_bytes {
            let _ = waiter.send(Err(ClientError::Broker {
                code: ErrorCode::MessageTooLarge,
                message: format!(
                    "message of {size} bytes is over the broker's limit of {} bytes",
                    self.max_message_size_bytes
                ),
            }));
            return;
        }
        if self.building.is_empty() {
            self.batch_deadline = Some(Instant::now() + self.settings.batch_delay);
            // Room for a whole batch at once: growing message by message costs a copy each time
            // the batch doubles.
            let capacity = self.settings.batch_max_messages.min(MAX_PREALLOCATED_BATCH);
            self.building.reserve(capacity);
            self.building_waiters.reserve(capacity);
        }
        self.building_bytes += message.encoded_len_estimate();
        self.building.push(message.into_wire());
        self.building_waiters.push(waiter);
    }

    /// The batch has waited its delay. The runtime's timer ticks once a millisecond, so its
    /// wake-up alone could hold a batch up to a millisecond past the delay; while messages keep
    /// coming, the first wake-up for new ones after the deadline sends the batch on time.
    fn batch_due(&self) -> bool {
        self.batch_deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
    }

    fn batch_full(&self) -> bool {
        self.building.len() >= self.settings.batch_max_messages
            || self.building_bytes >= self.settings.batch_max_bytes
    }

    /// Sends the batch being built; returns false when the stream is broken.
    async fn send_batch(&mut self, connection: &Connection) -> bool {
        self.batch_deadline = None;
        if self.building.is_empty() {
            return true;
        }
        let messages = std::mem::take(&mut self.building);
        let waiters = std::mem::take(&mut self.building_waiters);
        self.building_bytes = 0;
        let batch = InFlight {
            first_sequence_id: self.next_sequence_id,
            messages,
            waiters,
        };
        self.next_sequence_id += batch.messages.len() as u64;
        self.in_flight_messages += batch.messages.len();
        let request = send_request(&batch);
        self.in_flight.push_back(batch);
        connection.requests.send(request).await.is_ok()
    }

    /// Handles one response; returns false when the stream must be reconnected.
    fn handle(&mut self, kind: produce_response::Kind) -> bool {
        match kind {
            produce_response::Kind::Receipt(receipt) => {
                let Some(front) = self.in_flight.front() else {
                    return true;
                };
                if front.first_sequence_id != receipt.first_sequence_id {
                    // A receipt for a batch already answered (resent before its receipt came).
                    return true;
                }
                let Some(batch) = self.pop_front() else {
                    return true;
                };
                for (index, waiter) in batch.waiters.into_iter().enumerate() {
                    let _ = waiter.send(Ok(MessageId {
                        partition: self.partition,
                        ledger_id: receipt.ledger_id,
                        entry_id: receipt.entry_id,
                        batch_index: index as i32,
                    }));
                }
                true
            }
            produce_response::Kind::Failed(failed) => {
                let error = failed
                    .error
                    .map(|error| ClientError::from_wire(&error))
                    .unwrap_or(ClientError::Closed);
                if error.is_retryable() {
                    return false;
                }
                // Refused for good (too large, malformed): that batch fails, the rest goes on.
                if let Some(position) = self
                    .in_flight
                    .iter()
                    .position(|batch| batch.first_sequence_id == failed.first_sequence_id)
                {
                    if let Some(batch) = self.in_flight.remove(position) {
                        self.in_flight_messages -= batch.messages.len();
                        for waiter in batch.waiters {
                            let _ = waiter.send(Err(error.clone()));
                        }
                    }
                }
                self.notify_flushed();
                true
            }
            produce_response::Kind::Closed(error) => {
                let error = ClientError::from_wire(&error);
                if error.code() == Some(ErrorCode::ProducerBusy) || error.is_retryable() {
                    return false;
                }
                self.fail_everything(error);
                false
            }
            produce_response::Kind::Opened(_) => true,
        }
    }

    fn pop_front(&mut self) -> Option<InFlight> {
        let batch = self.in_flight.pop_front()?;
        self.in_flight_messages -= batch.messages.len();
        self.notify_flushed();
        Some(batch)
    }

    fn notify_flushed(&mut self) {
        if self.in_flight.is_empty() {
            for waiter in self.flush_waiters.drain(..) {
                let _ = waiter.send(());
            }
        }
    }
}

fn send_request(batch: &InFlight) -> ProduceRequest {
    ProduceRequest {
        kind: Some(produce_request::Kind::Send(SendBatch {
            first_sequence_id: batch.first_sequence_id,
            messages: batch.messages.clone(),
        })),
    }
}
