//! The gRPC face of the bookie: request validation and hand-off to the journal and storage.
//!
//! Nothing here blocks an async worker: index writes, entry-log reads and RocksDB lookups go to
//! `spawn_blocking`, and the journal is reached through its bounded queue.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use magnetar_proto::bookie::bookie_server::Bookie;
use magnetar_proto::bookie::{
    AddRequest, AddResponse, AddResult, DeleteLedgerRequest, DeleteLedgerResponse, Entry,
    ErrorCode, FenceRequest, FenceResponse, GetBookieInfoRequest, GetBookieInfoResponse,
    ReadLacRequest, ReadLacResponse, ReadRequest, ReadResponse,
};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use crate::config::BookieConfig;
use crate::disk::disk_space;
use crate::entry::entry_checksum_ok;
use crate::entry_log::list_entry_logs;
use crate::error::{BookieError, Result};
use crate::journal::{Journal, JournalCommand};
use crate::journal_file::list_journal_files;
use crate::request_merge::token_for;
use crate::storage::{LedgerStorage, WriterCheck};

/// State shared by every request.
pub struct BookieCore {
    pub(crate) config: BookieConfig,
    pub(crate) storage: Arc<LedgerStorage>,
    pub(crate) journal: Journal,
    /// Bound on journal-queued bytes, in KiB permits.
    queue_kib: Arc<Semaphore>,
    /// Set when the bookie stops: every add stream then stops reading and ends.
    add_streams_closing: watch::Sender<bool>,
}

impl BookieCore {
    pub(crate) fn new(config: BookieConfig, storage: Arc<LedgerStorage>, journal: Journal) -> Self {
        let queue_kib = Arc::new(Semaphore::new(config.journal_queue_bytes.div_ceil(1024)));
        Self {
            config,
            storage,
            journal,
            queue_kib,
            add_streams_closing: watch::Sender::new(false),
        }
    }

    /// Ends every add stream, each once the adds it queued are answered, so writers learn of
    /// the stop at once instead of by timeout (and a graceful server stop is not held open).
    pub(crate) fn close_add_streams(&self) {
        self.add_streams_closing.send_replace(true);
    }

    fn shutting_down(&self) -> bool {
        self.storage.stopping.load(Ordering::Acquire)
    }

    /// Validates one add request and queues what passes; every entry gets exactly one result
    /// on `responses`, either now (rejected) or once durable.
    async fn handle_add(
        self: &Arc<Self>,
        request: AddRequest,
        stream_permit: OwnedSemaphorePermit,
        responses: mpsc::UnboundedSender<Result<AddResponse, Status>>,
    ) {
        let AddRequest {
            entries,
            writer_token,
            recovery,
            ledger_tokens,
        } = request;
        if entries.is_empty() {
            return;
        }
        let refusal = if self.shutting_down() {
            Some(BookieError::ShuttingDown)
        } else if self.storage.read_only_state().is_read_only() {
            Some(BookieError::ReadOnly {
                reason: self.storage.read_only_state().reason().unwrap_or_default(),
            })
        } else {
            None
        };
        if let Some(error) = refusal {
            let results = entries.iter().map(|entry| failure(entry, &error)).collect();
            let _ = responses.send(Ok(AddResponse { results }));
            return;
        }

        let mut accepted = Vec::with_capacity(entries.len());
        let mut rejected = Vec::new();
        // Requests usually carry one ledger's entries: check it once per run of equal ids.
        let mut checked: Option<(u64, std::result::Result<i64, Arc<BookieError>>)> = None;
        for entry in entries {
            if let Err(error) = self.check_entry(&entry) {
                rejected.push(failure(&entry, &error));
                continue;
            }
            let ledger_check = match &checked {
                Some((ledger_id, outcome)) if *ledger_id == entry.ledger_id => outcome.clone(),
                _ => {
                    let outcome = self
                        .check_writer(
                            entry.ledger_id,
                            token_for(&ledger_tokens, &writer_token, entry.ledger_id),
                            recovery,
                        )
                        .await
                        .map_err(Arc::new);
                    checked = Some((entry.ledger_id, outcome.clone()));
                    outcome
                }
            };
            match ledger_check {
                Err(error) => rejected.push(failure(&entry, &error)),
                Ok(last_entry_id) if entry.entry_id as i64 <= last_entry_id => {
                    // A resend: identical bytes are acknowledged again, different bytes refused.
                    match self.duplicate_check(entry.clone()).await {
                        Ok(true) => rejected.push(success(&entry)),
                        Ok(false) => accepted.push(entry),
                        Err(error) => rejected.push(failure(&entry, &error)),
                    }
                }
                Ok(_) => accepted.push(entry),
            }
        }
        if !rejected.is_empty() {
            let _ = responses.send(Ok(AddResponse { results: rejected }));
        }
        if accepted.is_empty() {
            return;
        }
        let queued_bytes: usize = accepted.iter().map(|entry| entry.payload.len() + 64).sum();
        let kib = (queued_bytes.div_ceil(1024) as u32).min(self.queue_kib_capacity());
        let Ok(queue_permit) = self.queue_kib.clone().acquire_many_owned(kib).await else {
            return;
        };
        let completion_responses = responses.clone();
        let command = JournalCommand::Add {
            entries: accepted,
            recovery,
            completion: Box::new(move |results| {
                drop(queue_permit);
                drop(stream_permit);
                let _ = completion_responses.send(Ok(AddResponse { results }));
            }),
        };
        // A stopped journal hands the command back, so its entries are answered without the
        // hot path keeping a copy of them.
        if let Err(JournalCommand::Add { entries, .. }) = self.journal.submit(command).await {
            let error = BookieError::ShuttingDown;
            let results = entries.iter().map(|entry| failure(entry, &error)).collect();
            let _ = responses.send(Ok(AddResponse { results }));
        }
    }

