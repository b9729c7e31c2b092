//! The counting table behind [`crate::FrequentItems`]: an open-addressing map from text to a
//! count that, when full, subtracts the median count from every entry and drops the entries
//! that reach zero (the reverse purge of the Misra-Gries family). No I/O.
//!
//! Why not a `HashMap<String, u64>`: a stream of heavy hitters is mostly a stream of new,
//! short-lived items, and the cost that matters is inserting and evicting them. Here each slot
//! keeps its `String` buffer when its item is evicted, so after warm-up an insertion copies
//! bytes into memory the table already owns instead of allocating; slots compare a stored hash
//! before comparing text; and the hash is a word-at-a-time mix with a per-process random key,
//! which costs a few nanoseconds on short text and cannot be steered into collisions by
//! whoever chooses the items.

use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

/// A table never grows past this share of its slots (three quarters, as DataSketches does).
const LOAD_NUMERATOR: usize = 3;
const LOAD_DENOMINATOR: usize = 4;
/// At most this many counts are sampled to find the median a purge subtracts.
const MAX_PURGE_SAMPLE: usize = 1024;

/// The entries a table can hold with `2^lg_length` slots.
pub(crate) fn capacity_for(lg_length: u8) -> usize {
    (1usize << lg_length) * LOAD_NUMERATOR / LOAD_DENOMINATOR
}

/// Counts per item in `2^lg_length` slots with linear probing.
#[derive(Debug)]
pub(crate) struct ItemTable {
    lg_length: u8,
    /// The process's hash key, copied here so lookups need no shared read.
    key: u64,
    /// The item's hash with the top bit forced on, or 0 for an empty slot.
    hashes: Vec<u64>,
    counts: Vec<u64>,
    /// Slot buffers; an empty slot's buffer keeps its capacity for the next item.
    items: Vec<String>,
    active: usize,
    /// Spare arrays a purge rebuilds into, swapped with the live ones afterwards.
    spare_hashes: Vec<u64>,
    spare_counts: Vec<u64>,
    spare_items: Vec<String>,
}

impl Clone for ItemTable {
    fn clone(&self) -> Self {
        // The spare arrays and idle buffers are scratch space; a clone starts without them.
        let mut copy = Self::new(self.lg_length);
        for (text, count) in self.iter() {
            copy.add(text, count);
        }
        copy
    }
}

impl ItemTable {
    pub(crate) fn new(lg_length: u8) -> Self {
        let length = 1usize << lg_length;
        Self {
            lg_length,
            key: hash_key(),
            hashes: vec![0; length],
            counts: vec![0; length],
            items: vec![String::new(); length],
            active: 0,
            spare_hashes: Vec::new(),
            spare_counts: Vec::new(),
            spare_items: Vec::new(),
        }
    }

    pub(crate) fn lg_length(&self) -> u8 {
        self.lg_length
    }

    pub(crate) fn active(&self) -> usize {
        self.active
    }

    pub(crate) fn capacity(&self) -> usize {
        capacity_for(self.lg_length)
    }

    fn mask(&self) -> usize {
        (1usize << self.lg_length) - 1
    }

    /// Adds `count` to `text`'s entry, creating it when absent. The caller keeps the table
    /// below capacity (by growing or purging) before the next call.
    #[inline]
    pub(crate) fn add(&mut self, text: &str, count: u64) {
        let hash = text_hash_with(self.key, text);
        let mask = self.mask();
        let mut slot = hash as usize & mask;
        loop {
            let stored = self.hashes[slot];
            if stored == 0 {
                self.hashes[slot] = hash;
                self.counts[slot] = count;
                let buffer = &mut self.items[slot];
                buffer.clear();
                buffer.push_str(text);
                self.active += 1;
                return;
            }
            if stored == hash && self.items[slot] == text {
                self.counts[slot] += count;
                return;
            }
            slot = (slot + 1) & mask;
        }
    }

