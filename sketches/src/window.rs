//! Windowed sketches: a ring of time buckets of any kind, queried over the last `W` by merging
//! the buckets it covers.
//!
//! Time is event time in milliseconds. The newest event time seen is the watermark; an event
//! older than `watermark - allowed_lateness_ms`, or older than the ring's oldest bucket, is
//! refused with [`SketchError::TooLate`] so the caller can count it. A bucket slot is reused
//! when time moves past it, which forgets the oldest bucket. Merging two windows merges the
//! buckets of equal time, so parallel instances combine at query time.
//!
//! Bound: whatever the inner kind guarantees for the merged stream, over whole buckets: a
//! query for the last `W` covers `ceil(W / bucket_width_ms)` buckets ending with the
//! watermark's bucket, so it may include up to one bucket width more than `W` of older data.

use crate::codec::{put_blob, Reader};
use crate::envelope;
use crate::error::{Result, SketchError};
use crate::item::Item;
use crate::kind::Kind;
use crate::params::Params;
use crate::sketch::Sketch;

const KIND: &str = "window";
/// Most buckets in one ring.
pub const MAX_BUCKETS: u64 = 100_000;
/// Slot not holding any bucket yet.
const NO_BUCKET: i64 = i64::MIN;

/// The parameters that decide whether two sketches can share a window: all but a sampler's
/// `seed`, which is the state of its generator and changes with every update.
fn mergeable_params<S: Sketch>(sketch: &S) -> Params {
    sketch.params().without("seed")
}

/// How a window is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowShape {
    /// The width of one bucket, at least 1 ms.
    pub bucket_width_ms: i64,
    /// How many buckets the ring keeps, `1..=MAX_BUCKETS`.
    pub bucket_count: usize,
    /// How far behind the watermark an event may arrive and still count.
    pub allowed_lateness_ms: i64,
}

impl WindowShape {
    fn validate(&self) -> Result<()> {
        if self.bucket_width_ms < 1 {
            return Err(SketchError::parameter(
                KIND,
                "bucket_width_ms",
                format!("{} is out of range; valid range 1..", self.bucket_width_ms),
            ));
        }
        if !(1..=MAX_BUCKETS).contains(&(self.bucket_count as u64)) {
            return Err(SketchError::parameter(
                KIND,
                "bucket_count",
                format!(
                    "{} is out of range; valid range 1..={MAX_BUCKETS}",
                    self.bucket_count
                ),
            ));
        }
        if self.allowed_lateness_ms < 0 {
            return Err(SketchError::parameter(
                KIND,
                "allowed_lateness_ms",
                format!(
                    "{} is out of range; valid range 0..",
                    self.allowed_lateness_ms
                ),
            ));
        }
        Ok(())
    }

    /// Reads `bucket_width_ms` (default 1000), `bucket_count` (default 60) and
    /// `allowed_lateness_ms` (default 0).
    pub fn from_params(params: &Params) -> Result<Self> {
        let shape = WindowShape {
            bucket_width_ms: params.u64_in(KIND, "bucket_width_ms", 1000, 1..=i64::MAX as u64)?
                as i64,
            bucket_count: params.u64_in(KIND, "bucket_count", 60, 1..=MAX_BUCKETS)? as usize,
            allowed_lateness_ms: params.u64_in(
                KIND,
                "allowed_lateness_ms",
                0,
                0..=i64::MAX as u64,
            )? as i64,
        };
        shape.validate()?;
        Ok(shape)
    }

    fn write(&self, params: &mut Params) {
        params.set("bucket_width_ms", self.bucket_width_ms);
        params.set("bucket_count", self.bucket_count);
        params.set("allowed_lateness_ms", self.allowed_lateness_ms);
    }
}

/// A ring of `bucket_count` sketches of kind `S`, one per time bucket.
#[derive(Debug, Clone)]
pub struct Window<S: Sketch> {
    shape: WindowShape,
    prototype: S,
    /// `bucket_indexes[slot]` is the bucket (`time / width`) that `slots[slot]` holds.
    bucket_indexes: Vec<i64>,
    slots: Vec<Option<S>>,
    watermark_ms: Option<i64>,
}

