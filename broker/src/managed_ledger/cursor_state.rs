//! What a cursor has consumed: a mark-delete position (everything up to it is acknowledged)
//! and the ranges acknowledged individually beyond it. No I/O; the managed ledger persists the
//! encoded state and keeps the ledger layout this logic needs.
//!
//! Persistence bound: [`CursorState::encode`] keeps the mark-delete position and at most
//! `max_ranges` individually acknowledged ranges, the earliest ones. Ranges beyond the bound
//! are not written, so after a reopen their entries are delivered again: at-least-once, never
//! lost. The default bound (see the managed ledger's configuration) is generous enough that
//! only a consumer acknowledging far out of order meets it.

use std::collections::BTreeMap;

use thiserror::Error;

use super::position::{Layout, Position};

/// Version of the encoded cursor state.
const FORMAT_VERSION: u8 = 1;

/// Why encoded cursor state was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CursorStateError {
    #[error("cursor state is truncated or has trailing bytes ({0} bytes)")]
    Length(usize),
    #[error("cursor state checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error(
        "cursor state format version {0} is not supported (this build reads {FORMAT_VERSION})"
    )]
    Version(u8),
    #[error("cursor state ranges are out of order or overlap the mark-delete position")]
    Ranges,
}

/// A cursor's acknowledgement state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorState {
    mark_delete: Position,
    /// Inclusive ranges `start -> end`, all after `mark_delete`, disjoint and never adjacent
    /// (adjacent ranges are merged).
    acked: BTreeMap<Position, Position>,
}

impl CursorState {
    /// A cursor that has consumed everything up to and including `mark_delete`.
    pub fn new(mark_delete: Position) -> Self {
        Self {
            mark_delete,
            acked: BTreeMap::new(),
        }
    }

    pub fn mark_delete(&self) -> Position {
        self.mark_delete
    }