    /// The count of `text`, 0 when it has no entry.
    pub(crate) fn get(&self, text: &str) -> u64 {
        let hash = text_hash_with(self.key, text);
        let mask = self.mask();
        let mut slot = hash as usize & mask;
        loop {
            let stored = self.hashes[slot];
            if stored == 0 {
                return 0;
            }
            if stored == hash && self.items[slot] == text {
                return self.counts[slot];
            }
            slot = (slot + 1) & mask;
        }
    }

    /// Every entry, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.hashes
            .iter()
            .zip(&self.counts)
            .zip(&self.items)
            .filter(|((&hash, _), _)| hash != 0)
            .map(|((_, &count), text)| (text.as_str(), count))
    }

    /// Doubles the number of slots.
    pub(crate) fn grow(&mut self) {
        self.lg_length += 1;
        let length = 1usize << self.lg_length;
        self.spare_hashes = vec![0; length];
        self.spare_counts = vec![0; length];
        self.spare_items = vec![String::new(); length];
        self.rehash_into_spare(0);
        // The old, smaller arrays are of no further use.
        self.spare_hashes = Vec::new();
        self.spare_counts = Vec::new();
        self.spare_items = Vec::new();
    }

    /// Subtracts the median of (a sample of) the counts from every count, drops the entries
    /// that reach zero, and returns what was subtracted: the sketch adds it to its offset, the
    /// most any item's count can have lost.
    pub(crate) fn purge(&mut self) -> u64 {
        let sample_size = self.active.min(MAX_PURGE_SAMPLE);
        let mut sample: Vec<u64> = Vec::with_capacity(sample_size);
        sample.extend(
            self.hashes
                .iter()
                .zip(&self.counts)
                .filter(|(&hash, _)| hash != 0)
                .map(|(_, &count)| count)
                .take(sample_size),
        );
        if sample.is_empty() {
            return 0;
        }
        let middle = sample.len() / 2;
        let (_, &mut median, _) = sample.select_nth_unstable(middle);
        let length = 1usize << self.lg_length;
        if self.spare_hashes.len() != length {
            self.spare_hashes = vec![0; length];
            self.spare_counts = vec![0; length];
            self.spare_items = vec![String::new(); length];
        } else {
            self.spare_hashes.fill(0);
        }
        self.rehash_into_spare(median);
        median
    }

    /// Moves every entry whose count exceeds `subtract` into the spare arrays, less
    /// `subtract`, then makes the spare arrays the live ones. Buffers are swapped, never
    /// dropped, so both generations keep their capacity.
    fn rehash_into_spare(&mut self, subtract: u64) {
        let mask = self.spare_hashes.len() - 1;
        let mut active = 0;
        for slot in 0..self.hashes.len() {
            let hash = self.hashes[slot];
            let count = self.counts[slot];
            if hash == 0 || count <= subtract {
                continue;
            }
            let mut target = hash as usize & mask;
            while self.spare_hashes[target] != 0 {
                target = (target + 1) & mask;
            }
            self.spare_hashes[target] = hash;
            self.spare_counts[target] = count - subtract;
            std::mem::swap(&mut self.items[slot], &mut self.spare_items[target]);
            active += 1;
        }
        std::mem::swap(&mut self.hashes, &mut self.spare_hashes);
        std::mem::swap(&mut self.counts, &mut self.spare_counts);
        std::mem::swap(&mut self.items, &mut self.spare_items);
        self.active = active;
    }
}

/// The per-process key of [`text_hash`].
fn hash_key() -> u64 {
    static KEY: OnceLock<u64> = OnceLock::new();
    *KEY.get_or_init(|| RandomState::new().hash_one(0x6d61_676e_6574_6172u64) | 1)
}

