//! The journal: one writer thread doing group commit.
//!
//! Adds from every connection queue here. The writer takes everything queued (up to
//! `journal_max_group_bytes`, waiting at most `journal_max_group_wait` for more), encodes it
//! into one buffer, writes it with one call and one fdatasync, and only then hands the entries
//! to ledger storage and answers their writers. Files are preallocated by a helper thread, so
//! an fdatasync flushes data and no file-size metadata: a file whose records are all in ledger
//! storage is recycled (renamed and written over), and only when none is spare is a new one
//! filled with zeros, paced so the zeros do not hold up the journal's own fdatasyncs, unless
//! the writer is about to need the file. A new journal makes its first two files before it
//! takes adds; after that the writer asks for its next file when the current one is half
//! full, by which time the file before it is checkpointed and can be recycled.
//!
//! Fencing goes through the same queue: a fence is answered only after every add queued before
//! it is durable, and every add queued after it (other than recovery adds) fails with FENCED.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use magnetar_proto::bookie::{AddResult, Entry, ErrorCode};
use tracing::{error, info, warn};

use crate::error::{BookieError, Result};
use crate::journal_record::{
    checksum_seed, encode_entry, encoded_entry_len, file_header, FILE_HEADER_BYTES,
};
use crate::write_back::{write_back, WriteBack};

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

/// Name of journal file `id`.
pub fn journal_file_name(id: u64) -> String {
    format!("{id:016x}.journal")
}

/// Name of the spare made of journal file `id` once its records were all in ledger storage.
fn spare_file_name(id: u64) -> String {
    format!("{id:016x}.journal-spare")
}

/// How many checkpointed journal files are kept for reuse; the rest are deleted.
const MAX_SPARE_FILES: usize = 2;

/// Ids of the journal files in `dir`, in order.
pub fn list_journal_files(dir: &Path) -> Result<Vec<u64>> {
    list_files_ending(dir, ".journal")
}

