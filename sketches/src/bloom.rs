//! Bloom filter: set membership with no false negatives and a bounded false-positive rate.
//!
//! Written here: the `datasketches` crate's filter hashes each item twice with XXHash64 through
//! the `Hasher` trait; this one hashes once and derives the `k` bit positions by double hashing,
//! which is what the benchmark compares.
//!
//! Bound: sized for `capacity` items at false-positive rate `p`, it has
//! `m = ceil(-capacity * ln p / ln(2)^2)` bits and `k = round(m / capacity * ln 2)` hash
//! positions; after `n` insertions the false-positive rate is `(1 - e^(-k n / m))^k`, which is
//! `p` at `n = capacity`. Members are always reported present.

use crate::envelope::{self, guard_foreign_decoder};
use crate::error::{Result, SketchError};
use crate::hash::{murmur3_x64_128, murmur3_x64_128_i64, DEFAULT_SEED};
use crate::item::Item;
use crate::kind::Kind;
use crate::params::Params;
use crate::sketch::{bad_query, hashed_item_argument, Answer, Sketch};

const KIND: &str = "bloom";
/// Most bits in one filter (512 MiB); the bit index is derived from 32 hash bits.
pub const MAX_BITS: u64 = 1 << 32;
/// Most hash positions per item.
pub const MAX_HASHES: u64 = 32;

/// A Bloom filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Bloom {
    capacity: u64,
    false_positive_rate: f64,
    num_bits: u64,
    num_hashes: u32,
    inserted: u64,
    words: Vec<u64>,
}

impl Bloom {
    /// A filter for `capacity` items (at least 1) at `false_positive_rate` in `(0, 1)`.
    pub fn new(capacity: u64, false_positive_rate: f64) -> Result<Self> {
        let (num_bits, num_hashes) = Self::sizing(capacity, false_positive_rate)?;
        Ok(Self {
            capacity,
            false_positive_rate,
            num_bits,
            num_hashes,
            inserted: 0,
            words: vec![0; num_bits.div_ceil(64) as usize],
        })
    }

    /// Bits and hash positions for `capacity` items at `false_positive_rate`, validated,
    /// without allocating (decoding compares the size with the payload first).
    fn sizing(capacity: u64, false_positive_rate: f64) -> Result<(u64, u32)> {
        if capacity == 0 {
            return Err(SketchError::parameter(
                KIND,
                "capacity",
                "0 is out of range; valid range 1..",
            ));
        }
        if !(false_positive_rate > 0.0 && false_positive_rate < 1.0) {
            return Err(SketchError::parameter(
                KIND,
                "false_positive_rate",
                format!("{false_positive_rate} is out of range; valid range (0, 1) exclusive"),
            ));
        }
        let ln2 = std::f64::consts::LN_2;
        let bits = (-(capacity as f64) * false_positive_rate.ln() / (ln2 * ln2)).ceil();
        if bits > MAX_BITS as f64 {
            return Err(SketchError::parameter(
                KIND,
                "capacity",
                format!(
                    "{capacity} items at rate {false_positive_rate} need {bits} bits; at most \
                     {MAX_BITS} bits are allowed"
                ),
            ));
        }
        let num_bits = (bits as u64).max(64);
        let num_hashes = ((num_bits as f64 / capacity as f64) * ln2)
            .round()
            .clamp(1.0, MAX_HASHES as f64) as u32;
        Ok((num_bits, num_hashes))
    }

    /// `capacity` and `false_positive_rate` named by `params`, with the defaults.
    fn configuration(params: &Params) -> Result<(u64, f64)> {
        let capacity = params.u64_in(KIND, "capacity", 1_000_000, 1..=u64::MAX)?;
        let rate = params
            .f64_open(KIND, "false_positive_rate", 0.0, 1.0)?
            .unwrap_or(0.01);
        Ok((capacity, rate))
    }

    /// Builds from `capacity` (default 1,000,000) and `false_positive_rate` (default 0.01).
    pub fn from_params(params: &Params) -> Result<Self> {
        let (capacity, rate) = Self::configuration(params)?;
        Self::new(capacity, rate)
    }

    pub fn num_bits(&self) -> u64 {
        self.num_bits
    }

    pub fn num_hashes(&self) -> u32 {
        self.num_hashes
    }

    /// The false-positive rate expected after the insertions so far.
    pub fn expected_false_positive_rate(&self) -> f64 {
        let exponent = -(f64::from(self.num_hashes) * self.inserted as f64) / self.num_bits as f64;
        (1.0 - exponent.exp()).powi(self.num_hashes as i32)
    }