    /// The individually acknowledged ranges beyond the mark-delete position, in order.
    pub fn acked_ranges(&self) -> impl Iterator<Item = (Position, Position)> + '_ {
        self.acked.iter().map(|(&start, &end)| (start, end))
    }

    pub fn acked_range_count(&self) -> usize {
        self.acked.len()
    }

    /// Whether `position` has been acknowledged, cumulatively or individually.
    pub fn is_acked(&self, position: Position) -> bool {
        position <= self.mark_delete
            || self
                .acked
                .range(..=position)
                .next_back()
                .is_some_and(|(_, &end)| position <= end)
    }

    /// Acknowledges one entry. Returns whether anything changed.
    pub fn ack(&mut self, position: Position, layout: &Layout) -> bool {
        if self.is_acked(position) {
            return false;
        }
        let mut start = position;
        let mut end = position;
        // Merge with the range just before, when it ends at the entry before `position`.
        if let Some((&before_start, &before_end)) = self.acked.range(..position).next_back() {
            if layout.next(before_end) == Some(position) {
                self.acked.remove(&before_start);
                start = before_start;
            }
        }
        // And with the range just after, when it starts at the entry after `position`.
        if let Some(next) = layout.next(position) {
            if let Some(after_end) = self.acked.remove(&next) {
                end = after_end;
            }
        }
        self.acked.insert(start, end);
        self.advance(layout);
        true
    }

    /// Acknowledges everything up to and including `position`. Returns whether anything
    /// changed.
    pub fn ack_cumulative(&mut self, position: Position, layout: &Layout) -> bool {
        if position <= self.mark_delete {
            return false;
        }
        self.mark_delete = position;
        let covered: Vec<Position> = self.acked.range(..=position).map(|(&s, _)| s).collect();
        for start in covered {
            if let Some(end) = self.acked.remove(&start) {
                if end > position {
                    // The range straddles the new mark-delete: keep its tail.
                    if let Some(tail_start) = layout.next(position) {
                        self.acked.insert(tail_start, end);
                    }
                }
            }
        }
        self.advance(layout);
        true
    }

    /// Moves the mark-delete position over every acknowledged range that now touches it.
    fn advance(&mut self, layout: &Layout) {
        while let Some((&start, &end)) = self.acked.first_key_value() {
            if layout.next(self.mark_delete) != Some(start) {
                break;
            }
            self.acked.remove(&start);
            self.mark_delete = end;
        }
    }

    /// Entries after the mark-delete position up to `last_confirmed`, less those acknowledged
    /// individually: the cursor's backlog.
    pub fn backlog_entries(&self, layout: &Layout, last_confirmed: Position) -> u64 {
        let pending = layout.entries_between(self.mark_delete, last_confirmed);
        let acked: u64 = self
            .acked
            .iter()
            .filter(|(&start, _)| start <= last_confirmed)
            .map(|(&start, &end)| {
                let before_start = Position::new(start.ledger_id, start.entry_id - 1);
                layout.entries_between(before_start, end.min(last_confirmed))
            })
            .sum();
        pending.saturating_sub(acked)
    }

    /// Versioned, checksummed bytes holding the mark-delete position and the first
    /// `max_ranges` acknowledged ranges (see the module's note on the bound).
    pub fn encode(&self, max_ranges: usize) -> Vec<u8> {
        let ranges: Vec<(Position, Position)> = self.acked_ranges().take(max_ranges).collect();
        let mut bytes = Vec::with_capacity(1 + 16 + 4 + ranges.len() * 32 + 4);
        bytes.push(FORMAT_VERSION);
        put_position(&mut bytes, self.mark_delete);
        bytes.extend_from_slice(&(ranges.len() as u32).to_le_bytes());
        for (start, end) in ranges {
            put_position(&mut bytes, start);
            put_position(&mut bytes, end);
        }
        let checksum = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&checksum.to_le_bytes());
        bytes
    }

    /// Reads bytes written by [`CursorState::encode`], checking length, checksum, version
    /// and the order of the ranges.
    pub fn decode(bytes: &[u8]) -> Result<Self, CursorStateError> {
        const HEADER: usize = 1 + 16 + 4;
        if bytes.len() < HEADER + 4 {
            return Err(CursorStateError::Length(bytes.len()));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(CursorStateError::Checksum { stored, computed });
        }
        if body[0] != FORMAT_VERSION {
            return Err(CursorStateError::Version(body[0]));
        }
        let mark_delete = read_position(&body[1..17]);
        let count = u32::from_le_bytes([body[17], body[18], body[19], body[20]]) as usize;
        let ranges = &body[HEADER..];
        if count.checked_mul(32) != Some(ranges.len()) {
            return Err(CursorStateError::Length(bytes.len()));
        }
        let mut state = Self::new(mark_delete);
        let mut previous_end = mark_delete;
        for chunk in ranges.chunks_exact(32) {
            let start = read_position(&chunk[..16]);
            let end = read_position(&chunk[16..]);
            if start <= previous_end || end < start {
                return Err(CursorStateError::Ranges);
            }
            state.acked.insert(start, end);
            previous_end = end;
        }
        Ok(state)
    }
}

fn put_position(bytes: &mut Vec<u8>, position: Position) {
    bytes.extend_from_slice(&position.ledger_id.to_le_bytes());
    bytes.extend_from_slice(&position.entry_id.to_le_bytes());
}

