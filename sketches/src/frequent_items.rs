//! Frequent items (heavy hitters, top-K) over text, in the DataSketches frequent-strings byte
//! format so the other DataSketches libraries read and write the same sketches.
//!
//! The algorithm is DataSketches' (Misra-Gries with a reverse purge): a table of at most
//! `0.75 * max_map_size` counters; when it overflows, the median counter is subtracted from
//! every counter, counters reaching zero are dropped, and the subtracted amount is added to the
//! sketch's offset, the most any count can have been undercounted by. The table is ours
//! ([`crate::item_table`]): it reuses evicted items' buffers and hashes with a keyed
//! word-at-a-time mix, which makes updates about twice as fast as the `datasketches` crate's
//! (`magnetar perf sketches` measures both).
//!
//! Bound: every count estimate lies in `[lower_bound, upper_bound]`, an interval of width
//! `maximum_error` (the offset), which is at most `3.5 / max_map_size * N` a priori (`N` the
//! total weight) and usually far less; the a-posteriori `maximum_error` is reported with every
//! answer. `frequent` with no false negatives returns every item whose true count exceeds the
//! threshold (raised to at least `maximum_error`).

use crate::codec::Reader;
use crate::envelope;
use crate::error::{Result, SketchError};
use crate::item::Item;
use crate::item_table::{capacity_for, ItemTable};
use crate::kind::Kind;
use crate::params::Params;
use crate::sketch::{bad_query, item_argument, Answer, FrequentRow, Sketch};

const KIND: &str = "frequent_items";
/// Largest map (about 40 MiB); the DataSketches format allows 2^30, but decoding allocates the
/// map its header names, so this bound is what keeps hostile bytes from claiming gigabytes.
pub const MAX_MAP_SIZE: u64 = 1 << 20;
/// The table starts this small (2^3 slots) and doubles up to the maximum.
const LG_MIN_MAP_SIZE: u8 = 3;

/// DataSketches frequent-items preamble facts.
const SERIAL_VERSION: u8 = 1;
const FAMILY_FREQUENCY: u8 = 10;
const PREAMBLE_LONGS_EMPTY: u8 = 1;
const PREAMBLE_LONGS_NONEMPTY: u8 = 4;
/// Either bit marks an empty sketch (the libraries have used both).
const EMPTY_FLAG_MASK: u8 = 5;

/// A frequent-items sketch over strings.
#[derive(Debug, Clone)]
pub struct FrequentItems {
    lg_max_map_size: u8,
    table: ItemTable,
    /// The sum of all counts added.
    total_weight: u64,
    /// The sum of every purge's subtraction: the maximum error of any count.
    offset: u64,
}

impl FrequentItems {
    /// `max_map_size` a power of two in `8..=2^20`.
    pub fn new(max_map_size: u64) -> Result<Self> {
        if !(8..=MAX_MAP_SIZE).contains(&max_map_size) || !max_map_size.is_power_of_two() {
            return Err(SketchError::parameter(
                KIND,
                "max_map_size",
                format!("{max_map_size} is not a power of two in 8..={MAX_MAP_SIZE}"),
            ));
        }
        Ok(Self::with_sizes(
            max_map_size.trailing_zeros() as u8,
            LG_MIN_MAP_SIZE,
        ))
    }

    fn with_sizes(lg_max_map_size: u8, lg_current: u8) -> Self {
        Self {
            lg_max_map_size,
            table: ItemTable::new(lg_current.clamp(LG_MIN_MAP_SIZE, lg_max_map_size)),
            total_weight: 0,
            offset: 0,
        }
    }

    /// Builds from `max_map_size` (default 1024).
    pub fn from_params(params: &Params) -> Result<Self> {
        Self::new(params.u64_in(KIND, "max_map_size", 1024, 8..=MAX_MAP_SIZE)?)
    }

    pub fn max_map_size(&self) -> usize {
        1 << self.lg_max_map_size
    }

    /// Adds one occurrence of `text`; allocates only while the table is warming up.
    #[inline]
    pub fn update_str(&mut self, text: &str) {
        self.update_str_with_count(text, 1);
    }

    /// Adds `count` occurrences of `text`. Weight beyond a total of `u64::MAX` is dropped.
    #[inline]
    pub fn update_str_with_count(&mut self, text: &str, count: u64) {
        if count == 0 {
            return;
        }
        let Some(total) = self.total_weight.checked_add(count) else {
            return;
        };
        self.total_weight = total;
        self.table.add(text, count);
        if self.table.active() > self.table.capacity() {
            self.make_room();
        }
    }

