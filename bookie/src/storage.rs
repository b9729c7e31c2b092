//! Ledger storage (as BookKeeper's DbLedgerStorage): the write cache in front of entry logs and
//! the RocksDB index, the in-memory ledger table, the background flusher, and journal replay.
//!
//! Invariants:
//! - An entry is in the write cache only once it is durable in the journal.
//! - The checkpoint moves only after the entries and ledger metadata it covers are synced in
//!   the entry logs and the index; journal files wholly before it are then removed.
//! - Index entries are committed before the flushed cache generation is dropped, so a reader
//!   always finds an entry in one place or the other.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use magnetar_proto::bookie::Entry;
use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::BookieConfig;
use crate::disk::{ReadOnlyCause, ReadOnlyState};
use crate::entry_log::{list_entry_logs, record_bytes, EntryLogReader, EntryLogWriter};
use crate::error::{BookieError, Result};
use crate::index::{Index, LedgerMeta};
use crate::journal::{JournalPosition, JournalSink};
use crate::journal_file::{journal_file_name, list_journal_files, retire_journal_files_before};
use crate::journal_record::{check_file_header, scan_record, Scanned, FILE_HEADER_BYTES};
use crate::write_cache::WriteCache;
use crate::write_pace::WritePace;

/// A ledger as the bookie tracks it in memory.
pub(crate) struct LedgerState {
    pub(crate) meta: LedgerMeta,
    lac_watch: watch::Sender<i64>,
    /// Changed since the last flush wrote it to the index.
    dirty: bool,
}

impl LedgerState {
    fn new(meta: LedgerMeta) -> Self {
        let (lac_watch, _) = watch::channel(meta.last_add_confirmed);
        Self {
            meta,
            lac_watch,
            dirty: false,
        }
    }
}

/// What an add may do with a ledger, decided without I/O.
pub enum WriterCheck {
    /// The ledger is known and the writer may add; entries at or below this id may already be
    /// stored and need a duplicate check.
    Allowed { last_entry_id: i64 },
    /// First add for this ledger on this bookie: it must be created (a synced index write).
    Unknown,
}

struct Caches {
    active: WriteCache,
    /// The generation being flushed (or whose flush failed and will be retried).
    flushing: Option<Arc<WriteCache>>,
    /// The last flushed generation, emptied: the next active one (see [`crate::write_cache`]).
    spare: Option<WriteCache>,
    /// When the active generation became active (`None`: since the bookie opened).
    active_since: Option<Instant>,
}

impl Caches {
    /// Both tables start with room for a generation: a table that grows moves every entry it
    /// holds at once, on the journal thread, and the adds of that group wait. One entry per
    /// KiB of the flush threshold, at most [`FIRST_TABLE_MAX_ENTRIES`]: untouched room costs
    /// only address space until entries arrive.
    fn new(write_cache_flush_bytes: usize) -> Self {
        let entries = (write_cache_flush_bytes / 1024).min(FIRST_TABLE_MAX_ENTRIES);
        Self {
            active: WriteCache::with_capacity(entries),
            flushing: None,
            spare: Some(WriteCache::with_capacity(entries)),
            active_since: None,
        }
    }
}

/// Room in each of the first two write-cache tables: a generation at 50,000 adds/s over the
/// default one-second flush interval fits.
const FIRST_TABLE_MAX_ENTRIES: usize = 64 * 1024;

/// A paced flush writes the entry log this many bytes at a time (see [`crate::write_pace`]).
const FLUSH_STEP_BYTES: usize = 64 * 1024;
/// ... and the index this many locations at a time.
const INDEX_STEP_ENTRIES: usize = 1024;
/// About what one location costs in the index's write-ahead log, for pacing.
const INDEX_BYTES_PER_ENTRY: u64 = 48;

/// Counters for `GetBookieInfo` and tests.
#[derive(Default, Debug)]
pub struct StorageStats {
    pub flushes: AtomicU64,
    pub compacted_logs: AtomicU64,
    pub compacted_bytes_rewritten: AtomicU64,
}

/// What replay found.
#[derive(Debug, Default)]
pub struct ReplayReport {
    pub entries: u64,
    pub files: usize,
    /// One line per file whose tail was dropped.
    pub dropped_tails: Vec<String>,
    /// The journal writer starts at this file id.
    pub next_journal_file_id: u64,
}

