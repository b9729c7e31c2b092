//! One entry point per decoder of untrusted bytes, shared by the cargo-fuzz targets and by the
//! test that replays their committed corpus, so both exercise exactly the same code.
//!
//! A decoder may refuse bytes; it must never panic, and whatever it accepts must re-encode,
//! answer queries and merge with itself without panicking either.

use crate::error::Result;
use crate::params::Params;
use crate::registry::{self, Stored};
use crate::sketch::Sketch;
use crate::{Bloom, CountMin, FrequentItems, Hll, Kll, Reservoir, Theta, WeightedSample, Window};

/// The fuzz targets, by name; each is a file `fuzz/fuzz_targets/<name>.rs`.
pub const TARGETS: [&str; 14] = [
    "envelope",
    "count_min",
    "hll",
    "theta",
    "kll",
    "frequent_items",
    "bloom",
    "reservoir",
    "weighted_sample",
    "window",
    "datasketches_hll",
    "datasketches_theta",
    "datasketches_kll",
    "datasketches_frequent_items",
];

fn exercise<S: Sketch>(sketch: S) {
    let bytes = sketch.to_bytes();
    let _ = S::from_bytes(&bytes);
    let args = Params::new()
        .with("item", "a")
        .with("rank", 0.5)
        .with("value", 1.0)
        .with("split_points", "0,1")
        .with("k", 3);
    for query in [
        "estimate", "quantile", "rank", "cdf", "pmf", "top", "frequent", "contains", "sample",
    ] {
        let _ = sketch.query(query, &args);
    }
    let mut copy = sketch.clone();
    let _ = copy.merge(&sketch);
}

/// Decodes `bytes` with the decoder named `target` and exercises what it accepts. Returns the
/// decoder's verdict; an unknown target name decodes nothing and returns `Ok`.
pub fn run(target: &str, bytes: &[u8]) -> Result<()> {
    match target {
        "envelope" => {
            let stored = registry::decode(bytes)?;
            let _ = stored.to_bytes();
            let _ = stored.query("estimate", &Params::new().with("item", "a"));
            if let Stored::Windowed(window) = &stored {
                let _ = window.last(1000);
            }
        }
        "count_min" => exercise(CountMin::from_bytes(bytes)?),
        "hll" => exercise(Hll::from_bytes(bytes)?),
        "theta" => exercise(Theta::from_bytes(bytes)?),
        "kll" => exercise(Kll::from_bytes(bytes)?),
        "frequent_items" => exercise(FrequentItems::from_bytes(bytes)?),
        "bloom" => exercise(Bloom::from_bytes(bytes)?),
        "reservoir" => exercise(Reservoir::from_bytes(bytes)?),
        "weighted_sample" => exercise(WeightedSample::from_bytes(bytes)?),
        "window" => {
            let window = Window::<CountMin>::from_bytes(bytes)?;
            let _ = window.last(60_000);
            let mut copy = window.clone();
            let _ = copy.merge(&window);
            let _ = window.to_bytes();
        }
        "datasketches_hll" => exercise(Hll::from_datasketches_bytes(bytes)?),
        "datasketches_theta" => exercise(Theta::from_datasketches_bytes(12, bytes)?),
        "datasketches_kll" => exercise(Kll::from_datasketches_bytes(bytes)?),
        "datasketches_frequent_items" => exercise(FrequentItems::from_datasketches_bytes(bytes)?),
        _ => {}
    }
    Ok(())
}
