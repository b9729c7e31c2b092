//! Quorum bookkeeping of a ledger, without I/O: which bookies hold an entry, when adds
//! complete, what a failed bookie still owes, and where recovery decides the ledger ends.
//!
//! Bookies are named by their index in the ensemble (0..E). Acknowledgements are kept as a bit
//! set per entry, so E is at most 64 (BookKeeper's practical limit is far lower).

use std::collections::VecDeque;
use std::ops::Range;

/// Ensemble size E, write quorum Qw and ack quorum Qa.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorums {
    pub ensemble: usize,
    pub write: usize,
    pub ack: usize,
}

impl Quorums {
    /// Checks 64 >= E >= Qw >= Qa >= 1.
    pub fn new(ensemble: usize, write: usize, ack: usize) -> Result<Self, String> {
        if ensemble > 64 || ensemble < write || write < ack || ack < 1 {
            return Err(format!(
                "quorums E={ensemble} Qw={write} Qa={ack} break 64 >= E >= Qw >= Qa >= 1"
            ));
        }
        Ok(Self {
            ensemble,
            write,
            ack,
        })
    }

    /// The ensemble indexes entry `entry_id` is written to: Qw of them from `entry_id mod E`.
    pub fn write_set(&self, entry_id: u64) -> impl Iterator<Item = usize> + '_ {
        let start = (entry_id % self.ensemble as u64) as usize;
        (0..self.write).map(move |offset| (start + offset) % self.ensemble)
    }

    /// Whether bookie `index` is in the write set of `entry_id`.
    pub fn stores(&self, entry_id: u64, index: usize) -> bool {
        let start = (entry_id % self.ensemble as u64) as usize;
        (index + self.ensemble - start) % self.ensemble < self.write
    }

    /// The fewest answers from one write set that prove an entry was not acknowledged: with
    /// this many saying "absent", at most Qa - 1 bookies can hold it.
    pub fn absent_threshold(&self) -> usize {
        self.write - self.ack + 1
    }

    /// Whether the bookies that answered a fence (by index) cover every write set with at
    /// least Qw - Qa + 1 answers. Then every acknowledged entry (held by Qa of its write set)
    /// is held by at least one that answered, and no write set can still reach Qa acks from
    /// bookies that did not see the fence.
    pub fn fence_covers(&self, answered: &[bool]) -> bool {
        if answered.len() != self.ensemble {
            return false;
        }
        (0..self.ensemble as u64).all(|start| {
            self.write_set(start)
                .filter(|&index| answered[index])
                .count()
                >= self.absent_threshold()
        })
    }

    /// What recovery concludes about one entry from the answers of its write set.
    pub fn verdict(&self, present: usize, absent: usize) -> EntryVerdict {
        if present > 0 {
            EntryVerdict::Present
        } else if absent >= self.absent_threshold() {
            EntryVerdict::Absent
        } else {
            EntryVerdict::Unknown
        }
    }
}

/// Recovery's conclusion about one entry past the LAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryVerdict {
    /// Some bookie holds it (checksum verified): it may have been acknowledged, so it is kept.
    Present,
    /// Enough bookies of its write set lack it that it cannot have been acknowledged.
    Absent,
    /// Too few answers to tell.
    Unknown,
}

/// Where recovery ends the ledger: entries from `lac + 1` are kept while present; the first
/// absent one ends the scan. `Err(entry_id)` names an entry nobody could decide.
pub fn recovered_last_entry(
    lac: i64,
    verdicts: impl IntoIterator<Item = EntryVerdict>,
) -> Result<i64, u64> {
    let mut last = lac;
    for verdict in verdicts {
        match verdict {
            EntryVerdict::Present => last += 1,
            EntryVerdict::Absent => return Ok(last),
            EntryVerdict::Unknown => return Err((last + 1) as u64),
        }
    }
    Ok(last)
}

/// Acknowledgements of the entries in flight, completing adds strictly in entry order.
#[derive(Clone, Debug)]
pub struct AckTracker {
    quorums: Quorums,
    /// Entry id of `acks[0]`: the first entry not yet completed.
    first_pending: u64,
    /// Per pending entry, the ensemble indexes that acknowledged it.
    acks: VecDeque<u64>,
}

impl AckTracker {
    /// A tracker whose next entry is `next_entry_id` (everything before it is complete).
    pub fn new(quorums: Quorums, next_entry_id: u64) -> Self {
        Self {
            quorums,
            first_pending: next_entry_id,
            acks: VecDeque::new(),
        }
    }

    pub fn quorums(&self) -> Quorums {
        self.quorums
    }

