//! The journal: one writer thread doing group commit.
//!
//! Adds from every connection queue here. The writer takes everything queued (up to
//! `journal_max_group_bytes`, waiting at most `journal_max_group_wait` for more), encodes it
//! into one buffer, writes it with one call and one fdatasync, and only then hands the entries
//! to ledger storage and answers their writers. Its files are made ahead by a helper thread
//! (see [`crate::journal_file`]), so an fdatasync flushes data and no file-size metadata.
//!
//! Fencing goes through the same queue: a fence is answered only after every add queued before
//! it is durable, and every add queued after it (other than recovery adds) fails with FENCED.

use std::collections::HashSet;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use magnetar_proto::bookie::{AddResult, Entry, ErrorCode};
use tracing::{error, info, warn};

use crate::error::{BookieError, Result};
use crate::journal_file::{
    next_file_need, next_journal_file, preallocate_files, JournalFile, NextFileNeed,
    PREALLOCATION_BYTES_PER_SEC,
};
use crate::journal_record::{encode_entry, encoded_entry_len, FILE_HEADER_BYTES};

/// A place in the journal: everything before it is durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct JournalPosition {
    pub file_id: u64,
    pub offset: u64,
}

/// Where the journal hands durable entries, and tells of failures.
pub trait JournalSink: Send + Sync + 'static {
    /// Called on the journal thread, in journal order, once `entries` are durable up to
    /// `position`.
    fn entries_durable(&self, entries: Vec<Entry>, position: JournalPosition);
    /// Called when a write or fdatasync failed; the entries of that group were not stored.
    fn journal_failed(&self, error: &BookieError);
}

/// Answers a queued add with one result per entry, in the order they were queued.
pub type AddCompletion = Box<dyn FnOnce(Vec<AddResult>) + Send>;

/// Work for the journal thread.
pub enum JournalCommand {
    Add {
        entries: Vec<Entry>,
        recovery: bool,
        completion: AddCompletion,
    },
    /// Answered once everything queued before it is durable; with a ledger, also fences it for
    /// everything queued after it.
    Barrier {
        fence_ledger_id: Option<u64>,
        done: Box<dyn FnOnce() + Send>,
    },
}

impl JournalCommand {
    fn queued_bytes(&self) -> usize {
        match self {
            Self::Add { entries, .. } => entries.iter().map(encoded_entry_len).sum(),
            Self::Barrier { .. } => 0,
        }
    }
}

/// Counters a benchmark or `GetBookieInfo` reads.
#[derive(Default, Debug)]
pub struct JournalStats {
    pub fsyncs: AtomicU64,
    pub entries: AtomicU64,
    pub bytes: AtomicU64,
}

/// Settings the writer needs.
#[derive(Clone, Debug)]
pub struct JournalSettings {
    pub dir: PathBuf,
    pub file_size_bytes: u64,
    pub max_group_bytes: usize,
    pub max_group_wait: Duration,
}

/// The running journal: its queue and its threads.
pub struct Journal {
    queue: parking_lot::RwLock<Option<flume::Sender<JournalCommand>>>,
    threads: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    stats: Arc<JournalStats>,
}

impl Journal {
    /// Starts the writer on a new file numbered after every existing one.
    pub fn start(
        settings: JournalSettings,
        first_file_id: u64,
        fenced_ledgers: HashSet<u64>,
        sink: Arc<dyn JournalSink>,
        queue_bound: usize,
    ) -> Result<Self> {
        let (spare_sender, spare_receiver) = flume::bounded::<JournalFile>(1);
        let (wanted_sender, wanted_receiver) = flume::bounded::<()>(1);
        let first = next_journal_file(&settings, first_file_id, None)?;
        // The first spare is made now as well, at full speed: made later, its zeros would
        // slow every fdatasync of the first file. Later spares are recycled files, taken when
        // the current file is half full, by which time the file before it is checkpointed.
        let mut next_id = first_file_id + 1;
        match next_journal_file(&settings, next_id, None) {
            Ok(spare) => {
                next_id += 1;
                let _ = spare_sender.try_send(spare);
            }
            Err(error) => {
                warn!(%error, "cannot preallocate a second journal file; trying in the background");
                let _ = wanted_sender.try_send(());
            }
        }
        let urgent = Arc::new(AtomicBool::new(false));
        let preallocator = {
            let settings = settings.clone();
            let urgent = urgent.clone();
            std::thread::Builder::new()
                .name("journal-prealloc".into())
                .spawn(move || {
                    crate::thread_priority::lower_current_thread();
                    preallocate_files(settings, next_id, wanted_receiver, spare_sender, urgent)
                })
                .map_err(|source| BookieError::io("starting the journal preallocator", source))?
        };
        let (queue, receiver) = flume::bounded(queue_bound);
        let stats = Arc::new(JournalStats::default());
        let mut writer = JournalWriter {
            settings,
            current: first,
            current_since: Instant::now(),
            spares: spare_receiver,
            wanted: wanted_sender,
            next_requested: true,
            urgent,
            fenced_ledgers,
            sink,
            stats: stats.clone(),
            queue: receiver,
            buffer: Vec::with_capacity(1024 * 1024),
            broken: false,
        };
        let writer = std::thread::Builder::new()
            .name("journal".into())
            .spawn(move || writer.run())
            .map_err(|source| BookieError::io("starting the journal writer", source))?;
        Ok(Self {
            queue: parking_lot::RwLock::new(Some(queue)),
            threads: parking_lot::Mutex::new(vec![writer, preallocator]),
            stats,
        })
    }