    fn queue_kib_capacity(&self) -> u32 {
        self.config.journal_queue_bytes.div_ceil(1024) as u32
    }

    fn check_entry(&self, entry: &Entry) -> Result<()> {
        if entry.payload.len() > self.config.max_entry_size_bytes {
            return Err(BookieError::EntryTooLarge {
                ledger_id: entry.ledger_id,
                entry_id: entry.entry_id,
                size_bytes: entry.payload.len(),
                limit_bytes: self.config.max_entry_size_bytes,
            });
        }
        if entry.entry_id > i64::MAX as u64 {
            return Err(BookieError::InvalidRequest(format!(
                "entry id {} is out of range (at most {})",
                entry.entry_id,
                i64::MAX
            )));
        }
        if !entry_checksum_ok(entry) {
            return Err(BookieError::CrcMismatch {
                ledger_id: entry.ledger_id,
                entry_id: entry.entry_id,
            });
        }
        Ok(())
    }

    /// Token and fencing check; creates the ledger on its first add. Returns the ledger's last
    /// stored entry id.
    async fn check_writer(&self, ledger_id: u64, token: &Bytes, recovery: bool) -> Result<i64> {
        match self.storage.check_writer(ledger_id, token, recovery)? {
            WriterCheck::Allowed { last_entry_id } => Ok(last_entry_id),
            WriterCheck::Unknown => {
                let storage = self.storage.clone();
                let owned_token = token.clone();
                blocking(move || storage.create_ledger(ledger_id, &owned_token, false)).await?;
                match self.storage.check_writer(ledger_id, token, recovery)? {
                    WriterCheck::Allowed { last_entry_id } => Ok(last_entry_id),
                    // Deleted between its creation and this check.
                    WriterCheck::Unknown => Err(BookieError::NoSuchLedger { ledger_id }),
                }
            }
        }
    }

    /// Whether an already-stored entry with this id has exactly these bytes (`Ok(true)`), is
    /// absent (`Ok(false)`), or differs (`EntryConflict`).
    async fn duplicate_check(&self, entry: Entry) -> Result<bool> {
        let storage = self.storage.clone();
        let (ledger_id, entry_id) = (entry.ledger_id, entry.entry_id);
        let existing = blocking(move || storage.find_entry(ledger_id, entry_id)).await?;
        match existing {
            None => Ok(false),
            Some(stored)
                if stored.payload == entry.payload
                    && stored.last_add_confirmed == entry.last_add_confirmed =>
            {
                Ok(true)
            }
            Some(_) => Err(BookieError::EntryConflict {
                ledger_id,
                entry_id,
            }),
        }
    }

