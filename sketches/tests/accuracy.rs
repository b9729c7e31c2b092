//! Accuracy against exact answers: seeded uniform and Zipf streams of 10^6 items, several seeds,
//! each kind's observed error checked against its documented bound. Every stream prints its
//! seed; set `SKETCH_ACCURACY_SEED` to replay one seed.

use magnetar_sketches::streams::{uniform_keys, zipf_keys};
use magnetar_sketches::{Bloom, CountMin, FrequentItems, Hll, Item, Kll, Reservoir, Sketch, Theta};

const ITEMS: usize = 1_000_000;
const UNIVERSE: u64 = 1_000_000;

struct Stream {
    name: String,
    keys: Vec<u64>,
    /// `counts[key]` is the exact number of occurrences of `key`.
    counts: Vec<u32>,
    distinct: u64,
}

fn seeds() -> Vec<u64> {
    match std::env::var("SKETCH_ACCURACY_SEED") {
        Ok(seed) => vec![seed.parse().expect("SKETCH_ACCURACY_SEED is a u64")],
        Err(_) => vec![1, 2, 3],
    }
}

fn streams() -> Vec<Stream> {
    let mut streams = Vec::new();
    for seed in seeds() {
        for (distribution, keys) in [
            ("uniform", uniform_keys(seed, ITEMS, UNIVERSE)),
            ("zipf-1.1", zipf_keys(seed, ITEMS, UNIVERSE, 1.1)),
        ] {
            let mut counts = vec![0u32; UNIVERSE as usize];
            for &key in &keys {
                counts[key as usize] += 1;
            }
            let distinct = counts.iter().filter(|&&count| count > 0).count() as u64;
            let name = format!("{distribution} seed {seed}");
            println!("stream {name}: {ITEMS} items, {distinct} distinct");
            streams.push(Stream {
                name,
                keys,
                counts,
                distinct,
            });
        }
    }
    streams
}

#[test]
fn count_min_never_undercounts_and_overcounts_beyond_epsilon_n_at_most_delta_of_the_time() {
    for stream in streams() {
        for conservative in [false, true] {
            let mut sketch = CountMin::with_error(0.001, 0.01, conservative).unwrap();
            for &key in &stream.keys {
                sketch.update_i64(key as i64);
            }
            let slack = sketch.epsilon() * ITEMS as f64;
            let mut queried = 0u32;
            let mut beyond = 0u32;
            // Every present key and as many absent ones, so both kinds of query are checked.
            for key in 0..UNIVERSE {
                let truth = u64::from(stream.counts[key as usize]);
                if truth == 0 && key % 8 != 0 {
                    continue;
                }
                let estimate = sketch.estimate(Item::Int(key as i64));
                assert!(estimate >= truth, "{}: undercount of {key}", stream.name);
                queried += 1;
                if (estimate - truth) as f64 > slack {
                    beyond += 1;
                }
            }
            let share = f64::from(beyond) / f64::from(queried);
            println!(
                "count_min {} conservative={conservative}: {beyond} of {queried} beyond epsilon N",
                stream.name
            );
            assert!(
                share <= sketch.delta(),
                "{}: {share} beyond the bound",
                stream.name
            );
        }
    }
}

#[test]
fn hll_and_theta_estimates_fall_within_three_standard_deviations() {
    for stream in streams() {
        let mut hll = Hll::new(12, 8).unwrap();
        let mut theta = Theta::new(12).unwrap();
        for &key in &stream.keys {
            hll.update_i64(key as i64);
            theta.update_i64(key as i64);
        }
        let truth = stream.distinct as f64;
        let (lower, upper) = hll.bounds(3);
        println!(
            "hll {}: estimate {:.0} truth {truth} bounds [{lower:.0}, {upper:.0}]",
            stream.name,
            hll.estimate()
        );
        assert!(lower <= truth && truth <= upper, "hll {}", stream.name);
        let relative = (hll.estimate() - truth).abs() / truth;
        assert!(
            relative <= 3.0 * hll.relative_standard_error(),
            "hll {}",
            stream.name
        );

        let estimate = theta.estimate();
        let relative = (estimate - truth).abs() / truth;
        let standard_error = 1.0 / (4096.0f64 - 1.0).sqrt();
        println!(
            "theta {}: estimate {estimate:.0} truth {truth}",
            stream.name
        );
        assert!(relative <= 3.0 * standard_error, "theta {}", stream.name);
    }
}

