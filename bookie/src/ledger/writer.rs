//! The single writer of a ledger: pipelined adds over the AddEntries stream each bookie shares
//! among every ledger written to it, completion strictly in entry order, ensemble changes when
//! a bookie fails, and close.
//!
//! A [`LedgerWriter`] is a handle on one task that owns all the writer's state (an actor):
//! adds arrive over a bounded channel, bookie answers arrive on this ledger's routes of the
//! shared streams (see [`crate::shared_add_stream`]), and nothing is shared except the
//! published LAC and those streams. The task stops taking adds while `max_in_flight_entries`
//! are unacknowledged, which is the writer's back-pressure.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::stream::{self, BoxStream, SelectAll, StreamExt};
use magnetar_proto::bookie::{AddRequest, AddResult, Entry, ErrorCode};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{debug, info, warn};

use super::error::{LedgerError, LedgerResult};
use super::framing::frame;
use super::metadata::{
    encode_hex, ledger_key, LedgerMetadata, LedgerState, Segment, LEDGER_ID_COUNTER,
    METADATA_FORMAT,
};
use super::quorum::{AckTracker, Quorums};
use super::registration::available_bookies;
use super::{LedgerClient, LedgerOptions};
use crate::entry::new_entry;
use crate::error::BookieError;
use crate::shared_add_stream::{RouteEvent, Subscription};

/// Bound on adds waiting in the handle's channel (the task's in-flight bound comes after).
const COMMAND_QUEUE: usize = 4096;
/// Most payload bytes in one request to a bookie.
const MAX_REQUEST_BYTES: usize = 4 << 20;
/// Replacement bookies tried for one failed bookie before the writer gives up.
const MAX_REPLACEMENT_ATTEMPTS: usize = 8;

enum Command {
    Add {
        payload: Bytes,
        done: oneshot::Sender<LedgerResult<u64>>,
    },
    Close {
        done: oneshot::Sender<LedgerResult<LedgerMetadata>>,
    },
}

/// An add sent and not yet acknowledged; resolves to the entry id once it is complete (this
/// entry and every earlier one acknowledged by Qa bookies).
pub struct PendingAdd {
    ledger_id: u64,
    receiver: oneshot::Receiver<LedgerResult<u64>>,
}

impl Future for PendingAdd {
    type Output = LedgerResult<u64>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let ledger_id = self.ledger_id;
        Pin::new(&mut self.receiver)
            .poll(context)
            .map(|outcome| outcome.unwrap_or_else(|_| Err(writer_stopped(ledger_id))))
    }
}

fn writer_stopped(ledger_id: u64) -> LedgerError {
    LedgerError::WriterFailed {
        ledger_id,
        reason: "the writer task stopped".into(),
    }
}

/// The writer of one ledger. Dropping it without `close` leaves the ledger open (to be
/// recovered), as a crash would.
pub struct LedgerWriter {
    ledger_id: u64,
    quorums: Quorums,
    commands: mpsc::Sender<Command>,
    last_add_confirmed: Arc<AtomicI64>,
}

impl LedgerWriter {
    pub fn ledger_id(&self) -> u64 {
        self.ledger_id
    }

    pub fn quorums(&self) -> Quorums {
        self.quorums
    }

    /// The last entry completed (-1 when none).
    pub fn last_add_confirmed(&self) -> i64 {
        self.last_add_confirmed.load(Ordering::Acquire)
    }

    /// Adds an entry and waits until it is complete; returns its id.
    pub async fn add(&self, payload: Bytes) -> LedgerResult<u64> {
        self.add_pipelined(payload).await?.await
    }

    /// Queues an entry (waiting only while the writer's queue is full) and returns what
    /// resolves once it is complete, so one caller can keep many adds in flight.
    pub async fn add_pipelined(&self, payload: Bytes) -> LedgerResult<PendingAdd> {
        let (done, receiver) = oneshot::channel();
        self.commands
            .send(Command::Add { payload, done })
            .await
            .map_err(|_| writer_stopped(self.ledger_id))?;
        Ok(PendingAdd {
            ledger_id: self.ledger_id,
            receiver,
        })
    }

