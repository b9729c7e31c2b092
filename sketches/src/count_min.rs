//! Count-Min: frequency estimates that never undercount, in `width x depth` counters.
//!
//! Written here rather than taken from the `datasketches` crate: that one hashes the item once
//! per row, this one hashes once (MurmurHash3 x64 128) and derives the rows by double hashing
//! (`h1 + row * h2`, Kirsch and Mitzenmacher), which keeps the bound and costs one hash per
//! update. It also adds the conservative update and the inner product, which the crate lacks.
//!
//! Bound: with `width = ceil(e / epsilon)` and `depth = ceil(ln(1 / delta))`, for every item
//! `true <= estimate <= true + epsilon * N` with probability at least `1 - delta`, where `N` is
//! the total weight. Conservative update only lowers estimates, never below the truth.

use crate::envelope::{self, guard_foreign_decoder};
use crate::error::{Result, SketchError};
use crate::hash::{murmur3_x64_128, murmur3_x64_128_i64, DEFAULT_SEED};
use crate::item::Item;
use crate::kind::Kind;
use crate::params::Params;
use crate::sketch::{bad_query, hashed_item_argument, Answer, Sketch};

const KIND: &str = "count_min";
/// Widest row; beyond it the table no longer fits a worker's memory budget for one sketch.
pub const MAX_WIDTH: u64 = 1 << 24;
/// Most rows; 32 rows already give delta = e^-32.
pub const MAX_DEPTH: u64 = 32;
/// Most counters in one sketch (512 MiB of `u64`).
pub const MAX_COUNTERS: u64 = 1 << 26;

/// A Count-Min sketch with `u64` counters.
#[derive(Debug, Clone, PartialEq)]
pub struct CountMin {
    width: usize,
    depth: usize,
    conservative: bool,
    seed: u64,
    total_weight: u64,
    counters: Vec<u64>,
}

impl CountMin {
    /// A sketch of `width` counters per row and `depth` rows.
    pub fn new(width: u64, depth: u64, conservative: bool) -> Result<Self> {
        Self::with_seed(width, depth, conservative, DEFAULT_SEED)
    }

    /// A sketch sized for error `epsilon * N` with probability `1 - delta`.
    pub fn with_error(epsilon: f64, delta: f64, conservative: bool) -> Result<Self> {
        let params = Params::new()
            .with("epsilon", epsilon)
            .with("delta", delta)
            .with("conservative", conservative);
        Self::from_params(&params)
    }

    /// A sketch with an explicit hash seed; only sketches with equal seeds merge.
    pub fn with_seed(width: u64, depth: u64, conservative: bool, seed: u64) -> Result<Self> {
        if !(2..=MAX_WIDTH).contains(&width) {
            return Err(SketchError::parameter(
                KIND,
                "width",
                format!("{width} is out of range; valid range 2..={MAX_WIDTH}"),
            ));
        }
        if !(1..=MAX_DEPTH).contains(&depth) {
            return Err(SketchError::parameter(
                KIND,
                "depth",
                format!("{depth} is out of range; valid range 1..={MAX_DEPTH}"),
            ));
        }
        if width * depth > MAX_COUNTERS {
            return Err(SketchError::parameter(
                KIND,
                "width",
                format!(
                    "width x depth = {} exceeds {MAX_COUNTERS} counters",
                    width * depth
                ),
            ));
        }
        Ok(Self {
            width: width as usize,
            depth: depth as usize,
            conservative,
            seed,
            total_weight: 0,
            counters: vec![0; (width * depth) as usize],
        })
    }

    /// Builds from `width`/`depth` or `epsilon`/`delta`, plus `conservative` and `seed`.
    pub fn from_params(params: &Params) -> Result<Self> {
        let (width, depth, conservative, seed) = Self::dimensions(params)?;
        Self::with_seed(width, depth, conservative, seed)
    }