    #[inline(always)]
    fn positions(&self, bytes: &[u8]) -> impl Iterator<Item = u64> + use<'_> {
        let (low, high) = murmur3_x64_128(bytes, DEFAULT_SEED);
        let step = high | 1;
        let num_bits = self.num_bits;
        (0..u64::from(self.num_hashes)).map(move |index| {
            let hash = low.wrapping_add(index.wrapping_mul(step));
            ((hash >> 32) * num_bits) >> 32
        })
    }

    /// Inserts the item whose canonical bytes are `bytes`.
    #[inline]
    pub fn insert_bytes(&mut self, bytes: &[u8]) {
        let (low, high) = murmur3_x64_128(bytes, DEFAULT_SEED);
        self.insert_hashed(low, high);
    }

    /// Inserts the integer `value` (hashed as its eight little-endian bytes).
    #[inline]
    pub fn insert_i64(&mut self, value: i64) {
        let (low, high) = murmur3_x64_128_i64(value, DEFAULT_SEED);
        self.insert_hashed(low, high);
    }

    #[inline(always)]
    fn insert_hashed(&mut self, low: u64, high: u64) {
        let step = high | 1;
        for index in 0..u64::from(self.num_hashes) {
            let hash = low.wrapping_add(index.wrapping_mul(step));
            let bit = ((hash >> 32) * self.num_bits) >> 32;
            self.words[(bit / 64) as usize] |= 1 << (bit % 64);
        }
        self.inserted = self.inserted.saturating_add(1);
    }

    /// Whether the item may have been inserted: `false` is certain, `true` is wrong with the
    /// false-positive rate.
    pub fn contains_bytes(&self, bytes: &[u8]) -> bool {
        self.positions(bytes)
            .all(|bit| self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0)
    }

    /// Whether `item` may have been inserted.
    pub fn contains(&self, item: Item<'_>) -> bool {
        self.contains_bytes(item.canonical_bytes().as_slice())
    }

    fn decode(params: &Params, payload: &[u8]) -> Result<Self> {
        let corrupt_params = |error: SketchError| {
            SketchError::corrupt(format!("bloom envelope parameters: {error}"))
        };
        let (capacity, rate) = Self::configuration(params).map_err(corrupt_params)?;
        let (num_bits, _) = Self::sizing(capacity, rate).map_err(corrupt_params)?;
        // Checked before allocating: the bit array the parameters name must be the bytes present.
        let expected = 8 + num_bits.div_ceil(64) as usize * 8;
        if payload.len() != expected {
            return Err(SketchError::corrupt(format!(
                "bloom payload is {} bytes, expected {expected}",
                payload.len()
            )));
        }
        let mut filter = Self::new(capacity, rate).map_err(corrupt_params)?;
        let (inserted, words) = payload.split_at(8);
        filter.inserted = u64::from_le_bytes(inserted.try_into().unwrap_or_default());
        for (word, bytes) in filter.words.iter_mut().zip(words.chunks_exact(8)) {
            *word = u64::from_le_bytes(bytes.try_into().unwrap_or_default());
        }
        Ok(filter)
    }
}

impl Sketch for Bloom {
    fn kind(&self) -> Kind {
        Kind::Bloom
    }

    fn params(&self) -> Params {
        Params::new()
            .with("capacity", self.capacity)
            .with("false_positive_rate", self.false_positive_rate)
    }

    fn update(&mut self, item: Item<'_>) -> Result<()> {
        self.insert_bytes(item.canonical_bytes().as_slice());
        Ok(())
    }

    fn merge(&mut self, other: &Self) -> Result<()> {
        if (self.num_bits, self.num_hashes) != (other.num_bits, other.num_hashes) {
            return Err(SketchError::mismatch(
                KIND,
                self.params().to_string(),
                other.params().to_string(),
            ));
        }
        for (ours, theirs) in self.words.iter_mut().zip(&other.words) {
            *ours |= theirs;
        }
        // An upper bound: items in both streams are counted twice, which only makes the
        // expected false-positive rate pessimistic.
        self.inserted = self.inserted.saturating_add(other.inserted);
        Ok(())
    }

    fn empty_like(&self) -> Self {
        Self {
            inserted: 0,
            words: vec![0; self.words.len()],
            ..self.clone()
        }
    }

    fn is_empty(&self) -> bool {
        self.inserted == 0
    }

    fn payload(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(8 + self.words.len() * 8);
        bytes.extend_from_slice(&self.inserted.to_le_bytes());
        for word in &self.words {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let envelope = envelope::decode_kind(bytes, Kind::Bloom)?;
        guard_foreign_decoder(KIND, || Self::decode(&envelope.params, envelope.payload))
    }

    fn query(&self, name: &str, args: &Params) -> Result<Answer> {
        match name {
            "contains" => Ok(Answer::Flag(self.contains(hashed_item_argument(
                Kind::Bloom,
                name,
                args,
            )?))),
            "false_positive_rate" => Ok(Answer::Number(self.expected_false_positive_rate())),
            _ => Err(bad_query(
                Kind::Bloom,
                name,
                "bloom answers: contains(item, item_type=str|int|float), false_positive_rate",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_about_the_promised_false_positives() {
        let mut filter = Bloom::new(10_000, 0.01).unwrap();
        for value in 0..10_000i64 {
            filter.insert_bytes(&value.to_le_bytes());
        }
        assert!((0..10_000i64).all(|value| filter.contains(Item::Int(value))));
        let false_positives = (10_000..110_000i64)
            .filter(|value| filter.contains(Item::Int(*value)))
            .count();
        // 100,000 trials at p = 0.01: mean 1,000, standard deviation about 31.
        assert!(false_positives < 1_200, "{false_positives} false positives");
    }
}