    /// Registers the next entry and returns its id.
    pub fn push(&mut self) -> u64 {
        self.acks.push_back(0);
        self.first_pending + self.acks.len() as u64 - 1
    }

    /// The id the next pushed entry gets.
    pub fn next_entry_id(&self) -> u64 {
        self.first_pending + self.acks.len() as u64
    }

    /// The last completed entry (-1 when none): the writer's last-add-confirmed.
    pub fn last_add_confirmed(&self) -> i64 {
        self.first_pending as i64 - 1
    }

    /// Entries added but not completed.
    pub fn pending(&self) -> usize {
        self.acks.len()
    }

    /// The first entry not yet completed (the next one if none is pending).
    pub fn first_pending(&self) -> u64 {
        self.first_pending
    }

    /// Records bookie `index`'s acknowledgement of `entry_id`. Acks for completed entries, for
    /// entries never added or from bookies outside the write set are ignored (false).
    pub fn ack(&mut self, entry_id: u64, index: usize) -> bool {
        if entry_id < self.first_pending || !self.quorums.stores(entry_id, index) {
            return false;
        }
        let Some(slot) = self.acks.get_mut((entry_id - self.first_pending) as usize) else {
            return false;
        };
        *slot |= 1 << index;
        true
    }

    /// Completes, in order, every entry from the first pending one that has Qa acks; returns
    /// the completed ids (empty when the first pending entry still waits).
    pub fn take_completed(&mut self) -> Range<u64> {
        let start = self.first_pending;
        while let Some(&acks) = self.acks.front() {
            if (acks.count_ones() as usize) < self.quorums.ack {
                break;
            }
            self.acks.pop_front();
            self.first_pending += 1;
        }
        start..self.first_pending
    }

    /// The pending entries bookie `index` stores and has not acknowledged: what it owes.
    pub fn outstanding_for(&self, index: usize) -> Vec<u64> {
        self.acks
            .iter()
            .enumerate()
            .filter_map(|(offset, &acks)| {
                let entry_id = self.first_pending + offset as u64;
                (self.quorums.stores(entry_id, index) && acks & (1 << index) == 0)
                    .then_some(entry_id)
            })
            .collect()
    }

    /// Bookie `index` was replaced: its acks of pending entries no longer count (the metadata
    /// now names the replacement for them), and every pending entry it stores must be sent to
    /// the replacement. Returns those entries.
    pub fn replace(&mut self, index: usize) -> Vec<u64> {
        let mut resend = Vec::new();
        for (offset, acks) in self.acks.iter_mut().enumerate() {
            let entry_id = self.first_pending + offset as u64;
            if self.quorums.stores(entry_id, index) {
                *acks &= !(1 << index);
                resend.push(entry_id);
            }
        }
        resend
    }

