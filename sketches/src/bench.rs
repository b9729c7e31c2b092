//! The update and merge costs of every kind, ours beside the `datasketches` crate, measured in
//! one process so both see the same machine state. `magnetar perf sketches` and the criterion
//! bench print these figures; nothing here asserts a time.

use std::hint::black_box;
use std::time::Instant;

use datasketches::bloom::BloomFilterBuilder;
use datasketches::countmin::CountMinSketch;
use datasketches::frequencies::FrequentItemsSketch;
use datasketches::hll::{HllSketch, HllType, HllUnion};
use datasketches::kll::{KllFloat, KllSketch};
use datasketches::theta::{ThetaSketchBuilder, ThetaUnionBuilder};

use crate::sketch::Sketch;
use crate::streams;
use crate::{Bloom, CountMin, FrequentItems, Hll, Kll, Theta};

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    /// Updates per timed round.
    pub updates: usize,
    /// Merges per timed round.
    pub merges: usize,
    /// Rounds; the median round is reported.
    pub rounds: usize,
    /// Seed of the synthetic streams.
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            updates: 1_000_000,
            merges: 200,
            rounds: 5,
            seed: 42,
        }
    }
}

/// The figures of one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct KindFigures {
    /// The kind's name, as in the JSON keys.
    pub kind: &'static str,
    /// The parameters both sides were measured with.
    pub parameters: &'static str,
    pub update_ns: f64,
    pub merge_ns: f64,
    /// `None` where the `datasketches` crate has no such kind.
    pub datasketches_update_ns: Option<f64>,
    pub datasketches_merge_ns: Option<f64>,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Nanoseconds per operation: the median over `rounds` of `round()`, which runs `operations`
/// operations.
fn time_per_operation(rounds: usize, operations: usize, mut round: impl FnMut()) -> f64 {
    let samples = (0..rounds.max(1))
        .map(|_| {
            let start = Instant::now();
            round();
            start.elapsed().as_nanos() as f64 / operations.max(1) as f64
        })
        .collect();
    median(samples)
}

/// Nanoseconds per operation of two contenders, rounds interleaved (ours, theirs, ours, ...)
/// so that both see the same share of whatever else the machine is doing.
fn time_both(
    rounds: usize,
    operations: usize,
    mut ours: impl FnMut(),
    mut theirs: impl FnMut(),
) -> (f64, f64) {
    let mut ours_samples = Vec::new();
    let mut theirs_samples = Vec::new();
    for _ in 0..rounds.max(1) {
        ours_samples.push(time_per_operation(1, operations, &mut ours));
        theirs_samples.push(time_per_operation(1, operations, &mut theirs));
    }
    (median(ours_samples), median(theirs_samples))
}

/// Times `merges` merges of a filled sketch into an accumulator.
fn time_merges<S>(
    options: &BenchOptions,
    accumulator: &S,
    part: &S,
    merge: impl Fn(&mut S, &S),
) -> f64
where
    S: Clone,
{
    let mut total = accumulator.clone();
    time_per_operation(options.rounds, options.merges, || {
        for _ in 0..options.merges {
            merge(&mut total, black_box(part));
        }
    })
}

/// Measures every kind.
pub fn run(options: &BenchOptions) -> Vec<KindFigures> {
    let keys: Vec<i64> = streams::uniform_keys(options.seed, options.updates, u64::MAX)
        .into_iter()
        .map(|key| key as i64)
        .collect();
    let zipf_texts: Vec<String> = streams::zipf_keys(options.seed, options.updates, 1_000_000, 1.1)
        .into_iter()
        .map(|key| format!("item-{key}"))
        .collect();
    let values = streams::uniform_values(options.seed, options.updates);
    let part_size = (options.updates / 10).max(1);
    vec![
        count_min(options, &keys, part_size),
        hll(options, &keys, part_size),
        theta(options, &keys, part_size),
        kll(options, &values, part_size),
        frequent_items(options, &zipf_texts, part_size),
        bloom(options, &keys, part_size),
    ]
}

