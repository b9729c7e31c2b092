//! Producer deduplication: a message resent with a sequence id already persisted is answered
//! with its original position and not stored twice. No I/O; the topic feeds in what it
//! persisted (live, or replayed from the log after a change of owner) and asks before storing.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::managed_ledger::Position;

/// Sequence ids remembered per producer with their positions; an older duplicate is still
/// recognised (by the highest id) but answered without its position.
pub const REMEMBERED_PER_PRODUCER: usize = 10_000;

/// What to do with a message from a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New: store it.
    Store,
    /// Already persisted: answer with this position, store nothing.
    Duplicate(Option<Position>),
    /// Sent before but not yet persisted (still in flight): wait for that one's outcome.
    InFlight,
}

#[derive(Debug, Default, Clone)]
struct ProducerState {
    /// Highest sequence id persisted.
    persisted: Option<u64>,
    /// Highest sequence id accepted for storing (persisted or in flight).
    accepted: Option<u64>,
    /// Recent persisted ids and their positions, oldest first.
    recent: VecDeque<(u64, Position)>,
}

/// Deduplication state of one topic.
#[derive(Debug, Default, Clone)]
pub struct Deduplication {
    producers: HashMap<String, ProducerState>,
}

impl Deduplication {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decides about `sequence_id` from `producer`; a `Store` verdict marks it in flight.
    pub fn check(&mut self, producer: &str, sequence_id: u64) -> Verdict {
        let verdict = self.verdict(producer, sequence_id);
        if verdict == Verdict::Store {
            self.accept(producer, sequence_id);
        }
        verdict
    }

    /// Marks ids up to `sequence_id` in flight (after a `Store` verdict, once the append is
    /// queued); returns the mark before, which [`failed`](Self::failed) needs.
    pub fn accept(&mut self, producer: &str, sequence_id: u64) -> Option<u64> {
        let state = self.producers.entry(producer.to_string()).or_default();
        state.accepted.replace(sequence_id)
    }

    /// What [`check`](Self::check) would decide, changing nothing.
    pub fn verdict(&self, producer: &str, sequence_id: u64) -> Verdict {
        let Some(state) = self.producers.get(producer) else {
            return Verdict::Store;
        };
        if state
            .persisted
            .is_some_and(|highest| sequence_id <= highest)
        {
            let position = state
                .recent
                .binary_search_by_key(&sequence_id, |(id, _)| *id)
                .ok()
                .map(|index| state.recent[index].1);
            return Verdict::Duplicate(position);
        }
        if state.accepted.is_some_and(|highest| sequence_id <= highest) {
            return Verdict::InFlight;
        }
        Verdict::Store
    }

    /// Records that `sequence_id` from `producer` is persisted at `position`.
    pub fn persisted(&mut self, producer: &str, sequence_id: u64, position: Position) {
        let state = self.producers.entry(producer.to_string()).or_default();
        if state
            .persisted
            .is_some_and(|highest| sequence_id <= highest)
        {
            return;
        }
        state.persisted = Some(sequence_id);
        state.accepted = Some(state.accepted.map_or(sequence_id, |a| a.max(sequence_id)));
        state.recent.push_back((sequence_id, position));
        if state.recent.len() > REMEMBERED_PER_PRODUCER {
            state.recent.pop_front();
        }
    }

    /// Forgets the in-flight ids of a failed append, and any after it, so the producer's
    /// resend is stored; `accepted_before` is what [`accept`](Self::accept) returned for it.
    /// Ids accepted before it stay in flight: the late failure of an append from an older
    /// stream must not let a second copy of a resend that is on its way through.
    pub fn failed(&mut self, producer: &str, accepted_before: Option<u64>) {
        if let Some(state) = self.producers.get_mut(producer) {
            state.accepted = state.persisted.max(state.accepted.min(accepted_before));
        }
    }

    /// The highest persisted sequence id per producer: what a snapshot stores, so a new owner
    /// starts from it and replays the log after the snapshot's position.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.producers
            .iter()
            .filter_map(|(name, state)| state.persisted.map(|id| (name.clone(), id)))
            .collect()
    }

    /// Starts from a snapshot (positions of the ids in it are not known).
    pub fn restore(snapshot: &BTreeMap<String, u64>) -> Self {
        let producers = snapshot
            .iter()
            .map(|(name, &id)| {
                (
                    name.clone(),
                    ProducerState {
                        persisted: Some(id),
                        accepted: Some(id),
                        recent: VecDeque::new(),
                    },
                )
            })
            .collect();
        Self { producers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resends_of_persisted_messages_get_their_original_position() {
        let mut dedup = Deduplication::new();
        assert_eq!(dedup.check("p", 0), Verdict::Store);
        assert_eq!(dedup.check("p", 1), Verdict::Store);
        assert_eq!(dedup.check("p", 1), Verdict::InFlight);
        dedup.persisted("p", 0, Position::new(3, 0));
        dedup.persisted("p", 1, Position::new(3, 1));
        assert_eq!(
            dedup.check("p", 0),
            Verdict::Duplicate(Some(Position::new(3, 0)))
        );
        assert_eq!(dedup.check("p", 2), Verdict::Store);
        // Another producer's ids are its own.
        assert_eq!(dedup.check("q", 0), Verdict::Store);
    }

    #[test]
    fn a_failed_append_lets_the_resend_through() {
        let mut dedup = Deduplication::new();
        dedup.check("p", 0);
        dedup.persisted("p", 0, Position::new(1, 0));
        let before = dedup.accept("p", 1);
        assert_eq!(before, Some(0));
        dedup.failed("p", before);
        assert_eq!(dedup.check("p", 1), Verdict::Store);
    }

    #[test]
    fn a_late_failure_keeps_earlier_ids_in_flight() {
        let mut dedup = Deduplication::new();
        dedup.check("p", 0);
        dedup.persisted("p", 0, Position::new(1, 0));
        // Ids 1, 2 and 3 in flight; the append of 2 fails, then (late) the append of 3.
        let before_1 = dedup.accept("p", 1);
        let before_2 = dedup.accept("p", 2);
        let before_3 = dedup.accept("p", 3);
        dedup.failed("p", before_2);
        dedup.failed("p", before_3);
        assert_eq!(dedup.verdict("p", 1), Verdict::InFlight);
        assert_eq!(dedup.verdict("p", 2), Verdict::Store);
        // The failure of the first forgets everything not persisted.
        dedup.failed("p", before_1);
        assert_eq!(dedup.verdict("p", 1), Verdict::Store);
        // Asking changes nothing.
        assert_eq!(dedup.verdict("p", 1), Verdict::Store);
        assert_eq!(dedup.check("p", 1), Verdict::Store);
        assert_eq!(dedup.verdict("p", 1), Verdict::InFlight);
    }

    #[test]
    fn a_restored_snapshot_still_refuses_old_ids() {
        let mut dedup = Deduplication::new();
        for id in 0..5 {
            dedup.check("p", id);
            dedup.persisted("p", id, Position::new(2, id as i64));
        }
        let mut restored = Deduplication::restore(&dedup.snapshot());
        assert_eq!(restored.check("p", 4), Verdict::Duplicate(None));
        assert_eq!(restored.check("p", 5), Verdict::Store);
    }
}