    /// Pending entries whose write set includes `index` and have not been acknowledged by it
    /// although the entry at the front has waited: used to pick whom to blame on a timeout.
    pub fn laggards_of_first(&self) -> Vec<usize> {
        let Some(&acks) = self.acks.front() else {
            return Vec::new();
        };
        self.quorums
            .write_set(self.first_pending)
            .filter(|&index| acks & (1 << index) == 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn q(e: usize, w: usize, a: usize) -> Quorums {
        Quorums::new(e, w, a).unwrap()
    }

    #[test]
    fn quorum_sizes_are_checked() {
        assert!(Quorums::new(3, 3, 2).is_ok());
        assert!(Quorums::new(5, 3, 2).is_ok());
        assert!(Quorums::new(2, 3, 2).is_err());
        assert!(Quorums::new(3, 2, 3).is_err());
        assert!(Quorums::new(3, 3, 0).is_err());
        assert!(Quorums::new(65, 3, 2).is_err());
    }

    #[test]
    fn write_sets_stripe_round_the_ensemble() {
        let table: &[(Quorums, u64, &[usize])] = &[
            (q(3, 3, 2), 0, &[0, 1, 2]),
            (q(3, 3, 2), 4, &[1, 2, 0]),
            (q(5, 3, 2), 3, &[3, 4, 0]),
            (q(5, 2, 2), 9, &[4, 0]),
            (q(4, 1, 1), 6, &[2]),
        ];
        for (quorums, entry, expected) in table {
            let set: Vec<usize> = quorums.write_set(*entry).collect();
            assert_eq!(&set, expected, "{quorums:?} entry {entry}");
            for index in 0..quorums.ensemble {
                assert_eq!(quorums.stores(*entry, index), expected.contains(&index));
            }
        }
    }

    #[test]
    fn adds_complete_in_order_only() {
        let mut tracker = AckTracker::new(q(3, 3, 2), 0);
        for _ in 0..3 {
            tracker.push();
        }
        // Entry 1 and 2 reach Qa first: nothing completes while entry 0 waits.
        assert!(tracker.ack(1, 0) && tracker.ack(1, 2) && tracker.ack(2, 1) && tracker.ack(2, 2));
        assert!(tracker.take_completed().is_empty());
        assert!(tracker.ack(0, 1));
        assert!(tracker.take_completed().is_empty());
        assert!(tracker.ack(0, 0));
        assert_eq!(tracker.take_completed(), 0..3);
        assert_eq!(tracker.last_add_confirmed(), 2);
        // Acks of completed or unknown entries are ignored.
        assert!(!tracker.ack(1, 1));
        assert!(!tracker.ack(7, 1));
    }

    #[test]
    fn acks_outside_the_write_set_do_not_count() {
        let mut tracker = AckTracker::new(q(5, 2, 2), 0);
        tracker.push();
        assert!(!tracker.ack(0, 3));
        assert!(tracker.ack(0, 0) && tracker.ack(0, 1));
        assert_eq!(tracker.take_completed(), 0..1);
    }

    #[test]
    fn a_replaced_bookie_owes_its_pending_entries_again() {
        let mut tracker = AckTracker::new(q(3, 2, 2), 10);
        for _ in 0..4 {
            tracker.push();
        }
        // Entries 10..14: write sets {1,2} {2,0} {0,1} {1,2}.
        tracker.ack(10, 1);
        tracker.ack(13, 1);
        assert_eq!(tracker.outstanding_for(1), vec![12]);
        assert_eq!(tracker.outstanding_for(0), vec![11, 12]);
        assert_eq!(tracker.laggards_of_first(), vec![2]);
        assert_eq!(tracker.replace(1), vec![10, 12, 13]);
        assert_eq!(tracker.outstanding_for(1), vec![10, 12, 13]);
        tracker.ack(10, 2);
        assert!(
            tracker.take_completed().is_empty(),
            "the old ack of 10 was dropped"
        );
        tracker.ack(10, 1);
        assert_eq!(tracker.take_completed(), 10..11);
    }

    #[test]
    fn fence_coverage_table() {
        // 3/3/2: any two of three cover (Qw - Qa + 1 = 2).
        let quorums = q(3, 3, 2);
        assert!(quorums.fence_covers(&[true, true, false]));
        assert!(!quorums.fence_covers(&[true, false, false]));
        // 5/3/2: two per write set of three consecutive; losing two adjacent bookies breaks it.
        let quorums = q(5, 3, 2);
        assert!(!quorums.fence_covers(&[true, false, true, false, true]));
        assert!(quorums.fence_covers(&[true, true, false, true, true]));
        assert!(!quorums.fence_covers(&[true, true, false, false, true]));
        // 3/3/3: one answer per write set suffices.
        assert!(q(3, 3, 3).fence_covers(&[false, false, true]));
        // Wrong length never covers.
        assert!(!q(3, 3, 2).fence_covers(&[true, true]));
    }

    #[test]
    fn verdicts_and_the_recovered_end() {
        let quorums = q(3, 3, 2);
        assert_eq!(quorums.verdict(1, 2), EntryVerdict::Present);
        assert_eq!(quorums.verdict(0, 2), EntryVerdict::Absent);
        assert_eq!(quorums.verdict(0, 1), EntryVerdict::Unknown);
        use EntryVerdict::*;
        assert_eq!(recovered_last_entry(4, [Present, Present, Absent]), Ok(6));
        assert_eq!(recovered_last_entry(-1, [Absent]), Ok(-1));
        assert_eq!(recovered_last_entry(4, [Present, Unknown]), Err(6));
        assert_eq!(recovered_last_entry(4, []), Ok(4));
    }

    fn quorums_strategy() -> impl Strategy<Value = Quorums> {
        (1usize..=7)
            .prop_flat_map(|e| (Just(e), 1..=e))
            .prop_flat_map(|(e, w)| (Just(e), Just(w), 1..=w))
            .prop_map(|(e, w, a)| q(e, w, a))
    }

    proptest! {
        #[test]
        fn every_bookie_is_in_qw_of_e_consecutive_write_sets(quorums in quorums_strategy(), start in 0u64..1000) {
            for index in 0..quorums.ensemble {
                let count = (start..start + quorums.ensemble as u64)
                    .filter(|&entry| quorums.stores(entry, index))
                    .count();
                prop_assert_eq!(count, quorums.write);
            }
            let set: Vec<usize> = quorums.write_set(start).collect();
            let mut distinct = set.clone();
            distinct.sort();
            distinct.dedup();
            prop_assert_eq!(distinct.len(), quorums.write);
            prop_assert_eq!(set[0], (start % quorums.ensemble as u64) as usize);
        }

        /// Whatever order acks arrive in, adds complete in entry order, each only once it has
        /// Qa acks, and all complete once every write-set bookie acked.
        #[test]
        fn completion_is_in_order_and_needs_qa(
            quorums in quorums_strategy(),
            entries in 1u64..40,
            order_seed in any::<u64>(),
        ) {
            let mut tracker = AckTracker::new(quorums, 5);
            for _ in 0..entries { tracker.push(); }
            let mut acks: Vec<(u64, usize)> = (5..5 + entries)
                .flat_map(|entry| quorums.write_set(entry).map(move |index| (entry, index)))
                .collect();
            // A seeded shuffle of the arrival order.
            let mut state = order_seed | 1;
            for i in (1..acks.len()).rev() {
                state ^= state << 13; state ^= state >> 7; state ^= state << 17;
                acks.swap(i, (state % (i as u64 + 1)) as usize);
            }
            let mut counts = std::collections::HashMap::<u64, usize>::new();
            let mut next_expected = 5u64;
            for (entry, index) in acks {
                // Acks of entries already completed are ignored.
                prop_assert_eq!(tracker.ack(entry, index), entry >= next_expected);
                *counts.entry(entry).or_default() += 1;
                let done = tracker.take_completed();
                prop_assert_eq!(done.start, next_expected);
                for completed in done.clone() {
                    prop_assert!(counts.get(&completed).copied().unwrap_or(0) >= quorums.ack);
                }
                next_expected = done.end;
            }
            prop_assert_eq!(next_expected, 5 + entries);
            prop_assert_eq!(tracker.pending(), 0);
        }

        /// Safety of recovery: a writer acknowledged a prefix of entries, each stored on at
        /// least Qa of its write set (others partially stored); whichever covering set of
        /// bookies answers the fence, the scan decides and never ends before an acknowledged
        /// entry, and every entry it keeps is held by some bookie that answered.
        #[test]
        fn recovery_never_loses_an_acknowledged_entry(
            quorums in quorums_strategy(),
            entries in 0u64..30,
            seed in any::<u64>(),
        ) {
            let mut state = seed | 1;
            let mut next = move || { state ^= state << 13; state ^= state >> 7; state ^= state << 17; state };
            let e = quorums.ensemble;
            // stored[b] = entries bookie b holds.
            let mut stored = vec![std::collections::HashSet::new(); e];
            let mut acknowledged = -1i64;
            let mut writer_failed = false;
            for entry in 0..entries {
                let set: Vec<usize> = quorums.write_set(entry).collect();
                let holders: Vec<usize> = set.iter().copied().filter(|_| next() % 3 != 0).collect();
                for &b in &holders { stored[b].insert(entry); }
                if !writer_failed && holders.len() >= quorums.ack && acknowledged == entry as i64 - 1 {
                    acknowledged = entry as i64;
                } else {
                    writer_failed = true;
                }
            }
            // Bookie LACs: any value up to the writer's (LAC travels on later entries).
            let lacs: Vec<i64> = (0..e).map(|_| {
                let span = (acknowledged + 2) as u64;
                (next() % span) as i64 - 1
            }).collect();
            let answered: Vec<bool> = (0..e).map(|_| next() % 4 != 0).collect();
            prop_assume!(quorums.fence_covers(&answered));
            let lac = (0..e).filter(|&b| answered[b]).map(|b| lacs[b]).max().unwrap_or(-1);
            let verdicts = (((lac + 1) as u64)..).map(|entry| {
                let mut present = 0;
                let mut absent = 0;
                for b in quorums.write_set(entry) {
                    if answered[b] {
                        if stored[b].contains(&entry) { present += 1 } else { absent += 1 }
                    }
                }
                quorums.verdict(present, absent)
            });
            let last = recovered_last_entry(lac, verdicts.take(entries as usize + 2));
            prop_assert!(last.is_ok(), "a covering fence always decides");
            let last = last.unwrap_or(-1);
            prop_assert!(last >= acknowledged, "recovered {} < acknowledged {}", last, acknowledged);
            for entry in 0..=last {
                prop_assert!((0..e).any(|b| stored[b].contains(&(entry as u64))));
            }
        }
    }
}