    /// Queues a command, waiting while the queue is full. When the journal has stopped, the
    /// command comes back so its caller can answer what it carried.
    pub async fn submit(&self, command: JournalCommand) -> std::result::Result<(), JournalCommand> {
        let Ok(queue) = self.sender() else {
            return Err(command);
        };
        queue
            .send_async(command)
            .await
            .map_err(|rejected| rejected.into_inner())
    }

    fn sender(&self) -> Result<flume::Sender<JournalCommand>> {
        self.queue.read().clone().ok_or(BookieError::ShuttingDown)
    }

    pub fn stats(&self) -> &Arc<JournalStats> {
        &self.stats
    }

    /// Stops taking commands, lets the writer finish everything queued, and joins both threads.
    /// Blocking: call it from a blocking thread.
    pub fn shutdown(&self) {
        self.queue.write().take();
        let threads = std::mem::take(&mut *self.threads.lock());
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct JournalWriter {
    settings: JournalSettings,
    current: JournalFile,
    /// When the writer moved to the current file (its fill rate says when it will be full).
    current_since: Instant,
    spares: flume::Receiver<JournalFile>,
    /// Asks the preallocator for the next file.
    wanted: flume::Sender<()>,
    /// The next file is asked for (or ready) since the last roll.
    next_requested: bool,
    /// Set when no spare is ready and the current file will be full before a paced
    /// preallocation could finish (or is three quarters full): the preallocator stops pacing.
    urgent: Arc<AtomicBool>,
    fenced_ledgers: HashSet<u64>,
    sink: Arc<dyn JournalSink>,
    stats: Arc<JournalStats>,
    queue: flume::Receiver<JournalCommand>,
    buffer: Vec<u8>,
    /// A write or fsync failed on the current file: its page cache can no longer be trusted,
    /// so the next group starts a new file.
    broken: bool,
}

/// One queued add as the writer tracks it through a group.
struct PendingAdd {
    results: Vec<AddResult>,
    completion: AddCompletion,
}

impl JournalWriter {
    fn run(&mut self) {
        info!(file = self.current.id, "journal writer started");
        while let Ok(first) = self.queue.recv() {
            let group = self.gather(first);
            self.commit(group);
        }
        info!("journal writer stopped: queue closed and drained");
    }

    fn gather(&self, first: JournalCommand) -> Vec<JournalCommand> {
        let mut bytes = first.queued_bytes();
        let mut group = vec![first];
        let deadline = Instant::now() + self.settings.max_group_wait;
        while bytes < self.settings.max_group_bytes {
            let next = match self.queue.try_recv() {
                Ok(command) => command,
                Err(flume::TryRecvError::Empty) if !self.settings.max_group_wait.is_zero() => {
                    match self.queue.recv_deadline(deadline) {
                        Ok(command) => command,
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            };
            bytes += next.queued_bytes();
            group.push(next);
        }
        group
    }

    fn commit(&mut self, group: Vec<JournalCommand>) {
        self.buffer.clear();
        // Which file the group goes to is settled first: each record's checksum names it.
        let most_bytes: u64 = group
            .iter()
            .map(|command| command.queued_bytes() as u64)
            .sum();
        let room = self.make_room(most_bytes);
        let seed = self.current.checksum_seed;
        let mut durable_entries = Vec::new();
        let mut pending_adds: Vec<PendingAdd> = Vec::new();
        let mut barriers: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
        for command in group {
            match command {
                JournalCommand::Add {
                    entries,
                    recovery,
                    completion,
                } => {
                    let mut results = Vec::with_capacity(entries.len());
                    for entry in entries {
                        let fenced = !recovery && self.fenced_ledgers.contains(&entry.ledger_id);
                        let (code, message) = if fenced {
                            (
                                ErrorCode::Fenced,
                                format!("ledger {} is fenced", entry.ledger_id),
                            )
                        } else {
                            encode_entry(&entry, seed, &mut self.buffer);
                            (ErrorCode::Ok, String::new())
                        };
                        results.push(AddResult {
                            ledger_id: entry.ledger_id,
                            entry_id: entry.entry_id,
                            code: code as i32,
                            message,
                        });
                        if !fenced {
                            durable_entries.push(entry);
                        }
                    }
                    pending_adds.push(PendingAdd {
                        results,
                        completion,
                    });
                }
                JournalCommand::Barrier {
                    fence_ledger_id,
                    done,
                } => {
                    if let Some(ledger_id) = fence_ledger_id {
                        self.fenced_ledgers.insert(ledger_id);
                    }
                    barriers.push(done);
                }
            }
        }

        let outcome = match room {
            Err(error) => Err(error),
            Ok(()) if self.buffer.is_empty() => Ok(()),
            Ok(()) => self.write_and_sync(),
        };
        match outcome {
            Ok(()) => {
                if !durable_entries.is_empty() {
                    self.stats
                        .entries
                        .fetch_add(durable_entries.len() as u64, Ordering::Relaxed);
                    self.stats
                        .bytes
                        .fetch_add(self.buffer.len() as u64, Ordering::Relaxed);
                    let position = JournalPosition {
                        file_id: self.current.id,
                        offset: self.current.offset,
                    };
                    self.sink.entries_durable(durable_entries, position);
                }
            }
            Err(error) => {
                error!(%error, "journal write failed; the adds of this group are not stored");
                self.broken = true;
                self.sink.journal_failed(&error);
                let code = error.code() as i32;
                for add in &mut pending_adds {
                    for result in &mut add.results {
                        if result.code == ErrorCode::Ok as i32 {
                            result.code = code;
                            result.message = error.to_string();
                        }
                    }
                }
            }
        }
        for add in pending_adds {
            (add.completion)(add.results);
        }
        for done in barriers {
            done();
        }
    }

    /// Moves to the next file when the current one cannot be trusted, or has records and no
    /// room for `bytes` more.
    fn make_room(&mut self, bytes: u64) -> Result<()> {
        let has_records = self.current.offset > FILE_HEADER_BYTES;
        if self.broken || (has_records && self.current.offset + bytes > self.current.capacity) {
            self.roll()?;
        }
        Ok(())
    }

    fn write_and_sync(&mut self) -> Result<()> {
        let needed = self.buffer.len() as u64;
        let file = &self.current.file;
        file.write_all_at(&self.buffer, self.current.offset)
            .map_err(|source| BookieError::io("writing the journal", source))?;
        file.sync_data()
            .map_err(|source| BookieError::io("fdatasync of the journal", source))?;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.current.offset += needed;
        self.plan_next_file();
        Ok(())
    }

    /// Asks for the next file once the current one is half full or filling fast, and drops
    /// the preallocator's pacing when the file will be full before a paced one is ready. A
    /// burst of adds fills a 64 MiB file in well under a second, while pacing takes 2 s.
    fn plan_next_file(&mut self) {
        let need = next_file_need(
            self.current.offset.saturating_sub(FILE_HEADER_BYTES),
            self.current.capacity.saturating_sub(self.current.offset),
            self.current_since.elapsed(),
            Duration::from_secs_f64(
                self.settings.file_size_bytes as f64 / PREALLOCATION_BYTES_PER_SEC as f64,
            ),
        );
        if need == NextFileNeed::Later {
            return;
        }
        self.request_next_file();
        if need == NextFileNeed::Urgent && self.spares.is_empty() {
            self.urgent.store(true, Ordering::Relaxed);
        }
    }

    fn request_next_file(&mut self) {
        if !self.next_requested {
            self.next_requested = true;
            let _ = self.wanted.try_send(());
        }
    }

    /// Moves on to the next (preallocated) file.
    fn roll(&mut self) -> Result<()> {
        let next = match self.spares.try_recv() {
            Ok(file) => file,
            Err(_) => {
                self.request_next_file();
                self.urgent.store(true, Ordering::Relaxed);
                warn!("no preallocated journal file ready; waiting for one");
                self.spares
                    .recv_timeout(Duration::from_secs(5))
                    .map_err(|_| {
                        BookieError::io(
                            "rolling the journal",
                            std::io::Error::other(
                                "no preallocated journal file became ready in 5 s (is the disk full?)",
                            ),
                        )
                    })?
            }
        };
        info!(
            from = self.current.id,
            to = next.id,
            "journal rolled to a new file"
        );
        self.current = next;
        self.current_since = Instant::now();
        self.next_requested = false;
        self.broken = false;
        self.urgent.store(false, Ordering::Relaxed);
        Ok(())
    }
}
