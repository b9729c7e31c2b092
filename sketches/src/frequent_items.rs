//! Frequent items (heavy hitters, top-K) over text, on the `datasketches` crate so the bytes are
//! the DataSketches frequent-strings format.
//!
//! Bound: with a map of `max_map_size` entries (a power of two), every count estimate lies in
//! `[lower_bound, upper_bound]`, an interval of width `maximum_error`, which is at most
//! `3.5 / max_map_size * N` a priori (`N` the total weight) and usually far less; the
//! a-posteriori `maximum_error` is reported with every answer. `top` with no false negatives
//! returns every item whose true count exceeds the threshold (at least `maximum_error`).

use datasketches::frequencies::{ErrorType, FrequentItemsSketch};

use crate::envelope::{self, guard_foreign_decoder};
use crate::error::{Result, SketchError};
use crate::item::Item;
use crate::kind::Kind;
use crate::params::Params;
use crate::sketch::{bad_query, item_argument, Answer, FrequentRow, Sketch};

const KIND: &str = "frequent_items";
/// Largest map (about 40 MiB); the DataSketches format allows 2^30, but decoding allocates the
/// map its header names, so this bound is what keeps hostile bytes from claiming gigabytes.
pub const MAX_MAP_SIZE: u64 = 1 << 20;

/// A frequent-items sketch over strings.
#[derive(Debug, Clone)]
pub struct FrequentItems {
    sketch: FrequentItemsSketch<String>,
}

impl FrequentItems {
    /// `max_map_size` a power of two in `8..=2^26`.
    pub fn new(max_map_size: u64) -> Result<Self> {
        if !(8..=MAX_MAP_SIZE).contains(&max_map_size) || !max_map_size.is_power_of_two() {
            return Err(SketchError::parameter(
                KIND,
                "max_map_size",
                format!("{max_map_size} is not a power of two in 8..={MAX_MAP_SIZE}"),
            ));
        }
        let sketch = FrequentItemsSketch::new(max_map_size as usize)
            .map_err(|error| SketchError::parameter(KIND, "max_map_size", error.to_string()))?;
        Ok(Self { sketch })
    }

    /// Builds from `max_map_size` (default 1024).
    pub fn from_params(params: &Params) -> Result<Self> {
        Self::new(params.u64_in(KIND, "max_map_size", 1024, 8..=MAX_MAP_SIZE)?)
    }

    pub fn max_map_size(&self) -> usize {
        self.sketch.max_map_size()
    }

    /// Adds one occurrence of `text`; allocates only when the item is new to the map.
    #[inline]
    pub fn update_str(&mut self, text: &str) {
        self.update_str_with_count(text, 1);
    }

    /// Adds `count` occurrences of `text`. Weight beyond a total of `u64::MAX` is dropped (the
    /// crate would panic on it).
    #[inline]
    pub fn update_str_with_count(&mut self, text: &str, count: u64) {
        if self.sketch.total_weight().checked_add(count).is_some() {
            self.sketch.update_with_count_ref(text, count);
        }
    }

    /// The sum of all counts added.
    pub fn total_weight(&self) -> u64 {
        self.sketch.total_weight()
    }

    /// The width of every item's `[lower, upper]` interval, a posteriori.
    pub fn maximum_error(&self) -> u64 {
        self.sketch.maximum_error()
    }

    /// The a-priori error bound `3.5 / max_map_size * N` for this sketch's total weight.
    pub fn apriori_error(&self) -> f64 {
        3.5 / self.max_map_size() as f64 * self.total_weight() as f64
    }

    /// The count estimate of `text` with its bounds.
    pub fn estimate(&self, text: &str) -> FrequentRow {
        FrequentRow {
            item: text.to_owned(),
            estimate: self.sketch.estimate(text),
            lower_bound: self.sketch.lower_bound(text),
            upper_bound: self.sketch.upper_bound(text),
        }
    }

    /// Items whose count may exceed `threshold` (no false negatives: every item above it is
    /// listed) or surely exceeds it (no false positives), most frequent first. The threshold
    /// is raised to `maximum_error` when below it.
    pub fn frequent(&self, threshold: u64, no_false_negatives: bool) -> Vec<FrequentRow> {
        let error_type = if no_false_negatives {
            ErrorType::NoFalseNegatives
        } else {
            ErrorType::NoFalsePositives
        };
        self.sketch
            .frequent_items_with_threshold(error_type, threshold)
            .into_iter()
            .map(|row| FrequentRow {
                item: row.item().clone(),
                estimate: row.estimate(),
                lower_bound: row.lower_bound(),
                upper_bound: row.upper_bound(),
            })
            .collect()
    }

    /// The `k` items with the largest estimates among those that may be frequent.
    pub fn top(&self, k: usize) -> Vec<FrequentRow> {
        let mut rows = self.frequent(0, true);
        rows.truncate(k);
        rows
    }

    /// The DataSketches frequent-strings bytes, readable by the other DataSketches libraries.
    pub fn to_datasketches_bytes(&self) -> Vec<u8> {
        self.sketch.serialize()
    }

