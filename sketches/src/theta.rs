//! Theta sketches: distinct counts with set operations (union, intersection, difference), on
//! the `datasketches` crate so the bytes are the DataSketches compact Theta format.
//!
//! Bound: with `k = 2^lg_k` nominal entries the relative standard error is about
//! `1 / sqrt(k - 1)` (1.6 % at `lg_k = 12`) for a single sketch or a union; intersections and
//! differences keep the same absolute error, so their relative error grows as the result
//! shrinks. Query bounds are two standard deviations (about 95 %).
//!
//! The crate's update sketch cannot be rebuilt from bytes, so a restored or merged sketch keeps
//! its past as a union and new items in a fresh update sketch; estimates combine both.

use datasketches::common::NumStdDev;
use datasketches::hash::value::raw_bytes;
use datasketches::theta::{
    CompactThetaSketch, ThetaANotB, ThetaIntersection, ThetaSketch, ThetaSketchBuilder, ThetaUnion,
    ThetaUnionBuilder,
};

use crate::envelope::{self, guard_foreign_decoder};
use crate::error::{Result, SketchError};
use crate::item::{canonical_float, Item};
use crate::kind::Kind;
use crate::params::Params;
use crate::sketch::{bad_query, Answer, Sketch};

const KIND: &str = "theta";

/// A Theta sketch with `2^lg_k` nominal entries.
#[derive(Debug)]
pub struct Theta {
    lg_k: u8,
    fresh: ThetaSketch,
    /// Everything merged or restored; `None` until the first merge.
    past: Option<CompactThetaSketch>,
}

fn theta_error(error: impl std::fmt::Display) -> SketchError {
    SketchError::parameter(KIND, "lg_k", error.to_string())
}

impl Clone for Theta {
    /// The crate's update sketch is not `Clone`; a copy holds the same content as its past.
    fn clone(&self) -> Self {
        let mut copy = self.empty_like();
        copy.past = Some(self.compact());
        copy
    }
}

impl Theta {
    /// `lg_k` in `5..=26`.
    pub fn new(lg_k: u8) -> Result<Self> {
        if !(5..=26).contains(&lg_k) {
            return Err(SketchError::parameter(
                KIND,
                "lg_k",
                format!("{lg_k} is out of range; valid range 5..=26"),
            ));
        }
        let fresh = ThetaSketchBuilder::default()
            .lg_k(lg_k)
            .build()
            .map_err(theta_error)?;
        Ok(Self {
            lg_k,
            fresh,
            past: None,
        })
    }

    /// Builds from `lg_k` (default 12).
    pub fn from_params(params: &Params) -> Result<Self> {
        Self::new(params.u64_in(KIND, "lg_k", 12, 5..=26)? as u8)
    }

    pub fn lg_k(&self) -> u8 {
        self.lg_k
    }

    /// Adds the item whose canonical bytes are `bytes`.
    #[inline]
    pub fn update_bytes(&mut self, bytes: &[u8]) {
        self.fresh.update(raw_bytes::from_slice(bytes));
    }