    async fn fence(&self, ledger_id: u64, token: Bytes) -> Result<(i64, i64)> {
        if self.shutting_down() {
            return Err(BookieError::ShuttingDown);
        }
        let storage = self.storage.clone();
        blocking(move || storage.mark_fenced(ledger_id, &token)).await?;
        let (done_sender, done) = oneshot::channel();
        self.journal
            .submit(JournalCommand::Barrier {
                fence_ledger_id: Some(ledger_id),
                done: Box::new(move || {
                    let _ = done_sender.send(());
                }),
            })
            .await
            .map_err(|_| BookieError::ShuttingDown)?;
        done.await.map_err(|_| BookieError::ShuttingDown)?;
        let (lac, last_entry_id, _) = self.storage.last_add_confirmed(ledger_id)?;
        debug!(ledger_id, lac, last_entry_id, "ledger fenced");
        Ok((lac, last_entry_id))
    }

    /// Waits until every add queued so far is durable (used before shutdown).
    pub(crate) async fn journal_barrier(&self) -> Result<()> {
        let (done_sender, done) = oneshot::channel();
        self.journal
            .submit(JournalCommand::Barrier {
                fence_ledger_id: None,
                done: Box::new(move || {
                    let _ = done_sender.send(());
                }),
            })
            .await
            .map_err(|_| BookieError::ShuttingDown)?;
        done.await.map_err(|_| BookieError::ShuttingDown)
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|join_error| {
            BookieError::io(
                "a storage task",
                std::io::Error::other(join_error.to_string()),
            )
        })?
}

fn failure(entry: &Entry, error: &BookieError) -> AddResult {
    AddResult {
        ledger_id: entry.ledger_id,
        entry_id: entry.entry_id,
        code: error.code() as i32,
        message: error.to_string(),
    }
}

fn success(entry: &Entry) -> AddResult {
    AddResult {
        ledger_id: entry.ledger_id,
        entry_id: entry.entry_id,
        code: ErrorCode::Ok as i32,
        message: String::new(),
    }
}

/// The tonic service.
#[derive(Clone)]
pub struct BookieService {
    core: Arc<BookieCore>,
}

impl BookieService {
    pub fn new(core: Arc<BookieCore>) -> Self {
        Self { core }
    }
}