    /// Width, depth, conservative flag and seed named by `params`, validated, without
    /// allocating the table (decoding compares the size with the payload first).
    fn dimensions(params: &Params) -> Result<(u64, u64, bool, u64)> {
        let conservative = params.bool_or(KIND, "conservative", false)?;
        let seed = params.u64_in(KIND, "seed", DEFAULT_SEED, 0..=u64::MAX)?;
        let epsilon = params.f64_open(KIND, "epsilon", 0.0, 1.0)?;
        let delta = params.f64_open(KIND, "delta", 0.0, 1.0)?;
        let (width, depth) = if epsilon.is_some() || delta.is_some() {
            let epsilon = epsilon.unwrap_or(0.001);
            let delta = delta.unwrap_or(0.01);
            let width = (std::f64::consts::E / epsilon).ceil();
            let depth = (1.0 / delta).ln().ceil().max(1.0);
            if width > MAX_WIDTH as f64 || depth > MAX_DEPTH as f64 {
                return Err(SketchError::parameter(
                    KIND,
                    "epsilon",
                    format!(
                        "epsilon {epsilon} and delta {delta} need width {width} and depth \
                         {depth}; valid widths 2..={MAX_WIDTH}, depths 1..={MAX_DEPTH}"
                    ),
                ));
            }
            (width as u64, depth as u64)
        } else {
            (
                params.u64_in(KIND, "width", 2048, 2..=MAX_WIDTH)?,
                params.u64_in(KIND, "depth", 5, 1..=MAX_DEPTH)?,
            )
        };
        Ok((width, depth, conservative, seed))
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn depth(&self) -> usize {
        self.depth
    }

    pub fn is_conservative(&self) -> bool {
        self.conservative
    }

    /// The sum of all weights added.
    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// `epsilon = e / width`: estimates exceed the truth by at most `epsilon * N`, with
    /// probability `1 - delta`.
    pub fn epsilon(&self) -> f64 {
        std::f64::consts::E / self.width as f64
    }

    /// `delta = e^-depth`: the probability that an estimate breaks the `epsilon * N` bound.
    pub fn delta(&self) -> f64 {
        (-(self.depth as f64)).exp()
    }

    /// The counter index of `row` for a double hash.
    #[inline(always)]
    fn index(&self, row: usize, hash_low: u64, hash_high: u64) -> usize {
        let hash = hash_low.wrapping_add((row as u64).wrapping_mul(hash_high));
        // Multiply-shift maps the top 32 bits onto 0..width without a division.
        row * self.width + (((hash >> 32) * self.width as u64) >> 32) as usize
    }

    #[inline(always)]
    fn hashes(&self, bytes: &[u8]) -> (u64, u64) {
        let (low, high) = murmur3_x64_128(bytes, self.seed);
        // An even step would visit only part of the row on some widths; odd never repeats 0.
        (low, high | 1)
    }

    /// Adds `weight` occurrences of the item whose canonical bytes are `bytes`.
    #[inline]
    pub fn update_bytes_weighted(&mut self, bytes: &[u8], weight: u64) {
        let (low, high) = self.hashes(bytes);
        self.update_hashed(low, high, weight);
    }

    #[inline(always)]
    fn update_hashed(&mut self, low: u64, high: u64, weight: u64) {
        // Every counter is at most the total weight, so while the total fits a `u64` no
        // counter can overflow and the plain additions below are exact.
        let Some(total_weight) = self.total_weight.checked_add(weight) else {
            self.update_saturating(low, high, weight);
            return;
        };
        self.total_weight = total_weight;
        if self.conservative {
            let mut indexes = [0usize; MAX_DEPTH as usize];
            let mut minimum = u64::MAX;
            for (row, slot) in indexes.iter_mut().enumerate().take(self.depth) {
                *slot = self.index(row, low, high);
                minimum = minimum.min(self.counters[*slot]);
            }
            // Raising only the counters below the new minimum keeps every counter an upper
            // bound of each item mapped to it, and lowers the others' overcount.
            let target = minimum.saturating_add(weight);
            for &slot in &indexes[..self.depth] {
                let counter = &mut self.counters[slot];
                *counter = (*counter).max(target);
            }
        } else {
            for row in 0..self.depth {
                let slot = self.index(row, low, high);
                self.counters[slot] += weight;
            }
        }
    }

    /// The slow path once the total weight has reached `u64::MAX`: counters stop at the top.
    #[cold]
    fn update_saturating(&mut self, low: u64, high: u64, weight: u64) {
        self.total_weight = u64::MAX;
        for row in 0..self.depth {
            let slot = self.index(row, low, high);
            self.counters[slot] = self.counters[slot].saturating_add(weight);
        }
    }

    /// Adds one occurrence of `bytes`.
    #[inline]
    pub fn update_bytes(&mut self, bytes: &[u8]) {
        self.update_bytes_weighted(bytes, 1);
    }

    /// Adds one occurrence of the integer `value` (hashed as its eight little-endian bytes).
    #[inline]
    pub fn update_i64(&mut self, value: i64) {
        let (low, high) = murmur3_x64_128_i64(value, self.seed);
        self.update_hashed(low, high | 1, 1);
    }

    /// Adds `weight` occurrences of `item`.
    #[inline]
    pub fn update_weighted(&mut self, item: Item<'_>, weight: u64) {
        match item {
            Item::Int(value) => {
                let (low, high) = murmur3_x64_128_i64(value, self.seed);
                self.update_hashed(low, high | 1, weight);
            }
            other => self.update_bytes_weighted(other.canonical_bytes().as_slice(), weight),
        }
    }

    /// The estimated count of `item`: never below the truth, and at most `epsilon * N` above
    /// it with probability `1 - delta`.
    pub fn estimate(&self, item: Item<'_>) -> u64 {
        let (low, high) = self.hashes(item.canonical_bytes().as_slice());
        (0..self.depth)
            .map(|row| self.counters[self.index(row, low, high)])
            .min()
            .unwrap_or(0)
    }

    /// The upper bound of the true count, certain: the estimate itself.
    pub fn upper_bound(&self, item: Item<'_>) -> u64 {
        self.estimate(item)
    }

    /// The lower bound of the true count at confidence `1 - delta`: estimate minus
    /// `epsilon * N`.
    pub fn lower_bound(&self, item: Item<'_>) -> u64 {
        let slack = (self.epsilon() * self.total_weight as f64).ceil() as u64;
        self.estimate(item).saturating_sub(slack)
    }

    /// The estimated inner product `sum over items of count_a * count_b` of the two streams
    /// (the size of an equi-join): never below the truth, at most `epsilon * N_a * N_b` above
    /// it with probability `1 - delta`.
    pub fn inner_product(&self, other: &CountMin) -> Result<u64> {
        self.check_compatible(other)?;
        let mut best = u128::MAX;
        for row in 0..self.depth {
            let range = row * self.width..(row + 1) * self.width;
            let sum = self.counters[range.clone()]
                .iter()
                .zip(&other.counters[range])
                .map(|(&ours, &theirs)| u128::from(ours) * u128::from(theirs))
                .fold(0u128, u128::saturating_add);
            best = best.min(sum);
        }
        Ok(best.min(u128::from(u64::MAX)) as u64)
    }

    fn check_compatible(&self, other: &CountMin) -> Result<()> {
        if (self.width, self.depth, self.seed, self.conservative)
            != (other.width, other.depth, other.seed, other.conservative)
        {
            return Err(SketchError::mismatch(
                KIND,
                self.params().to_string(),
                other.params().to_string(),
            ));
        }
        Ok(())
    }

    fn decode(params: &Params, payload: &[u8]) -> Result<Self> {
        let corrupt_params = |error: SketchError| {
            SketchError::corrupt(format!("count_min envelope parameters: {error}"))
        };
        let (width, depth, conservative, seed) =
            Self::dimensions(params).map_err(corrupt_params)?;
        // Checked before allocating: the table the parameters name must be the bytes present.
        let expected = 8 + width.saturating_mul(depth).saturating_mul(8);
        if payload.len() as u64 != expected {
            return Err(SketchError::corrupt(format!(
                "count_min payload is {} bytes, expected {expected}",
                payload.len()
            )));
        }
        let mut sketch =
            Self::with_seed(width, depth, conservative, seed).map_err(corrupt_params)?;
        let (total, counters) = payload.split_at(8);
        sketch.total_weight = u64::from_le_bytes(total.try_into().unwrap_or_default());
        for (counter, bytes) in sketch.counters.iter_mut().zip(counters.chunks_exact(8)) {
            *counter = u64::from_le_bytes(bytes.try_into().unwrap_or_default());
            // The update and merge fast paths rely on this invariant to add without checks.
            if *counter > sketch.total_weight {
                return Err(SketchError::corrupt(
                    "count_min counter exceeds the total weight",
                ));
            }
        }
        Ok(sketch)
    }
}

impl Sketch for CountMin {
    fn kind(&self) -> Kind {
        Kind::CountMin
    }

