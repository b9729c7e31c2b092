//! [`ManagedLedger`]: a topic's log over the ledger client and the metadata store.
//!
//! One task, the appender, owns the ledger being written and every change to the stored ledger
//! list (new ledger, rollover, healing after a write failure, retention, close), so those
//! changes never race each other. Reads, acknowledgements and cursor queries go through shared
//! state behind a short-lived lock that is never held across an `.await`. A second task
//! persists dirty cursors in batches.
//!
//! Invariants (see ARCHITECTURE.md):
//! - Positions are acknowledged in order, and an acknowledged append is in the log for good:
//!   its ledger is only ever closed at or after it, and only deleted once every cursor has
//!   consumed it and retention allows.
//! - Only one owner writes: opening recovers (fences) the previous owner's ledger, and every
//!   change of the ledger list is a compare-and-set on its version; an owner whose CAS fails,
//!   or whose ledger is fenced, stops and reports [`ManagedLedgerError::Fenced`].
//! - The log holds exactly the acknowledged appends of a live owner: after a write failure the
//!   owner closes the ledger where its own acknowledged entries end, so an entry whose append
//!   was reported as failed is never read back.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use magnetar_bookie::{LedgerClient, LedgerError, LedgerOptions, LedgerReader, LedgerWriter};
use magnetar_meta::MetaError;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Notify};
use tracing::{info, warn};

use super::cursor_state::CursorState;
use super::entry_cache::EntryCache;
use super::error::{ManagedLedgerError, ManagedLedgerResult};
use super::position::{Layout, Position};
use super::retention::{ledgers_to_delete, RetentionPolicy, RolloverPolicy};
use super::stored::{cursor_key, cursor_prefix, log_key, validate_name, StoredLedger, StoredLog};

/// How the log is written, rolled, kept and cached. Every field has a working default.
#[derive(Debug, Clone)]
pub struct ManagedLedgerConfig {
    /// Ensemble and quorums of every new ledger.
    pub ledger_options: LedgerOptions,
    pub rollover: RolloverPolicy,
    pub retention: RetentionPolicy,
    /// Bytes of recent entries kept for tailing readers.
    pub cache_capacity_bytes: usize,
    /// Dirty cursors are written to the metadata store at most this often.
    pub cursor_flush_interval: Duration,
    /// Individually acknowledged ranges persisted per cursor; beyond it, entries are
    /// redelivered after a reopen (never lost).
    pub max_persisted_ack_ranges: usize,
    /// Appends waiting for the appender beyond this are refused with `Busy`.
    pub max_pending_appends: usize,
    /// How often the appender applies retention by itself.
    pub trim_interval: Duration,
    /// Attempts at winning the ledger list's compare-and-set when opening.
    pub open_attempts: usize,
}

impl Default for ManagedLedgerConfig {
    fn default() -> Self {
        Self {
            ledger_options: LedgerOptions::default(),
            rollover: RolloverPolicy::default(),
            retention: RetentionPolicy::default(),
            cache_capacity_bytes: 64 << 20,
            cursor_flush_interval: Duration::from_millis(200),
            max_persisted_ack_ranges: 10_000,
            max_pending_appends: 50_000,
            trim_interval: Duration::from_secs(60),
            open_attempts: 5,
        }
    }
}

/// Where a new cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialPosition {
    /// Before the first entry still in the log.
    Earliest,
    /// After the last entry appended so far.
    Latest,
}

/// One entry read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub position: Position,
    pub payload: Bytes,
}

/// An append queued by [`ManagedLedger::submit_append`]; awaiting it gives the entry's
/// position once it is durable.
pub struct SubmittedAppend {
    answer: oneshot::Receiver<ManagedLedgerResult<Position>>,
    ledger: ManagedLedger,
    failures_at_submit: u64,
}

impl SubmittedAppend {
    /// Resolves once the entry is durable, with its position.
    pub async fn wait(self) -> ManagedLedgerResult<Position> {
        self.await
    }

    /// [`ManagedLedger::append_failures`] when this append was queued: it is written only if
    /// the count is still the same when its turn comes.
    pub fn failures_at_submit(&self) -> u64 {
        self.failures_at_submit
    }
}

impl Future for SubmittedAppend {
    type Output = ManagedLedgerResult<Position>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.answer)
            .poll(context)
            .map(|answer| answer.unwrap_or_else(|_| Err(self.ledger.stopped_error())))
    }
}

enum Command {
    Append {
        payload: Bytes,
        /// The failure count when it was queued.
        failures_at_submit: u64,
        reply: oneshot::Sender<ManagedLedgerResult<Position>>,
    },
    Trim {
        reply: oneshot::Sender<ManagedLedgerResult<Vec<u64>>>,
    },
    Close {
        reply: oneshot::Sender<ManagedLedgerResult<()>>,
    },
}

struct CursorEntry {
    state: CursorState,
    /// Version of the cursor's key in the store (0: not written yet).
    version: u64,
    dirty: bool,
}