impl<S: Sketch> Window<S> {
    /// A window whose buckets start as copies of `prototype` emptied.
    pub fn new(shape: WindowShape, prototype: S) -> Result<Self> {
        shape.validate()?;
        Ok(Self {
            prototype: prototype.empty_like(),
            bucket_indexes: vec![NO_BUCKET; shape.bucket_count],
            slots: vec![None; shape.bucket_count],
            shape,
            watermark_ms: None,
        })
    }

    pub fn shape(&self) -> WindowShape {
        self.shape
    }

    /// The newest event time seen.
    pub fn watermark_ms(&self) -> Option<i64> {
        self.watermark_ms
    }

    fn bucket_of(&self, time_ms: i64) -> i64 {
        time_ms.div_euclid(self.shape.bucket_width_ms)
    }

    fn slot_of(&self, bucket: i64) -> usize {
        bucket.rem_euclid(self.shape.bucket_count as i64) as usize
    }

    /// The sketch for `bucket`, claiming its slot if time has moved past the old occupant;
    /// `None` when the slot already holds a newer bucket.
    fn bucket_mut(&mut self, bucket: i64) -> Option<&mut S> {
        let slot = self.slot_of(bucket);
        if self.bucket_indexes[slot] > bucket {
            return None;
        }
        if self.bucket_indexes[slot] < bucket || self.slots[slot].is_none() {
            self.bucket_indexes[slot] = bucket;
            self.slots[slot] = Some(self.prototype.empty_like());
        }
        self.slots[slot].as_mut()
    }

    fn oldest_accepted_ms(&self) -> Option<i64> {
        let watermark = self.watermark_ms?;
        let by_lateness = watermark.saturating_sub(self.shape.allowed_lateness_ms);
        let newest_bucket = self.bucket_of(watermark);
        let ring_start = newest_bucket
            .saturating_sub(self.shape.bucket_count as i64 - 1)
            .saturating_mul(self.shape.bucket_width_ms);
        Some(by_lateness.max(ring_start))
    }

    /// Adds `item` at event time `event_time_ms`.
    pub fn update(&mut self, event_time_ms: i64, item: Item<'_>) -> Result<()> {
        self.update_with(event_time_ms, |sketch| sketch.update(item))
    }

    /// Applies `update` to the bucket of `event_time_ms`, for kind-specific updates (weights).
    pub fn update_with(
        &mut self,
        event_time_ms: i64,
        update: impl FnOnce(&mut S) -> Result<()>,
    ) -> Result<()> {
        if event_time_ms == NO_BUCKET {
            // The one value the stored form reserves for "no event yet".
            return Err(SketchError::TooLate {
                event_time_ms,
                oldest_accepted_ms: event_time_ms + 1,
            });
        }
        if let Some(oldest) = self.oldest_accepted_ms() {
            if event_time_ms < oldest {
                return Err(SketchError::TooLate {
                    event_time_ms,
                    oldest_accepted_ms: oldest,
                });
            }
        }
        let bucket = self.bucket_of(event_time_ms);
        let too_late = SketchError::TooLate {
            event_time_ms,
            oldest_accepted_ms: self.oldest_accepted_ms().unwrap_or(event_time_ms),
        };
        let sketch = self.bucket_mut(bucket).ok_or(too_late)?;
        update(sketch)?;
        self.watermark_ms = Some(
            self.watermark_ms
                .map_or(event_time_ms, |mark| mark.max(event_time_ms)),
        );
        Ok(())
    }

    /// The merge of the buckets covering the last `duration_ms` up to the watermark (whole
    /// buckets, the watermark's included). Empty before any event.
    pub fn last(&self, duration_ms: i64) -> Result<S> {
        let Some(watermark) = self.watermark_ms else {
            return Ok(self.prototype.empty_like());
        };
        let newest = self.bucket_of(watermark);
        let span = duration_ms
            .max(1)
            .saturating_add(self.shape.bucket_width_ms - 1)
            / self.shape.bucket_width_ms;
        self.between_buckets(newest.saturating_sub(span - 1), newest)
    }

