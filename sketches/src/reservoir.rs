//! Uniform reservoir sample of `k` items (Vitter's Algorithm R), mergeable exactly.
//!
//! Bound: every item of the stream is in the sample with probability `min(1, k / n)`,
//! independently of the order of arrival. Merging draws how many items come from each side
//! from the hypergeometric distribution of `k` draws over the two stream lengths, then picks
//! that many uniformly from each side's sample, so the merged sample is again uniform over the
//! combined stream.

use crate::codec::{put_text, Reader};
use crate::envelope::{self, guard_foreign_decoder};
use crate::error::{Result, SketchError};
use crate::hash::SplitMix64;
use crate::item::Item;
use crate::kind::Kind;
use crate::params::Params;
use crate::sketch::{bad_query, Answer, Sketch};

const KIND: &str = "reservoir";
/// Largest sample.
pub const MAX_K: u64 = 1 << 20;

/// A uniform sample of at most `k` items.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservoir {
    k: usize,
    seen: u64,
    random: SplitMix64,
    sample: Vec<String>,
}

impl Reservoir {
    /// `k` in `1..=2^20`; `seed` drives which items are kept.
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
            random: SplitMix64::new(seed),
            sample: Vec::new(),
        })
    }

    /// Builds from `k` (default 100) and `seed` (default 1).
    pub fn from_params(params: &Params) -> Result<Self> {
        Self::new(
            params.u64_in(KIND, "k", 100, 1..=MAX_K)?,
            params.u64_in(KIND, "seed", 1, 0..=u64::MAX)?,
        )
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// How many items the stream had.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The sampled items, in no particular order.
    pub fn sample(&self) -> &[String] {
        &self.sample
    }

    /// Offers one item; `make` builds it only if it is kept.
    pub fn offer(&mut self, make: impl FnOnce() -> String) {
        self.seen = self.seen.saturating_add(1);
        if self.sample.len() < self.k {
            self.sample.push(make());
        } else {
            let slot = self.random.next_below(self.seen);
            if slot < self.k as u64 {
                self.sample[slot as usize] = make();
            }
        }
    }

    /// Picks `count` items uniformly without replacement from `sample` (partial Fisher-Yates).
    fn pick(random: &mut SplitMix64, sample: &[String], count: usize, into: &mut Vec<String>) {
        let mut order: Vec<usize> = (0..sample.len()).collect();
        for index in 0..count.min(order.len()) {
            let chosen = index + random.next_below((order.len() - index) as u64) as usize;
            order.swap(index, chosen);
            into.push(sample[order[index]].clone());
        }
    }

    fn decode(params: &Params, payload: &[u8]) -> Result<Self> {
        let mut reservoir = Self::from_params(params).map_err(|error| {
            SketchError::corrupt(format!("reservoir envelope parameters: {error}"))
        })?;
        let mut reader = Reader::new(payload, KIND);
        reservoir.seen = reader.u64()?;
        reservoir.random = SplitMix64::new(reader.u64()?);
        let count = reader.u32()? as usize;
        if count > reservoir.k || count as u64 > reservoir.seen {
            return Err(SketchError::corrupt(format!(
                "reservoir holds {count} items but k is {} and {} were seen",
                reservoir.k, reservoir.seen
            )));
        }
        // Each item takes at least its 4-byte length, so this bounds the allocation by the input.
        if count > reader.remaining() / 4 {
            return Err(SketchError::corrupt(
                "reservoir item count exceeds the payload",
            ));
        }
        reservoir.sample.reserve(count);
        for _ in 0..count {
            reservoir.sample.push(reader.text()?);
        }
        reader.finish()?;
        Ok(reservoir)
    }
}

impl Sketch for Reservoir {
    fn kind(&self) -> Kind {
        Kind::Reservoir
    }

    fn params(&self) -> Params {
        // The seed written is the current generator state, so a restored sampler continues the
        // same random sequence instead of replaying the first one.
        Params::new()
            .with("k", self.k)
            .with("seed", self.random.state())
    }

    fn update(&mut self, item: Item<'_>) -> Result<()> {
        self.offer(|| item.to_text());
        Ok(())
    }