#[test]
fn theta_set_operations_track_the_exact_sets() {
    for stream in streams() {
        // Left holds the first 60 % of the stream, right the last 60 %.
        let split = ITEMS * 6 / 10;
        let mut left = Theta::new(12).unwrap();
        let mut right = Theta::new(12).unwrap();
        let mut in_left = vec![false; UNIVERSE as usize];
        let mut in_right = vec![false; UNIVERSE as usize];
        for &key in &stream.keys[..split] {
            left.update_i64(key as i64);
            in_left[key as usize] = true;
        }
        for &key in &stream.keys[ITEMS - split..] {
            right.update_i64(key as i64);
            in_right[key as usize] = true;
        }
        let both = in_left
            .iter()
            .zip(&in_right)
            .filter(|(l, r)| **l && **r)
            .count() as f64;
        let only_left = in_left
            .iter()
            .zip(&in_right)
            .filter(|(l, r)| **l && !**r)
            .count() as f64;
        let union_truth = stream.distinct as f64;
        // Intersections and differences keep the union's absolute error (the sketches share
        // one theta), so the bound is relative to the union.
        let absolute = 3.0 / (4096.0f64 - 1.0).sqrt() * union_truth;
        let intersection = left.intersection(&right).unwrap().estimate();
        let difference = left.difference(&right).unwrap().estimate();
        let mut union = left.clone();
        union.merge(&right).unwrap();
        println!(
            "theta sets {}: intersection {intersection:.0}/{both}, difference {difference:.0}/{only_left}, union {:.0}/{union_truth}",
            stream.name,
            union.estimate()
        );
        assert!((intersection - both).abs() <= absolute, "{}", stream.name);
        assert!(
            (difference - only_left).abs() <= absolute,
            "{}",
            stream.name
        );
        assert!(
            (union.estimate() - union_truth).abs() <= absolute,
            "{}",
            stream.name
        );
    }
}

