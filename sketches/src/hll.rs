//! HyperLogLog distinct counts, on the `datasketches` crate so the bytes are the DataSketches
//! HLL format that the Java, C++ and Python libraries read.
//!
//! Bound: relative standard error about `1.04 / sqrt(2^lg_k)` (0.81 % at `lg_k = 14`); the
//! estimate lies within `estimate * (1 +- 2 * RSE)` with about 95 % confidence, which is what
//! the `lower`/`upper` of a query report (two standard deviations).

use datasketches::common::NumStdDev;
use datasketches::hash::value::raw_bytes;
use datasketches::hll::{HllSketch, HllType, HllUnion};

use crate::envelope::{self, guard_foreign_decoder};
use crate::error::{Result, SketchError};
use crate::item::{canonical_float, Item};
use crate::kind::Kind;
use crate::params::Params;
use crate::sketch::{bad_query, Answer, Sketch};

const KIND: &str = "hll";

/// A HyperLogLog sketch of `2^lg_k` registers.
#[derive(Debug, Clone)]
pub struct Hll {
    lg_k: u8,
    register_bits: u8,
    sketch: HllSketch,
}

fn hll_type(register_bits: u8) -> HllType {
    match register_bits {
        4 => HllType::Hll4,
        6 => HllType::Hll6,
        _ => HllType::Hll8,
    }
}

impl Hll {
    /// `lg_k` in `4..=21`; `register_bits` 4, 6 or 8 (smaller, or faster to update).
    pub fn new(lg_k: u8, register_bits: u8) -> Result<Self> {
        if !(4..=21).contains(&lg_k) {
            return Err(SketchError::parameter(
                KIND,
                "lg_k",
                format!("{lg_k} is out of range; valid range 4..=21"),
            ));
        }
        if ![4, 6, 8].contains(&register_bits) {
            return Err(SketchError::parameter(
                KIND,
                "register_bits",
                format!("{register_bits} is not one of 4, 6, 8"),
            ));
        }
        let sketch = HllSketch::new(lg_k, hll_type(register_bits))
            .map_err(|error| SketchError::parameter(KIND, "lg_k", error.to_string()))?;
        Ok(Self {
            lg_k,
            register_bits,
            sketch,
        })
    }

    /// Builds from `lg_k` (default 12) and `register_bits` (default 8).
    pub fn from_params(params: &Params) -> Result<Self> {
        let lg_k = params.u64_in(KIND, "lg_k", 12, 4..=21)? as u8;
        let register_bits = params.u64_in(KIND, "register_bits", 8, 4..=8)? as u8;
        Self::new(lg_k, register_bits)
    }

    pub fn lg_k(&self) -> u8 {
        self.lg_k
    }

    /// Adds the item whose canonical bytes are `bytes`.
    #[inline]
    pub fn update_bytes(&mut self, bytes: &[u8]) {
        self.sketch.update(raw_bytes::from_slice(bytes));
    }

    /// Adds an integer, hashed as the other DataSketches libraries hash a 64-bit integer (its
    /// eight little-endian bytes, which is what `Hash` for `i64` feeds the crate's hasher).
    #[inline]
    pub fn update_i64(&mut self, value: i64) {
        self.sketch.update(value);
    }

    /// Adds the canonical form of `item`.
    #[inline]
    pub fn update_item(&mut self, item: Item<'_>) {
        match item {
            Item::Int(value) => self.update_i64(value),
            Item::Float(value) => self.update_i64(canonical_float(value).to_bits() as i64),
            Item::Bytes(bytes) => self.update_bytes(bytes),
            Item::Str(text) => self.update_bytes(text.as_bytes()),
        }
    }

    /// The distinct count estimate.
    pub fn estimate(&self) -> f64 {
        self.sketch.estimate()
    }

    /// Bounds at `num_std_dev` standard deviations (1, 2 or 3: 68 %, 95 %, 99.7 %).
    pub fn bounds(&self, num_std_dev: u8) -> (f64, f64) {
        let deviations = match num_std_dev {
            1 => NumStdDev::One,
            3 => NumStdDev::Three,
            _ => NumStdDev::Two,
        };
        (
            self.sketch.lower_bound(deviations),
            self.sketch.upper_bound(deviations),
        )
    }

    /// The relative standard error for this `lg_k`.
    pub fn relative_standard_error(&self) -> f64 {
        1.04 / f64::from(1u32 << self.lg_k).sqrt()
    }