/// Reads 16 bytes; callers pass exactly that many.
fn read_position(bytes: &[u8]) -> Position {
    let mut ledger = [0u8; 8];
    let mut entry = [0u8; 8];
    ledger.copy_from_slice(&bytes[..8]);
    entry.copy_from_slice(&bytes[8..16]);
    Position::new(u64::from_le_bytes(ledger), i64::from_le_bytes(entry))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::managed_ledger::position::LedgerSpan;

    /// Ledgers 1 (entries 0..=9), 2 (empty), 4 (0..=9) and 6 (open).
    fn layout() -> Layout {
        Layout::new(vec![
            LedgerSpan {
                ledger_id: 1,
                last_entry_id: Some(9),
            },
            LedgerSpan {
                ledger_id: 2,
                last_entry_id: Some(-1),
            },
            LedgerSpan {
                ledger_id: 4,
                last_entry_id: Some(9),
            },
            LedgerSpan {
                ledger_id: 6,
                last_entry_id: None,
            },
        ])
    }

    fn all_positions() -> Vec<Position> {
        let mut positions = Vec::new();
        for ledger in [1, 4, 6] {
            for entry in 0..10 {
                positions.push(Position::new(ledger, entry));
            }
        }
        positions
    }

    #[test]
    fn individual_acks_advance_the_mark_delete_across_ledgers() {
        let layout = layout();
        let mut state = CursorState::new(Position::before_ledger(1));
        for entry in (0..10).rev() {
            state.ack(Position::new(4, entry), &layout);
        }
        assert_eq!(state.acked_range_count(), 1);
        assert_eq!(state.mark_delete(), Position::before_ledger(1));
        for entry in [3, 1, 2, 0, 5, 4, 9, 8, 6] {
            state.ack(Position::new(1, entry), &layout);
        }
        // Entry 1:7 is still missing.
        assert_eq!(state.mark_delete(), Position::new(1, 6));
        assert!(!state.is_acked(Position::new(1, 7)));
        state.ack(Position::new(1, 7), &layout);
        // 1:7 joins 1:8-9, skips the empty ledger 2 and meets ledger 4.
        assert_eq!(state.mark_delete(), Position::new(4, 9));
        assert_eq!(state.acked_range_count(), 0);
    }

    #[test]
    fn cumulative_acks_keep_the_tail_of_a_straddling_range() {
        let layout = layout();
        let mut state = CursorState::new(Position::before_ledger(1));
        for entry in 4..8 {
            state.ack(Position::new(1, entry), &layout);
        }
        state.ack(Position::new(4, 2), &layout);
        assert!(state.ack_cumulative(Position::new(1, 5), &layout));
        // 1:6 and 1:7 were acked, so the mark-delete moves on to 1:7.
        assert_eq!(state.mark_delete(), Position::new(1, 7));
        assert!(!state.ack_cumulative(Position::new(1, 2), &layout));
        assert!(state.is_acked(Position::new(4, 2)));
        assert!(!state.is_acked(Position::new(4, 1)));
    }

    #[test]
    fn backlog_counts_what_is_neither_cumulatively_nor_individually_acked() {
        let layout = layout();
        let mut state = CursorState::new(Position::before_ledger(1));
        let last = Position::new(6, 4);
        assert_eq!(state.backlog_entries(&layout, last), 25);
        state.ack(Position::new(4, 3), &layout);
        state.ack(Position::new(4, 4), &layout);
        state.ack_cumulative(Position::new(1, 9), &layout);
        assert_eq!(state.backlog_entries(&layout, last), 13);
    }

    #[test]
    fn encoding_round_trips_and_the_bound_only_forgets_later_ranges() {
        let layout = layout();
        let mut state = CursorState::new(Position::before_ledger(1));
        for entry in [1, 3, 5, 7] {
            state.ack(Position::new(4, entry), &layout);
        }
        let decoded = CursorState::decode(&state.encode(100)).unwrap();
        assert_eq!(decoded, state);
        let bounded = CursorState::decode(&state.encode(2)).unwrap();
        assert_eq!(bounded.acked_range_count(), 2);
        assert!(bounded.is_acked(Position::new(4, 3)));
        // Forgotten acks mean redelivery, never loss: nothing unacked reads as acked.
        assert!(!bounded.is_acked(Position::new(4, 5)));
    }

    #[test]
    fn corrupt_bytes_are_refused() {
        let mut state = CursorState::new(Position::new(1, 3));
        state.ack(Position::new(4, 1), &layout());
        let bytes = state.encode(10);
        for length in 0..bytes.len() {
            assert!(CursorState::decode(&bytes[..length]).is_err());
        }
        for position in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[position] ^= 0x10;
            assert!(CursorState::decode(&flipped).is_err(), "byte {position}");
        }
    }

    proptest! {
        /// Whatever the order and mix of acks, the state agrees with a plain set of acked
        /// positions, and the mark-delete position is the longest acked prefix.
        #[test]
        fn state_matches_a_naive_model(
            operations in prop::collection::vec((0usize..30, any::<bool>()), 0..80)
        ) {
            let layout = layout();
            let positions = all_positions();
            let mut state = CursorState::new(Position::before_ledger(1));
            let mut model = std::collections::BTreeSet::new();
            for (index, cumulative) in operations {
                let position = positions[index];
                if cumulative {
                    state.ack_cumulative(position, &layout);
                    model.extend(positions.iter().copied().filter(|p| *p <= position));
                } else {
                    state.ack(position, &layout);
                    model.insert(position);
                }
                for candidate in &positions {
                    prop_assert_eq!(state.is_acked(*candidate), model.contains(candidate));
                }
                let prefix = positions.iter().take_while(|p| model.contains(p)).last();
                let expected = prefix.copied().unwrap_or(Position::before_ledger(1));
                prop_assert_eq!(state.mark_delete(), expected);
                prop_assert_eq!(CursorState::decode(&state.encode(1000)).unwrap(), state.clone());
            }
        }
    }
}