struct State {
    log: StoredLog,
    log_version: u64,
    layout: Layout,
    /// Entries and bytes acknowledged in the ledger being written.
    current_entries: u64,
    current_size_bytes: u64,
    current_opened: std::time::Instant,
    /// The last acknowledged position: `(current ledger, -1)` before its first entry.
    last_confirmed: Position,
    cache: EntryCache,
    cursors: BTreeMap<String, CursorEntry>,
    /// Starts as the config's; a namespace's policy may change it while the log is open.
    retention: RetentionPolicy,
}

impl State {
    fn refresh_layout(&mut self) {
        self.layout = self.log.layout();
    }

    fn current_ledger_id(&self) -> u64 {
        self.log
            .ledgers
            .last()
            .map(|ledger| ledger.ledger_id)
            .unwrap_or(0)
    }

    /// The first position still in the log (before its first entry).
    fn earliest(&self) -> Position {
        Position::before_ledger(
            self.log
                .ledgers
                .first()
                .map(|ledger| ledger.ledger_id)
                .unwrap_or(0),
        )
    }
}

struct Inner {
    name: String,
    client: LedgerClient,
    config: ManagedLedgerConfig,
    state: Mutex<State>,
    readers: Mutex<HashMap<u64, Arc<LedgerReader>>>,
    appended: Notify,
    /// Appends answered with a failure that made later queued ones unsafe to write (see
    /// [`ManagedLedger::append_failures`]).
    append_failures: AtomicU64,
    fenced: AtomicBool,
    closed: AtomicBool,
}

/// A topic's log; cheap to clone. When the last handle is dropped the appender finishes
/// what is in flight and stops, leaving the ledger open for the next owner to recover.
#[derive(Clone)]
pub struct ManagedLedger {
    inner: Arc<Inner>,
    commands: mpsc::Sender<Command>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

impl ManagedLedger {
    /// Opens (creating if absent) the managed ledger `name`, taking ownership: the previous
    /// owner's last ledger is recovered and closed, which fences that owner out, and a new
    /// ledger is opened for writing.
    pub async fn open(
        client: LedgerClient,
        name: &str,
        config: ManagedLedgerConfig,
    ) -> ManagedLedgerResult<Self> {
        validate_name(name, false)?;
        let (log, log_version, writer) = take_ownership(&client, name, &config).await?;
        let cursors = load_cursors(&client, name).await?;
        let current = writer.ledger_id();
        let last_confirmed = last_entry_of(&log).unwrap_or(Position::before_ledger(current));
        let layout = log.layout();
        let (commands, inbox) = mpsc::channel(config.max_pending_appends.max(1));
        let inner = Arc::new(Inner {
            name: name.to_string(),
            client,
            state: Mutex::new(State {
                log,
                log_version,
                layout,
                current_entries: 0,
                current_size_bytes: 0,
                current_opened: std::time::Instant::now(),
                last_confirmed,
                cache: EntryCache::new(config.cache_capacity_bytes),
                cursors,
                retention: config.retention,
            }),
            config,
            readers: Mutex::new(HashMap::new()),
            appended: Notify::new(),
            append_failures: AtomicU64::new(0),
            fenced: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(Appender::new(inner.clone(), writer).run(inbox));
        tokio::spawn(flush_cursors_periodically(Arc::downgrade(&inner)));
        info!(name, ledger_id = current, "managed ledger opened");
        Ok(Self { inner, commands })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Whether another owner has taken this log over.
    pub fn is_fenced(&self) -> bool {
        self.inner.fenced.load(Ordering::Acquire)
    }

    fn check_usable(&self) -> ManagedLedgerResult<()> {
        if self.is_fenced() {
            return Err(ManagedLedgerError::Fenced {
                name: self.inner.name.clone(),
            });
        }
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ManagedLedgerError::Closed {
                name: self.inner.name.clone(),
            });
        }
        Ok(())
    }

    /// Appends an entry; resolves once it is durable (acknowledged by the ack quorum, and
    /// every earlier append too) with its position.
    pub async fn append(&self, payload: Bytes) -> ManagedLedgerResult<Position> {
        self.submit_append(payload)?.wait().await
    }

    /// Queues an append now and returns a handle to await its outcome: entries are stored in
    /// the order of these calls, so a caller can pipeline many appends and keep their order.
    ///
    /// Appends queued at the same [`append_failures`](Self::append_failures) count are stored
    /// as a prefix: once one of them fails, every later one fails too, even if the log has
    /// moved to a new ledger meanwhile. A caller that must not leave a gap (a producer whose
    /// resend has to come before anything newer) stops queueing while an append of an older
    /// count is unanswered.
    pub fn submit_append(&self, payload: Bytes) -> ManagedLedgerResult<SubmittedAppend> {
        self.check_usable()?;
        let (reply, answer) = oneshot::channel();
        let failures_at_submit = self.append_failures();
        self.commands
            .try_send(Command::Append {
                payload,
                failures_at_submit,
                reply,
            })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => ManagedLedgerError::Busy {
                    name: self.inner.name.clone(),
                    limit: self.inner.config.max_pending_appends,
                },
                mpsc::error::TrySendError::Closed(_) => self.stopped_error(),
            })?;
        Ok(SubmittedAppend {
            answer,
            ledger: self.clone(),
            failures_at_submit,
        })
    }