    fn params(&self) -> Params {
        Params::new()
            .with("width", self.width)
            .with("depth", self.depth)
            .with("conservative", self.conservative)
            .with("seed", self.seed)
    }

    fn update(&mut self, item: Item<'_>) -> Result<()> {
        self.update_weighted(item, 1);
        Ok(())
    }

    fn merge(&mut self, other: &Self) -> Result<()> {
        self.check_compatible(other)?;
        match self.total_weight.checked_add(other.total_weight) {
            // No counter exceeds its sketch's total, so plain additions cannot overflow and
            // the loop vectorizes.
            Some(total_weight) => {
                for (ours, theirs) in self.counters.iter_mut().zip(&other.counters) {
                    *ours += *theirs;
                }
                self.total_weight = total_weight;
            }
            None => {
                for (ours, theirs) in self.counters.iter_mut().zip(&other.counters) {
                    *ours = ours.saturating_add(*theirs);
                }
                self.total_weight = u64::MAX;
            }
        }
        Ok(())
    }

    fn empty_like(&self) -> Self {
        Self {
            total_weight: 0,
            counters: vec![0; self.counters.len()],
            ..self.clone()
        }
    }

    fn is_empty(&self) -> bool {
        self.total_weight == 0
    }

    fn payload(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(8 + self.counters.len() * 8);
        bytes.extend_from_slice(&self.total_weight.to_le_bytes());
        for counter in &self.counters {
            bytes.extend_from_slice(&counter.to_le_bytes());
        }
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let envelope = envelope::decode_kind(bytes, Kind::CountMin)?;
        guard_foreign_decoder(KIND, || Self::decode(&envelope.params, envelope.payload))
    }

