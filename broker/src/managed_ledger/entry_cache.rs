//! Recently written entries, kept so tailing readers are served without a bookie round trip.
//! Bounded in bytes: inserting past the bound evicts the oldest entries first, which are the
//! ones tailing readers have already passed. No I/O.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::position::Position;

/// Entries by position, at most `capacity_bytes` of payload in all.
#[derive(Debug)]
pub struct EntryCache {
    capacity_bytes: usize,
    size_bytes: usize,
    entries: BTreeMap<Position, Bytes>,
    hits: u64,
    misses: u64,
}

impl EntryCache {
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            capacity_bytes,
            size_bytes: 0,
            entries: BTreeMap::new(),
            hits: 0,
            misses: 0,
        }
    }

    /// Caches an entry just written. An entry larger than the whole cache is not kept.
    pub fn insert(&mut self, position: Position, payload: Bytes) {
        if payload.len() > self.capacity_bytes {
            return;
        }
        if let Some(previous) = self.entries.insert(position, payload.clone()) {
            self.size_bytes -= previous.len();
        }
        self.size_bytes += payload.len();
        while self.size_bytes > self.capacity_bytes {
            match self.entries.pop_first() {
                Some((_, evicted)) => self.size_bytes -= evicted.len(),
                None => break,
            }
        }
    }

    /// The entry at `position`, if cached.
    pub fn get(&mut self, position: Position) -> Option<Bytes> {
        let found = self.entries.get(&position).cloned();
        if found.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        found
    }

    /// Consecutive cached entries of one ledger from `first` on, at most `max_entries`; stops
    /// at the first gap.
    pub fn get_run(&mut self, first: Position, max_entries: usize) -> Vec<(Position, Bytes)> {
        let mut run = Vec::new();
        let mut expected = first;
        for (&position, payload) in self.entries.range(first..) {
            if position != expected || run.len() >= max_entries {
                break;
            }
            run.push((position, payload.clone()));
            expected = Position::new(position.ledger_id, position.entry_id + 1);
        }
        if run.is_empty() {
            self.misses += 1;
        } else {
            self.hits += 1;
        }
        run
    }

    /// Drops every entry at or before `position` (everyone has read past it).
    pub fn evict_through(&mut self, position: Position) {
        let keep = self
            .entries
            .split_off(&Position::new(position.ledger_id, position.entry_id + 1));
        let dropped: usize = self.entries.values().map(Bytes::len).sum();
        self.size_bytes -= dropped;
        self.entries = keep;
    }

    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (hits, misses) since the cache was made.
    pub fn hit_counts(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(length: usize) -> Bytes {
        Bytes::from(vec![7u8; length])
    }

    #[test]
    fn the_bound_evicts_the_oldest_entries() {
        let mut cache = EntryCache::new(250);
        for entry in 0..5 {
            cache.insert(Position::new(1, entry), payload(100));
        }
        assert_eq!(cache.size_bytes(), 200);
        assert!(cache.get(Position::new(1, 2)).is_none());
        assert!(cache.get(Position::new(1, 4)).is_some());
        cache.insert(Position::new(1, 5), payload(1000));
        assert_eq!(cache.len(), 2, "an entry larger than the cache is not kept");
        assert_eq!(cache.hit_counts(), (1, 1));
    }

    #[test]
    fn runs_stop_at_gaps_and_eviction_through_a_position() {
        let mut cache = EntryCache::new(10_000);
        for entry in [0, 1, 2, 4] {
            cache.insert(Position::new(3, entry), payload(10));
        }
        let run = cache.get_run(Position::new(3, 0), 10);
        assert_eq!(run.len(), 3);
        assert_eq!(cache.get_run(Position::new(3, 1), 1).len(), 1);
        cache.evict_through(Position::new(3, 1));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.size_bytes(), 20);
        assert!(cache.get_run(Position::new(3, 0), 10).is_empty());
    }
}