    /// How many times an append failed in a way that fails the appends queued behind it
    /// (the ledger being written failed, or no new one could be opened). Rises before any
    /// such failure is answered.
    pub fn append_failures(&self) -> u64 {
        self.inner.append_failures.load(Ordering::Acquire)
    }

    fn stopped_error(&self) -> ManagedLedgerError {
        if self.is_fenced() {
            ManagedLedgerError::Fenced {
                name: self.inner.name.clone(),
            }
        } else {
            ManagedLedgerError::Closed {
                name: self.inner.name.clone(),
            }
        }
    }

    /// The last acknowledged position.
    pub fn last_confirmed(&self) -> Position {
        self.inner.state.lock().last_confirmed
    }

    /// The ledger ids of the log, oldest first.
    pub fn ledger_ids(&self) -> Vec<u64> {
        let state = self.inner.state.lock();
        state.log.ledgers.iter().map(|l| l.ledger_id).collect()
    }

    /// The log's ledgers, oldest first, with the entries and bytes the ledger being written
    /// holds so far (the stored list only learns them when it closes).
    pub fn ledgers(&self) -> Vec<StoredLedger> {
        let state = self.inner.state.lock();
        let mut ledgers = state.log.ledgers.clone();
        if let Some(current) = ledgers.last_mut() {
            if current.closed_at_ms.is_none() {
                current.entries = state.current_entries;
                current.size_bytes = state.current_size_bytes;
            }
        }
        ledgers
    }

    /// The entry cache's (hits, misses).
    pub fn cache_hit_counts(&self) -> (u64, u64) {
        self.inner.state.lock().cache.hit_counts()
    }

