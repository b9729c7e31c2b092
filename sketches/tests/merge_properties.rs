//! Merge properties: merging is associative and commutative in effect, and the merge of the
//! sketches of a stream's parts answers like the sketch of the whole, within the bound (exactly,
//! for the kinds whose merge is exact).

use std::collections::HashMap;

use magnetar_sketches::window::WindowShape;
use magnetar_sketches::{
    Bloom, CountMin, FrequentItems, Hll, Item, Kll, Reservoir, Sketch, Theta, WeightedSample,
    Window,
};
use proptest::prelude::*;

fn part() -> impl Strategy<Value = Vec<u16>> {
    prop::collection::vec(0u16..600, 0..500)
}

fn fill<S: Sketch>(mut sketch: S, keys: &[u16]) -> S {
    for &key in keys {
        sketch.update(Item::Int(i64::from(key))).unwrap();
    }
    sketch
}

fn merged<S: Sketch>(left: &S, right: &S) -> S {
    let mut result = left.clone();
    result.merge(right).unwrap();
    result
}

/// `(a + b) + c`, `a + (b + c)`, `c + (b + a)` and the sketch of the whole stream.
fn groupings<S: Sketch>(empty: &S, a: &[u16], b: &[u16], c: &[u16]) -> [S; 4] {
    let (sa, sb, sc) = (
        fill(empty.clone(), a),
        fill(empty.clone(), b),
        fill(empty.clone(), c),
    );
    let whole: Vec<u16> = a.iter().chain(b).chain(c).copied().collect();
    [
        merged(&merged(&sa, &sb), &sc),
        merged(&sa, &merged(&sb, &sc)),
        merged(&sc, &merged(&sb, &sa)),
        fill(empty.clone(), &whole),
    ]
}