    /// The merge of the buckets whose start lies in `[start_ms, end_ms)`.
    pub fn between(&self, start_ms: i64, end_ms: i64) -> Result<S> {
        let first = start_ms.div_euclid(self.shape.bucket_width_ms)
            + i64::from(start_ms.rem_euclid(self.shape.bucket_width_ms) != 0);
        let last = end_ms
            .saturating_sub(1)
            .div_euclid(self.shape.bucket_width_ms);
        self.between_buckets(first, last)
    }

    fn between_buckets(&self, first: i64, last: i64) -> Result<S> {
        let mut merged = self.prototype.empty_like();
        let Some(watermark) = self.watermark_ms else {
            return Ok(merged);
        };
        // A slot not yet reused may still hold a bucket older than the ring: it is forgotten.
        let ring_first = self
            .bucket_of(watermark)
            .saturating_sub(self.shape.bucket_count as i64 - 1);
        let first = first.max(ring_first);
        for (bucket, sketch) in self.bucket_indexes.iter().zip(&self.slots) {
            if let Some(sketch) = sketch {
                if (first..=last).contains(bucket) {
                    merged.merge(sketch)?;
                }
            }
        }
        Ok(merged)
    }

    /// Folds `other`'s buckets into this ring: buckets of equal time merge, buckets newer than
    /// a slot's occupant replace it, buckets too old for this ring are dropped.
    pub fn merge(&mut self, other: &Window<S>) -> Result<()> {
        if self.shape != other.shape
            || mergeable_params(&self.prototype) != mergeable_params(&other.prototype)
        {
            return Err(SketchError::mismatch(
                KIND,
                self.params().to_string(),
                other.params().to_string(),
            ));
        }
        for (bucket, sketch) in other.bucket_indexes.iter().zip(&other.slots) {
            if let Some(sketch) = sketch {
                if let Some(ours) = self.bucket_mut(*bucket) {
                    ours.merge(sketch)?;
                }
            }
        }
        self.watermark_ms = match (self.watermark_ms, other.watermark_ms) {
            (Some(ours), Some(theirs)) => Some(ours.max(theirs)),
            (ours, theirs) => ours.or(theirs),
        };
        Ok(())
    }

    /// The window's parameters: its shape, the inner kind and the inner parameters.
    pub fn params(&self) -> Params {
        let mut params = self.prototype.params();
        params.set("inner", self.prototype.kind().name());
        self.shape.write(&mut params);
        params
    }

