//! The write cache: entries that are durable in the journal but not yet in an entry log.
//!
//! Reads look here first. The flusher swaps the whole cache out, writes it to the entry log
//! sorted by (ledger, entry) so each ledger's entries sit together, and then records how far
//! the journal is covered (the checkpoint).
//!
//! A flushed generation is emptied and becomes the next active one, keeping its table. The
//! journal thread inserts every entry before it answers the adds of its group; a fresh table
//! that doubles as it fills moves everything it holds at once, into newly mapped memory, and
//! at 50,000 adds/s that held every add for up to 10 ms several times a second. A recycled
//! table already has room for a generation, and most of its memory is already mapped; the
//! first two tables start with room for one (see `LedgerStorage`), so the first seconds after
//! a start do not pay for growth either.

use std::collections::HashMap;

use magnetar_proto::bookie::Entry;

use crate::journal::JournalPosition;

/// One generation of cached entries.
#[derive(Default)]
pub struct WriteCache {
    entries: HashMap<(u64, u64), Entry>,
    payload_bytes: usize,
    /// Journal position of the newest entry inserted: once this cache is in the entry log and
    /// the index, the journal before this position is no longer needed.
    journal_position: JournalPosition,
}

impl WriteCache {
    /// An empty generation with room for `entries` before its table grows.
    pub fn with_capacity(entries: usize) -> Self {
        Self {
            entries: HashMap::with_capacity(entries),
            ..Self::default()
        }
    }

    /// Inserts (or replaces) an entry.
    pub fn insert(&mut self, entry: Entry) {
        self.payload_bytes += entry.payload.len();
        if let Some(previous) = self
            .entries
            .insert((entry.ledger_id, entry.entry_id), entry)
        {
            self.payload_bytes -= previous.payload.len();
        }
    }

    pub fn get(&self, ledger_id: u64, entry_id: u64) -> Option<&Entry> {
        self.entries.get(&(ledger_id, entry_id))
    }

    pub fn set_journal_position(&mut self, position: JournalPosition) {
        self.journal_position = self.journal_position.max(position);
    }

    pub fn journal_position(&self) -> JournalPosition {
        self.journal_position
    }

    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Empties the generation for reuse, keeping the memory of its table, and makes room for
    /// half as many entries again as it held: generations vary in size with the flush timing,
    /// and one that outgrows its table would move everything at once.
    pub fn clear(&mut self) {
        let held = self.entries.len();
        self.entries.clear();
        self.entries.reserve(held + held / 2);
        self.payload_bytes = 0;
        self.journal_position = JournalPosition::default();
    }

    /// Drops every entry of a deleted ledger.
    pub fn remove_ledger(&mut self, ledger_id: u64) {
        let mut freed = 0;
        self.entries.retain(|(ledger, _), entry| {
            let keep = *ledger != ledger_id;
            if !keep {
                freed += entry.payload.len();
            }
            keep
        });
        self.payload_bytes -= freed;
    }

    /// The entries ordered by (ledger, entry), as the entry log wants them.
    pub fn sorted_entries(&self) -> Vec<&Entry> {
        let mut entries: Vec<&Entry> = self.entries.values().collect();
        entries.sort_unstable_by_key(|entry| (entry.ledger_id, entry.entry_id));
        entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::new_entry;
    use bytes::Bytes;

    #[test]
    fn replacing_an_entry_keeps_the_byte_count_right() {
        let mut cache = WriteCache::default();
        cache.insert(new_entry(1, 0, -1, Bytes::from_static(b"abc")));
        cache.insert(new_entry(1, 0, -1, Bytes::from_static(b"abcdef")));
        cache.insert(new_entry(2, 0, -1, Bytes::from_static(b"xy")));
        assert_eq!(cache.payload_bytes(), 8);
        cache.remove_ledger(1);
        assert_eq!(cache.payload_bytes(), 2);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(1, 0).is_none());
    }

    #[test]
    fn entries_come_out_sorted_by_ledger_then_entry() {
        let mut cache = WriteCache::default();
        for (ledger, entry) in [(2, 1), (1, 5), (2, 0), (1, 2)] {
            cache.insert(new_entry(ledger, entry, -1, Bytes::new()));
        }
        let order: Vec<(u64, u64)> = cache
            .sorted_entries()
            .iter()
            .map(|entry| (entry.ledger_id, entry.entry_id))
            .collect();
        assert_eq!(order, vec![(1, 2), (1, 5), (2, 0), (2, 1)]);
    }

    #[test]
    fn a_cleared_generation_keeps_its_table_with_headroom_and_forgets_its_entries() {
        let mut cache = WriteCache::default();
        for entry in 0..1000 {
            cache.insert(new_entry(1, entry, -1, Bytes::from_static(b"abc")));
        }
        cache.set_journal_position(JournalPosition {
            file_id: 3,
            offset: 4096,
        });
        let capacity = cache.entries.capacity();
        cache.clear();
        assert!(cache.is_empty());
        assert_eq!(cache.payload_bytes(), 0);
        assert_eq!(cache.journal_position(), JournalPosition::default());
        assert!(cache.get(1, 0).is_none());
        assert!(cache.entries.capacity() >= capacity.max(1500));
    }
}