fn exact_counts(parts: &[&[u16]]) -> HashMap<u16, u64> {
    let mut counts = HashMap::new();
    for part in parts {
        for &key in *part {
            *counts.entry(key).or_insert(0) += 1;
        }
    }
    counts
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn count_min_and_bloom_merges_are_exact(a in part(), b in part(), c in part()) {
        for conservative in [false, true] {
            let [left, right, reversed, whole] =
                groupings(&CountMin::new(64, 3, conservative).unwrap(), &a, &b, &c);
            prop_assert_eq!(&left, &right);
            prop_assert_eq!(&left, &reversed);
            if !conservative {
                // Plain updates are linear, so parts sum to the whole exactly.
                prop_assert_eq!(&left, &whole);
            }
            let counts = exact_counts(&[&a, &b, &c]);
            for (key, truth) in counts {
                prop_assert!(left.estimate(Item::Int(i64::from(key))) >= truth);
            }
        }
        let [left, right, reversed, whole] = groupings(&Bloom::new(500, 0.05).unwrap(), &a, &b, &c);
        prop_assert_eq!(&left.payload()[8..], &whole.payload()[8..]);
        prop_assert_eq!(&left, &right);
        prop_assert_eq!(&left, &reversed);
    }

    #[test]
    fn hll_and_theta_merges_answer_like_the_whole(a in part(), b in part(), c in part()) {
        let distinct = exact_counts(&[&a, &b, &c]).len() as f64;
        let hlls = groupings(&Hll::new(8, 8).unwrap(), &a, &b, &c);
        // The registers of every grouping equal the whole's, but which estimator answers depends
        // on the order: a sketch that saw its stream directly keeps its history (HIP), a union
        // that absorbed a sketch in a sparser mode may not. So each answers within the bound,
        // not to the bit. Five standard errors: each run makes a few hundred such checks, and a
        // property test must not fail by chance (three would, about one run in four).
        let bound = 5.0 * hlls[0].relative_standard_error() * distinct.max(1.0) + 1.0;
        for sketch in &hlls {
            prop_assert!((sketch.estimate() - distinct).abs() <= bound);
        }
        let [left, right, reversed, whole] = groupings(&Theta::new(6).unwrap(), &a, &b, &c);
        for other in [&right, &reversed] {
            prop_assert!((left.estimate() - other.estimate()).abs() < 1e-9);
        }
        // A part's update sketch may have lowered its theta below the whole's, so the union
        // answers like the whole within the bound, not to the bit: five standard errors of
        // k = 64 nominal entries, for the same reason as above.
        let bound = 5.0 / 63.0f64.sqrt() * distinct.max(1.0) + 1.0;
        prop_assert!((left.estimate() - distinct).abs() <= bound);
        prop_assert!((whole.estimate() - distinct).abs() <= bound);
    }

    #[test]
    fn kll_merges_stay_within_the_rank_error_of_the_whole(a in part(), b in part(), c in part()) {
        let groupings = groupings(&Kll::new(16).unwrap(), &a, &b, &c);
        let mut whole: Vec<u16> = a.iter().chain(&b).chain(&c).copied().collect();
        whole.sort_unstable();
        for sketch in &groupings {
            prop_assert_eq!(sketch.count(), whole.len() as u64);
            if whole.is_empty() {
                continue;
            }
            // A generous multiple of the single-sketch bound: merged KLL sketches keep the
            // bound with high probability, and a property test must not be flaky.
            let epsilon = 2.0 * sketch.rank_error();
            for probe in [50u16, 150, 300, 450] {
                let exact = whole.partition_point(|&key| key <= probe) as f64 / whole.len() as f64;
                let estimated = sketch.rank(f64::from(probe)).unwrap().unwrap();
                prop_assert!((estimated - exact).abs() <= epsilon, "{estimated} vs {exact}");
            }
        }
    }

    #[test]
    fn frequent_items_merges_keep_their_bounds(a in part(), b in part(), c in part()) {
        let groupings = groupings(&FrequentItems::new(16).unwrap(), &a, &b, &c);
        let counts = exact_counts(&[&a, &b, &c]);
        for sketch in &groupings {
            prop_assert_eq!(sketch.total_weight(), (a.len() + b.len() + c.len()) as u64);
            for (key, &truth) in &counts {
                let row = sketch.estimate(&key.to_string());
                prop_assert!(row.lower_bound <= truth && truth <= row.upper_bound);
            }
            let listed: Vec<String> =
                sketch.frequent(0, true).into_iter().map(|row| row.item).collect();
            for (key, &truth) in &counts {
                if truth > sketch.maximum_error() {
                    prop_assert!(listed.contains(&key.to_string()));
                }
            }
        }
    }

    #[test]
    fn sample_merges_draw_from_the_combined_stream(a in part(), b in part(), c in part()) {
        let total = (a.len() + b.len() + c.len()) as u64;
        let [left, right, reversed, _] = groupings(&Reservoir::new(20, 5).unwrap(), &a, &b, &c);
        let present: std::collections::HashSet<String> =
            a.iter().chain(&b).chain(&c).map(|key| key.to_string()).collect();
        for sketch in [&left, &right, &reversed] {
            prop_assert_eq!(sketch.seen(), total);
            prop_assert_eq!(sketch.sample().len() as u64, total.min(20));
            prop_assert!(sketch.sample().iter().all(|item| present.contains(item)));
        }
        // Weighted keys are drawn once per item, so grouping cannot change the sample.
        let empty = WeightedSample::new(20, 9).unwrap();
        let sa = fill(empty.clone(), &a);
        let sb = fill(WeightedSample::new(20, 10).unwrap(), &b);
        let sc = fill(WeightedSample::new(20, 11).unwrap(), &c);
        let sorted = |sketch: &WeightedSample| {
            let mut items: Vec<String> = sketch.sample().map(|(item, _)| item.to_owned()).collect();
            items.sort();
            items
        };
        let left = merged(&merged(&sa, &sb), &sc);
        let right = merged(&sa, &merged(&sb, &sc));
        let reversed = merged(&sc, &merged(&sb, &sa));
        prop_assert_eq!(sorted(&left), sorted(&right));
        prop_assert_eq!(sorted(&left), sorted(&reversed));
    }

    #[test]
    fn window_merges_equal_the_window_of_the_whole(a in part(), b in part()) {
        let shape = WindowShape { bucket_width_ms: 100, bucket_count: 10, allowed_lateness_ms: 1000 };
        let empty = Window::new(shape, CountMin::new(32, 2, false).unwrap()).unwrap();
        let mut left = empty.clone();
        let mut right = empty.clone();
        let mut whole = empty.clone();
        // Both instances see increasing event times; the key doubles as its timestamp.
        for (time, &key) in a.iter().enumerate() {
            left.update(time as i64, Item::Int(i64::from(key))).unwrap();
            whole.update(time as i64, Item::Int(i64::from(key))).unwrap();
        }
        for (time, &key) in b.iter().enumerate() {
            right.update(time as i64, Item::Int(i64::from(key))).unwrap();
        }
        for (time, &key) in b.iter().enumerate() {
            let _ = whole.update(time as i64, Item::Int(i64::from(key)));
        }
        let mut combined = left.clone();
        combined.merge(&right).unwrap();
        let mut reversed = right.clone();
        reversed.merge(&left).unwrap();
        prop_assert_eq!(combined.last(300).unwrap(), reversed.last(300).unwrap());
        if a.len() >= b.len() {
            // Right's events are never older than the ring then, so nothing is dropped.
            prop_assert_eq!(combined.last(1000).unwrap(), whole.last(1000).unwrap());
        }
    }
}
