//! Weighted sampling without replacement of `k` items (Efraimidis and Spirakis, A-Res).
//!
//! Each item draws the key `ln(u) / weight` with `u` uniform in `(0, 1]`; the sample is the `k`
//! items with the largest keys. An item is thus picked first with probability proportional to
//! its weight, and so on among the rest. Keys do not depend on the other items, so merging two
//! samples and keeping the `k` largest keys is exactly the sample of the combined stream.

use crate::codec::{put_text, Reader};
use crate::envelope::{self, guard_foreign_decoder};
use crate::error::{Result, SketchError};
use crate::hash::SplitMix64;
use crate::item::Item;
use crate::kind::Kind;
use crate::params::Params;
use crate::sketch::{bad_query, Answer, Sketch};

const KIND: &str = "weighted_sample";
/// Largest sample.
pub const MAX_K: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
struct Keyed {
    key: f64,
    weight: f64,
    item: String,
}

/// A weighted sample of at most `k` items.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedSample {
    k: usize,
    seen: u64,
    total_weight: f64,
    random: SplitMix64,
    /// Kept unordered; `smallest` indexes the entry with the smallest key once full.
    entries: Vec<Keyed>,
    smallest: usize,
}

impl WeightedSample {
    /// `k` in `1..=2^20`; `seed` drives the draws.
    pub fn new(k: u64, seed: u64) -> Result<Self> {
        if !(1..=MAX_K).contains(&k) {
            return Err(SketchError::parameter(
                KIND,
                "k",
                format!("{k} is out of range; valid range 1..={MAX_K}"),
            ));
        }
        Ok(Self {
            k: k as usize,
            seen: 0,
            total_weight: 0.0,
            random: SplitMix64::new(seed),
            entries: Vec::new(),
            smallest: 0,
        })
    }

    /// Builds from `k` (default 100) and `seed` (default 1).
    pub fn from_params(params: &Params) -> Result<Self> {
        Self::new(
            params.u64_in(KIND, "k", 100, 1..=MAX_K)?,
            params.u64_in(KIND, "seed", 1, 0..=u64::MAX)?,
        )
    }

    /// The sum of the weights offered.
    pub fn total_weight(&self) -> f64 {
        self.total_weight
    }

    /// The sampled items with their weights.
    pub fn sample(&self) -> impl Iterator<Item = (&str, f64)> {
        self.entries
            .iter()
            .map(|entry| (entry.item.as_str(), entry.weight))
    }

    fn find_smallest(&mut self) {
        self.smallest = self
            .entries
            .iter()
            .enumerate()
            .min_by(|left, right| left.1.key.total_cmp(&right.1.key))
            .map_or(0, |(index, _)| index);
    }

    fn insert(&mut self, entry: Keyed) {
        if self.entries.len() < self.k {
            self.entries.push(entry);
            if self.entries.len() == self.k {
                self.find_smallest();
            }
        } else if entry.key > self.entries[self.smallest].key {
            self.entries[self.smallest] = entry;
            // A linear rescan only on replacement, which becomes rare (about k ln(n/k) times).
            self.find_smallest();
        }
    }

    /// Offers `item` with `weight`, which must be finite and positive.
    pub fn update_weighted(&mut self, item: Item<'_>, weight: f64) -> Result<()> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(SketchError::InvalidItem {
                kind: KIND,
                message: format!("weight {weight} is not finite and positive"),
            });
        }
        self.seen = self.seen.saturating_add(1);
        self.total_weight += weight;
        let key = self.random.next_unit_open_zero().ln() / weight;
        if self.entries.len() == self.k && key <= self.entries[self.smallest].key {
            return Ok(());
        }
        self.insert(Keyed {
            key,
            weight,
            item: item.to_text(),
        });
        Ok(())
    }

    fn decode(params: &Params, payload: &[u8]) -> Result<Self> {
        let mut sample = Self::from_params(params).map_err(|error| {
            SketchError::corrupt(format!("weighted_sample envelope parameters: {error}"))
        })?;
        let mut reader = Reader::new(payload, KIND);
        sample.seen = reader.u64()?;
        sample.total_weight = reader.f64()?;
        sample.random = SplitMix64::new(reader.u64()?);
        let count = reader.u32()? as usize;
        // Each entry takes at least 20 bytes, which bounds the allocation by the input.
        if count > sample.k || count > reader.remaining() / 20 {
            return Err(SketchError::corrupt(format!(
                "weighted_sample holds {count} entries, more than k or the payload allows"
            )));
        }
        for _ in 0..count {
            let key = reader.f64()?;
            let weight = reader.f64()?;
            if !(key <= 0.0 && weight.is_finite() && weight > 0.0) {
                return Err(SketchError::corrupt("weighted_sample entry out of range"));
            }
            let item = reader.text()?;
            sample.insert(Keyed { key, weight, item });
        }
        reader.finish()?;
        Ok(sample)
    }
}

