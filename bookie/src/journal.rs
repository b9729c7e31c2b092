//! The journal: one writer thread doing group commit.
//!
//! Adds from every connection queue here. The writer takes everything queued (up to
//! `journal_max_group_bytes`, waiting at most `journal_max_group_wait` for more), encodes it
//! into one buffer, writes it with one call and one fdatasync, and only then hands the entries
//! to ledger storage and answers their writers. Files are preallocated with zeros by a helper
//! thread, so an fdatasync flushes data and no file-size metadata.
//!
//! Fencing goes through the same queue: a fence is answered only after every add queued before
//! it is durable, and every add queued after it (other than recovery adds) fails with FENCED.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use magnetar_proto::bookie::{AddResult, Entry, ErrorCode};
use tracing::{error, info, warn};

use crate::error::{BookieError, Result};
use crate::journal_record::{encode_entry, encoded_entry_len, file_header, FILE_HEADER_BYTES};

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
        let first =
            JournalFile::create(&settings.dir, first_file_id, settings.file_size_bytes, None)?;
        let preallocator = {
            let settings = settings.clone();
            std::thread::Builder::new()
                .name("journal-prealloc".into())
                .spawn(move || preallocate_files(settings, first_file_id + 1, spare_sender))
                .map_err(|source| BookieError::io("starting the journal preallocator", source))?
        };
        let (queue, receiver) = flume::bounded(queue_bound);
        let stats = Arc::new(JournalStats::default());
        let mut writer = JournalWriter {
            settings,
            current: first,
            spares: spare_receiver,
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

/// Ids of the journal files in `dir`, in order.
pub fn list_journal_files(dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|source| BookieError::io(format!("listing {}", dir.display()), source))?;
    for entry in entries {
        let entry = entry.map_err(|source| BookieError::io("listing the journal", source))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(hex) = name.strip_suffix(".journal") {
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
    /// whole file's zeros would hold each of them up for hundreds of milliseconds.
    fn create(
        dir: &Path,
        id: u64,
        size_bytes: u64,
        pace_bytes_per_sec: Option<u64>,
    ) -> Result<Self> {
        let path = dir.join(journal_file_name(id));
        let context = |what: &str| format!("{what} journal file {}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| BookieError::io(context("creating"), source))?;
        let chunk_bytes = if pace_bytes_per_sec.is_some() {
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
            if let Some(pace) = pace_bytes_per_sec {
                // Write this chunk out now, waiting for it, so at most one chunk of zeros is
                // ever queued ahead of a journal fdatasync.
                write_out_range(&file, written, chunk as u64);
                let due = Duration::from_secs_f64((written + chunk as u64) as f64 / pace as f64);
                if let Some(early) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(early);
                }
            }
            written += chunk as u64;
        }
        file.write_all_at(&file_header(), 0)
            .map_err(|source| BookieError::io(context("writing the header of"), source))?;
        file.sync_all()
            .map_err(|source| BookieError::io(context("syncing"), source))?;
        sync_directory(dir)?;
        Ok(Self {
            id,
            file,
            offset: FILE_HEADER_BYTES,
            capacity: size_bytes,
        })
    }
}

/// Zeros the background preallocator writes per step.
const PACED_CHUNK_BYTES: usize = 256 * 1024;
/// How fast the background preallocator writes zeros: a 64 MiB file takes 2 s, far less than
/// the time a busy journal takes to fill one.
const PREALLOCATION_BYTES_PER_SEC: u64 = 32 * 1024 * 1024;

/// Starts writeback of a range and waits for it (advisory: the final sync is what counts).
fn write_out_range(file: &File, offset: u64, length: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: sync_file_range only reads its arguments; the descriptor is open for writing.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            length as libc::off64_t,
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER,
        );
    }
}

/// Makes a directory's entries (new or removed files) durable.
pub fn sync_directory(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(|source| BookieError::io(format!("syncing directory {}", dir.display()), source))
}

fn preallocate_files(
    settings: JournalSettings,
    mut next_id: u64,
    spares: flume::Sender<JournalFile>,
) {
    loop {
        match JournalFile::create(
            &settings.dir,
            next_id,
            settings.file_size_bytes,
            Some(PREALLOCATION_BYTES_PER_SEC),
        ) {
            Ok(file) => {
                // Blocks until the writer takes the spare; fails once the writer has stopped.
                if spares.send(file).is_err() {
                    return;
                }
                next_id += 1;
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

struct JournalWriter {
    settings: JournalSettings,
    current: JournalFile,
    spares: flume::Receiver<JournalFile>,
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
                            encode_entry(&entry, &mut self.buffer);
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

        let outcome = if self.buffer.is_empty() {
            Ok(())
        } else {
            self.write_and_sync()
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

    fn write_and_sync(&mut self) -> Result<()> {
        let needed = self.buffer.len() as u64;
        let has_records = self.current.offset > FILE_HEADER_BYTES;
        if self.broken || (has_records && self.current.offset + needed > self.current.capacity) {
            self.roll()?;
        }
        let file = &self.current.file;
        file.write_all_at(&self.buffer, self.current.offset)
            .map_err(|source| BookieError::io("writing the journal", source))?;
        file.sync_data()
            .map_err(|source| BookieError::io("fdatasync of the journal", source))?;
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.current.offset += needed;
        Ok(())
    }

    /// Moves on to the next (preallocated) file.
    fn roll(&mut self) -> Result<()> {
        let next = match self.spares.try_recv() {
            Ok(file) => file,
            Err(_) => {
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
        self.broken = false;
        Ok(())
    }
}