/// A keyed word-at-a-time hash of `text`, never 0: the top bit is forced on, leaving the low
/// bits, which pick the slot, untouched. A table passes the key it copied at creation, so
/// lookups read no shared state.
#[inline]
fn text_hash_with(key: u64, text: &str) -> u64 {
    const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes = text.as_bytes();
    let length = bytes.len();
    let mut state = key ^ (length as u64).wrapping_mul(MULTIPLIER);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        state = mix(state ^ read_u64(chunk));
    }
    let rest = chunks.remainder();
    // The tail is read with fixed-size loads (overlapping the last full word when there is
    // one) rather than copied byte by byte: short items are the common case.
    let tail = match rest.len() {
        0 => None,
        _ if length >= 8 => Some(read_u64(&bytes[length - 8..])),
        4..=7 => {
            let low = u64::from(read_u32(rest));
            let high = u64::from(read_u32(&rest[rest.len() - 4..]));
            Some(low | (high << 32))
        }
        _ => {
            let first = u64::from(rest[0]);
            let middle = u64::from(rest[rest.len() / 2]);
            let last = u64::from(rest[rest.len() - 1]);
            Some(first | (middle << 8) | (last << 16))
        }
    };
    if let Some(word) = tail {
        state = mix(state ^ word);
    }
    finish(state) | (1 << 63)
}

#[inline]
fn read_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}

#[inline]
fn read_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(word)
}

/// One multiply-fold round: the full 128-bit product folded to 64 bits.
#[inline]
fn mix(value: u64) -> u64 {
    let product = u128::from(value) * u128::from(0xa076_1d64_78bd_642fu64);
    (product as u64) ^ ((product >> 64) as u64)
}

/// The SplitMix64 finaliser, so the low bits (the slot index) depend on every input bit.
#[inline]
fn finish(mut value: u64) -> u64 {
    value ^= value >> 30;
    value = value.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value ^= value >> 27;
    value = value.wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_accumulate_and_absent_items_read_zero() {
        let mut table = ItemTable::new(4);
        table.add("a", 2);
        table.add("b", 1);
        table.add("a", 3);
        assert_eq!(table.get("a"), 5);
        assert_eq!(table.get("b"), 1);
        assert_eq!(table.get("c"), 0);
        assert_eq!(table.active(), 2);
    }

    #[test]
    fn growing_keeps_every_entry() {
        let mut table = ItemTable::new(3);
        for index in 0..6u64 {
            table.add(&format!("item-{index}"), index + 1);
        }
        table.grow();
        assert_eq!(table.lg_length(), 4);
        for index in 0..6u64 {
            assert_eq!(table.get(&format!("item-{index}")), index + 1);
        }
        assert_eq!(table.active(), 6);
    }

    #[test]
    fn purge_subtracts_the_median_and_drops_what_reaches_zero() {
        let mut table = ItemTable::new(4);
        for (index, count) in [1u64, 2, 3, 4, 5, 6, 7, 8, 9].into_iter().enumerate() {
            table.add(&format!("item-{index}"), count);
        }
        let subtracted = table.purge();
        // The sample holds all nine counts; the middle one is 5.
        assert_eq!(subtracted, 5);
        assert_eq!(table.active(), 4);
        for (index, count) in [1u64, 2, 3, 4, 5, 6, 7, 8, 9].into_iter().enumerate() {
            assert_eq!(table.get(&format!("item-{index}")), count.saturating_sub(5));
        }
        // Evicted slots are reused, and lookups still find every survivor.
        for index in 0..5 {
            table.add(&format!("new-{index}"), 1);
        }
        assert_eq!(table.active(), 9);
        assert_eq!(table.get("item-8"), 4);
        assert_eq!(table.get("new-4"), 1);
    }

    #[test]
    fn hashes_spread_and_are_never_zero() {
        let mut low_bits = std::collections::HashSet::new();
        for index in 0..4096 {
            let hash = text_hash_with(hash_key(), &format!("k{index}"));
            assert_ne!(hash, 0);
            low_bits.insert(hash & 0xfff);
        }
        // 4096 keys into 4096 buckets: a fair hash fills about 63% of them.
        assert!(
            low_bits.len() > 2400,
            "only {} distinct buckets",
            low_bits.len()
        );
    }
}
