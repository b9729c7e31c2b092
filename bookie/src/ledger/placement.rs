//! Which bookies a ledger's ensemble uses: a small trait so policies can grow (zones, load),
//! and the default policy: distinct, writable bookies with enough free space, spread across
//! rack labels when there are several.

use std::collections::{BTreeMap, HashSet};

use rand::seq::SliceRandom;

use super::error::{LedgerError, LedgerResult};
use super::registration::BookieRecord;

/// Chooses bookies for ensembles. Pure: the caller supplies the registered bookies.
pub trait PlacementPolicy: Send + Sync {
    /// `size` distinct bookies for a new ensemble.
    fn new_ensemble(&self, size: usize, candidates: &[BookieRecord]) -> LedgerResult<Vec<String>>;

    /// A bookie to replace `ensemble[failed]`, never one in `ensemble` or in `excluded`.
    fn replacement(
        &self,
        ensemble: &[String],
        failed: usize,
        excluded: &HashSet<String>,
        candidates: &[BookieRecord],
    ) -> LedgerResult<String>;
}

/// The default policy: random among suitable bookies, one rack at a time round-robin.
#[derive(Clone, Debug, Default)]
pub struct RackAwarePlacement {
    /// Bookies with less free space than this are not chosen.
    pub min_free_space_bytes: u64,
}

impl RackAwarePlacement {
    fn suitable<'a>(&self, candidates: &'a [BookieRecord]) -> Vec<&'a BookieRecord> {
        let mut seen = HashSet::new();
        candidates
            .iter()
            .filter(|bookie| {
                !bookie.read_only
                    && bookie.free_space_bytes >= self.min_free_space_bytes
                    && seen.insert(bookie.address.as_str())
            })
            .collect()
    }
}

/// Racks in random order, each with its bookies in random order; then takes one per rack in
/// turn so the chosen set spans as many racks as possible.
fn spread(
    mut bookies: Vec<&BookieRecord>,
    count: usize,
    used_racks: &HashSet<&str>,
) -> Vec<String> {
    let mut rng = rand::rng();
    bookies.shuffle(&mut rng);
    let mut racks: BTreeMap<&str, Vec<&BookieRecord>> = BTreeMap::new();
    for bookie in bookies {
        racks.entry(bookie.rack.as_str()).or_default().push(bookie);
    }
    let mut order: Vec<(&str, Vec<&BookieRecord>)> = racks.into_iter().collect();
    order.shuffle(&mut rng);
    // Racks the ensemble does not use yet go first.
    order.sort_by_key(|(rack, _)| used_racks.contains(rack));
    let mut chosen = Vec::with_capacity(count);
    while chosen.len() < count {
        let mut took = false;
        for (_, members) in order.iter_mut() {
            if chosen.len() == count {
                break;
            }
            if let Some(bookie) = members.pop() {
                chosen.push(bookie.address.clone());
                took = true;
            }
        }
        if !took {
            break;
        }
    }
    chosen
}

impl PlacementPolicy for RackAwarePlacement {
    fn new_ensemble(&self, size: usize, candidates: &[BookieRecord]) -> LedgerResult<Vec<String>> {
        let suitable = self.suitable(candidates);
        if suitable.len() < size {
            return Err(LedgerError::NotEnoughBookies {
                needed: size,
                available: suitable.len(),
            });
        }
        Ok(spread(suitable, size, &HashSet::new()))
    }

    fn replacement(
        &self,
        ensemble: &[String],
        failed: usize,
        excluded: &HashSet<String>,
        candidates: &[BookieRecord],
    ) -> LedgerResult<String> {
        let suitable: Vec<&BookieRecord> = self
            .suitable(candidates)
            .into_iter()
            .filter(|bookie| {
                !ensemble.contains(&bookie.address) && !excluded.contains(&bookie.address)
            })
            .collect();
        let used_racks: HashSet<&str> = ensemble
            .iter()
            .enumerate()
            .filter(|(index, _)| *index != failed)
            .filter_map(|(_, address)| {
                candidates
                    .iter()
                    .find(|bookie| &bookie.address == address)
                    .map(|bookie| bookie.rack.as_str())
            })
            .collect();
        spread(suitable, 1, &used_racks)
            .pop()
            .ok_or(LedgerError::NotEnoughBookies {
                needed: 1,
                available: 0,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bookie(address: &str, rack: &str, free: u64) -> BookieRecord {
        BookieRecord {
            address: address.into(),
            free_space_bytes: free,
            total_space_bytes: free * 2,
            rack: rack.into(),
            read_only: false,
        }
    }

    #[test]
    fn ensembles_are_distinct_and_skip_full_or_read_only_bookies() {
        let policy = RackAwarePlacement {
            min_free_space_bytes: 100,
        };
        let mut read_only = bookie("ro:1", "", 1000);
        read_only.read_only = true;
        let candidates = vec![
            bookie("a:1", "", 1000),
            bookie("b:1", "", 1000),
            bookie("full:1", "", 10),
            read_only,
            bookie("c:1", "", 1000),
        ];
        for _ in 0..50 {
            let mut chosen = policy.new_ensemble(3, &candidates).unwrap();
            chosen.sort();
            assert_eq!(chosen, vec!["a:1", "b:1", "c:1"]);
        }
        assert!(matches!(
            policy.new_ensemble(4, &candidates),
            Err(LedgerError::NotEnoughBookies {
                needed: 4,
                available: 3
            })
        ));
    }

    #[test]
    fn ensembles_span_racks_when_they_can() {
        let policy = RackAwarePlacement::default();
        let candidates = vec![
            bookie("a1:1", "a", 1),
            bookie("a2:1", "a", 1),
            bookie("a3:1", "a", 1),
            bookie("b1:1", "b", 1),
            bookie("c1:1", "c", 1),
        ];
        for _ in 0..50 {
            let chosen = policy.new_ensemble(3, &candidates).unwrap();
            let racks: HashSet<char> = chosen.iter().map(|a| a.chars().next().unwrap()).collect();
            assert_eq!(racks.len(), 3, "{chosen:?}");
        }
    }

    #[test]
    fn replacements_avoid_the_ensemble_the_excluded_and_used_racks() {
        let policy = RackAwarePlacement::default();
        let candidates = vec![
            bookie("a1:1", "a", 1),
            bookie("a2:1", "a", 1),
            bookie("b1:1", "b", 1),
            bookie("b2:1", "b", 1),
            bookie("c1:1", "c", 1),
            bookie("c2:1", "c", 1),
        ];
        let ensemble: Vec<String> = vec!["a1:1".into(), "b1:1".into(), "c1:1".into()];
        let excluded = HashSet::from(["c2:1".to_string()]);
        for _ in 0..50 {
            // Replacing c1 (rack c): c2 is excluded, a2 and b2 would repeat a rack; one of them.
            let chosen = policy
                .replacement(&ensemble, 2, &excluded, &candidates)
                .unwrap();
            assert!(chosen == "a2:1" || chosen == "b2:1");
        }
        // Only the ensemble itself and an excluded bookie are left: no replacement.
        let small = [
            candidates[0].clone(),
            candidates[2].clone(),
            candidates[4].clone(),
            candidates[5].clone(),
        ];
        assert!(policy.replacement(&ensemble, 0, &excluded, &small).is_err());
    }
}