fn count_min(options: &BenchOptions, keys: &[i64], part_size: usize) -> KindFigures {
    let (width, depth) = (2048, 5);
    let mut ours = CountMin::new(width, depth, false).expect("constant parameters are valid");
    let mut theirs = CountMinSketch::<u64>::new(depth as u8, width as u32)
        .expect("constant parameters are valid");
    let (update_ns, datasketches_update_ns) = time_both(
        options.rounds,
        keys.len(),
        || {
            for &key in keys {
                ours.update_i64(black_box(key));
            }
        },
        || {
            for &key in keys {
                theirs.update(black_box(key));
            }
        },
    );
    let mut part = ours.empty_like();
    let mut their_part = theirs.clone();
    for &key in &keys[..part_size] {
        part.update_i64(key);
        their_part.update(key);
    }
    KindFigures {
        kind: "count_min",
        parameters: "width 2048, depth 5",
        update_ns,
        merge_ns: time_merges(options, &ours, &part, |total, part| {
            let _ = total.merge(part);
        }),
        datasketches_update_ns: Some(datasketches_update_ns),
        datasketches_merge_ns: Some(time_merges(options, &theirs, &their_part, |total, part| {
            let _ = total.merge(part);
        })),
    }
}

fn hll(options: &BenchOptions, keys: &[i64], part_size: usize) -> KindFigures {
    let lg_k = 12;
    let mut ours = Hll::new(lg_k, 8).expect("constant parameters are valid");
    let mut theirs = HllSketch::new(lg_k, HllType::Hll8).expect("constant parameters are valid");
    let (update_ns, datasketches_update_ns) = time_both(
        options.rounds,
        keys.len(),
        || {
            for &key in keys {
                ours.update_i64(black_box(key));
            }
        },
        || {
            for &key in keys {
                theirs.update(black_box(key));
            }
        },
    );
    let mut part = ours.empty_like();
    for &key in &keys[..part_size] {
        part.update_i64(key);
    }
    let mut their_union = HllUnion::new(lg_k).expect("constant parameters are valid");
    let their_part = theirs.clone();
    KindFigures {
        kind: "hll",
        parameters: "lg_k 12, 8-bit registers",
        update_ns,
        merge_ns: time_merges(options, &ours, &part, |total, part| {
            let _ = total.merge(part);
        }),
        datasketches_update_ns: Some(datasketches_update_ns),
        datasketches_merge_ns: Some(time_per_operation(options.rounds, options.merges, || {
            for _ in 0..options.merges {
                their_union.update(black_box(&their_part));
            }
        })),
    }
}

fn theta(options: &BenchOptions, keys: &[i64], part_size: usize) -> KindFigures {
    let lg_k = 12;
    let mut ours = Theta::new(lg_k).expect("constant parameters are valid");
    let mut theirs = ThetaSketchBuilder::default()
        .lg_k(lg_k)
        .build()
        .expect("constant parameters are valid");
    let (update_ns, datasketches_update_ns) = time_both(
        options.rounds,
        keys.len(),
        || {
            for &key in keys {
                ours.update_i64(black_box(key));
            }
        },
        || {
            for &key in keys {
                theirs.update(black_box(key));
            }
        },
    );
    let mut part = ours.empty_like();
    for &key in &keys[..part_size] {
        part.update_i64(key);
    }
    let their_part = theirs.compact(true);
    let mut their_union = ThetaUnionBuilder::default()
        .lg_k(lg_k)
        .build()
        .expect("constant parameters are valid");
    KindFigures {
        kind: "theta",
        parameters: "lg_k 12",
        update_ns,
        merge_ns: time_merges(options, &ours, &part, |total, part| {
            let _ = total.merge(part);
        }),
        datasketches_update_ns: Some(datasketches_update_ns),
        datasketches_merge_ns: Some(time_per_operation(options.rounds, options.merges, || {
            for _ in 0..options.merges {
                let _ = their_union.update(black_box(&their_part));
            }
        })),
    }
}