    /// Waits until an entry after `position` is acknowledged or `timeout` passes; returns
    /// whether one is.
    pub async fn wait_for_entry_after(&self, position: Position, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.appended.notified();
            if self.last_confirmed() > position {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.last_confirmed() > position;
            }
        }
    }

    /// Up to `max_entries` entries from `from` on (inclusive), in order, never past the last
    /// acknowledged one; empty when there is nothing yet. Served from the entry cache when it
    /// holds them, else from the bookies.
    pub async fn read(
        &self,
        from: Position,
        max_entries: usize,
    ) -> ManagedLedgerResult<Vec<LogEntry>> {
        let (start, end, cached, current) = {
            let mut state = self.inner.state.lock();
            let last = state.last_confirmed;
            // `from` may sit just past a ledger's end: step to the next real entry.
            let before = Position::new(from.ledger_id, from.entry_id.saturating_sub(1));
            let Some(start) = state.layout.next(before) else {
                return Ok(Vec::new());
            };
            if start > last || max_entries == 0 {
                return Ok(Vec::new());
            }
            let Some(ledger) = state
                .log
                .ledgers
                .iter()
                .find(|ledger| ledger.ledger_id == start.ledger_id)
                .copied()
            else {
                return Err(ManagedLedgerError::InvalidPosition {
                    name: self.inner.name.clone(),
                    position: from.to_string(),
                });
            };
            let current = ledger.closed_at_ms.is_none();
            let ledger_last = if current {
                last.entry_id
            } else {
                ledger.entries as i64 - 1
            };
            let end = ledger_last.min(start.entry_id + max_entries as i64 - 1);
            let cached = state
                .cache
                .get_run(start, (end - start.entry_id + 1) as usize);
            (start, end, cached, current)
        };
        if !cached.is_empty() {
            return Ok(cached
                .into_iter()
                .map(|(position, payload)| LogEntry { position, payload })
                .collect());
        }
        let reader = self.reader(start.ledger_id).await?;
        // This managed ledger wrote the current ledger and closed the earlier ones, so it
        // knows `end` is confirmed. Asking the bookies would not do: a reader opened while a
        // ledger was current keeps its old LAC after the close, and the bookies learn a LAC
        // only from later entries, which the last ones never have.
        if !current && !reader.is_closed() {
            // Opened while the ledger was current: its ensembles may have changed since.
            reader.refresh_metadata().await?;
        }
        reader.confirmed_through(end);
        let entries = match reader.read(start.entry_id as u64, end as u64).await {
            Ok(entries) => entries,
            Err(error) => {
                // The next attempt opens the ledger afresh, with its latest metadata.
                self.inner.readers.lock().remove(&start.ledger_id);
                return Err(error.into());
            }
        };
        Ok(entries
            .into_iter()
            .map(|entry| LogEntry {
                position: Position::new(start.ledger_id, entry.entry_id as i64),
                payload: entry.payload,
            })
            .collect())
    }

    async fn reader(&self, ledger_id: u64) -> ManagedLedgerResult<Arc<LedgerReader>> {
        if let Some(reader) = self.inner.readers.lock().get(&ledger_id) {
            return Ok(reader.clone());
        }
        let reader = Arc::new(self.inner.client.open(ledger_id).await?);
        self.inner.readers.lock().insert(ledger_id, reader.clone());
        Ok(reader)
    }

    /// Opens the cursor `cursor`, creating it at `initial` when it does not exist; returns
    /// its state.
    pub async fn open_cursor(
        &self,
        cursor: &str,
        initial: InitialPosition,
    ) -> ManagedLedgerResult<CursorState> {
        self.check_usable()?;
        validate_name(cursor, true)?;
        let created = {
            let mut state = self.inner.state.lock();
            if let Some(entry) = state.cursors.get(cursor) {
                return Ok(entry.state.clone());
            }
            let start = match initial {
                InitialPosition::Earliest => state.earliest(),
                InitialPosition::Latest => state.last_confirmed,
            };
            let created = CursorState::new(start);
            state.cursors.insert(
                cursor.to_string(),
                CursorEntry {
                    state: created.clone(),
                    version: 0,
                    dirty: true,
                },
            );
            created
        };
        self.flush_cursors().await?;
        Ok(created)
    }

    /// Deletes a cursor: it no longer holds back retention.
    pub async fn delete_cursor(&self, cursor: &str) -> ManagedLedgerResult<()> {
        let removed = self.inner.state.lock().cursors.remove(cursor);
        if removed.is_none() {
            return Err(self.no_such_cursor(cursor));
        }
        self.inner
            .client
            .meta()
            .delete(&cursor_key(&self.inner.name, cursor), None)
            .await?;
        Ok(())
    }

    fn no_such_cursor(&self, cursor: &str) -> ManagedLedgerError {
        ManagedLedgerError::NoSuchCursor {
            name: self.inner.name.clone(),
            cursor: cursor.to_string(),
        }
    }

    /// The names of the cursors.
    pub fn cursor_names(&self) -> Vec<String> {
        self.inner.state.lock().cursors.keys().cloned().collect()
    }

    /// A copy of a cursor's state.
    pub fn cursor_state(&self, cursor: &str) -> ManagedLedgerResult<CursorState> {
        self.inner
            .state
            .lock()
            .cursors
            .get(cursor)
            .map(|entry| entry.state.clone())
            .ok_or_else(|| self.no_such_cursor(cursor))
    }

    /// Acknowledges one entry for `cursor`; persisted with the next batch.
    pub fn ack(&self, cursor: &str, position: Position) -> ManagedLedgerResult<()> {
        self.update_cursor(cursor, |state, layout| state.ack(position, layout))
    }

    /// Acknowledges everything up to `position` for `cursor`; persisted with the next batch.
    pub fn ack_cumulative(&self, cursor: &str, position: Position) -> ManagedLedgerResult<()> {
        self.update_cursor(cursor, |state, layout| {
            state.ack_cumulative(position, layout)
        })
    }

    fn update_cursor(
        &self,
        cursor: &str,
        change: impl FnOnce(&mut CursorState, &Layout) -> bool,
    ) -> ManagedLedgerResult<()> {
        self.check_usable()?;
        let mut guard = self.inner.state.lock();
        let state = &mut *guard;
        let entry = state
            .cursors
            .get_mut(cursor)
            .ok_or_else(|| self.no_such_cursor(cursor))?;
        if change(&mut entry.state, &state.layout) {
            entry.dirty = true;
        }
        Ok(())
    }

    /// Moves a cursor so that everything after `mark_delete` is unacknowledged again (or
    /// acknowledged, when it moves forward): a subscription's seek or reset. Persisted with
    /// the next batch.
    pub fn reset_cursor(&self, cursor: &str, mark_delete: Position) -> ManagedLedgerResult<()> {
        self.update_cursor(cursor, |state, _| {
            *state = CursorState::new(mark_delete);
            true
        })
    }

    /// The position before the first entry still in the log.
    pub fn earliest(&self) -> Position {
        self.inner.state.lock().earliest()
    }

    /// Entries the cursor has not acknowledged yet.
    pub fn backlog_entries(&self, cursor: &str) -> ManagedLedgerResult<u64> {
        let state = self.inner.state.lock();
        let entry = state
            .cursors
            .get(cursor)
            .ok_or_else(|| self.no_such_cursor(cursor))?;
        Ok(entry
            .state
            .backlog_entries(&state.layout, state.last_confirmed))
    }

    /// The largest backlog over every cursor, in entries (0 without cursors).
    pub fn max_backlog_entries(&self) -> u64 {
        let state = self.inner.state.lock();
        state
            .cursors
            .values()
            .map(|entry| {
                entry
                    .state
                    .backlog_entries(&state.layout, state.last_confirmed)
            })
            .max()
            .unwrap_or(0)
    }

    /// Bytes stored in the log: closed ledgers as listed, plus the ledger being written.
    pub fn stored_size_bytes(&self) -> u64 {
        let state = self.inner.state.lock();
        let mut infos = state.log.ledger_infos();
        if let Some(current) = infos.last_mut() {
            current.size_bytes = state.current_size_bytes;
        }
        infos.iter().map(|ledger| ledger.size_bytes).sum()
    }

    /// Changes how long consumed data is kept; applies from the next trim.
    pub fn set_retention(&self, policy: RetentionPolicy) {
        self.inner.state.lock().retention = policy;
    }

    /// Writes every dirty cursor now (the background task does so every
    /// `cursor_flush_interval`).
    pub async fn flush_cursors(&self) -> ManagedLedgerResult<()> {
        flush_dirty_cursors(&self.inner).await
    }

    /// Applies retention now; returns the ledgers deleted.
    pub async fn trim(&self) -> ManagedLedgerResult<Vec<u64>> {
        self.check_usable()?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Trim { reply })
            .await
            .map_err(|_| self.stopped_error())?;
        answer.await.unwrap_or_else(|_| Err(self.stopped_error()))
    }

    /// Waits for pending appends, closes the current ledger, records it in the ledger list and
    /// persists the cursors. Later calls fail with `Closed`.
    pub async fn close(&self) -> ManagedLedgerResult<()> {
        self.check_usable()?;
        self.flush_cursors().await?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Close { reply })
            .await
            .map_err(|_| self.stopped_error())?;
        answer.await.unwrap_or_else(|_| Err(self.stopped_error()))
    }
}