    /// Waits for every add to complete, then closes the ledger (state Closed, last entry id
    /// and length final) by compare-and-set; returns the closed metadata.
    pub async fn close(self) -> LedgerResult<LedgerMetadata> {
        let (done, receiver) = oneshot::channel();
        self.commands
            .send(Command::Close { done })
            .await
            .map_err(|_| writer_stopped(self.ledger_id))?;
        receiver
            .await
            .unwrap_or_else(|_| Err(writer_stopped(self.ledger_id)))
    }
}

/// Why the writer stopped taking adds.
#[derive(Clone, Debug)]
enum Failure {
    Fenced,
    Other(String),
}

impl Failure {
    fn error(&self, ledger_id: u64) -> LedgerError {
        match self {
            Failure::Fenced => LedgerError::Fenced { ledger_id },
            Failure::Other(reason) => LedgerError::WriterFailed {
                ledger_id,
                reason: reason.clone(),
            },
        }
    }
}

/// One bookie of the current ensemble: the shared add stream to it, this ledger's route on
/// it, and which link it is.
struct BookieLink {
    address: String,
    generation: u64,
    /// This ledger's route on the bookie's shared stream (results come back while it lives),
    /// and where its requests go.
    subscription: Subscription,
    /// Entries sent and not answered yet.
    unanswered: usize,
    /// Since when the bookie has owed answers without giving any. A bookie past Qa can hang
    /// without holding any add back; this is how it is noticed and replaced all the same.
    waiting_since: Option<Instant>,
}

enum Event {
    Results {
        index: usize,
        generation: u64,
        results: Vec<AddResult>,
    },
    Broken {
        index: usize,
        generation: u64,
        reason: String,
    },
}

struct PendingEntry {
    entry: Entry,
    length_through: u64,
    done: Option<oneshot::Sender<LedgerResult<u64>>>,
    sent_at: Instant,
}