pub struct LedgerStorage {
    pub(crate) config: BookieConfig,
    pub(crate) index: Index,
    pub(crate) ledgers: Mutex<HashMap<u64, LedgerState>>,
    caches: Mutex<Caches>,
    cache_drained: Condvar,
    pub(crate) writer: Mutex<EntryLogWriter>,
    pub(crate) reader: EntryLogReader,
    pub(crate) usage: Mutex<BTreeMap<u64, HashMap<u64, u64>>>,
    /// Serialises flushes, compaction steps and ledger deletions: each changes the index and
    /// the entry logs together.
    pub(crate) flush_lock: Mutex<()>,
    flush_requested: Mutex<bool>,
    flush_wakeup: Condvar,
    last_checkpoint: Mutex<JournalPosition>,
    pub(crate) read_only: ReadOnlyState,
    pub(crate) stopping: AtomicBool,
    pub stats: StorageStats,
}

impl LedgerStorage {
    /// Opens the index, loads the ledger table, replays the journal from the checkpoint and
    /// flushes what it replayed.
    pub fn open(config: BookieConfig) -> Result<(Arc<Self>, ReplayReport)> {
        for dir in [
            config.journal_dir(),
            config.entry_log_dir(),
            config.index_dir(),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|source| BookieError::io(format!("creating {}", dir.display()), source))?;
        }
        let index = Index::open(&config.index_dir())?;
        let ledgers = index
            .load_ledgers()?
            .into_iter()
            .map(|(ledger_id, meta)| (ledger_id, LedgerState::new(meta)))
            .collect();
        let usage = index.load_log_usage()?;
        let next_log_id = list_entry_logs(&config.entry_log_dir())?
            .last()
            .map_or(1, |last| last + 1);
        let checkpoint = index.checkpoint()?.unwrap_or_default();
        let storage = Arc::new(Self {
            writer: Mutex::new(EntryLogWriter::new(
                config.entry_log_dir(),
                config.entry_log_size_bytes,
                next_log_id,
            )),
            reader: EntryLogReader::new(config.entry_log_dir()),
            index,
            ledgers: Mutex::new(ledgers),
            caches: Mutex::new(Caches::new(config.write_cache_flush_bytes)),
            cache_drained: Condvar::new(),
            usage: Mutex::new(usage),
            flush_lock: Mutex::new(()),
            flush_requested: Mutex::new(false),
            flush_wakeup: Condvar::new(),
            last_checkpoint: Mutex::new(checkpoint),
            read_only: ReadOnlyState::default(),
            stopping: AtomicBool::new(false),
            stats: StorageStats::default(),
            config,
        });
        let report = storage.replay(checkpoint)?;
        storage.flush()?;
        Ok((storage, report))
    }

    fn replay(&self, checkpoint: JournalPosition) -> Result<ReplayReport> {
        let dir = self.config.journal_dir();
        let files = list_journal_files(&dir)?;
        let mut report = ReplayReport {
            next_journal_file_id: files.last().map_or(1, |last| last + 1),
            ..ReplayReport::default()
        };
        for file_id in files {
            if file_id < checkpoint.file_id {
                continue;
            }
            let path = dir.join(journal_file_name(file_id));
            let bytes = Bytes::from(std::fs::read(&path).map_err(|source| {
                BookieError::io(format!("reading {}", path.display()), source)
            })?);
            report.files += 1;
            let header = match check_file_header(&bytes, file_id) {
                Ok(header) => header,
                Err(reason) => {
                    let line = format!("{}: {reason}; the whole file was skipped", path.display());
                    warn!("{line}");
                    report.dropped_tails.push(line);
                    continue;
                }
            };
            let mut offset = if file_id == checkpoint.file_id {
                (checkpoint.offset.max(FILE_HEADER_BYTES)) as usize
            } else {
                FILE_HEADER_BYTES as usize
            };
            let mut replayed = Vec::new();
            loop {
                match scan_record(&bytes, offset, header.checksum_seed) {
                    Scanned::Entry { entry, next_offset } => {
                        replayed.push(entry);
                        offset = next_offset;
                    }
                    Scanned::End => break,
                    Scanned::Torn { reason } if header.recycled => {
                        // Most likely the first record of the file's earlier life.
                        info!(file = %path.display(), offset, %reason,
                            "end of this recycled journal file's records");
                        break;
                    }
                    Scanned::Torn { reason } => {
                        let line = format!(
                            "{}: dropped the tail from offset {offset} ({} bytes): {reason}",
                            path.display(),
                            bytes.len() - offset
                        );
                        warn!("{line}");
                        report.dropped_tails.push(line);
                        break;
                    }
                }
            }
            report.entries += replayed.len() as u64;
            let position = JournalPosition {
                file_id,
                offset: offset as u64,
            };
            // The flusher thread starts only after replay: flush here, not wait for it.
            if self.cache_entries(replayed, position) >= self.config.write_cache_flush_bytes {
                self.flush()?;
            }
        }
        info!(
            entries = report.entries,
            files = report.files,
            dropped = report.dropped_tails.len(),
            "journal replayed"
        );
        Ok(report)
    }

    /// Ledgers fenced on this bookie (the journal writer starts from these).
    pub fn fenced_ledgers(&self) -> HashSet<u64> {
        self.ledgers
            .lock()
            .iter()
            .filter(|(_, state)| state.meta.fenced)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn ledger_count(&self) -> usize {
        self.ledgers.lock().len()
    }

    /// The add path's check of a ledger: token and fencing, without I/O.
    pub fn check_writer(
        &self,
        ledger_id: u64,
        token: &Bytes,
        recovery: bool,
    ) -> Result<WriterCheck> {
        let ledgers = self.ledgers.lock();
        let Some(state) = ledgers.get(&ledger_id) else {
            return Ok(WriterCheck::Unknown);
        };
        if !state.meta.writer_token.is_empty() && state.meta.writer_token != *token {
            return Err(BookieError::Unauthorized { ledger_id });
        }
        if state.meta.fenced && !recovery {
            return Err(BookieError::Fenced { ledger_id });
        }
        Ok(WriterCheck::Allowed {
            last_entry_id: state.meta.last_entry_id,
        })
    }

    /// Creates a ledger on its first add (or fence), recording the writer token durably.
    /// Blocking: a synced index write.
    pub fn create_ledger(&self, ledger_id: u64, token: &Bytes, fenced: bool) -> Result<()> {
        {
            let ledgers = self.ledgers.lock();
            if let Some(state) = ledgers.get(&ledger_id) {
                if !state.meta.writer_token.is_empty() && state.meta.writer_token != *token {
                    return Err(BookieError::Unauthorized { ledger_id });
                }
                if !fenced {
                    return Ok(());
                }
            }
        }
        let mut meta = self
            .ledgers
            .lock()
            .get(&ledger_id)
            .map(|state| state.meta.clone())
            .unwrap_or(LedgerMeta {
                writer_token: token.clone(),
                fenced: false,
                last_add_confirmed: -1,
                last_entry_id: -1,
            });
        meta.fenced |= fenced;
        self.index.put_ledger_now(ledger_id, &meta)?;
        let mut ledgers = self.ledgers.lock();
        let state = ledgers
            .entry(ledger_id)
            .or_insert_with(|| LedgerState::new(meta.clone()));
        state.meta.fenced |= fenced;
        Ok(())
    }

    /// Marks a ledger fenced (creating it if this bookie never saw it) and persists the flag.
    /// Blocking. Adds already queued in the journal are settled by the journal's barrier.
    pub fn mark_fenced(&self, ledger_id: u64, token: &Bytes) -> Result<()> {
        self.create_ledger(ledger_id, token, true)
    }

    /// (LAC, last entry id) of a ledger, and a receiver that sees LAC changes.
    pub fn last_add_confirmed(&self, ledger_id: u64) -> Result<(i64, i64, watch::Receiver<i64>)> {
        let ledgers = self.ledgers.lock();
        let state = ledgers
            .get(&ledger_id)
            .ok_or(BookieError::NoSuchLedger { ledger_id })?;
        Ok((
            state.meta.last_add_confirmed,
            state.meta.last_entry_id,
            state.lac_watch.subscribe(),
        ))
    }

    /// Looks an entry up in the caches, then the index. Blocking (may read an entry log).
    pub fn find_entry(&self, ledger_id: u64, entry_id: u64) -> Result<Option<Entry>> {
        {
            let caches = self.caches.lock();
            if let Some(entry) = caches.active.get(ledger_id, entry_id) {
                return Ok(Some(entry.clone()));
            }
            if let Some(entry) = caches
                .flushing
                .as_ref()
                .and_then(|cache| cache.get(ledger_id, entry_id))
            {
                return Ok(Some(entry.clone()));
            }
        }
        // Compaction may move an entry between the lookup and the read; one retry settles it.
        for attempt in 0..2 {
            let Some(location) = self.index.location(ledger_id, entry_id)? else {
                return Ok(None);
            };
            match self.reader.read(location, ledger_id, entry_id) {
                Ok(entry) => return Ok(Some(entry)),
                Err(BookieError::Io { .. }) if attempt == 0 => continue,
                Err(error) => return Err(error),
            }
        }
        Ok(None)
    }

    /// Reads consecutive entries from `first` to `last` (inclusive), stopping at the first one
    /// missing or once `max_bytes` of payload are gathered. Blocking.
    pub fn read_entries(
        &self,
        ledger_id: u64,
        first: u64,
        last: u64,
        max_bytes: u64,
    ) -> Result<Vec<Entry>> {
        if !self.ledgers.lock().contains_key(&ledger_id) {
            return Err(BookieError::NoSuchLedger { ledger_id });
        }
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        let mut entry_id = first;
        loop {
            match self.find_entry(ledger_id, entry_id)? {
                Some(entry) => {
                    bytes += entry.payload.len() as u64;
                    entries.push(entry);
                }
                None if entries.is_empty() => {
                    return Err(BookieError::NoSuchEntry {
                        ledger_id,
                        entry_id,
                    })
                }
                None => break,
            }
            if entry_id >= last || bytes >= max_bytes {
                break;
            }
            entry_id += 1;
        }
        Ok(entries)
    }

    /// Deletes a ledger: its metadata and index entries now, its bytes in the entry logs at the
    /// next compaction. Blocking.
    pub fn delete_ledger(&self, ledger_id: u64) -> Result<bool> {
        let _flush = self.flush_lock.lock();
        let existed = self.ledgers.lock().remove(&ledger_id).is_some();
        self.index.delete_ledger(ledger_id)?;
        self.caches.lock().active.remove_ledger(ledger_id);
        if existed {
            info!(ledger_id, "ledger deleted");
        }
        Ok(existed)
    }

    /// Asks the flusher to run soon.
    pub fn request_flush(&self) {
        *self.flush_requested.lock() = true;
        self.flush_wakeup.notify_one();
    }

    /// The flusher thread's loop: flush when asked or every `flush_interval`, and once more on
    /// the way out.
    pub fn run_flusher(self: Arc<Self>) {
        let mut last_started = Instant::now();
        loop {
            {
                // Counted from the last flush's start: a paced flush takes about half the
                // interval, and counting from its end would stretch each generation to twice it.
                let due_in = self
                    .config
                    .flush_interval
                    .saturating_sub(last_started.elapsed());
                let mut requested = self.flush_requested.lock();
                if !*requested && !self.stopping.load(Ordering::Acquire) && !due_in.is_zero() {
                    self.flush_wakeup.wait_for(&mut requested, due_in);
                }
                *requested = false;
            }
            last_started = Instant::now();
            let stopping = self.stopping.load(Ordering::Acquire);
            if let Err(error) = self.flush_generation(!stopping) {
                error!(%error, "flushing the write cache failed; will retry");
            }
            if stopping {
                return;
            }
        }
    }

    /// Writes the write cache to the entry log and the index, then moves the checkpoint, as
    /// fast as the disk allows.
    pub fn flush(&self) -> Result<()> {
        self.flush_generation(false)
    }

    /// A flush; `paced` spreads its writes over half the time the generation took to fill
    /// (see [`crate::write_pace`]).
    fn flush_generation(&self, paced: bool) -> Result<()> {
        let _flush = self.flush_lock.lock();
        let (cache, filled_in) = {
            let mut caches = self.caches.lock();
            match &caches.flushing {
                // A retry after a failure: no reason to hold it back.
                Some(cache) => (cache.clone(), None),
                None => {
                    let next = caches.spare.take().unwrap_or_default();
                    let generation = Arc::new(std::mem::replace(&mut caches.active, next));
                    caches.flushing = Some(generation.clone());
                    let filled_in = caches
                        .active_since
                        .replace(Instant::now())
                        .map(|since| since.elapsed());
                    (generation, filled_in)
                }
            }
        };
        let now = Instant::now();
        let pace = match filled_in {
            Some(filled_in) if paced => {
                let bytes = cache.payload_bytes() as u64
                    + cache.len() as u64 * (record_bytes(0) + INDEX_BYTES_PER_ENTRY);
                WritePace::for_generation(bytes, filled_in, now)
            }
            _ => WritePace::unpaced(now),
        };
        let (dirty, live): (Vec<(u64, LedgerMeta)>, HashSet<u64>) = {
            let mut ledgers = self.ledgers.lock();
            let dirty = ledgers
                .iter_mut()
                .filter(|(_, state)| state.dirty)
                .map(|(id, state)| {
                    state.dirty = false;
                    (*id, state.meta.clone())
                })
                .collect();
            (dirty, ledgers.keys().copied().collect())
        };
        let result = self.write_generation(&cache, &dirty, &live, &pace);
        match result {
            Ok(checkpoint) => {
                debug!(
                    entries = cache.len(),
                    elapsed_ms = now.elapsed().as_millis() as u64,
                    paced_mb_per_sec = pace.bytes_per_sec().map(|rate| rate / 1e6),
                    "flushed a write-cache generation"
                );
                {
                    let mut caches = self.caches.lock();
                    caches.flushing = None;
                }
                self.cache_drained.notify_all();
                self.stats.flushes.fetch_add(1, Ordering::Relaxed);
                if let Some(checkpoint) = checkpoint {
                    self.remove_journal_files_before(checkpoint);
                }
                // Emptied here, off the journal thread. A read still holding the generation
                // keeps it, and the next one starts with a fresh table.
                if let Ok(mut generation) = Arc::try_unwrap(cache) {
                    generation.clear();
                    self.caches.lock().spare = Some(generation);
                }
                Ok(())
            }
            Err(error) => {
                let mut ledgers = self.ledgers.lock();
                for (id, _) in &dirty {
                    if let Some(state) = ledgers.get_mut(id) {
                        state.dirty = true;
                    }
                }
                drop(ledgers);
                self.writer.lock().abandon_current();
                self.note_write_error(&error);
                Err(error)
            }
        }
    }

    /// The entry log first, synced, then the index a step at a time, then one synced commit
    /// of ledger metadata, log usage and the checkpoint. Index steps written before a crash
    /// point only into synced entry logs, and the journal from the old checkpoint is replayed.
    fn write_generation(
        &self,
        cache: &WriteCache,
        dirty: &[(u64, LedgerMeta)],
        live: &HashSet<u64>,
        pace: &WritePace,
    ) -> Result<Option<JournalPosition>> {
        if cache.is_empty() && dirty.is_empty() {
            return Ok(None);
        }
        let mut batch = self.index.new_batch();
        if !cache.is_empty() {
            let mut written = 0u64;
            let mut locations = Vec::with_capacity(cache.len());
            {
                let mut writer = self.writer.lock();
                for entry in cache.sorted_entries() {
                    if !live.contains(&entry.ledger_id) {
                        continue;
                    }
                    let location = writer.append(entry)?;
                    locations.push((entry.ledger_id, entry.entry_id, location));
                    if writer.buffered_bytes() >= FLUSH_STEP_BYTES {
                        written += writer.write_buffered()?;
                        self.keep_pace(pace, written);
                    }
                }
                writer.sync()?;
            }
            for step in locations.chunks(INDEX_STEP_ENTRIES) {
                for (ledger_id, entry_id, location) in step {
                    self.index
                        .put_location(&mut batch, *ledger_id, *entry_id, *location)?;
                }
                self.index.write_unsynced(&mut batch)?;
                written += step.len() as u64 * INDEX_BYTES_PER_ENTRY;
                self.keep_pace(pace, written);
            }
        }
        for (ledger_id, meta) in dirty {
            self.index.put_ledger(&mut batch, *ledger_id, meta)?;
        }
        let mut checkpoint = None;
        {
            let mut last = self.last_checkpoint.lock();
            if cache.journal_position() > *last {
                self.index
                    .set_checkpoint(&mut batch, cache.journal_position());
                *last = cache.journal_position();
                checkpoint = Some(*last);
            }
        }
        self.index.commit(batch, &mut self.usage.lock())?;
        Ok(checkpoint)
    }

    /// Waits until a paced flush is due to write past `written` bytes, unless adds have
    /// already filled the next generation or the bookie is stopping: then the flush goes on
    /// as fast as the disk allows.
    fn keep_pace(&self, pace: &WritePace, written: u64) {
        let wait = pace.wait_before(written, Instant::now());
        if wait.is_zero() {
            return;
        }
        let mut requested = self.flush_requested.lock();
        if *requested || self.stopping.load(Ordering::Acquire) {
            return;
        }
        // A request for the next flush, or the stop, wakes this early.
        self.flush_wakeup.wait_for(&mut requested, wait);
    }

    fn remove_journal_files_before(&self, checkpoint: JournalPosition) {
        retire_journal_files_before(&self.config.journal_dir(), checkpoint.file_id);
    }

    /// Turns the bookie read-only after a failed write, for as long as the cause lasts.
    pub(crate) fn note_write_error(&self, error: &BookieError) {
        let cause = if error.is_out_of_space() {
            ReadOnlyCause::DiskFull
        } else {
            ReadOnlyCause::IoError
        };
        let advice = match cause {
            ReadOnlyCause::DiskFull => "free disk space; adds resume by themselves",
            ReadOnlyCause::IoError => "check the disk, then restart the bookie",
        };
        self.read_only.enter(cause, format!("{error} ({advice})"));
    }

    pub fn read_only_state(&self) -> &ReadOnlyState {
        &self.read_only
    }

    /// Stops the background loops after their current step.
    pub fn begin_stop(&self) {
        self.stopping.store(true, Ordering::Release);
        self.request_flush();
        self.cache_drained.notify_all();
    }
}