    /// Grows the table while it may, else purges it.
    #[cold]
    fn make_room(&mut self) {
        if self.table.lg_length() < self.lg_max_map_size {
            self.table.grow();
        } else {
            self.offset += self.table.purge();
        }
    }

    /// The sum of all counts added.
    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// The width of every item's `[lower, upper]` interval, a posteriori.
    pub fn maximum_error(&self) -> u64 {
        self.offset
    }

    /// The a-priori error bound `3.5 / max_map_size * N` for this sketch's total weight.
    pub fn apriori_error(&self) -> f64 {
        3.5 / self.max_map_size() as f64 * self.total_weight() as f64
    }

    /// The count estimate of `text` with its bounds: an untracked item estimates 0 with upper
    /// bound `maximum_error`.
    pub fn estimate(&self, text: &str) -> FrequentRow {
        let lower_bound = self.table.get(text);
        let upper_bound = lower_bound + self.offset;
        FrequentRow {
            item: text.to_owned(),
            estimate: if lower_bound > 0 { upper_bound } else { 0 },
            lower_bound,
            upper_bound,
        }
    }

    /// Items whose count may exceed `threshold` (no false negatives: every item above it is
    /// listed) or surely exceeds it (no false positives), most frequent first. The threshold
    /// is raised to `maximum_error` when below it.
    pub fn frequent(&self, threshold: u64, no_false_negatives: bool) -> Vec<FrequentRow> {
        let threshold = threshold.max(self.offset);
        let mut rows: Vec<FrequentRow> = self
            .table
            .iter()
            .filter_map(|(text, count)| {
                let upper_bound = count + self.offset;
                let include = if no_false_negatives {
                    upper_bound > threshold
                } else {
                    count > threshold
                };
                include.then(|| FrequentRow {
                    item: text.to_owned(),
                    estimate: upper_bound,
                    lower_bound: count,
                    upper_bound,
                })
            })
            .collect();
        rows.sort_by(|left, right| {
            right
                .estimate
                .cmp(&left.estimate)
                .then_with(|| left.item.cmp(&right.item))
        });
        rows
    }

    /// The `k` items with the largest estimates among those that may be frequent.
    pub fn top(&self, k: usize) -> Vec<FrequentRow> {
        let mut rows = self.frequent(0, true);
        rows.truncate(k);
        rows
    }