struct WriterTask {
    client: LedgerClient,
    ledger_id: u64,
    metadata: LedgerMetadata,
    version: u64,
    token: Bytes,
    tracker: AckTracker,
    /// Aligned with the tracker's pending entries.
    pending: VecDeque<PendingEntry>,
    /// Ledger length through the last entry added.
    added_length: u64,
    /// Ledger length through the last entry completed.
    completed_length: u64,
    links: Vec<BookieLink>,
    next_generation: u64,
    /// Every open link's answers, each ending with a `Broken` event; a replaced link's stream
    /// stays until the bookie closes it, its events ignored by generation.
    answers: SelectAll<BoxStream<'static, Event>>,
    /// Bookies that failed this writer; not chosen again while others are available.
    excluded: HashSet<String>,
    failure: Option<Failure>,
    published_lac: Arc<AtomicI64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

/// Creates a ledger: id, ensemble, metadata (CAS on absence), streams to its bookies.
pub(crate) async fn create(
    client: LedgerClient,
    options: LedgerOptions,
) -> LedgerResult<LedgerWriter> {
    let quorums = Quorums::new(
        options.ensemble_size,
        options.write_quorum,
        options.ack_quorum,
    )
    .map_err(LedgerError::InvalidOptions)?;
    let candidates = available_bookies(&client.meta).await?;
    let mut ensemble = client
        .placement
        .new_ensemble(quorums.ensemble, &candidates)?;
    let ledger_id = client.meta.next_sequential_id(LEDGER_ID_COUNTER).await?;
    let token: [u8; 16] = rand::random();
    let metadata = LedgerMetadata {
        format: METADATA_FORMAT,
        ledger_id,
        ensemble_size: quorums.ensemble,
        write_quorum: quorums.write,
        ack_quorum: quorums.ack,
        state: LedgerState::Open,
        last_entry_id: -1,
        length: 0,
        creation_time_ms: now_ms(),
        segments: Vec::new(),
        writer_token_hex: encode_hex(&token),
        custom: options.custom,
    };
    let published_lac = Arc::new(AtomicI64::new(-1));
    let mut task = WriterTask {
        client: client.clone(),
        ledger_id,
        metadata,
        version: 0,
        token: Bytes::copy_from_slice(&token),
        tracker: AckTracker::new(quorums, 0),
        pending: VecDeque::new(),
        added_length: 0,
        completed_length: 0,
        links: Vec::with_capacity(quorums.ensemble),
        next_generation: 0,
        answers: SelectAll::new(),
        excluded: HashSet::new(),
        failure: None,
        published_lac: published_lac.clone(),
    };
    // Streams first, so an unreachable bookie is swapped before the metadata names it.
    for index in 0..quorums.ensemble {
        let mut attempts = 0;
        loop {
            let address = ensemble[index].clone();
            match task.open_link(index, address.clone()).await {
                Ok(link) => {
                    task.links.push(link);
                    break;
                }
                Err(error) if attempts < MAX_REPLACEMENT_ATTEMPTS => {
                    warn!(%error, bookie = %address, "bookie unreachable at ledger creation");
                    attempts += 1;
                    task.excluded.insert(address);
                    ensemble[index] = client.placement.replacement(
                        &ensemble,
                        index,
                        &task.excluded,
                        &candidates,
                    )?;
                }
                Err(error) => return Err(error),
            }
        }
    }
    task.metadata.segments = vec![Segment {
        first_entry_id: 0,
        bookies: ensemble,
    }];
    let key = ledger_key(ledger_id);
    task.version = client
        .meta
        .put_if_version(&key, task.metadata.encode(), 0)
        .await
        .map_err(|error| match error {
            magnetar_meta::MetaError::VersionConflict { .. } => LedgerError::MetadataConflict {
                ledger_id,
                reason: "a ledger with this id already exists".into(),
            },
            other => other.into(),
        })?;
    info!(ledger_id, ensemble = ?task.metadata.segments[0].bookies, "ledger created");
    let (commands, command_receiver) = mpsc::channel(COMMAND_QUEUE);
    tokio::spawn(task.run(command_receiver));
    Ok(LedgerWriter {
        ledger_id,
        quorums,
        commands,
        last_add_confirmed: published_lac,
    })
}

impl WriterTask {
    fn quorums(&self) -> Quorums {
        self.tracker.quorums()
    }