/// The position of the last entry in the log's closed ledgers.
fn last_entry_of(log: &StoredLog) -> Option<Position> {
    log.ledgers
        .iter()
        .rev()
        .find(|ledger| ledger.entries > 0)
        .map(|ledger| Position::new(ledger.ledger_id, ledger.entries as i64 - 1))
}

/// Recovers the previous owner's ledger if it is still open, opens a new one and wins the
/// compare-and-set that makes this caller the owner.
async fn take_ownership(
    client: &LedgerClient,
    name: &str,
    config: &ManagedLedgerConfig,
) -> ManagedLedgerResult<(StoredLog, u64, LedgerWriter)> {
    let key = log_key(name);
    let mut last_error = None;
    for attempt in 0..config.open_attempts.max(1) {
        let (mut log, version) = match client.meta().get(&key).await? {
            Some(kv) => (StoredLog::decode(&key, &kv.value)?, kv.version),
            None => (StoredLog::new(), 0),
        };
        if let Some(last) = log.ledgers.last_mut() {
            if last.closed_at_ms.is_none() {
                close_by_recovery(client, last).await?;
            }
        }
        let mut options = config.ledger_options.clone();
        options
            .custom
            .insert("managed-ledger".to_string(), name.to_string());
        let writer = client.create(options).await?;
        log.ledgers.push(StoredLedger {
            ledger_id: writer.ledger_id(),
            entries: 0,
            size_bytes: 0,
            created_at_ms: now_ms(),
            closed_at_ms: None,
        });
        match client
            .meta()
            .put_if_version(&key, log.encode(), version)
            .await
        {
            Ok(new_version) => return Ok((log, new_version, writer)),
            Err(MetaError::VersionConflict { .. }) => {
                warn!(
                    name,
                    attempt, "another broker changed the log while opening; retrying"
                );
                discard_ledger(client, writer).await;
                last_error = Some(ManagedLedgerError::Fenced {
                    name: name.to_string(),
                });
            }
            Err(error) => {
                discard_ledger(client, writer).await;
                return Err(error.into());
            }
        }
    }
    Err(last_error.unwrap_or(ManagedLedgerError::Fenced {
        name: name.to_string(),
    }))
}

/// Closes a ledger another owner left open: recovery fences it and finds its end.
async fn close_by_recovery(
    client: &LedgerClient,
    ledger: &mut StoredLedger,
) -> ManagedLedgerResult<()> {
    match client.recover(ledger.ledger_id).await {
        Ok(reader) => {
            let metadata = reader.metadata();
            ledger.entries = (metadata.last_entry_id + 1).max(0) as u64;
            ledger.size_bytes = metadata.length;
        }
        // Created and listed, then deleted before any entry: it holds nothing.
        Err(LedgerError::NoSuchLedger { .. }) => {
            ledger.entries = 0;
            ledger.size_bytes = 0;
        }
        Err(error) => return Err(error.into()),
    }
    ledger.closed_at_ms = Some(now_ms());
    Ok(())
}

