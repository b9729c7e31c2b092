//! Journal files: their names, making them ahead of the writer, and retiring them.
//!
//! A journal file is full-size before the writer uses it, so the writer's fdatasync flushes
//! data and no file-size metadata. A file whose records are all in ledger storage is recycled
//! (renamed and written over); only when none is spare is a new one filled with zeros, paced
//! so the zeros do not hold up the writer's fdatasyncs, unless the writer is about to need it.
//! A new journal makes its first two files before it takes adds; after that the writer asks
//! for its next file when the current one is half full (`next_file_need`), by which time
//! the file before it is checkpointed and can be recycled. The preallocator thread runs here;
//! the writer that fills the files is in [`crate::journal`].

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::directory::{list_file_ids, sync_directory};
use crate::error::{BookieError, Result};
use crate::journal::JournalSettings;
use crate::journal_record::{checksum_seed, file_header, FILE_HEADER_BYTES};
use crate::write_back::{write_back, WriteBack};

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
    list_file_ids(dir, ".journal")
}

pub(crate) struct JournalFile {
    pub(crate) id: u64,
    /// Where each record's checksum starts: records of the file's earlier life fail it.
    pub(crate) checksum_seed: u32,
    pub(crate) file: File,
    /// Where the next record goes.
    pub(crate) offset: u64,
    /// Preallocated size; records may run past it (the file then grows), but a new group that
    /// does not fit goes to the next file.
    pub(crate) capacity: u64,
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
        for spare_id in list_file_ids(dir, ".journal-spare")? {
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
pub(crate) fn next_journal_file(
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
    let mut spares = list_file_ids(dir, ".journal-spare").map_or(0, |spares| spares.len());
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
pub(crate) const PREALLOCATION_BYTES_PER_SEC: u64 = 32 * 1024 * 1024;

/// The preallocator's loop: one file each time the writer asks, until the writer stops.
pub(crate) fn preallocate_files(
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
pub(crate) enum NextFileNeed {
    /// Not yet: the file before the current one may still become a spare to recycle.
    Later,
    /// Ask the preallocator now: a paced preallocation would still finish in time.
    Ask,
    /// Ask, and have the preallocator stop pacing: the file is nearly full.
    Urgent,
}

/// Judges [`NextFileNeed`] from how full the current file is and how fast it filled, where
/// `paced` is how long a paced preallocation of a whole file takes.
pub(crate) fn next_file_need(
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