fn kll(options: &BenchOptions, values: &[f64], part_size: usize) -> KindFigures {
    let k = 200;
    let mut ours = Kll::new(k).expect("constant parameters are valid");
    let mut theirs =
        KllSketch::<KllFloat<f64>>::new(k as u16).expect("constant parameters are valid");
    let (update_ns, datasketches_update_ns) = time_both(
        options.rounds,
        values.len(),
        || {
            for &value in values {
                let _ = ours.update_f64(black_box(value));
            }
        },
        || {
            for &value in values {
                if let Ok(value) = KllFloat::<f64>::new(black_box(value)) {
                    theirs.update(value);
                }
            }
        },
    );
    let mut part = ours.empty_like();
    let mut their_part =
        KllSketch::<KllFloat<f64>>::new(k as u16).expect("constant parameters are valid");
    for &value in &values[..part_size] {
        let _ = part.update_f64(value);
        if let Ok(value) = KllFloat::<f64>::new(value) {
            their_part.update(value);
        }
    }
    KindFigures {
        kind: "kll",
        parameters: "k 200",
        update_ns,
        merge_ns: time_merges(options, &ours, &part, |total, part| {
            let _ = total.merge(part);
        }),
        datasketches_update_ns: Some(datasketches_update_ns),
        datasketches_merge_ns: Some(time_merges(options, &theirs, &their_part, |total, part| {
            let _ = total.merge(part);
        })),
    }
}

fn frequent_items(options: &BenchOptions, texts: &[String], part_size: usize) -> KindFigures {
    let map_size = 1024;
    let mut ours = FrequentItems::new(map_size).expect("constant parameters are valid");
    let mut theirs = FrequentItemsSketch::<String>::new(map_size as usize)
        .expect("constant parameters are valid");
    let (update_ns, datasketches_update_ns) = time_both(
        options.rounds,
        texts.len(),
        || {
            for text in texts {
                ours.update_str(black_box(text));
            }
        },
        || {
            for text in texts {
                theirs.update_ref(black_box(text.as_str()));
            }
        },
    );
    let mut part = ours.empty_like();
    let mut their_part = theirs.clone();
    for text in &texts[..part_size] {
        part.update_str(text);
        their_part.update_ref(text.as_str());
    }
    KindFigures {
        kind: "frequent_items",
        parameters: "max_map_size 1024, Zipf 1.1 over 10^6 strings",
        update_ns,
        merge_ns: time_merges(options, &ours, &part, |total, part| {
            let _ = total.merge(part);
        }),
        datasketches_update_ns: Some(datasketches_update_ns),
        datasketches_merge_ns: Some(time_merges(options, &theirs, &their_part, |total, part| {
            total.merge(part);
        })),
    }
}

fn bloom(options: &BenchOptions, keys: &[i64], part_size: usize) -> KindFigures {
    let (capacity, rate) = (1_000_000, 0.01);
    let mut ours = Bloom::new(capacity, rate).expect("constant parameters are valid");
    let mut theirs = BloomFilterBuilder::with_accuracy(capacity, rate)
        .build()
        .expect("constant parameters are valid");
    let (update_ns, datasketches_update_ns) = time_both(
        options.rounds,
        keys.len(),
        || {
            for &key in keys {
                ours.insert_i64(black_box(key));
            }
        },
        || {
            for &key in keys {
                theirs.insert(black_box(key));
            }
        },
    );
    let mut part = ours.empty_like();
    let mut their_part = theirs.clone();
    for &key in &keys[..part_size] {
        part.insert_i64(key);
        their_part.insert(key);
    }
    KindFigures {
        kind: "bloom",
        parameters: "capacity 10^6, false-positive rate 1 %",
        update_ns,
        merge_ns: time_merges(options, &ours, &part, |total, part| {
            let _ = total.merge(part);
        }),
        datasketches_update_ns: Some(datasketches_update_ns),
        datasketches_merge_ns: Some(time_merges(options, &theirs, &their_part, |total, part| {
            let _ = total.union(part);
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reports_finite_positive_figures() {
        let options = BenchOptions {
            updates: 2_000,
            merges: 2,
            rounds: 1,
            seed: 1,
        };
        let figures = run(&options);
        let kinds: Vec<&str> = figures.iter().map(|figure| figure.kind).collect();
        assert_eq!(
            kinds,
            [
                "count_min",
                "hll",
                "theta",
                "kll",
                "frequent_items",
                "bloom"
            ]
        );
        for figure in figures {
            assert!(
                figure.update_ns.is_finite() && figure.update_ns > 0.0,
                "{figure:?}"
            );
            assert!(
                figure.merge_ns.is_finite() && figure.merge_ns > 0.0,
                "{figure:?}"
            );
        }
    }
}