    /// The envelope of kind `window` holding every bucket's own envelope.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut payload = Vec::new();
        payload.extend_from_slice(&self.watermark_ms.unwrap_or(NO_BUCKET).to_le_bytes());
        put_blob(&mut payload, &self.prototype.to_bytes());
        let filled = self.slots.iter().filter(|slot| slot.is_some()).count();
        payload.extend_from_slice(&(filled as u32).to_le_bytes());
        for (bucket, sketch) in self.bucket_indexes.iter().zip(&self.slots) {
            if let Some(sketch) = sketch {
                payload.extend_from_slice(&bucket.to_le_bytes());
                put_blob(&mut payload, &sketch.to_bytes());
            }
        }
        envelope::encode(Kind::Window, &self.params(), &payload)
    }

    /// Reads a window written by [`Window::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let envelope = envelope::decode_kind(bytes, Kind::Window)?;
        let shape = WindowShape::from_params(&envelope.params).map_err(|error| {
            SketchError::corrupt(format!("window envelope parameters: {error}"))
        })?;
        let mut reader = Reader::new(envelope.payload, KIND);
        let watermark = reader.i64()?;
        let prototype = S::from_bytes(reader.blob()?)?;
        let mut window = Window::new(shape, prototype)?;
        window.watermark_ms = (watermark != NO_BUCKET).then_some(watermark);
        let filled = reader.u32()? as usize;
        if filled > shape.bucket_count {
            return Err(SketchError::corrupt(format!(
                "window holds {filled} buckets but has {} slots",
                shape.bucket_count
            )));
        }
        for _ in 0..filled {
            let bucket = reader.i64()?;
            let sketch = S::from_bytes(reader.blob()?)?;
            if bucket == NO_BUCKET
                || mergeable_params(&sketch) != mergeable_params(&window.prototype)
            {
                return Err(SketchError::corrupt(
                    "window bucket differs from the window's inner sketch",
                ));
            }
            let slot = window.slot_of(bucket);
            if window.slots[slot].is_some() {
                return Err(SketchError::corrupt("two window buckets share one slot"));
            }
            window.bucket_indexes[slot] = bucket;
            window.slots[slot] = Some(sketch);
        }
        reader.finish()?;
        Ok(window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::count_min::CountMin;

    fn window(lateness_ms: i64) -> Window<CountMin> {
        let shape = WindowShape {
            bucket_width_ms: 1000,
            bucket_count: 60,
            allowed_lateness_ms: lateness_ms,
        };
        Window::new(shape, CountMin::new(256, 4, false).unwrap()).unwrap()
    }

    #[test]
    fn queries_cover_whole_buckets_and_old_buckets_are_forgotten() {
        let mut window = window(5_000);
        for second in 0..120i64 {
            window
                .update(second * 1000 + 500, Item::Str("tick"))
                .unwrap();
        }
        assert_eq!(window.last(10_000).unwrap().estimate(Item::Str("tick")), 10);
        assert_eq!(window.last(1).unwrap().estimate(Item::Str("tick")), 1);
        // The ring holds 60 buckets: seconds 60..=119.
        assert_eq!(
            window.last(1_000_000).unwrap().estimate(Item::Str("tick")),
            60
        );
        assert_eq!(
            window
                .between(100_000, 110_000)
                .unwrap()
                .estimate(Item::Str("tick")),
            10
        );
    }

    #[test]
    fn extreme_event_times_and_spans_do_not_overflow() {
        let mut window = window(i64::MAX);
        assert!(window.update(i64::MIN, Item::Str("a")).is_err());
        window.update(i64::MIN + 1, Item::Str("a")).unwrap();
        assert_eq!(window.last(i64::MAX).unwrap().estimate(Item::Str("a")), 1);
        window.update(i64::MAX, Item::Str("a")).unwrap();
        assert!(window.update(i64::MIN, Item::Str("a")).is_err());
        assert_eq!(window.last(i64::MAX).unwrap().estimate(Item::Str("a")), 1);
        assert_eq!(
            window
                .between(i64::MIN, i64::MAX)
                .unwrap()
                .estimate(Item::Str("a")),
            1
        );
    }

    #[test]
    fn lateness_is_bounded() {
        let mut window = window(2_000);
        window.update(10_000, Item::Str("a")).unwrap();
        window.update(8_000, Item::Str("a")).unwrap();
        let error = window.update(7_999, Item::Str("a")).unwrap_err();
        assert!(matches!(error, SketchError::TooLate { .. }), "{error}");
        assert_eq!(window.last(60_000).unwrap().estimate(Item::Str("a")), 2);
    }

    #[test]
    fn windows_of_parallel_instances_merge_bucket_by_bucket() {
        let mut left = window(0);
        let mut right = window(0);
        for second in 0..10i64 {
            left.update(second * 1000, Item::Str("x")).unwrap();
            right.update(second * 1000 + 1, Item::Str("x")).unwrap();
        }
        left.merge(&right).unwrap();
        assert_eq!(left.last(3_000).unwrap().estimate(Item::Str("x")), 6);
        let restored = Window::<CountMin>::from_bytes(&left.to_bytes()).unwrap();
        assert_eq!(restored.last(3_000).unwrap().estimate(Item::Str("x")), 6);
        assert_eq!(restored.watermark_ms(), Some(9_001));
    }
}
