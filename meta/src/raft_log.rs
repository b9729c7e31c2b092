//! The Raft log as raft-rs reads it: an in-memory copy of the entries RocksDB holds since the
//! last compaction, the hard and configuration states, and the latest snapshot to send to
//! followers that are too far behind. The node writes RocksDB first and then this copy, so
//! the two never disagree about what is durable.

use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

/// raft-rs's view of the log (implements [`raft::Storage`]).
#[derive(Default)]
pub struct RaftLog {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the entry just before the first one held (0, 0 for a new log).
    start_index: u64,
    start_term: u64,
    entries: Vec<Entry>,
    /// The latest snapshot (empty until one is built or received).
    snapshot: Snapshot,
}

impl RaftLog {
    /// A log as loaded from disk.
    pub fn new(
        hard_state: HardState,
        conf_state: ConfState,
        start: (u64, u64),
        entries: Vec<Entry>,
    ) -> Self {
        Self {
            hard_state,
            conf_state,
            start_index: start.0,
            start_term: start.1,
            entries,
            snapshot: Snapshot::default(),
        }
    }

    pub fn start(&self) -> (u64, u64) {
        (self.start_index, self.start_term)
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn set_hard_state(&mut self, hard_state: HardState) {
        self.hard_state = hard_state;
    }

    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = commit;
    }

    pub fn set_conf_state(&mut self, conf_state: ConfState) {
        self.conf_state = conf_state;
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    fn last(&self) -> u64 {
        self.entries.last().map_or(self.start_index, |e| e.index)
    }

    /// Appends entries, replacing any conflicting suffix. Entries below the start are ignored
    /// (they are already covered by a snapshot).
    pub fn append(&mut self, new_entries: &[Entry]) {
        let Some(first) = new_entries.first() else {
            return;
        };
        let keep = first.index.saturating_sub(self.start_index + 1) as usize;
        self.entries.truncate(keep.min(self.entries.len()));
        for entry in new_entries {
            if entry.index > self.start_index {
                self.entries.push(entry.clone());
            }
        }
    }

    /// Drops every entry up to and including `index`, whose term is `term`.
    pub fn compact(&mut self, index: u64, term: u64) {
        if index <= self.start_index {
            return;
        }
        let drop = ((index - self.start_index) as usize).min(self.entries.len());
        self.entries.drain(..drop);
        self.start_index = index;
        self.start_term = term;
    }

    /// Keeps a snapshot to hand to lagging followers.
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        self.snapshot = snapshot;
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    /// Replaces the log with a received snapshot.
    pub fn install_snapshot(&mut self, snapshot: Snapshot) {
        let metadata = snapshot.get_metadata();
        self.entries.clear();
        self.start_index = metadata.index;
        self.start_term = metadata.term;
        self.hard_state.term = self.hard_state.term.max(metadata.term);
        self.hard_state.commit = self.hard_state.commit.max(metadata.index);
        self.conf_state = metadata.get_conf_state().clone();
        self.snapshot = snapshot;
    }

    /// The term of an entry, if this log knows it.
    pub fn term_of(&self, index: u64) -> Option<u64> {
        if index == self.start_index {
            return Some(self.start_term);
        }
        if index < self.start_index || index > self.last() {
            return None;
        }
        self.entries
            .get((index - self.start_index - 1) as usize)
            .map(|e| e.term)
    }
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.start_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - self.start_index - 1) as usize;
        let to = (high - self.start_index - 1) as usize;
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let mut total = 0u64;
        let mut out = Vec::with_capacity(to - from);
        for entry in &self.entries[from..to] {
            total += protobuf::Message::compute_size(entry) as u64;
            // At least one entry, even when it alone is over the limit.
            if !out.is_empty() && total > max_size {
                break;
            }
            out.push(entry.clone());
        }
        Ok(out)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        if index < self.start_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        self.term_of(index)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.start_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let index = self.snapshot.get_metadata().index;
        if index == 0 || index < request_index || index < self.start_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            ..Entry::default()
        }
    }

    fn indexes(log: &RaftLog, low: u64, high: u64) -> Option<Vec<(u64, u64)>> {
        log.entries(low, high, None, GetEntriesContext::empty(false))
            .ok()
            .map(|es| es.iter().map(|e| (e.index, e.term)).collect())
    }

    #[test]
    fn append_compact_and_read_back() {
        let mut log = RaftLog::default();
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]);
        // A new leader overwrites the suffix from index 2.
        log.append(&[entry(2, 2), entry(3, 2), entry(4, 2)]);
        assert_eq!(
            indexes(&log, 1, 5),
            Some(vec![(1, 1), (2, 2), (3, 2), (4, 2)])
        );
        assert_eq!(log.term(0).ok(), Some(0));
        assert_eq!(log.last_index().ok(), Some(4));

        log.compact(2, 2);
        assert_eq!(log.first_index().ok(), Some(3));
        assert_eq!(log.term(2).ok(), Some(2));
        assert!(log.term(1).is_err());
        assert!(indexes(&log, 2, 4).is_none());
        assert_eq!(indexes(&log, 3, 5), Some(vec![(3, 2), (4, 2)]));
        // Out of range reads are errors, not panics.
        assert!(indexes(&log, 3, 9).is_none());
        // No snapshot yet: temporarily unavailable.
        assert!(log.snapshot(0, 2).is_err());

        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 10;
        snapshot.mut_metadata().term = 3;
        log.install_snapshot(snapshot);
        assert_eq!(log.first_index().ok(), Some(11));
        assert_eq!(log.last_index().ok(), Some(10));
        assert_eq!(log.term(10).ok(), Some(3));
        assert_eq!(
            log.snapshot(0, 2).map(|s| s.get_metadata().index).ok(),
            Some(10)
        );
        assert_eq!(log.hard_state().commit, 10);
    }
}