    fn query(&self, name: &str, args: &Params) -> Result<Answer> {
        match name {
            "estimate" => {
                let item = hashed_item_argument(Kind::CountMin, name, args)?;
                Ok(Answer::Estimate {
                    estimate: self.estimate(item) as f64,
                    lower: self.lower_bound(item) as f64,
                    upper: self.upper_bound(item) as f64,
                })
            }
            "total_weight" => Ok(Answer::Number(self.total_weight as f64)),
            _ => Err(bad_query(
                Kind::CountMin,
                name,
                "count_min answers: estimate(item, item_type=str|int|float), total_weight",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_out_of_range_are_rejected_with_the_range() {
        let error = CountMin::new(0, 5, false).unwrap_err();
        assert!(error.to_string().contains("2..="), "{error}");
        let error = CountMin::new(100, 0, false).unwrap_err();
        assert!(error.to_string().contains("1..=32"), "{error}");
        let error = CountMin::with_error(1.5, 0.01, false).unwrap_err();
        assert!(error.to_string().contains("(0, 1)"), "{error}");
    }

    #[test]
    fn epsilon_and_delta_give_the_textbook_size() {
        let sketch = CountMin::with_error(0.001, 0.01, false).unwrap();
        assert_eq!(sketch.width(), 2719);
        assert_eq!(sketch.depth(), 5);
    }

    #[test]
    fn conservative_update_never_undercounts_and_never_exceeds_plain() {
        let mut plain = CountMin::new(64, 4, false).unwrap();
        let mut conservative = CountMin::new(64, 4, true).unwrap();
        for value in 0..5000i64 {
            let key = value % 300;
            plain.update_i64(key);
            conservative.update_i64(key);
        }
        for key in 0..300i64 {
            let truth = (0..5000i64).filter(|value| value % 300 == key).count() as u64;
            let item = Item::Int(key);
            assert!(conservative.estimate(item) >= truth);
            assert!(conservative.estimate(item) <= plain.estimate(item));
        }
    }

    #[test]
    fn inner_product_bounds_the_join_size() {
        let mut left = CountMin::new(1024, 5, false).unwrap();
        let mut right = CountMin::new(1024, 5, false).unwrap();
        for key in 0..100i64 {
            for _ in 0..key {
                left.update_i64(key);
            }
            right.update_i64(key);
            right.update_i64(key);
        }
        let exact: u64 = (0..100u64).map(|key| key * 2).sum();
        let estimate = left.inner_product(&right).unwrap();
        let slack = left.epsilon() * left.total_weight() as f64 * right.total_weight() as f64;
        assert!(estimate >= exact && (estimate - exact) as f64 <= slack);
        let other = CountMin::new(512, 5, false).unwrap();
        assert!(left.inner_product(&other).is_err());
    }
}