    /// Adds an integer, hashed as the other DataSketches libraries hash a 64-bit integer (its
    /// eight little-endian bytes, which is what `Hash` for `i64` feeds the crate's hasher).
    #[inline]
    pub fn update_i64(&mut self, value: i64) {
        self.fresh.update(value);
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

    fn union_builder(&self) -> Result<ThetaUnion> {
        ThetaUnionBuilder::default()
            .lg_k(self.lg_k)
            .build()
            .map_err(theta_error)
    }

    /// The whole content as one compact sketch of at most `2^lg_k` entries.
    ///
    /// Always through a union: the update sketch keeps up to twice the nominal entries between
    /// rebuilds, and trimming here makes the estimate we report the estimate of the bytes we
    /// write, so a round trip or another DataSketches library gets the same number.
    pub fn compact(&self) -> CompactThetaSketch {
        if let (Some(past), true) = (&self.past, self.fresh.is_empty()) {
            // Restored or merged and not updated since: report exactly what was read, so the
            // estimate matches the library that wrote the bytes and a round trip is stable.
            return past.clone();
        }
        let Ok(mut union) = self.union_builder() else {
            return self.fresh.compact(true);
        };
        // Both inputs carry the default seed, the only one this type uses, so the union
        // accepts them.
        if let Some(past) = &self.past {
            let _ = union.update(past);
        }
        let _ = union.update(&self.fresh);
        union.to_sketch(true)
    }

    fn from_compact(lg_k: u8, compact: CompactThetaSketch) -> Result<Self> {
        let mut sketch = Self::new(lg_k)?;
        sketch.past = Some(compact);
        Ok(sketch)
    }

    /// The distinct count estimate.
    pub fn estimate(&self) -> f64 {
        self.compact().estimate()
    }

    /// Bounds at two standard deviations (about 95 %).
    pub fn bounds(&self) -> (f64, f64) {
        let compact = self.compact();
        (
            compact.lower_bound(NumStdDev::Two),
            compact.upper_bound(NumStdDev::Two),
        )
    }

    fn check_compatible(&self, other: &Theta) -> Result<()> {
        if self.lg_k != other.lg_k {
            return Err(SketchError::mismatch(
                KIND,
                format!("lg_k={}", self.lg_k),
                format!("lg_k={}", other.lg_k),
            ));
        }
        Ok(())
    }

    /// The items in both `self` and `other`.
    pub fn intersection(&self, other: &Theta) -> Result<Theta> {
        self.check_compatible(other)?;
        let mut intersection = ThetaIntersection::default();
        intersection
            .update(&self.compact())
            .and_then(|()| intersection.update(&other.compact()))
            .map_err(|error| SketchError::corrupt(format!("theta intersection: {error}")))?;
        let result = intersection
            .to_sketch(true)
            .unwrap_or_else(|| self.fresh.compact(true));
        Self::from_compact(self.lg_k, result)
    }

    /// The items in `self` but not in `other`.
    pub fn difference(&self, other: &Theta) -> Result<Theta> {
        self.check_compatible(other)?;
        let result = ThetaANotB::default()
            .compute(&self.compact(), &other.compact(), true)
            .map_err(|error| SketchError::corrupt(format!("theta difference: {error}")))?;
        Self::from_compact(self.lg_k, result)
    }

    /// The DataSketches compact Theta bytes, readable by the other DataSketches libraries.
    pub fn to_datasketches_bytes(&self) -> Vec<u8> {
        self.compact().serialize()
    }

    /// Reads DataSketches compact Theta bytes (default seed) into a sketch with `lg_k`.
    pub fn from_datasketches_bytes(lg_k: u8, bytes: &[u8]) -> Result<Self> {
        let compact = guard_foreign_decoder(KIND, || {
            let compact = CompactThetaSketch::deserialize(bytes)
                .map_err(|error| SketchError::corrupt(format!("theta payload: {error}")))?;
            let mut union = ThetaUnionBuilder::default()
                .lg_k(lg_k)
                .build()
                .map_err(theta_error)?;
            for _ in 0..2 {
                union
                    .update(&compact)
                    .map_err(|error| SketchError::corrupt(format!("theta payload: {error}")))?;
            }
            let _ = union.to_sketch(true).serialize();
            if !compact.estimate().is_finite() {
                return Err(SketchError::corrupt(
                    "theta payload gives no finite estimate",
                ));
            }
            Ok(compact)
        })?;
        Self::from_compact(lg_k, compact)
    }
}

impl Sketch for Theta {
    fn kind(&self) -> Kind {
        Kind::Theta
    }

    fn params(&self) -> Params {
        Params::new().with("lg_k", self.lg_k)
    }

    fn update(&mut self, item: Item<'_>) -> Result<()> {
        self.update_item(item);
        Ok(())
    }

    fn merge(&mut self, other: &Self) -> Result<()> {
        self.check_compatible(other)?;
        let mut union = self.union_builder()?;
        // Feed the parts straight into one union rather than compacting each side first.
        for sketch in [self, other] {
            if let Some(past) = &sketch.past {
                union
                    .update(past)
                    .map_err(|error| SketchError::corrupt(format!("theta union: {error}")))?;
            }
            if !sketch.fresh.is_empty() {
                union
                    .update(&sketch.fresh)
                    .map_err(|error| SketchError::corrupt(format!("theta union: {error}")))?;
            }
        }
        self.past = Some(union.to_sketch(true));
        self.fresh.reset();
        Ok(())
    }

    fn empty_like(&self) -> Self {
        // The builder fails only for `lg_k` outside 5..=26, which `new` refused before `self`
        // could exist; this is an invariant, not input.
        let fresh = ThetaSketchBuilder::default()
            .lg_k(self.lg_k)
            .build()
            .expect("lg_k was validated when the sketch was built");
        Self {
            lg_k: self.lg_k,
            fresh,
            past: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.fresh.is_empty() && self.past.as_ref().is_none_or(|past| past.is_empty())
    }

    fn payload(&self) -> Vec<u8> {
        self.to_datasketches_bytes()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let envelope = envelope::decode_kind(bytes, Kind::Theta)?;
        let lg_k = Self::from_params(&envelope.params)
            .map_err(|error| SketchError::corrupt(format!("theta envelope parameters: {error}")))?
            .lg_k;
        Self::from_datasketches_bytes(lg_k, envelope.payload)
    }

    fn query(&self, name: &str, _args: &Params) -> Result<Answer> {
        match name {
            "estimate" | "distinct" => {
                let compact = self.compact();
                Ok(Answer::Estimate {
                    estimate: compact.estimate(),
                    lower: compact.lower_bound(NumStdDev::Two),
                    upper: compact.upper_bound(NumStdDev::Two),
                })
            }
            _ => Err(bad_query(Kind::Theta, name, "theta answers: estimate")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations_are_exact_below_k() {
        let mut left = Theta::new(12).unwrap();
        let mut right = Theta::new(12).unwrap();
        for value in 0..1000i64 {
            left.update_i64(value);
        }
        for value in 500..1500i64 {
            right.update_i64(value);
        }
        assert_eq!(left.intersection(&right).unwrap().estimate(), 500.0);
        assert_eq!(left.difference(&right).unwrap().estimate(), 500.0);
        let mut union = left.clone();
        union.merge(&right).unwrap();
        assert_eq!(union.estimate(), 1500.0);
        union.update_i64(5000);
        assert_eq!(union.estimate(), 1501.0);
    }
}
