//! `cargo bench -p magnetar-sketches`: update and merge costs of every kind, ours beside the
//! `datasketches` crate at the same parameters. Updates are timed in batches of 10,000 items,
//! so criterion's per-element throughput reads as ns/update.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use datasketches::bloom::BloomFilterBuilder;
use datasketches::countmin::CountMinSketch;
use datasketches::frequencies::FrequentItemsSketch;
use datasketches::hll::{HllSketch, HllType};
use datasketches::kll::{KllFloat, KllSketch};
use datasketches::theta::ThetaSketchBuilder;
use magnetar_sketches::streams::{uniform_keys, uniform_values, zipf_keys};
use magnetar_sketches::{Bloom, CountMin, FrequentItems, Hll, Kll, Sketch, Theta};

const BATCH: usize = 10_000;

fn keys() -> Vec<i64> {
    uniform_keys(42, BATCH, u64::MAX)
        .into_iter()
        .map(|key| key as i64)
        .collect()
}

fn updates(criterion: &mut Criterion) {
    let keys = keys();
    let values = uniform_values(42, BATCH);
    let texts: Vec<String> = zipf_keys(42, BATCH, 1_000_000, 1.1)
        .into_iter()
        .map(|key| format!("item-{key}"))
        .collect();

    let mut group = criterion.benchmark_group("update");
    group.throughput(Throughput::Elements(BATCH as u64));

    let mut ours = CountMin::new(2048, 5, false).expect("valid");
    group.bench_function("count_min/ours", |bench| {
        bench.iter(|| keys.iter().for_each(|&key| ours.update_i64(black_box(key))))
    });
    let mut theirs = CountMinSketch::<u64>::new(5, 2048).expect("valid");
    group.bench_function("count_min/datasketches", |bench| {
        bench.iter(|| keys.iter().for_each(|&key| theirs.update(black_box(key))))
    });

    let mut ours = Hll::new(12, 8).expect("valid");
    group.bench_function("hll/ours", |bench| {
        bench.iter(|| keys.iter().for_each(|&key| ours.update_i64(black_box(key))))
    });
    let mut theirs = HllSketch::new(12, HllType::Hll8).expect("valid");
    group.bench_function("hll/datasketches", |bench| {
        bench.iter(|| keys.iter().for_each(|&key| theirs.update(black_box(key))))
    });

    let mut ours = Theta::new(12).expect("valid");
    group.bench_function("theta/ours", |bench| {
        bench.iter(|| keys.iter().for_each(|&key| ours.update_i64(black_box(key))))
    });
    let mut theirs = ThetaSketchBuilder::default()
        .lg_k(12)
        .build()
        .expect("valid");
    group.bench_function("theta/datasketches", |bench| {
        bench.iter(|| keys.iter().for_each(|&key| theirs.update(black_box(key))))
    });

    let mut ours = Kll::new(200).expect("valid");
    group.bench_function("kll/ours", |bench| {
        bench.iter(|| {
            values.iter().for_each(|&value| {
                let _ = ours.update_f64(black_box(value));
            })
        })
    });
    let mut theirs = KllSketch::<KllFloat<f64>>::new(200).expect("valid");
    group.bench_function("kll/datasketches", |bench| {
        bench.iter(|| {
            values.iter().for_each(|&value| {
                if let Ok(value) = KllFloat::<f64>::new(black_box(value)) {
                    theirs.update(value);
                }
            })
        })
    });

    let mut ours = FrequentItems::new(1024).expect("valid");
    group.bench_function("frequent_items/ours", |bench| {
        bench.iter(|| {
            texts
                .iter()
                .for_each(|text| ours.update_str(black_box(text)))
        })
    });
    let mut theirs = FrequentItemsSketch::<String>::new(1024).expect("valid");
    group.bench_function("frequent_items/datasketches", |bench| {
        bench.iter(|| {
            texts
                .iter()
                .for_each(|text| theirs.update_ref(black_box(text.as_str())))
        })
    });

    let mut ours = Bloom::new(1_000_000, 0.01).expect("valid");
    group.bench_function("bloom/ours", |bench| {
        bench.iter(|| keys.iter().for_each(|&key| ours.insert_i64(black_box(key))))
    });
    let mut theirs = BloomFilterBuilder::with_accuracy(1_000_000, 0.01)
        .build()
        .expect("valid");
    group.bench_function("bloom/datasketches", |bench| {
        bench.iter(|| keys.iter().for_each(|&key| theirs.insert(black_box(key))))
    });
    group.finish();
}

fn filled<S: Sketch>(mut sketch: S, keys: &[i64]) -> S {
    for &key in keys {
        let _ = sketch.update(magnetar_sketches::Item::Int(key));
    }
    sketch
}

fn merges(criterion: &mut Criterion) {
    let keys = keys();
    let mut group = criterion.benchmark_group("merge");
    macro_rules! merge_bench {
        ($name:literal, $empty:expr) => {{
            let part = filled($empty, &keys);
            let total = filled($empty, &keys[..BATCH / 2]);
            group.bench_function($name, |bench| {
                bench.iter_batched_ref(
                    || total.clone(),
                    |total| total.merge(black_box(&part)),
                    BatchSize::SmallInput,
                )
            });
        }};
    }
    merge_bench!("count_min", CountMin::new(2048, 5, false).expect("valid"));
    merge_bench!("hll", Hll::new(12, 8).expect("valid"));
    merge_bench!("theta", Theta::new(12).expect("valid"));
    merge_bench!("kll", Kll::new(200).expect("valid"));
    merge_bench!("frequent_items", FrequentItems::new(1024).expect("valid"));
    merge_bench!("bloom", Bloom::new(1_000_000, 0.01).expect("valid"));
    group.finish();
}

criterion_group!(benches, updates, merges);
criterion_main!(benches);