    fn merge(&mut self, other: &Self) -> Result<()> {
        if self.k != other.k {
            return Err(SketchError::mismatch(
                KIND,
                format!("k={}", self.k),
                format!("k={}", other.k),
            ));
        }
        // Only decoded bytes can hold counts this large; the draws below need the exact sum.
        let total = self.seen.checked_add(other.seen).ok_or_else(|| {
            SketchError::mismatch(
                KIND,
                format!("seen={}", self.seen),
                format!("seen={} (the sum overflows)", other.seen),
            )
        })?;
        let draws = (self.k as u64).min(total);
        let (mut ours_left, mut theirs_left) = (self.seen, other.seen);
        let mut from_ours = 0usize;
        for _ in 0..draws {
            if self.random.next_below(ours_left + theirs_left) < ours_left {
                from_ours += 1;
                ours_left -= 1;
            } else {
                theirs_left -= 1;
            }
        }
        let mut merged = Vec::with_capacity(draws as usize);
        let mine = std::mem::take(&mut self.sample);
        Self::pick(&mut self.random, &mine, from_ours, &mut merged);
        Self::pick(
            &mut self.random,
            &other.sample,
            draws as usize - from_ours,
            &mut merged,
        );
        self.sample = merged;
        self.seen = total;
        Ok(())
    }

    fn empty_like(&self) -> Self {
        Self {
            seen: 0,
            sample: Vec::new(),
            ..self.clone()
        }
    }

    fn is_empty(&self) -> bool {
        self.seen == 0
    }

    fn payload(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&self.seen.to_le_bytes());
        bytes.extend_from_slice(&self.random.state().to_le_bytes());
        bytes.extend_from_slice(&(self.sample.len() as u32).to_le_bytes());
        for item in &self.sample {
            put_text(&mut bytes, item);
        }
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let envelope = envelope::decode_kind(bytes, Kind::Reservoir)?;
        guard_foreign_decoder(KIND, || Self::decode(&envelope.params, envelope.payload))
    }

    fn query(&self, name: &str, _args: &Params) -> Result<Answer> {
        match name {
            "sample" => Ok(Answer::Items(self.sample.clone())),
            "seen" => Ok(Answer::Number(self.seen as f64)),
            _ => Err(bad_query(
                Kind::Reservoir,
                name,
                "reservoir answers: sample, seen",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_item_is_kept_with_probability_k_over_n() {
        // 2,000 reservoirs of k = 10 over 100 items: each item is expected 200 times
        // (standard deviation about 13.4).
        let mut hits = [0u32; 100];
        for seed in 0..2000u64 {
            let mut reservoir = Reservoir::new(10, seed).unwrap();
            for value in 0..100i64 {
                reservoir.update(Item::Int(value)).unwrap();
            }
            for item in reservoir.sample() {
                hits[item.parse::<usize>().unwrap()] += 1;
            }
        }
        for (item, &count) in hits.iter().enumerate() {
            assert!(
                (140..=260).contains(&count),
                "item {item} kept {count} times"
            );
        }
    }

    #[test]
    fn merged_samples_are_uniform_over_both_streams() {
        // The left stream has 30 items and the right 70: a merged sample of 10 should hold
        // 3 left items on average.
        let mut left_total = 0usize;
        let trials = 2000;
        for seed in 0..trials {
            let mut left = Reservoir::new(10, seed).unwrap();
            let mut right = Reservoir::new(10, seed + 1_000_000).unwrap();
            for value in 0..30i64 {
                left.update(Item::Int(value)).unwrap();
            }
            for value in 1000..1070i64 {
                right.update(Item::Int(value)).unwrap();
            }
            left.merge(&right).unwrap();
            assert_eq!(left.sample().len(), 10);
            assert_eq!(left.seen(), 100);
            left_total += left
                .sample()
                .iter()
                .filter(|item| item.parse::<i64>().unwrap() < 1000)
                .count();
        }
        let mean = left_total as f64 / trials as f64;
        assert!((mean - 3.0).abs() < 0.15, "mean left items {mean}");
    }
}