/// Best-effort removal of a ledger this caller created but could not add to the log.
async fn discard_ledger(client: &LedgerClient, writer: LedgerWriter) {
    let ledger_id = writer.ledger_id();
    drop(writer);
    if let Err(error) = client.delete(ledger_id).await {
        warn!(ledger_id, %error, "could not delete an unused ledger; it is orphaned");
    }
}

async fn load_cursors(
    client: &LedgerClient,
    name: &str,
) -> ManagedLedgerResult<BTreeMap<String, CursorEntry>> {
    let prefix = cursor_prefix(name);
    let mut cursors = BTreeMap::new();
    for kv in client.meta().list_all(&prefix).await? {
        let cursor = kv.key[prefix.len()..].to_string();
        let state = CursorState::decode(&kv.value).map_err(|error| {
            ManagedLedgerError::CorruptMetadata {
                key: kv.key.clone(),
                reason: error.to_string(),
            }
        })?;
        cursors.insert(
            cursor,
            CursorEntry {
                state,
                version: kv.version,
                dirty: false,
            },
        );
    }
    Ok(cursors)
}

async fn flush_dirty_cursors(inner: &Inner) -> ManagedLedgerResult<()> {
    let dirty: Vec<(String, Vec<u8>, u64)> = {
        let mut state = inner.state.lock();
        state
            .cursors
            .iter_mut()
            .filter(|(_, entry)| entry.dirty)
            .map(|(name, entry)| {
                entry.dirty = false;
                (
                    name.clone(),
                    entry.state.encode(inner.config.max_persisted_ack_ranges),
                    entry.version,
                )
            })
            .collect()
    };
    for (cursor, bytes, version) in dirty {
        let key = cursor_key(&inner.name, &cursor);
        match inner
            .client
            .meta()
            .put_if_version(&key, bytes, version)
            .await
        {
            Ok(new_version) => {
                if let Some(entry) = inner.state.lock().cursors.get_mut(&cursor) {
                    entry.version = new_version;
                }
            }
            Err(MetaError::VersionConflict { .. }) => {
                // Another owner wrote this cursor: it has taken the log over.
                inner.fenced.store(true, Ordering::Release);
                return Err(ManagedLedgerError::Fenced {
                    name: inner.name.clone(),
                });
            }
            Err(error) => {
                if let Some(entry) = inner.state.lock().cursors.get_mut(&cursor) {
                    entry.dirty = true;
                }
                return Err(error.into());
            }
        }
    }
    Ok(())
}

async fn flush_cursors_periodically(inner: std::sync::Weak<Inner>) {
    loop {
        let interval = match inner.upgrade() {
            Some(inner) => inner.config.cursor_flush_interval,
            None => return,
        };
        tokio::time::sleep(interval).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.fenced.load(Ordering::Acquire) || inner.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(error) = flush_dirty_cursors(&inner).await {
            warn!(name = %inner.name, %error, "persisting cursors failed; will retry");
        }
    }
}

type AddOutcome = (
    Result<u64, LedgerError>,
    Bytes,
    oneshot::Sender<ManagedLedgerResult<Position>>,
);

/// The task that owns the ledger being written and every change to the ledger list.
struct Appender {
    inner: Arc<Inner>,
    writer: Option<LedgerWriter>,
    pending: FuturesOrdered<futures::future::BoxFuture<'static, AddOutcome>>,
    /// Set after a failed add: the ledger must be replaced before more are sent.
    failed: Option<LedgerError>,
}

impl Appender {
    fn new(inner: Arc<Inner>, writer: LedgerWriter) -> Self {
        Self {
            inner,
            writer: Some(writer),
            pending: FuturesOrdered::new(),
            failed: None,
        }
    }

    async fn run(mut self, mut inbox: mpsc::Receiver<Command>) {
        let mut trim_timer = tokio::time::interval(self.inner.config.trim_interval);
        trim_timer.tick().await;
        loop {
            tokio::select! {
                Some(outcome) = self.pending.next(), if !self.pending.is_empty() => {
                    self.complete(outcome);
                }
                command = inbox.recv() => {
                    let Some(command) = command else { break };
                    match command {
                        Command::Append { payload, failures_at_submit, reply } => {
                            self.append(payload, failures_at_submit, reply).await
                        }
                        Command::Trim { reply } => {
                            let _ = reply.send(self.trim().await);
                        }
                        Command::Close { reply } => {
                            let outcome = self.close().await;
                            let _ = reply.send(outcome);
                            break;
                        }
                    }
                }
                _ = trim_timer.tick() => {
                    if let Err(error) = self.trim().await {
                        warn!(name = %self.inner.name, %error, "retention failed; will retry");
                    }
                }
            }
            if self.inner.fenced.load(Ordering::Acquire) {
                break;
            }
        }
        // Whatever is still queued is answered by the handle seeing the channel closed.
        self.drain().await;
    }

    fn name(&self) -> String {
        self.inner.name.clone()
    }

