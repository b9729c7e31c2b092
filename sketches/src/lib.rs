//! Mergeable, serialisable data sketches and windowed sketches: the state stream functions
//! keep to answer frequency, cardinality, quantile, membership, heavy-hitter and sampling
//! questions over unbounded streams with known error. This crate depends on no other crate of
//! the workspace.
//!
//! Every kind implements [`Sketch`]: `update` with an [`Item`] (bytes, text, integers, floats),
//! `merge` (refused with [`SketchError::ParameterMismatch`] when parameters differ), `to_bytes` /
//! `from_bytes` in a versioned envelope with a CRC-32C that names the kind and its parameters
//! (see [`envelope`]), and `query` by name. The [`registry`] builds a sketch from a kind name
//! and [`Params`] (function configs) and answers queries by name (the query API). Merging is
//! what lets parallel instances and time buckets combine at query time: the merge of the
//! sketches of a stream's parts answers like the sketch of the whole, within the bound.
//!
//! Bad input never panics: truncated, corrupted or foreign bytes return
//! [`SketchError::Corrupt`], every length is checked against the bytes present before anything
//! is allocated, and parameters out of range are refused with a message naming the range.
//!
//! # Kinds and their bounds
//!
//! HLL, Theta and KLL are built on the Apache `datasketches` crate (pinned `=0.6.0`): their
//! payloads are the DataSketches formats, so the Java, C++ and Python libraries read our bytes
//! and we read theirs, and items hash as they do there. KLL updates run on our own compactor
//! hierarchy (same capacities and compaction rule; queries and merges on the crate), and
//! frequent items on our own table in the same DataSketches format: each about twice as fast
//! as the crate's at the same error. Count-Min and Bloom are ours, one hash per update instead of one per row, and
//! measurably faster at the same error (`magnetar perf sketches`); sampling and windows are
//! ours because the crate has none. `N` below is the total weight of the stream.
//!
//! ## Count-Min ([`CountMin`])
//! `width = ceil(e / epsilon)`, `depth = ceil(ln(1 / delta))`. For every item
//! `true <= estimate <= true + epsilon * N` with probability `1 - delta`; the estimate is
//! therefore the certain upper bound and `estimate - epsilon * N` the lower bound. Conservative
//! update lowers overcounts without breaking either. The inner product of two sketches (the
//! size of a join) overestimates by at most `epsilon * N_a * N_b` with probability `1 - delta`.
//! ```
//! use magnetar_sketches::{CountMin, Item, Sketch};
//! let mut clicks = CountMin::with_error(0.001, 0.01, false)?;
//! for page in ["/home", "/home", "/cart"] {
//!     clicks.update(Item::Str(page))?;
//! }
//! assert!(clicks.estimate(Item::Str("/home")) >= 2);
//! # Ok::<(), magnetar_sketches::SketchError>(())
//! ```
//!
//! ## HyperLogLog ([`Hll`])
//! Relative standard error `1.04 / sqrt(2^lg_k)` (1.6 % at `lg_k = 12`); the reported bounds
//! at 1, 2 or 3 standard deviations hold with 68 %, 95 % and 99.7 % confidence.
//! ```
//! use magnetar_sketches::Hll;
//! let mut users = Hll::new(12, 8)?;
//! (0..10_000).for_each(|user| users.update_i64(user));
//! assert!((users.estimate() - 10_000.0).abs() < 3.0 * users.relative_standard_error() * 10_000.0);
//! # Ok::<(), magnetar_sketches::SketchError>(())
//! ```
//!
//! ## Theta ([`Theta`])
//! Relative standard error about `1 / sqrt(2^lg_k - 1)`; union, intersection and difference
//! keep the same absolute error, so their relative error grows as the result shrinks.
//! ```
//! use magnetar_sketches::Theta;
//! let (mut monday, mut tuesday) = (Theta::new(12)?, Theta::new(12)?);
//! (0..1000).for_each(|user| monday.update_i64(user));
//! (500..1500).for_each(|user| tuesday.update_i64(user));
//! assert_eq!(monday.intersection(&tuesday)?.estimate(), 500.0);
//! # Ok::<(), magnetar_sketches::SketchError>(())
//! ```
//!
//! ## KLL quantiles ([`Kll`])
//! Normalized rank error `2.296 / k^0.9723` for quantile, rank and CDF, `2.446 / k^0.9433` for
//! PMF, at 99 % confidence (1.33 % and 1.65 % at `k = 200`).
//! ```
//! use magnetar_sketches::Kll;
//! let mut latency_ms = Kll::new(200)?;
//! for value in 1..=1000 {
//!     latency_ms.update_f64(f64::from(value))?;
//! }
//! let median = latency_ms.quantile(0.5)?.unwrap_or_default();
//! assert!((median - 500.0).abs() <= 1000.0 * latency_ms.rank_error());
//! # Ok::<(), magnetar_sketches::SketchError>(())
//! ```
//!
//! ## Frequent items ([`FrequentItems`])
//! Every count lies in `[lower_bound, upper_bound]`, an interval of width `maximum_error`
//! (reported a posteriori, at most `3.5 / max_map_size * N`). Listing with no false negatives
//! returns every item whose true count exceeds the threshold.
//! ```
//! use magnetar_sketches::FrequentItems;
//! let mut words = FrequentItems::new(64)?;
//! for word in ["to", "be", "or", "not", "to", "be", "to"] {
//!     words.update_str(word);
//! }
//! assert_eq!(words.top(1)[0].item, "to");
//! # Ok::<(), magnetar_sketches::SketchError>(())
//! ```
//!
//! ## Bloom filter ([`Bloom`])
//! Sized for `capacity` items at rate `p`: `m = ceil(-capacity ln p / ln^2 2)` bits and
//! `k = round(m / capacity * ln 2)` hashes; after `n` insertions the false-positive rate is
//! `(1 - e^(-k n / m))^k`. No false negatives.
//! ```
//! use magnetar_sketches::{Bloom, Item};
//! let mut seen = Bloom::new(1000, 0.01)?;
//! seen.insert_bytes(b"order-17");
//! assert!(seen.contains(Item::Bytes(b"order-17")));
//! # Ok::<(), magnetar_sketches::SketchError>(())
//! ```
//!
//! ## Samples ([`Reservoir`], [`WeightedSample`])
//! A reservoir of `k` holds each item with probability `min(1, k / n)`; a weighted sample picks
//! items without replacement with probability proportional to weight (Efraimidis-Spirakis).
//! Both merge exactly.
//! ```
//! use magnetar_sketches::{Item, Reservoir, Sketch};
//! let mut sample = Reservoir::new(10, 7)?;
//! (0..1000i64).try_for_each(|value| sample.update(Item::Int(value)))?;
//! assert_eq!(sample.sample().len(), 10);
//! # Ok::<(), magnetar_sketches::SketchError>(())
//! ```
//!
//! ## Windows ([`Window`])
//! A ring of time buckets of any kind (say 60 x 1 s), queried over the last `W` by merging the
//! buckets it covers; event time, with events later than the allowed lateness refused as
//! [`SketchError::TooLate`]. The bound is the inner kind's over the merged buckets.
//! ```
//! use magnetar_sketches::{CountMin, Item, Window, WindowShape};
//! let shape = WindowShape { bucket_width_ms: 1000, bucket_count: 60, allowed_lateness_ms: 5000 };
//! let mut errors = Window::new(shape, CountMin::new(1024, 4, false)?)?;
//! errors.update(1_000, Item::Str("timeout"))?;
//! errors.update(59_000, Item::Str("timeout"))?;
//! assert_eq!(errors.last(10_000)?.estimate(Item::Str("timeout")), 1);
//! # Ok::<(), magnetar_sketches::SketchError>(())
//! ```
//!
//! # Layout
//! - [`sketch`]: the [`Sketch`] trait and the [`Answer`] of a query.
//! - [`item`]: [`Item`], what sketches are updated with, and its canonical bytes.
//! - [`params`]: [`Params`], named parameters of kinds and queries.
//! - [`kind`]: [`Kind`], kind names and their stable envelope codes.
//! - [`envelope`]: the versioned, checksummed byte format around every sketch.
//! - [`error`]: [`SketchError`], the crate's one error type.
//! - [`hash`]: MurmurHash3 x64 128 (the DataSketches hash) and the samplers' generator.
//! - [`count_min`], [`hll`], [`theta`], [`kll`], [`frequent_items`], [`bloom`],
//!   [`reservoir`], [`weighted_sample`]: one kind each.
//! - [`window`]: time-bucketed windows over any kind.
//! - [`registry`]: building by kind name, decoding any envelope, queries by name.
//! - [`streams`]: seeded uniform and Zipf streams for tests and benchmarks.
//! - [`bench`](mod@bench): the update and merge timings behind `magnetar perf sketches`.
//! - `codec`: bounds-checked payload readers (private).
//! - `fuzzing`: the decoders the fuzz targets and their corpus test share (hidden).

pub mod bench;
pub mod bloom;
mod codec;
pub mod count_min;
pub mod envelope;
pub mod error;
pub mod frequent_items;
#[doc(hidden)]
pub mod fuzzing;
pub mod hash;
pub mod hll;
pub mod item;
pub(crate) mod item_table;
pub mod kind;
pub mod kll;
pub(crate) mod kll_levels;
pub mod params;
pub mod registry;
pub mod reservoir;
pub mod sketch;
pub mod streams;
pub mod theta;
pub mod weighted_sample;
pub mod window;

pub use bloom::Bloom;
pub use count_min::CountMin;
pub use error::{Result, SketchError};
pub use frequent_items::FrequentItems;
pub use hll::Hll;
pub use item::Item;
pub use kind::Kind;
pub use kll::Kll;
pub use params::Params;
pub use registry::{build, decode, AnySketch, Stored};
pub use reservoir::Reservoir;
pub use sketch::{Answer, FrequentRow, Sketch};
pub use theta::Theta;
pub use weighted_sample::WeightedSample;
pub use window::{Window, WindowShape};