type AddStream = Pin<Box<dyn Stream<Item = Result<AddResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Bookie for BookieService {
    type AddEntriesStream = AddStream;

    async fn add_entries(
        &self,
        request: Request<Streaming<AddRequest>>,
    ) -> Result<Response<Self::AddEntriesStream>, Status> {
        let mut inbound = request.into_inner();
        let (responses, outbound) = mpsc::unbounded_channel();
        let core = self.core.clone();
        // Responses are bounded by the in-flight permits: a stream stops reading requests while
        // its writer has this many unanswered.
        let in_flight = Arc::new(Semaphore::new(
            core.config.max_in_flight_requests_per_stream,
        ));
        let mut closing = core.add_streams_closing.subscribe();
        tokio::spawn(async move {
            loop {
                let next = async {
                    let permit = in_flight.clone().acquire_owned().await.ok()?;
                    Some((permit, inbound.message().await))
                };
                // Returning drops this task's sender: the response stream ends once every
                // add already queued has its results.
                let (permit, message) = tokio::select! {
                    _ = closing.wait_for(|closing| *closing) => return,
                    next = next => match next {
                        Some(next) => next,
                        None => return,
                    },
                };
                match message {
                    Ok(Some(request)) => core.handle_add(request, permit, responses.clone()).await,
                    Ok(None) => return,
                    Err(status) => {
                        debug!(%status, "add stream ended with an error");
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(
            outbound,
        ))))
    }

    async fn read_entry(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<ReadResponse>, Status> {
        let request = request.into_inner();
        let core = self.core.clone();
        let outcome = async {
            if request.fence {
                core.fence(request.ledger_id, request.writer_token.clone())
                    .await?;
            }
            let last = request.last_entry_id.max(request.first_entry_id);
            let max_bytes = match request.max_bytes {
                0 => core.config.max_read_bytes,
                bytes => bytes.min(64 * 1024 * 1024),
            };
            let storage = core.storage.clone();
            blocking(move || {
                storage.read_entries(request.ledger_id, request.first_entry_id, last, max_bytes)
            })
            .await
        }
        .await;
        Ok(Response::new(match outcome {
            Ok(entries) => ReadResponse {
                code: ErrorCode::Ok as i32,
                message: String::new(),
                entries,
            },
            Err(error) => ReadResponse {
                code: error.code() as i32,
                message: error.to_string(),
                entries: Vec::new(),
            },
        }))
    }

    async fn read_last_add_confirmed(
        &self,
        request: Request<ReadLacRequest>,
    ) -> Result<Response<ReadLacResponse>, Status> {
        let request = request.into_inner();
        let answer = |code: ErrorCode, message: String, lac: i64, last: i64| ReadLacResponse {
            code: code as i32,
            message,
            last_add_confirmed: lac,
            last_entry_id: last,
        };
        let (lac, last, mut changes) = match self.core.storage.last_add_confirmed(request.ledger_id)
        {
            Ok(found) => found,
            Err(error) => {
                return Ok(Response::new(answer(
                    error.code(),
                    error.to_string(),
                    -1,
                    -1,
                )))
            }
        };
        let Some(wait_past) = request.wait_past_entry_id else {
            return Ok(Response::new(answer(
                ErrorCode::Ok,
                String::new(),
                lac,
                last,
            )));
        };
        if lac > wait_past {
            return Ok(Response::new(answer(
                ErrorCode::Ok,
                String::new(),
                lac,
                last,
            )));
        }
        let timeout = Duration::from_millis(request.timeout_ms).min(self.core.config.max_long_poll);
        let waited = tokio::time::timeout(timeout, changes.wait_for(|lac| *lac > wait_past)).await;
        let (lac, last, _) = match self.core.storage.last_add_confirmed(request.ledger_id) {
            Ok(found) => found,
            Err(error) => {
                return Ok(Response::new(answer(
                    error.code(),
                    error.to_string(),
                    -1,
                    -1,
                )))
            }
        };
        Ok(Response::new(match waited {
            Ok(Ok(_)) => answer(ErrorCode::Ok, String::new(), lac, last),
            _ => answer(
                ErrorCode::Timeout,
                format!("LAC is still {lac}, not past {wait_past}"),
                lac,
                last,
            ),
        }))
    }

    async fn fence(
        &self,
        request: Request<FenceRequest>,
    ) -> Result<Response<FenceResponse>, Status> {
        let request = request.into_inner();
        Ok(Response::new(
            match self
                .core
                .fence(request.ledger_id, request.writer_token)
                .await
            {
                Ok((lac, last)) => FenceResponse {
                    code: ErrorCode::Ok as i32,
                    message: String::new(),
                    last_add_confirmed: lac,
                    last_entry_id: last,
                },
                Err(error) => FenceResponse {
                    code: error.code() as i32,
                    message: error.to_string(),
                    last_add_confirmed: -1,
                    last_entry_id: -1,
                },
            },
        ))
    }

    async fn delete_ledger(
        &self,
        request: Request<DeleteLedgerRequest>,
    ) -> Result<Response<DeleteLedgerResponse>, Status> {
        let ledger_id = request.into_inner().ledger_id;
        let storage = self.core.storage.clone();
        let outcome = blocking(move || storage.delete_ledger(ledger_id)).await;
        Ok(Response::new(match outcome {
            Ok(true) => DeleteLedgerResponse {
                code: ErrorCode::Ok as i32,
                message: String::new(),
            },
            Ok(false) => DeleteLedgerResponse {
                code: ErrorCode::NoSuchLedger as i32,
                message: format!("no such ledger {ledger_id}"),
            },
            Err(error) => DeleteLedgerResponse {
                code: error.code() as i32,
                message: error.to_string(),
            },
        }))
    }

    async fn get_bookie_info(
        &self,
        _request: Request<GetBookieInfoRequest>,
    ) -> Result<Response<GetBookieInfoResponse>, Status> {
        let core = self.core.clone();
        let info = tokio::task::spawn_blocking(move || {
            let (free, total) = disk_space(&core.config.data_dir).unwrap_or((0, 0));
            let read_only = core.storage.read_only_state();
            let stats = core.journal.stats();
            GetBookieInfoResponse {
                free_space_bytes: free,
                total_space_bytes: total,
                ledger_count: core.storage.ledger_count() as u64,
                version: env!("CARGO_PKG_VERSION").to_string(),
                read_only: read_only.is_read_only(),
                read_only_reason: read_only.reason().unwrap_or_default(),
                entry_log_count: list_entry_logs(&core.config.entry_log_dir())
                    .map_or(0, |logs| logs.len() as u64),
                journal_file_count: list_journal_files(&core.config.journal_dir())
                    .map_or(0, |files| files.len() as u64),
                journal_fsyncs: stats.fsyncs.load(Ordering::Relaxed),
                journal_entries: stats.entries.load(Ordering::Relaxed),
            }
        })
        .await
        .map_err(|error| Status::internal(error.to_string()))?;
        Ok(Response::new(info))
    }
}