    fn fenced_error(&self) -> ManagedLedgerError {
        ManagedLedgerError::Fenced { name: self.name() }
    }

    /// The error of an append that fails because one before it did.
    fn failed_behind(&self, reason: &str) -> ManagedLedgerError {
        ManagedLedgerError::AppendFailed {
            name: self.name(),
            source: LedgerError::WriterFailed {
                ledger_id: self.inner.state.lock().current_ledger_id(),
                reason: reason.into(),
            },
        }
    }

    /// Counts a failure that later queued appends must share; called before it is answered.
    fn count_failure(&self) {
        self.inner.append_failures.fetch_add(1, Ordering::AcqRel);
    }

    async fn append(
        &mut self,
        payload: Bytes,
        failures_at_submit: u64,
        reply: oneshot::Sender<ManagedLedgerResult<Position>>,
    ) {
        if failures_at_submit != self.inner.append_failures.load(Ordering::Acquire) {
            // Queued before an earlier append failed: writing it (perhaps to a new ledger)
            // would put it in the log while the one before it is missing.
            let _ = reply.send(Err(
                self.failed_behind("an append queued before this one failed")
            ));
            return;
        }
        let should_roll = {
            let state = self.inner.state.lock();
            self.inner.config.rollover.should_roll(
                state.current_entries + self.pending.len() as u64,
                state.current_size_bytes,
                state.current_opened.elapsed(),
            )
        };
        if self.failed.is_some() || should_roll {
            if let Err(error) = self.replace_ledger().await {
                self.count_failure();
                let _ = reply.send(Err(error));
                return;
            }
        }
        let Some(writer) = &self.writer else {
            let _ = reply.send(Err(self.fenced_error()));
            return;
        };
        match writer.add_pipelined(payload.clone()).await {
            Ok(pending) => {
                self.pending.push_back(Box::pin(async move {
                    let outcome = pending.await;
                    (outcome, payload, reply)
                }));
            }
            Err(error) => {
                let ledger_id = writer.ledger_id();
                if self.failed.is_none() {
                    self.count_failure();
                }
                self.failed = Some(LedgerError::WriterFailed {
                    ledger_id,
                    reason: error.to_string(),
                });
                let _ = reply.send(Err(ManagedLedgerError::AppendFailed {
                    name: self.name(),
                    source: error,
                }));
            }
        }
    }

    fn complete(&mut self, (outcome, payload, reply): AddOutcome) {
        if outcome.is_ok() && self.failed.is_some() {
            // Positions are contiguous: once an add failed, the log ends before it, so a later
            // add that reached its bookies is still reported as failed and never read back.
            let _ = reply.send(Err(
                self.failed_behind("an earlier append to this ledger failed")
            ));
            return;
        }
        match outcome {
            Ok(entry_id) => {
                let position = {
                    let mut state = self.inner.state.lock();
                    let position = Position::new(state.current_ledger_id(), entry_id as i64);
                    state.current_entries = entry_id + 1;
                    state.current_size_bytes += payload.len() as u64;
                    state.last_confirmed = position;
                    state.cache.insert(position, payload);
                    position
                };
                self.inner.appended.notify_waiters();
                let _ = reply.send(Ok(position));
            }
            Err(error) => {
                if matches!(error, LedgerError::Fenced { .. }) {
                    warn!(name = %self.inner.name, "ledger fenced: another broker owns this log");
                    self.inner.fenced.store(true, Ordering::Release);
                    let _ = reply.send(Err(self.fenced_error()));
                    return;
                }
                if self.failed.is_none() {
                    warn!(name = %self.inner.name, %error, "append failed; the ledger will be replaced");
                    self.count_failure();
                }
                self.failed = Some(LedgerError::WriterFailed {
                    ledger_id: self.inner.state.lock().current_ledger_id(),
                    reason: error.to_string(),
                });
                let _ = reply.send(Err(ManagedLedgerError::AppendFailed {
                    name: self.name(),
                    source: error,
                }));
            }
        }
    }

    /// Waits for every add in flight and answers it.
    async fn drain(&mut self) {
        while let Some(outcome) = self.pending.next().await {
            self.complete(outcome);
        }
    }

    /// Closes the current ledger where its acknowledged entries end and opens a new one; the
    /// ledger list changes by compare-and-set, and losing it means another owner took over.
    async fn replace_ledger(&mut self) -> ManagedLedgerResult<()> {
        self.finish_current_ledger().await?;
        let mut options = self.inner.config.ledger_options.clone();
        options
            .custom
            .insert("managed-ledger".to_string(), self.name());
        let writer = self.inner.client.create(options).await?;
        let (log, version) = {
            let state = self.inner.state.lock();
            let mut log = state.log.clone();
            log.ledgers.push(StoredLedger {
                ledger_id: writer.ledger_id(),
                entries: 0,
                size_bytes: 0,
                created_at_ms: now_ms(),
                closed_at_ms: None,
            });
            (log, state.log_version)
        };
        match self.store_log(log.clone(), version).await {
            Ok(()) => {
                let mut state = self.inner.state.lock();
                state.current_entries = 0;
                state.current_size_bytes = 0;
                state.current_opened = std::time::Instant::now();
                state.last_confirmed = last_entry_of(&state.log)
                    .unwrap_or(Position::before_ledger(writer.ledger_id()));
                drop(state);
                info!(name = %self.inner.name, ledger_id = writer.ledger_id(), "rolled over to a new ledger");
                self.writer = Some(writer);
                self.failed = None;
                Ok(())
            }
            Err(error) => {
                discard_ledger(&self.inner.client, writer).await;
                Err(error)
            }
        }
    }