    /// Reads DataSketches frequent-strings bytes.
    pub fn from_datasketches_bytes(bytes: &[u8]) -> Result<Self> {
        // Bytes 3 and 4 of the preamble are lg(max map size) and lg(current map size); the
        // decoder allocates the current map before reading any item, so bound both first.
        let max_lg = MAX_MAP_SIZE.trailing_zeros() as u8;
        if let (Some(&lg_max), Some(&lg_current)) = (bytes.get(3), bytes.get(4)) {
            if lg_max > max_lg || lg_current > lg_max {
                return Err(SketchError::corrupt(format!(
                    "frequent_items map sizes 2^{lg_max} / 2^{lg_current} exceed 2^{max_lg}"
                )));
            }
        }
        let sketch = guard_foreign_decoder(KIND, || {
            let sketch = FrequentItemsSketch::<String>::deserialize(bytes).map_err(|error| {
                SketchError::corrupt(format!("frequent_items payload: {error}"))
            })?;
            let mut copy =
                FrequentItemsSketch::<String>::new(sketch.max_map_size()).map_err(|error| {
                    SketchError::corrupt(format!("frequent_items payload: {error}"))
                })?;
            copy.merge(&sketch);
            if copy
                .total_weight()
                .checked_add(sketch.total_weight())
                .is_some()
            {
                copy.merge(&sketch);
            }
            let _ = sketch.frequent_items(ErrorType::NoFalseNegatives);
            let _ = sketch.serialize();
            Ok(sketch)
        })?;
        if sketch.max_map_size() as u64 > MAX_MAP_SIZE {
            return Err(SketchError::corrupt(format!(
                "frequent_items map size {} exceeds {MAX_MAP_SIZE}",
                sketch.max_map_size()
            )));
        }
        Ok(Self { sketch })
    }
}

impl Sketch for FrequentItems {
    fn kind(&self) -> Kind {
        Kind::FrequentItems
    }

    fn params(&self) -> Params {
        Params::new().with("max_map_size", self.max_map_size())
    }

    fn update(&mut self, item: Item<'_>) -> Result<()> {
        match item {
            Item::Str(text) => self.update_str(text),
            other => self.update_str(&other.to_text()),
        }
        Ok(())
    }

    fn merge(&mut self, other: &Self) -> Result<()> {
        if self.max_map_size() != other.max_map_size() {
            return Err(SketchError::mismatch(
                KIND,
                self.params().to_string(),
                other.params().to_string(),
            ));
        }
        if self
            .sketch
            .total_weight()
            .checked_add(other.sketch.total_weight())
            .is_none()
        {
            // The crate panics on this overflow; only crafted bytes can get here.
            return Err(SketchError::mismatch(
                KIND,
                format!("total weight {}", self.total_weight()),
                format!("total weight {} (the sum overflows)", other.total_weight()),
            ));
        }
        self.sketch.merge(&other.sketch);
        Ok(())
    }

    fn empty_like(&self) -> Self {
        // The map size was validated when `self` was built: an invariant, not input.
        Self::new(self.max_map_size() as u64).expect("max_map_size was validated")
    }

    fn is_empty(&self) -> bool {
        self.sketch.is_empty()
    }

    fn payload(&self) -> Vec<u8> {
        self.to_datasketches_bytes()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let envelope = envelope::decode_kind(bytes, Kind::FrequentItems)?;
        let expected = Self::from_params(&envelope.params).map_err(|error| {
            SketchError::corrupt(format!("frequent_items envelope parameters: {error}"))
        })?;
        let sketch = Self::from_datasketches_bytes(envelope.payload)?;
        if sketch.max_map_size() != expected.max_map_size() {
            return Err(SketchError::corrupt(format!(
                "frequent_items payload has max_map_size {} but the envelope names {}",
                sketch.max_map_size(),
                expected.max_map_size()
            )));
        }
        Ok(sketch)
    }

    fn query(&self, name: &str, args: &Params) -> Result<Answer> {
        match name {
            "estimate" => {
                let row = self.estimate(item_argument(Kind::FrequentItems, name, args)?);
                Ok(Answer::Estimate {
                    estimate: row.estimate as f64,
                    lower: row.lower_bound as f64,
                    upper: row.upper_bound as f64,
                })
            }
            "top" => {
                let k = args.u64_in(KIND, "k", 10, 1..=1_000_000)? as usize;
                Ok(Answer::Rows(self.top(k)))
            }
            "frequent" => {
                let threshold = args.u64_in(KIND, "threshold", 0, 0..=u64::MAX)?;
                let no_false_negatives = args.get("error_type") != Some("no_false_positives");
                Ok(Answer::Rows(self.frequent(threshold, no_false_negatives)))
            }
            "maximum_error" => Ok(Answer::Number(self.maximum_error() as f64)),
            _ => Err(bad_query(
                Kind::FrequentItems,
                name,
                "frequent_items answers: estimate(item), top(k), frequent(threshold, \
                 error_type=no_false_negatives|no_false_positives), maximum_error",
            )),
        }
    }
}