#[test]
fn kll_ranks_and_quantiles_stay_within_the_normalized_rank_error() {
    for stream in streams() {
        let mut sketch = Kll::new(200).unwrap();
        for &key in &stream.keys {
            sketch.update_f64(key as f64).unwrap();
        }
        let epsilon = sketch.rank_error();
        // Exact inclusive rank of v: the fraction of items <= v, from the counts.
        let mut below_or_equal = vec![0u64; UNIVERSE as usize];
        let mut running = 0u64;
        for (key, &count) in stream.counts.iter().enumerate() {
            running += u64::from(count);
            below_or_equal[key] = running;
        }
        let exact_rank = |value: f64| {
            let key = value as usize;
            below_or_equal[key] as f64 / ITEMS as f64
        };
        let exact_rank_exclusive = |value: f64| {
            let key = value as usize;
            let before = if key == 0 { 0 } else { below_or_equal[key - 1] };
            before as f64 / ITEMS as f64
        };
        let mut worst = 0.0f64;
        for step in 1..100 {
            let rank = f64::from(step) / 100.0;
            let quantile = sketch.quantile(rank).unwrap().unwrap();
            // The answer's true rank interval (ties span one) must come within epsilon.
            let gap = (exact_rank_exclusive(quantile) - rank).max(rank - exact_rank(quantile));
            worst = worst.max(gap);
            let probe = (rank * UNIVERSE as f64).floor();
            let estimated = sketch.rank(probe).unwrap().unwrap();
            worst = worst.max((estimated - exact_rank(probe)).abs());
        }
        let split_points: Vec<f64> = (1..10).map(|step| f64::from(step) * 1e5).collect();
        let cdf = sketch.cdf(&split_points).unwrap().unwrap();
        for (point, estimated) in split_points.iter().zip(&cdf) {
            worst = worst.max((estimated - exact_rank(*point)).abs());
        }
        let pmf = sketch.pmf(&split_points).unwrap().unwrap();
        assert!((pmf.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        println!(
            "kll {}: worst rank error {worst:.5}, bound {epsilon:.5}",
            stream.name
        );
        assert!(worst <= epsilon, "kll {}: {worst} > {epsilon}", stream.name);
    }
}

#[test]
fn frequent_items_bounds_hold_for_every_item_and_no_heavy_item_is_missed() {
    for stream in streams() {
        let mut sketch = FrequentItems::new(1024).unwrap();
        let texts: Vec<String> = (0..UNIVERSE).map(|key| key.to_string()).collect();
        for &key in &stream.keys {
            sketch.update_str(&texts[key as usize]);
        }
        let maximum_error = sketch.maximum_error();
        assert!(
            maximum_error as f64 <= sketch.apriori_error(),
            "{}",
            stream.name
        );
        for (key, &count) in stream.counts.iter().enumerate() {
            let row = sketch.estimate(&texts[key]);
            let truth = u64::from(count);
            assert!(
                row.lower_bound <= truth && truth <= row.upper_bound,
                "{}: {key} true {truth} outside [{}, {}]",
                stream.name,
                row.lower_bound,
                row.upper_bound
            );
        }
        let threshold = maximum_error;
        let listed: std::collections::HashSet<String> = sketch
            .frequent(threshold, true)
            .into_iter()
            .map(|row| row.item)
            .collect();
        let heavy = stream
            .counts
            .iter()
            .enumerate()
            .filter(|(_, &count)| u64::from(count) > threshold);
        let mut heavy_count = 0;
        for (key, _) in heavy {
            heavy_count += 1;
            assert!(
                listed.contains(&texts[key]),
                "{}: heavy {key} missed",
                stream.name
            );
        }
        println!(
            "frequent_items {}: maximum error {maximum_error}, {heavy_count} items above it, all listed",
            stream.name
        );
    }
}

#[test]
fn bloom_has_no_false_negatives_and_about_the_designed_false_positive_rate() {
    for stream in streams() {
        let mut filter = Bloom::new(stream.distinct, 0.01).unwrap();
        for (key, &count) in stream.counts.iter().enumerate() {
            if count > 0 {
                filter.insert_i64(key as i64);
            }
        }
        for &key in &stream.keys {
            assert!(
                filter.contains(Item::Int(key as i64)),
                "{}: lost {key}",
                stream.name
            );
        }
        let trials = 200_000u64;
        let false_positives = (0..trials)
            .filter(|offset| filter.contains(Item::Int((UNIVERSE + offset) as i64)))
            .count() as f64;
        let rate = false_positives / trials as f64;
        println!(
            "bloom {}: false-positive rate {rate:.4} (designed 0.01)",
            stream.name
        );
        // 200,000 trials at 1 %: standard deviation 0.022 %, so 1.3 % is far out.
        assert!(rate <= 0.013, "{}: rate {rate}", stream.name);
    }
}

#[test]
fn reservoir_sample_shares_match_stream_shares() {
    for stream in streams() {
        let mut sample = Reservoir::new(10_000, 7).unwrap();
        for &key in &stream.keys {
            sample.update(Item::Int(key as i64)).unwrap();
        }
        // The most frequent key's share in the sample is a hypergeometric estimate of its share
        // in the stream; five standard deviations of a binomial bound it.
        let top = (0..UNIVERSE as usize)
            .max_by_key(|&key| stream.counts[key])
            .unwrap_or(0);
        let share = f64::from(stream.counts[top]) / ITEMS as f64;
        let top_text = top.to_string();
        let sampled = sample
            .sample()
            .iter()
            .filter(|item| **item == top_text)
            .count() as f64;
        let sample_share = sampled / 10_000.0;
        let deviation = (share * (1.0 - share) / 10_000.0).sqrt();
        println!(
            "reservoir {}: top share {share:.4}, sampled {sample_share:.4}",
            stream.name
        );
        assert!(
            (sample_share - share).abs() <= 5.0 * deviation + 1e-4,
            "{}",
            stream.name
        );
    }
}