    async fn open_link(&mut self, index: usize, address: String) -> LedgerResult<BookieLink> {
        let config = &self.client.config;
        let stream = self
            .client
            .bookies
            .add_stream(
                &address,
                config.rpc_timeout,
                config.max_queued_requests_per_bookie,
            )
            .await?;
        let Some((subscription, route)) = stream.subscribe(self.ledger_id) else {
            return Err(LedgerError::bookie(
                &address,
                BookieError::Transport("the add stream ended as it was joined".into()),
            ));
        };
        let generation = self.next_generation;
        self.next_generation += 1;
        let answers = UnboundedReceiverStream::new(route).map(move |event| match event {
            RouteEvent::Results(results) => Event::Results {
                index,
                generation,
                results,
            },
            RouteEvent::Ended { reason } => Event::Broken {
                index,
                generation,
                reason,
            },
        });
        // A route also ends without a reason when a later link of this ledger to the same
        // bookie replaced it; that link has a newer generation, so this event is ignored.
        let closed = stream::once(async move {
            Event::Broken {
                index,
                generation,
                reason: "the add stream's route ended".to_string(),
            }
        });
        self.answers.push(answers.chain(closed).boxed());
        Ok(BookieLink {
            address,
            generation,
            subscription,
            unanswered: 0,
            waiting_since: None,
        })
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let config = self.client.config.clone();
        let tick =
            (config.add_timeout / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut closing: Option<oneshot::Sender<LedgerResult<LedgerMetadata>>> = None;
        let mut handle_gone = false;
        loop {
            if self.tracker.pending() == 0 {
                if let Some(done) = closing.take() {
                    let _ = done.send(self.close().await);
                    return;
                }
                if handle_gone {
                    debug!(ledger_id = self.ledger_id, "writer dropped; task ends");
                    return;
                }
            }
            let accepting = closing.is_none()
                && !handle_gone
                && self.tracker.pending() < config.max_in_flight_entries;
            tokio::select! {
                Some(event) = self.answers.next(), if !self.answers.is_empty() => {
                    self.on_event(event).await
                }
                command = commands.recv(), if accepting => match command {
                    None => handle_gone = true,
                    Some(Command::Close { done }) => closing = Some(done),
                    Some(Command::Add { payload, done }) => {
                        let room = config.max_in_flight_entries - self.tracker.pending();
                        let limit = config.max_batch_entries.min(room).max(1);
                        let mut batch = vec![(payload, done)];
                        while batch.len() < limit {
                            match commands.try_recv() {
                                Ok(Command::Add { payload, done }) => batch.push((payload, done)),
                                Ok(Command::Close { done }) => {
                                    closing = Some(done);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.add_batch(batch).await;
                    }
                },
                _ = ticker.tick() => self.check_timeouts().await,
            }
            self.complete();
        }
    }

    async fn add_batch(&mut self, batch: Vec<(Bytes, oneshot::Sender<LedgerResult<u64>>)>) {
        if let Some(failure) = &self.failure {
            for (_, done) in batch {
                let _ = done.send(Err(failure.error(self.ledger_id)));
            }
            return;
        }
        let lac = self.tracker.last_add_confirmed();
        let first = self.tracker.next_entry_id();
        let now = Instant::now();
        for (payload, done) in batch {
            let entry_id = self.tracker.push();
            self.added_length += payload.len() as u64;
            let entry = new_entry(
                self.ledger_id,
                entry_id,
                lac,
                frame(self.added_length, &payload),
            );
            self.pending.push_back(PendingEntry {
                entry,
                length_through: self.added_length,
                done: Some(done),
                sent_at: now,
            });
        }
        let end = self.tracker.next_entry_id();
        let mut broken = Vec::new();
        for index in 0..self.quorums().ensemble {
            let quorums = self.quorums();
            let ids: Vec<u64> = (first..end)
                .filter(|&entry_id| quorums.stores(entry_id, index))
                .collect();
            if let Err(reason) = self.send_entries(index, &ids) {
                broken.push((index, reason));
            }
        }
        for (index, reason) in broken {
            self.replace_bookie(index, reason).await;
        }
    }

    /// Sends pending entries (by id) to the bookie at `index`, in requests of bounded size.
    fn send_entries(&mut self, index: usize, ids: &[u64]) -> Result<(), String> {
        let first_pending = self.tracker.first_pending();
        let Some(link) = self.links.get(index) else {
            return Err(format!("no bookie at ensemble index {index}"));
        };
        let max_entries = self.client.config.max_batch_entries.max(1);
        let mut chunk: Vec<Entry> = Vec::new();
        let mut chunk_bytes = 0;
        let send = |entries: Vec<Entry>| {
            link.subscription
                .requests()
                .try_send(AddRequest {
                    entries,
                    writer_token: self.token.clone(),
                    recovery: false,
                    ledger_tokens: Vec::new(),
                })
                .map_err(|error| match error {
                    mpsc::error::TrySendError::Full(_) => {
                        format!("bookie {} fell too far behind", link.address)
                    }
                    mpsc::error::TrySendError::Closed(_) => {
                        format!("add stream to {} is closed", link.address)
                    }
                })
        };
        for &entry_id in ids {
            let Some(pending) = entry_id
                .checked_sub(first_pending)
                .and_then(|offset| self.pending.get(offset as usize))
            else {
                continue;
            };
            chunk_bytes += pending.entry.payload.len();
            chunk.push(pending.entry.clone());
            if chunk.len() >= max_entries || chunk_bytes >= MAX_REQUEST_BYTES {
                send(std::mem::take(&mut chunk))?;
                chunk_bytes = 0;
            }
        }
        if !chunk.is_empty() {
            send(chunk)?;
        }
        if let Some(link) = self.links.get_mut(index) {
            link.unanswered += ids.len();
            if !ids.is_empty() && link.waiting_since.is_none() {
                link.waiting_since = Some(Instant::now());
            }
        }
        Ok(())
    }

    async fn on_event(&mut self, event: Event) {
        if self.failure.is_some() {
            return;
        }
        match event {
            Event::Results {
                index,
                generation,
                results,
            } => {
                let Some(link) = self.links.get_mut(index) else {
                    return;
                };
                if link.generation != generation {
                    return;
                }
                link.unanswered = link.unanswered.saturating_sub(results.len());
                link.waiting_since = (link.unanswered > 0).then(Instant::now);
                let mut broken = None;
                for result in results {
                    if result.ledger_id != self.ledger_id {
                        continue;
                    }
                    match ErrorCode::try_from(result.code) {
                        Ok(ErrorCode::Ok) => {
                            self.tracker.ack(result.entry_id, index);
                        }
                        Ok(ErrorCode::Fenced) => {
                            info!(ledger_id = self.ledger_id, "ledger fenced by a recovery");
                            self.fail(Failure::Fenced);
                            return;
                        }
                        Ok(ErrorCode::Unauthorized) => {
                            self.fail(Failure::Other(result.message));
                            return;
                        }
                        _ => {
                            broken = Some(format!(
                                "entry {} refused: {}",
                                result.entry_id, result.message
                            ))
                        }
                    }
                }
                if let Some(reason) = broken {
                    self.replace_bookie(index, reason).await;
                }
            }
            Event::Broken {
                index,
                generation,
                reason,
            } => {
                if self.links.get(index).map(|link| link.generation) == Some(generation) {
                    self.replace_bookie(index, reason).await;
                }
            }
        }
    }

    async fn check_timeouts(&mut self) {
        if self.failure.is_some() {
            return;
        }
        let timeout = self.client.config.add_timeout;
        // Bookies that hold back the first pending add, and bookies silent while owing
        // answers (even when the others' acks let adds complete without them).
        let mut late: Vec<usize> = match self.pending.front() {
            Some(front) if front.sent_at.elapsed() >= timeout => self.tracker.laggards_of_first(),
            _ => Vec::new(),
        };
        for (index, link) in self.links.iter().enumerate() {
            if link
                .waiting_since
                .is_some_and(|since| since.elapsed() >= timeout)
                && !late.contains(&index)
            {
                late.push(index);
            }
        }
        for index in late {
            self.replace_bookie(index, format!("no answer within {timeout:?}"))
                .await;
        }
    }

    /// Ensemble change: a new bookie at `index` from the first pending entry on, written to
    /// the metadata by CAS before anything is sent to it; then it gets every pending entry
    /// it stores.
    async fn replace_bookie(&mut self, index: usize, reason: String) {
        let mut reason = reason;
        let mut attempts = 0;
        loop {
            if self.failure.is_some() {
                return;
            }
            let Some(failed) = self.links.get(index).map(|link| link.address.clone()) else {
                return;
            };
            warn!(ledger_id = self.ledger_id, bookie = %failed, %reason, "replacing bookie");
            self.excluded.insert(failed);
            attempts += 1;
            if attempts > MAX_REPLACEMENT_ATTEMPTS {
                self.fail(Failure::Other(format!(
                    "no working replacement after {MAX_REPLACEMENT_ATTEMPTS} attempts: {reason}"
                )));
                return;
            }
            let link = match self.change_ensemble(index).await {
                Ok(Some(link)) => link,
                Ok(None) => continue,
                Err(failure) => {
                    self.fail(failure);
                    return;
                }
            };
            info!(
                ledger_id = self.ledger_id,
                index,
                bookie = %link.address,
                from_entry = self.tracker.first_pending(),
                "ensemble changed"
            );
            self.links[index] = link;
            let now = Instant::now();
            for pending in &mut self.pending {
                pending.sent_at = now;
            }
            let resend = self.tracker.replace(index);
            match self.send_entries(index, &resend) {
                Ok(()) => return,
                Err(error) => reason = error,
            }
        }
    }

    /// Picks and connects a replacement for `index` and commits the new ensemble. `Ok(None)`
    /// means the chosen bookie was unreachable (it is excluded; try again).
    async fn change_ensemble(&mut self, index: usize) -> Result<Option<BookieLink>, Failure> {
        let other = |error: LedgerError| Failure::Other(error.to_string());
        let candidates = available_bookies(&self.client.meta).await.map_err(other)?;
        let mut ensemble = self.metadata.last_segment().bookies.clone();
        let placement = &self.client.placement;
        let replacement = match placement.replacement(&ensemble, index, &self.excluded, &candidates)
        {
            Ok(replacement) => replacement,
            // Bookies that failed earlier and registered again (restarted) are fair game once
            // nothing else is left; only the one being replaced stays out.
            Err(LedgerError::NotEnoughBookies { .. }) if self.excluded.len() > 1 => {
                let failed = ensemble[index].clone();
                self.excluded.retain(|address| *address == failed);
                placement
                    .replacement(&ensemble, index, &self.excluded, &candidates)
                    .map_err(other)?
            }
            Err(error) => return Err(other(error)),
        };
        let link = match self.open_link(index, replacement.clone()).await {
            Ok(link) => link,
            Err(error) => {
                warn!(%error, bookie = %replacement, "replacement bookie unreachable");
                self.excluded.insert(replacement);
                return Ok(None);
            }
        };
        ensemble[index] = replacement;
        loop {
            let mut updated = self.metadata.clone();
            updated.set_ensemble_from(self.tracker.first_pending(), ensemble.clone());
            match self.client.write_metadata(&updated, self.version).await {
                Ok(Some(version)) => {
                    self.metadata = updated;
                    self.version = version;
                    return Ok(Some(link));
                }
                Ok(None) => {
                    let (current, version) = self
                        .client
                        .read_metadata(self.ledger_id)
                        .await
                        .map_err(other)?;
                    if current.state != LedgerState::Open {
                        return Err(Failure::Fenced);
                    }
                    // Only this writer changes an open ledger; take what is stored and retry.
                    self.metadata = current;
                    self.version = version;
                }
                Err(error) => return Err(other(error)),
            }
        }
    }

    fn complete(&mut self) {
        let done = self.tracker.take_completed();
        if done.is_empty() {
            return;
        }
        for entry_id in done {
            let Some(pending) = self.pending.pop_front() else {
                break;
            };
            self.completed_length = pending.length_through;
            if let Some(done) = pending.done {
                let _ = done.send(Ok(entry_id));
            }
        }
        self.published_lac
            .store(self.tracker.last_add_confirmed(), Ordering::Release);
    }

    /// Stops the writer: every pending and later add fails with the failure's error.
    fn fail(&mut self, failure: Failure) {
        warn!(ledger_id = self.ledger_id, ?failure, "ledger writer stops");
        for pending in self.pending.drain(..) {
            if let Some(done) = pending.done {
                let _ = done.send(Err(failure.error(self.ledger_id)));
            }
        }
        self.tracker = AckTracker::new(self.quorums(), self.tracker.first_pending());
        self.failure = Some(failure);
    }

    async fn close(&mut self) -> LedgerResult<LedgerMetadata> {
        if let Some(failure) = &self.failure {
            return Err(failure.error(self.ledger_id));
        }
        let last_entry_id = self.tracker.last_add_confirmed();
        loop {
            let mut closed = self.metadata.clone();
            closed.state = LedgerState::Closed;
            closed.last_entry_id = last_entry_id;
            closed.length = self.completed_length;
            if let Some(version) = self.client.write_metadata(&closed, self.version).await? {
                self.version = version;
                info!(ledger_id = self.ledger_id, last_entry_id, "ledger closed");
                return Ok(closed);
            }
            let (current, version) = self.client.read_metadata(self.ledger_id).await?;
            match current.state {
                LedgerState::Closed if current.last_entry_id == last_entry_id => {
                    return Ok(current)
                }
                LedgerState::Open => {
                    self.metadata = current;
                    self.version = version;
                }
                _ => {
                    return Err(LedgerError::Fenced {
                        ledger_id: self.ledger_id,
                    })
                }
            }
        }
    }
}