impl LedgerStorage {
    /// Puts entries durable in the journal up to `position` into the write cache and moves
    /// their ledgers' LAC and last entry; returns the bytes the active generation now holds.
    fn cache_entries(&self, entries: Vec<Entry>, position: JournalPosition) -> usize {
        let mut updates: HashMap<u64, (i64, i64)> = HashMap::new();
        for entry in &entries {
            let update = updates.entry(entry.ledger_id).or_insert((-1, -1));
            update.0 = update.0.max(entry.last_add_confirmed);
            update.1 = update.1.max(entry.entry_id as i64);
        }
        let cache_bytes = {
            let mut caches = self.caches.lock();
            for entry in entries {
                caches.active.insert(entry);
            }
            caches.active.set_journal_position(position);
            caches.active.payload_bytes()
        };
        {
            let mut ledgers = self.ledgers.lock();
            for (ledger_id, (lac, last_entry_id)) in updates {
                let Some(state) = ledgers.get_mut(&ledger_id) else {
                    continue;
                };
                if last_entry_id > state.meta.last_entry_id {
                    state.meta.last_entry_id = last_entry_id;
                    state.dirty = true;
                }
                if lac > state.meta.last_add_confirmed {
                    state.meta.last_add_confirmed = lac;
                    state.dirty = true;
                    state.lac_watch.send_replace(lac);
                }
            }
        }
        cache_bytes
    }
}

impl JournalSink for LedgerStorage {
    fn entries_durable(&self, entries: Vec<Entry>, position: JournalPosition) {
        let cache_bytes = self.cache_entries(entries, position);
        let flush_at = self.config.write_cache_flush_bytes;
        if cache_bytes >= flush_at {
            self.request_flush();
        }
        if cache_bytes >= 2 * flush_at {
            // The flusher is behind: hold the journal (and so every writer) until it catches up.
            let started = Instant::now();
            let mut caches = self.caches.lock();
            while caches.active.payload_bytes() >= 2 * flush_at
                && !self.stopping.load(Ordering::Acquire)
            {
                if caches.flushing.is_none() {
                    drop(caches);
                    self.request_flush();
                    caches = self.caches.lock();
                }
                self.cache_drained
                    .wait_for(&mut caches, Duration::from_millis(100));
                if started.elapsed() > Duration::from_secs(5) {
                    warn!("adds have waited 5 s for the write cache to flush");
                    break;
                }
            }
        }
    }

    fn journal_failed(&self, error: &BookieError) {
        self.note_write_error(error);
    }
}