    /// The DataSketches HLL bytes (no envelope), readable by the other DataSketches libraries.
    pub fn to_datasketches_bytes(&self) -> Vec<u8> {
        self.sketch.serialize()
    }

    /// Reads DataSketches HLL bytes written by any DataSketches library.
    pub fn from_datasketches_bytes(bytes: &[u8]) -> Result<Self> {
        let sketch = guard_foreign_decoder(KIND, || {
            let sketch = HllSketch::deserialize(bytes)
                .map_err(|error| SketchError::corrupt(format!("hll payload: {error}")))?;
            let mut union = HllUnion::new(sketch.lg_config_k())
                .map_err(|error| SketchError::corrupt(format!("hll payload: {error}")))?;
            // Twice: the second pass takes the register-merging path a later merge would.
            union.update(&sketch);
            union.update(&sketch);
            let merged = union.to_sketch(sketch.target_type());
            if !(sketch.estimate().is_finite() && merged.estimate().is_finite()) {
                return Err(SketchError::corrupt("hll payload gives no finite estimate"));
            }
            let _ = sketch.serialize();
            Ok(sketch)
        })?;
        let register_bits = match sketch.target_type() {
            HllType::Hll4 => 4,
            HllType::Hll6 => 6,
            HllType::Hll8 => 8,
        };
        Ok(Self {
            lg_k: sketch.lg_config_k(),
            register_bits,
            sketch,
        })
    }
}

impl Sketch for Hll {
    fn kind(&self) -> Kind {
        Kind::Hll
    }

    fn params(&self) -> Params {
        Params::new()
            .with("lg_k", self.lg_k)
            .with("register_bits", self.register_bits)
    }

    fn update(&mut self, item: Item<'_>) -> Result<()> {
        self.update_item(item);
        Ok(())
    }

    fn merge(&mut self, other: &Self) -> Result<()> {
        if self.lg_k != other.lg_k {
            return Err(SketchError::mismatch(
                KIND,
                format!("lg_k={}", self.lg_k),
                format!("lg_k={}", other.lg_k),
            ));
        }
        let mut union = HllUnion::new(self.lg_k)
            .map_err(|error| SketchError::parameter(KIND, "lg_k", error.to_string()))?;
        union.update(&self.sketch);
        union.update(&other.sketch);
        self.sketch = union.to_sketch(hll_type(self.register_bits));
        Ok(())
    }

    fn empty_like(&self) -> Self {
        // Parameters were validated when `self` was built: an invariant, not input.
        Self::new(self.lg_k, self.register_bits).expect("parameters were validated")
    }

    fn is_empty(&self) -> bool {
        self.sketch.is_empty()
    }

    fn payload(&self) -> Vec<u8> {
        self.to_datasketches_bytes()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let envelope = envelope::decode_kind(bytes, Kind::Hll)?;
        let expected = Self::from_params(&envelope.params)
            .map_err(|error| SketchError::corrupt(format!("hll envelope parameters: {error}")))?;
        let sketch = Self::from_datasketches_bytes(envelope.payload)?;
        if sketch.lg_k != expected.lg_k {
            return Err(SketchError::corrupt(format!(
                "hll payload has lg_k {} but the envelope names {}",
                sketch.lg_k, expected.lg_k
            )));
        }
        Ok(Self {
            register_bits: expected.register_bits,
            ..sketch
        })
    }

    fn query(&self, name: &str, args: &Params) -> Result<Answer> {
        match name {
            "estimate" | "distinct" => {
                let deviations = args.u64_in(KIND, "num_std_dev", 2, 1..=3)? as u8;
                let (lower, upper) = self.bounds(deviations);
                Ok(Answer::Estimate {
                    estimate: self.estimate(),
                    lower,
                    upper,
                })
            }
            _ => Err(bad_query(
                Kind::Hll,
                name,
                "hll answers: estimate(num_std_dev)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_fast_path_hashes_like_the_canonical_bytes() {
        let mut by_value = Hll::new(10, 8).unwrap();
        let mut by_bytes = Hll::new(10, 8).unwrap();
        for value in -500..500i64 {
            by_value.update_i64(value);
            by_bytes.update_bytes(&value.to_le_bytes());
        }
        by_value.update(Item::Float(-0.0)).unwrap();
        by_bytes.update_bytes(&0.0f64.to_le_bytes());
        assert_eq!(
            by_value.to_datasketches_bytes(),
            by_bytes.to_datasketches_bytes()
        );
    }
}