    /// Drains the adds in flight, closes the ledger being written, and records it as closed
    /// in the ledger list with the entries this owner acknowledged.
    async fn finish_current_ledger(&mut self) -> ManagedLedgerResult<()> {
        self.drain().await;
        if self.inner.fenced.load(Ordering::Acquire) {
            return Err(self.fenced_error());
        }
        let (ledger_id, already_closed) = {
            let state = self.inner.state.lock();
            let current = state.log.ledgers.last();
            (
                state.current_ledger_id(),
                current.is_none_or(|ledger| ledger.closed_at_ms.is_some()),
            )
        };
        if already_closed {
            return Ok(());
        }
        let closed = match self.writer.take() {
            Some(writer) if self.failed.is_none() => writer.close().await.map(|_| ()),
            // After a failure (or a failed earlier attempt) the writer cannot close the
            // ledger; recovery does, at or past what was acknowledged, and the log keeps only
            // the acknowledged prefix.
            _ => {
                self.failed.get_or_insert(LedgerError::WriterFailed {
                    ledger_id,
                    reason: "closing by recovery".into(),
                });
                self.inner.client.recover(ledger_id).await.map(|_| ())
            }
        };
        match closed {
            Ok(()) => {}
            Err(LedgerError::Fenced { .. }) => {
                self.inner.fenced.store(true, Ordering::Release);
                return Err(self.fenced_error());
            }
            // The ledger stays open in the list and marked failed; the next attempt recovers.
            Err(error) => return Err(error.into()),
        }
        let (log, version) = {
            let state = self.inner.state.lock();
            let mut log = state.log.clone();
            if let Some(last) = log.ledgers.last_mut() {
                last.entries = state.current_entries;
                last.size_bytes = state.current_size_bytes;
                last.closed_at_ms = Some(now_ms());
            }
            (log, state.log_version)
        };
        self.store_log(log, version).await
    }

    /// Compare-and-set of the ledger list; on success the in-memory copy follows.
    async fn store_log(&mut self, log: StoredLog, version: u64) -> ManagedLedgerResult<()> {
        let key = log_key(&self.inner.name);
        match self
            .inner
            .client
            .meta()
            .put_if_version(&key, log.encode(), version)
            .await
        {
            Ok(new_version) => {
                let mut state = self.inner.state.lock();
                state.log = log;
                state.log_version = new_version;
                state.refresh_layout();
                Ok(())
            }
            Err(MetaError::VersionConflict { .. }) => {
                warn!(name = %self.inner.name, "the ledger list changed under this owner: fenced out");
                self.inner.fenced.store(true, Ordering::Release);
                Err(self.fenced_error())
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Deletes the ledgers retention allows: first from the list (by CAS), then on the
    /// bookies, so a crash in between leaves an unlisted ledger, never a listed missing one.
    async fn trim(&mut self) -> ManagedLedgerResult<Vec<u64>> {
        let (log, version, doomed) = {
            let state = self.inner.state.lock();
            let mut infos = state.log.ledger_infos();
            if let Some(current) = infos.last_mut() {
                current.entries = state.current_entries;
                current.size_bytes = state.current_size_bytes;
            }
            let slowest = state.cursors.values().map(|c| c.state.mark_delete()).min();
            let doomed = ledgers_to_delete(&infos, slowest, state.retention, now_ms());
            let mut log = state.log.clone();
            log.ledgers
                .retain(|ledger| !doomed.contains(&ledger.ledger_id));
            (log, state.log_version, doomed)
        };
        if doomed.is_empty() {
            return Ok(doomed);
        }
        self.store_log(log, version).await?;
        for &ledger_id in &doomed {
            self.inner.readers.lock().remove(&ledger_id);
            if let Err(error) = self.inner.client.delete(ledger_id).await {
                warn!(ledger_id, %error, "deleting a trimmed ledger failed; it is orphaned");
            }
        }
        info!(name = %self.inner.name, ?doomed, "retention deleted ledgers");
        Ok(doomed)
    }

    async fn close(&mut self) -> ManagedLedgerResult<()> {
        let outcome = self.finish_current_ledger().await;
        self.inner.closed.store(true, Ordering::Release);
        outcome
    }
}