    /// The DataSketches frequent-strings bytes, readable by the other DataSketches libraries.
    pub fn to_datasketches_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        let empty = self.total_weight == 0;
        bytes.push(if empty {
            PREAMBLE_LONGS_EMPTY
        } else {
            PREAMBLE_LONGS_NONEMPTY
        });
        bytes.push(SERIAL_VERSION);
        bytes.push(FAMILY_FREQUENCY);
        bytes.push(self.lg_max_map_size);
        bytes.push(self.table.lg_length());
        bytes.push(if empty { EMPTY_FLAG_MASK } else { 0 });
        bytes.extend_from_slice(&[0, 0]);
        if empty {
            return bytes;
        }
        bytes.extend_from_slice(&(self.table.active() as u32).to_le_bytes());
        bytes.extend_from_slice(&[0, 0, 0, 0]);
        bytes.extend_from_slice(&self.total_weight.to_le_bytes());
        bytes.extend_from_slice(&self.offset.to_le_bytes());
        // Canonical order (largest count first, then by item) rather than slot order: the
        // table's layout depends on its random hash key and on insertion order, and the same
        // state should always give the same bytes.
        let mut entries: Vec<(&str, u64)> = self.table.iter().collect();
        entries.sort_unstable_by(|left, right| right.1.cmp(&left.1).then(left.0.cmp(right.0)));
        for (_, count) in &entries {
            bytes.extend_from_slice(&count.to_le_bytes());
        }
        for (text, _) in &entries {
            crate::codec::put_text(&mut bytes, text);
        }
        bytes
    }

    /// Reads DataSketches frequent-strings bytes, checking every field: the map sizes are
    /// bounded before anything is allocated, the item counts may not exceed the total weight,
    /// and items must be valid UTF-8.
    pub fn from_datasketches_bytes(bytes: &[u8]) -> Result<Self> {
        let mut reader = Reader::new(bytes, KIND);
        let header = reader.take(8)?;
        let preamble_longs = header[0] & 0x3f;
        let (serial_version, family, lg_max, lg_current, flags) =
            (header[1], header[2], header[3], header[4], header[5]);
        if family != FAMILY_FREQUENCY {
            return Err(SketchError::corrupt(format!(
                "not a frequent-items sketch: family {family}, expected {FAMILY_FREQUENCY}"
            )));
        }
        if serial_version != SERIAL_VERSION {
            return Err(SketchError::corrupt(format!(
                "frequent_items serial version {serial_version} is not {SERIAL_VERSION}"
            )));
        }
        let lg_limit = MAX_MAP_SIZE.trailing_zeros() as u8;
        if !(LG_MIN_MAP_SIZE..=lg_limit).contains(&lg_max)
            || !(LG_MIN_MAP_SIZE..=lg_max).contains(&lg_current)
        {
            return Err(SketchError::corrupt(format!(
                "frequent_items map sizes 2^{lg_max} / 2^{lg_current} are outside \
                 2^{LG_MIN_MAP_SIZE}..=2^{lg_limit}"
            )));
        }
        let empty = match preamble_longs {
            PREAMBLE_LONGS_EMPTY => true,
            PREAMBLE_LONGS_NONEMPTY => false,
            other => {
                return Err(SketchError::corrupt(format!(
                    "frequent_items preamble of {other} longs, expected 1 or 4"
                )))
            }
        };
        if (flags & EMPTY_FLAG_MASK != 0) != empty {
            return Err(SketchError::corrupt(
                "frequent_items empty flag disagrees with the preamble length",
            ));
        }
        if empty {
            reader.finish()?;
            return Ok(Self::with_sizes(lg_max, LG_MIN_MAP_SIZE));
        }
        let active = reader.u32()? as usize;
        reader.u32()?;
        let total_weight = reader.u64()?;
        let offset = reader.u64()?;
        if active > capacity_for(lg_current) {
            return Err(SketchError::corrupt(format!(
                "frequent_items holds {active} items, more than a map of 2^{lg_current} can"
            )));
        }
        if total_weight == 0 {
            return Err(SketchError::corrupt(
                "frequent_items is marked non-empty but has no weight",
            ));
        }
        if offset > total_weight {
            return Err(SketchError::corrupt(format!(
                "frequent_items maximum error {offset} exceeds its total weight {total_weight}"
            )));
        }
        if reader.remaining() < active * 8 {
            return Err(SketchError::corrupt(format!(
                "frequent_items payload truncated: {active} counts need {} bytes, has {}",
                active * 8,
                reader.remaining()
            )));
        }
        let mut counts = Vec::with_capacity(active);
        let mut unclaimed = total_weight;
        for _ in 0..active {
            let count = reader.u64()?;
            unclaimed = match unclaimed.checked_sub(count) {
                Some(rest) if count > 0 => rest,
                _ => {
                    return Err(SketchError::corrupt(
                        "frequent_items item counts are zero or exceed the total weight",
                    ))
                }
            };
            counts.push(count);
        }
        let mut sketch = Self::with_sizes(lg_max, lg_current);
        for count in counts {
            let text = reader.text()?;
            if sketch.table.get(&text) != 0 {
                return Err(SketchError::corrupt(format!(
                    "frequent_items lists the item {text:?} twice"
                )));
            }
            sketch.table.add(&text, count);
        }
        reader.finish()?;
        sketch.total_weight = total_weight;
        sketch.offset = offset;
        Ok(sketch)
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
        let Some(total_weight) = self.total_weight.checked_add(other.total_weight) else {
            // Only crafted bytes can get here.
            return Err(SketchError::mismatch(
                KIND,
                format!("total weight {}", self.total_weight()),
                format!("total weight {} (the sum overflows)", other.total_weight()),
            ));
        };
        for (text, count) in other.table.iter() {
            self.update_str_with_count(text, count);
        }
        // Offsets never exceed total weights (each purge removes at least what it adds to the
        // offset), and decoding checks that, so this sum stays below `total_weight`.
        self.offset += other.offset;
        self.total_weight = total_weight;
        Ok(())
    }

    fn empty_like(&self) -> Self {
        // The map size was validated when `self` was built: an invariant, not input.
        Self::new(self.max_map_size() as u64).expect("max_map_size was validated")
    }

    fn is_empty(&self) -> bool {
        self.total_weight == 0
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

#[cfg(test)]
mod tests {
    use datasketches::frequencies::FrequentItemsSketch;

    use super::*;
    use crate::streams;

    fn zipf_sketch(seed: u64, count: usize) -> FrequentItems {
        let mut sketch = FrequentItems::new(64).unwrap();
        for key in streams::zipf_keys(seed, count, 10_000, 1.1) {
            sketch.update_str(&format!("item-{key}"));
        }
        sketch
    }

    #[test]
    fn the_datasketches_crate_reads_our_bytes_with_the_same_answers() {
        let ours = zipf_sketch(5, 50_000);
        assert!(
            ours.maximum_error() > 0,
            "the stream must have forced purges"
        );
        let theirs = FrequentItemsSketch::<String>::deserialize(&ours.to_datasketches_bytes())
            .expect("the crate reads our bytes");
        assert_eq!(theirs.total_weight(), ours.total_weight());
        assert_eq!(theirs.maximum_error(), ours.maximum_error());
        for row in ours.frequent(0, true) {
            assert_eq!(theirs.lower_bound(row.item.as_str()), row.lower_bound);
            assert_eq!(theirs.upper_bound(row.item.as_str()), row.upper_bound);
        }
    }

    #[test]
    fn we_read_the_crates_bytes_with_the_same_answers() {
        let mut theirs = FrequentItemsSketch::<String>::new(64).unwrap();
        for key in streams::zipf_keys(6, 50_000, 10_000, 1.1) {
            theirs.update(format!("item-{key}"));
        }
        let ours = FrequentItems::from_datasketches_bytes(&theirs.serialize()).unwrap();
        assert_eq!(ours.total_weight(), theirs.total_weight());
        assert_eq!(ours.maximum_error(), theirs.maximum_error());
        for row in ours.frequent(0, true) {
            assert_eq!(theirs.lower_bound(row.item.as_str()), row.lower_bound);
        }
        let empty = FrequentItemsSketch::<String>::new(64).unwrap();
        assert!(FrequentItems::from_datasketches_bytes(&empty.serialize())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn purges_keep_every_true_count_inside_its_bounds() {
        let keys = streams::zipf_keys(7, 100_000, 50_000, 1.05);
        let mut sketch = FrequentItems::new(128).unwrap();
        let mut exact = std::collections::HashMap::new();
        for key in &keys {
            let text = format!("item-{key}");
            sketch.update_str(&text);
            *exact.entry(text).or_insert(0u64) += 1;
        }
        assert!(sketch.maximum_error() as f64 <= sketch.apriori_error());
        for (text, truth) in &exact {
            let row = sketch.estimate(text);
            assert!(
                row.lower_bound <= *truth && *truth <= row.upper_bound,
                "{text}"
            );
        }
        // No false negatives above the threshold.
        let threshold = sketch.maximum_error();
        let listed: std::collections::HashSet<String> = sketch
            .frequent(threshold, true)
            .into_iter()
            .map(|row| row.item)
            .collect();
        for (text, truth) in &exact {
            if *truth > threshold {
                assert!(listed.contains(text), "{text} ({truth}) missing");
            }
        }
    }

    #[test]
    fn hostile_bytes_are_refused_without_panics() {
        let good = zipf_sketch(8, 20_000).to_datasketches_bytes();
        // Every truncation and every single-byte change either decodes to a usable sketch or
        // is refused; none may panic.
        for length in 0..good.len() {
            let _ = FrequentItems::from_datasketches_bytes(&good[..length]);
        }
        for position in 0..good.len().min(400) {
            let mut bytes = good.clone();
            bytes[position] ^= 0x5a;
            if let Ok(sketch) = FrequentItems::from_datasketches_bytes(&bytes) {
                let _ = sketch.top(5);
                let _ = sketch.to_datasketches_bytes();
            }
        }
        // A header claiming a 2^30 map is refused before anything is allocated.
        let mut huge = good.clone();
        huge[3] = 30;
        huge[4] = 30;
        assert!(FrequentItems::from_datasketches_bytes(&huge).is_err());
        // Counts that add up to more than the total weight are refused.
        let mut inflated = good.clone();
        inflated[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(FrequentItems::from_datasketches_bytes(&inflated).is_err());
    }
}