impl Sketch for WeightedSample {
    fn kind(&self) -> Kind {
        Kind::WeightedSample
    }

    fn params(&self) -> Params {
        Params::new()
            .with("k", self.k)
            .with("seed", self.random.state())
    }

    fn update(&mut self, item: Item<'_>) -> Result<()> {
        self.update_weighted(item, 1.0)
    }

    fn merge(&mut self, other: &Self) -> Result<()> {
        if self.k != other.k {
            return Err(SketchError::mismatch(
                KIND,
                format!("k={}", self.k),
                format!("k={}", other.k),
            ));
        }
        for entry in &other.entries {
            self.insert(entry.clone());
        }
        self.seen = self.seen.saturating_add(other.seen);
        self.total_weight += other.total_weight;
        Ok(())
    }

    fn empty_like(&self) -> Self {
        Self {
            seen: 0,
            total_weight: 0.0,
            entries: Vec::new(),
            smallest: 0,
            ..self.clone()
        }
    }

    fn is_empty(&self) -> bool {
        self.seen == 0
    }

    fn payload(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&self.seen.to_le_bytes());
        bytes.extend_from_slice(&self.total_weight.to_le_bytes());
        bytes.extend_from_slice(&self.random.state().to_le_bytes());
        bytes.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for entry in &self.entries {
            bytes.extend_from_slice(&entry.key.to_le_bytes());
            bytes.extend_from_slice(&entry.weight.to_le_bytes());
            put_text(&mut bytes, &entry.item);
        }
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let envelope = envelope::decode_kind(bytes, Kind::WeightedSample)?;
        guard_foreign_decoder(KIND, || Self::decode(&envelope.params, envelope.payload))
    }

    fn query(&self, name: &str, _args: &Params) -> Result<Answer> {
        match name {
            "sample" => Ok(Answer::Items(
                self.entries
                    .iter()
                    .map(|entry| entry.item.clone())
                    .collect(),
            )),
            "total_weight" => Ok(Answer::Number(self.total_weight)),
            _ => Err(bad_query(
                Kind::WeightedSample,
                name,
                "weighted_sample answers: sample, total_weight",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heavy_item_is_picked_in_proportion_to_its_weight() {
        // One item of weight 9 among nine of weight 1, k = 1: picked with probability 1/2.
        let trials = 4000u64;
        let mut heavy = 0;
        for seed in 0..trials {
            let mut sample = WeightedSample::new(1, seed).unwrap();
            sample.update_weighted(Item::Str("heavy"), 9.0).unwrap();
            for value in 0..9i64 {
                sample.update_weighted(Item::Int(value), 1.0).unwrap();
            }
            if sample.sample().any(|(item, _)| item == "heavy") {
                heavy += 1;
            }
        }
        let share = f64::from(heavy) / trials as f64;
        assert!((share - 0.5).abs() < 0.04, "heavy share {share}");
        let mut sample = WeightedSample::new(1, 0).unwrap();
        assert!(sample.update_weighted(Item::Int(1), 0.0).is_err());
        assert!(sample.update_weighted(Item::Int(1), f64::NAN).is_err());
    }
}