fn list_files_ending(dir: &Path, suffix: &str) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|source| BookieError::io(format!("listing {}", dir.display()), source))?;
    for entry in entries {
        let entry = entry.map_err(|source| BookieError::io("listing the journal", source))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(hex) = name.strip_suffix(suffix) {
            if let Ok(id) = u64::from_str_radix(hex, 16) {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

struct JournalFile {
    id: u64,
    /// Where each record's checksum starts: records of the file's earlier life fail it.
    checksum_seed: u32,
    file: File,
    /// Where the next record goes.
    offset: u64,
    /// Preallocated size; records may run past it (the file then grows), but a new group that
    /// does not fit goes to the next file.
    capacity: u64,
}

impl JournalFile {
    /// Creates, zero-fills and syncs a new journal file and its directory entry. With a pace,
    /// the zeros go to disk a chunk at a time at that many bytes per second: the background
    /// preallocator shares the disk with the journal's own fdatasyncs, and one burst of a
    /// whole file's zeros would hold each of them up for hundreds of milliseconds. Once
    /// `urgent` is set the writer is waiting (or soon will be), and the rest goes unpaced.
    fn create(
        dir: &Path,
        id: u64,
        size_bytes: u64,
        pace: Option<(u64, &AtomicBool)>,
    ) -> Result<Self> {
        let path = dir.join(journal_file_name(id));
        let context = |what: &str| format!("{what} journal file {}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| BookieError::io(context("creating"), source))?;
        let chunk_bytes = if pace.is_some() {
            PACED_CHUNK_BYTES
        } else {
            1024 * 1024
        };
        let zeros = vec![0u8; chunk_bytes];
        let started = std::time::Instant::now();
        let mut written = 0u64;
        while written < size_bytes {
            let chunk = (size_bytes - written).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..chunk], written)
                .map_err(|source| BookieError::io(context("preallocating"), source))?;
            if let Some((bytes_per_sec, urgent)) = pace {
                // Write this chunk out now, waiting for it, so at most one chunk of zeros is
                // ever queued ahead of a journal fdatasync.
                write_back(&file, written, chunk as u64, WriteBack::Finish)
                    .map_err(|source| BookieError::io(context("preallocating"), source))?;
                let due =
                    Duration::from_secs_f64((written + chunk as u64) as f64 / bytes_per_sec as f64);
                match due.checked_sub(started.elapsed()) {
                    Some(early) if !urgent.load(Ordering::Relaxed) => std::thread::sleep(early),
                    _ => {}
                }
            }
            written += chunk as u64;
        }
        file.write_all_at(&file_header(false), 0)
            .map_err(|source| BookieError::io(context("writing the header of"), source))?;
        file.sync_all()
            .map_err(|source| BookieError::io(context("syncing"), source))?;
        sync_directory(dir)?;
        Ok(Self {
            id,
            checksum_seed: checksum_seed(id),
            file,
            offset: FILE_HEADER_BYTES,
            capacity: size_bytes,
        })
    }

    /// Makes a spare (a checkpointed journal file) into journal file `id`: renamed, given a
    /// recycled header, synced. `None` when there is no spare big enough.
    fn reuse_spare(dir: &Path, id: u64, size_bytes: u64) -> Result<Option<Self>> {
        for spare_id in list_files_ending(dir, ".journal-spare")? {
            let spare = dir.join(spare_file_name(spare_id));
            let length = std::fs::metadata(&spare)
                .map(|meta| meta.len())
                .unwrap_or(0);
            if length < size_bytes {
                // Made with a smaller file size setting: of no use now.
                let _ = std::fs::remove_file(&spare);
                continue;
            }
            let path = dir.join(journal_file_name(id));
            let context = |what: &str| format!("{what} journal file {}", path.display());
            // The new header is durable before the file takes its journal name: a crash in
            // between leaves a spare (never replayed), not a journal file whose old header
            // would make its old records look current.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&spare)
                .map_err(|source| BookieError::io(context("opening the spare for"), source))?;
            file.write_all_at(&file_header(true), 0)
                .map_err(|source| BookieError::io(context("writing the header of"), source))?;
            file.sync_data()
                .map_err(|source| BookieError::io(context("syncing"), source))?;
            std::fs::rename(&spare, &path)
                .map_err(|source| BookieError::io(context("renaming a spare to"), source))?;
            sync_directory(dir)?;
            return Ok(Some(Self {
                id,
                checksum_seed: checksum_seed(id),
                file,
                offset: FILE_HEADER_BYTES,
                capacity: length,
            }));
        }
        Ok(None)
    }
}

/// Journal file `id`: a spare reused if there is one, else a new zero-filled file (paced when
/// `urgent` is given, see [`JournalFile::create`]).
fn next_journal_file(
    settings: &JournalSettings,
    id: u64,
    urgent: Option<&AtomicBool>,
) -> Result<JournalFile> {
    if let Some(file) = JournalFile::reuse_spare(&settings.dir, id, settings.file_size_bytes)? {
        return Ok(file);
    }
    JournalFile::create(
        &settings.dir,
        id,
        settings.file_size_bytes,
        urgent.map(|urgent| (PREALLOCATION_BYTES_PER_SEC, urgent)),
    )
}

/// Called once every record of the journal files before `first_kept_id` is in ledger storage:
/// keeps up to [`MAX_SPARE_FILES`] of them as spares for reuse and deletes the rest.
pub fn retire_journal_files_before(dir: &Path, first_kept_id: u64) {
    let Ok(files) = list_journal_files(dir) else {
        return;
    };
    let mut spares = list_files_ending(dir, ".journal-spare").map_or(0, |spares| spares.len());
    for file_id in files.into_iter().filter(|id| *id < first_kept_id) {
        let path = dir.join(journal_file_name(file_id));
        let outcome = if spares < MAX_SPARE_FILES {
            spares += 1;
            std::fs::rename(&path, dir.join(spare_file_name(file_id)))
        } else {
            std::fs::remove_file(&path)
        };
        match outcome {
            Ok(()) => info!(file = %path.display(), "journal file retired after checkpoint"),
            Err(error) => warn!(%error, file = %path.display(), "cannot retire journal file"),
        }
    }
}

/// Zeros the background preallocator writes per step.
const PACED_CHUNK_BYTES: usize = 256 * 1024;
/// How fast the background preallocator writes zeros: a 64 MiB file takes 2 s, far less than
/// the time a busy journal takes to fill one.
const PREALLOCATION_BYTES_PER_SEC: u64 = 32 * 1024 * 1024;

/// Makes a directory's entries (new or removed files) durable.
pub fn sync_directory(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(|source| BookieError::io(format!("syncing directory {}", dir.display()), source))
}

/// The preallocator's loop: one file each time the writer asks, until the writer stops.
fn preallocate_files(
    settings: JournalSettings,
    mut next_id: u64,
    wanted: flume::Receiver<()>,
    spares: flume::Sender<JournalFile>,
    urgent: Arc<AtomicBool>,
) {
    while wanted.recv().is_ok() {
        loop {
            match next_journal_file(&settings, next_id, Some(&urgent)) {
                Ok(file) => {
                    if spares.send(file).is_err() {
                        return;
                    }
                    next_id += 1;
                    break;
                }
                Err(error) => {
                    error!(%error, "cannot preallocate the next journal file; retrying in 1 s");
                    if spares.is_disconnected() {
                        return;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}

/// What the writer should do about its next file, judged after each group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NextFileNeed {
    /// Not yet: the file before the current one may still become a spare to recycle.
    Later,
    /// Ask the preallocator now: a paced preallocation would still finish in time.
    Ask,
    /// Ask, and have the preallocator stop pacing: the file is nearly full.
    Urgent,
}

/// Judges [`NextFileNeed`] from how full the current file is and how fast it filled, where
/// `paced` is how long a paced preallocation of a whole file takes.
fn next_file_need(
    written: u64,
    remaining: u64,
    elapsed: Duration,
    paced: Duration,
) -> NextFileNeed {
    let share_written = written as f64 / (written + remaining).max(1) as f64;
    if share_written > 0.75 || full_within(written, remaining, elapsed, paced) {
        NextFileNeed::Urgent
    } else if share_written > 0.5 || full_within(written, remaining, elapsed, 2 * paced) {
        NextFileNeed::Ask
    } else {
        NextFileNeed::Later
    }
}

/// Whether `remaining` bytes will be gone within `horizon` if writing goes on at the rate that
/// wrote `written` bytes in `elapsed`.
fn full_within(written: u64, remaining: u64, elapsed: Duration, horizon: Duration) -> bool {
    if written == 0 || elapsed.is_zero() {
        return false;
    }
    let seconds_to_full = remaining as f64 * elapsed.as_secs_f64() / written as f64;
    seconds_to_full < horizon.as_secs_f64()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_filling_faster_than_pacing_asks_for_urgency() {
        let pacing = Duration::from_secs(2);
        const MIB: u64 = 1024 * 1024;
        // A burst: 8 MiB in 50 ms leaves 56 MiB for 0.35 s.
        assert!(full_within(
            8 * MIB,
            56 * MIB,
            Duration::from_millis(50),
            pacing
        ));
        // 50,000 adds/s of 100 B: about 7 MB/s, so 60 MiB lasts about 9 s.
        assert!(!full_within(
            4 * MIB,
            60 * MIB,
            Duration::from_millis(600),
            pacing
        ));
        // Nothing written yet, or no time passed: no rate to judge by.
        assert!(!full_within(0, 64 * MIB, Duration::from_millis(10), pacing));
        assert!(!full_within(MIB, 63 * MIB, Duration::ZERO, pacing));
    }

    #[test]
    fn the_next_file_is_asked_for_at_half_and_hurried_when_nearly_full() {
        let paced = Duration::from_secs(2);
        const MIB: u64 = 1024 * 1024;
        let need = |written_mib: u64, elapsed_secs: f64| {
            next_file_need(
                written_mib * MIB,
                (64 - written_mib) * MIB,
                Duration::from_secs_f64(elapsed_secs),
                paced,
            )
        };
        // About 6.4 MiB/s, as 50,000 adds/s of 100 B: wait while the file before may still be
        // checkpointed and recycled, ask at half, hurry past three quarters.
        assert_eq!(need(16, 2.5), NextFileNeed::Later);
        assert_eq!(need(33, 5.2), NextFileNeed::Ask);
        assert_eq!(need(49, 7.7), NextFileNeed::Urgent);
        // 16 MiB a second: full in 3 s, so a paced preallocation (2 s) starts now.
        assert_eq!(need(16, 1.0), NextFileNeed::Ask);
        // A burst: 8 MiB in 50 ms leaves 0.35 s, too little for pacing.
        assert_eq!(need(8, 0.05), NextFileNeed::Urgent);
        // Nothing written yet: no rate to judge by.
        assert_eq!(need(0, 0.01), NextFileNeed::Later);
    }
}
