//! Garbage collection of entry logs.
//!
//! Deleting a ledger removes its index entries at once; its bytes stay in the entry logs. The
//! compactor finds logs whose live bytes (bytes of ledgers that still exist) have fallen under
//! `compaction_threshold` of what they hold, rewrites the live entries into the current entry
//! log in steps (each step synced and indexed before the next), and then removes the old log.
//! Rewriting is paced at `compaction_max_bytes_per_sec` so adds keep the disk.
//!
//! Live entries are found through the index, not by scanning the log, so a damaged record in a
//! log can never make the compactor skip a live entry.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tracing::{info, warn};

use crate::entry_log::EntryLocation;
use crate::error::Result;
use crate::storage::LedgerStorage;
use crate::write_pace::WritePace;

/// Bytes rewritten per step; each step holds the flush lock only for its own duration.
const STEP_BYTES: u64 = 4 * 1024 * 1024;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    pub logs_removed: usize,
    pub bytes_rewritten: u64,
    pub bytes_reclaimed: u64,
}

/// A log chosen for compaction.
struct Candidate {
    log_id: u64,
    total_bytes: u64,
    live_ledgers: Vec<u64>,
    all_ledgers: Vec<u64>,
}

impl LedgerStorage {
    /// One pass over every closed entry log.
    pub fn compact(&self) -> Result<CompactionReport> {
        let mut report = CompactionReport::default();
        for candidate in self.compaction_candidates() {
            if self.stopping.load(Ordering::Acquire) {
                break;
            }
            let rewritten = self.compact_log(&candidate)?;
            report.logs_removed += 1;
            report.bytes_rewritten += rewritten;
            report.bytes_reclaimed += candidate.total_bytes.saturating_sub(rewritten);
        }
        if report.logs_removed > 0 {
            info!(?report, "entry log compaction finished");
        }
        Ok(report)
    }

    fn compaction_candidates(&self) -> Vec<Candidate> {
        let current = self.writer.lock().current_log_id();
        let live: HashSet<u64> = self.ledgers.lock().keys().copied().collect();
        let usage = self.usage.lock();
        let mut candidates = Vec::new();
        for (log_id, ledgers) in usage.iter() {
            if Some(*log_id) == current {
                continue;
            }
            let total_bytes: u64 = ledgers.values().sum();
            let live_bytes: u64 = ledgers
                .iter()
                .filter(|(ledger, _)| live.contains(ledger))
                .map(|(_, bytes)| bytes)
                .sum();
            let live_fraction = if total_bytes == 0 {
                0.0
            } else {
                live_bytes as f64 / total_bytes as f64
            };
            if live_fraction < self.config.compaction_threshold {
                candidates.push(Candidate {
                    log_id: *log_id,
                    total_bytes,
                    live_ledgers: ledgers
                        .keys()
                        .filter(|ledger| live.contains(ledger))
                        .copied()
                        .collect(),
                    all_ledgers: ledgers.keys().copied().collect(),
                });
            }
        }
        candidates
    }

    /// Moves a log's live entries out, then removes it. Returns the bytes rewritten.
    fn compact_log(&self, candidate: &Candidate) -> Result<u64> {
        let mut rewritten = 0u64;
        let started = Instant::now();
        for ledger_id in &candidate.live_ledgers {
            let locations: Vec<(u64, EntryLocation)> = self
                .index
                .ledger_locations(*ledger_id)?
                .into_iter()
                .filter(|(_, location)| location.log_id == candidate.log_id)
                .collect();
            for step in chunk_by_bytes(&locations, STEP_BYTES) {
                rewritten += self.rewrite_step(*ledger_id, candidate.log_id, step)?;
                self.pace(rewritten, started);
            }
        }
        {
            let _flush = self.flush_lock.lock();
            let mut batch = self.index.new_batch();
            self.index.forget_log(
                &mut batch,
                candidate.log_id,
                candidate.all_ledgers.iter().copied(),
            )?;
            let mut usage = self.usage.lock();
            self.index.commit(batch, &mut usage)?;
            usage.remove(&candidate.log_id);
            drop(usage);
            self.reader.remove(candidate.log_id)?;
        }
        self.stats.compacted_logs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .compacted_bytes_rewritten
            .fetch_add(rewritten, Ordering::Relaxed);
        Ok(rewritten)
    }

    fn rewrite_step(
        &self,
        ledger_id: u64,
        old_log: u64,
        step: &[(u64, EntryLocation)],
    ) -> Result<u64> {
        let _flush = self.flush_lock.lock();
        if !self.ledgers.lock().contains_key(&ledger_id) {
            return Ok(0);
        }
        let mut batch = self.index.new_batch();
        let mut bytes = 0u64;
        {
            let mut writer = self.writer.lock();
            for (entry_id, location) in step {
                // A newer copy (flushed after this list was taken) wins.
                if self.index.location(ledger_id, *entry_id)? != Some(*location) {
                    continue;
                }
                let entry = self.reader.read(*location, ledger_id, *entry_id)?;
                let new_location = writer.append(&entry)?;
                debug_assert_ne!(new_location.log_id, old_log);
                self.index
                    .put_location(&mut batch, ledger_id, *entry_id, new_location)?;
                bytes += u64::from(location.length);
            }
            writer.sync()?;
        }
        self.index.commit(batch, &mut self.usage.lock())?;
        Ok(bytes)
    }

    /// Sleeps as needed to keep the rewrite rate under its bound.
    fn pace(&self, bytes_so_far: u64, started: Instant) {
        let pace = WritePace::at_rate(self.config.compaction_max_bytes_per_sec as f64, started);
        std::thread::sleep(pace.wait_before(bytes_so_far, Instant::now()));
    }

    /// The compactor thread's loop.
    pub fn run_compactor(self: std::sync::Arc<Self>, wakeup: std::sync::mpsc::Receiver<()>) {
        loop {
            match wakeup.recv_timeout(self.config.compaction_interval) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            }
            if self.stopping.load(Ordering::Acquire) {
                return;
            }
            if let Err(error) = self.compact() {
                warn!(%error, "entry log compaction failed; will retry");
            }
        }
    }
}

/// Splits locations into runs of about `max_bytes` each.
fn chunk_by_bytes(
    locations: &[(u64, EntryLocation)],
    max_bytes: u64,
) -> Vec<&[(u64, EntryLocation)]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0u64;
    for (position, (_, location)) in locations.iter().enumerate() {
        bytes += u64::from(location.length);
        if bytes >= max_bytes {
            chunks.push(&locations[start..=position]);
            start = position + 1;
            bytes = 0;
        }
    }
    if start < locations.len() {
        chunks.push(&locations[start..]);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_location_once() {
        let locations: Vec<(u64, EntryLocation)> = (0..10)
            .map(|id| {
                (
                    id,
                    EntryLocation {
                        log_id: 1,
                        offset: id * 100,
                        length: 100,
                    },
                )
            })
            .collect();
        let chunks = chunk_by_bytes(&locations, 250);
        let sizes: Vec<usize> = chunks.iter().map(|chunk| chunk.len()).collect();
        assert_eq!(sizes, vec![3, 3, 3, 1]);
        assert!(chunk_by_bytes(&[], 250).is_empty());
    }
}
