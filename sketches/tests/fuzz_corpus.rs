//! Replays every fuzz target's committed corpus through the same decoders the targets call.
//! Seed inputs that decode must still decode; every input must be refused or accepted without
//! a panic.

use std::path::{Path, PathBuf};

use magnetar_sketches::fuzzing::{run, TARGETS};
use magnetar_sketches::window::WindowShape;
use magnetar_sketches::{
    AnySketch, Bloom, CountMin, FrequentItems, Hll, Item, Kind, Kll, Params, Reservoir, Sketch,
    Theta, WeightedSample, Window,
};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target)
}

fn filled<S: Sketch>(mut sketch: S, count: i64) -> S {
    for value in 0..count {
        let _ = sketch.update(Item::Int(value % 97));
    }
    sketch
}

/// Valid inputs for each target, the seeds the corpus starts from.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let count_min = || filled(CountMin::new(16, 3, false).unwrap(), 100);
    let hll = |count| filled(Hll::new(8, 8).unwrap(), count);
    let theta = |count| filled(Theta::new(5).unwrap(), count);
    let kll = |count| filled(Kll::new(8).unwrap(), count);
    let frequent = |count| filled(FrequentItems::new(8).unwrap(), count);
    match target {
        "envelope" => Kind::ALL[..8]
            .iter()
            .map(|&kind| {
                let params = Params::new()
                    .with("width", 16)
                    .with("depth", 2)
                    .with("capacity", 100)
                    .with("lg_k", 6)
                    .with("k", 8)
                    .with("max_map_size", 8);
                filled(AnySketch::build(kind, &params).unwrap(), 30).to_bytes()
            })
            .collect(),
        "count_min" => vec![count_min().to_bytes()],
        "hll" => vec![hll(5).to_bytes(), hll(1000).to_bytes()],
        "theta" => vec![theta(5).to_bytes(), theta(1000).to_bytes()],
        "kll" => vec![kll(5).to_bytes(), kll(1000).to_bytes()],
        "frequent_items" => vec![frequent(5).to_bytes(), frequent(1000).to_bytes()],
        "bloom" => vec![filled(Bloom::new(50, 0.1).unwrap(), 20).to_bytes()],
        "reservoir" => vec![filled(Reservoir::new(4, 1).unwrap(), 20).to_bytes()],
        "weighted_sample" => vec![filled(WeightedSample::new(4, 1).unwrap(), 20).to_bytes()],
        "window" => {
            let shape = WindowShape {
                bucket_width_ms: 1000,
                bucket_count: 4,
                allowed_lateness_ms: 500,
            };
            let mut window = Window::new(shape, CountMin::new(8, 2, false).unwrap()).unwrap();
            for time in 0..6i64 {
                window.update(time * 700, Item::Str("x")).unwrap();
            }
            vec![window.to_bytes()]
        }
        "datasketches_hll" => vec![
            hll(5).to_datasketches_bytes(),
            hll(1000).to_datasketches_bytes(),
        ],
        "datasketches_theta" => vec![
            theta(5).to_datasketches_bytes(),
            theta(1000).to_datasketches_bytes(),
        ],
        "datasketches_kll" => vec![
            kll(5).to_datasketches_bytes(),
            kll(1000).to_datasketches_bytes(),
        ],
        "datasketches_frequent_items" => vec![
            frequent(5).to_datasketches_bytes(),
            frequent(1000).to_datasketches_bytes(),
        ],
        other => panic!("no seeds for target {other}"),
    }
}

#[test]
fn every_target_has_a_corpus_whose_seeds_decode() {
    for target in TARGETS {
        let directory = corpus_dir(target);
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&directory)
            .unwrap_or_else(|error| panic!("corpus of {target} at {directory:?}: {error}"))
            .map(|entry| entry.unwrap().path())
            .collect();
        entries.sort();
        assert!(!entries.is_empty(), "corpus of {target} is empty");
        for path in entries {
            let bytes = std::fs::read(&path).unwrap();
            let verdict = run(target, &bytes);
            let name = path.file_name().unwrap().to_string_lossy();
            if name.starts_with("seed-") {
                assert!(verdict.is_ok(), "{target}/{name}: {verdict:?}");
            }
            // Every truncation of every input is refused or accepted, never a panic.
            for length in 0..bytes.len() {
                let _ = run(target, &bytes[..length]);
            }
        }
    }
}

#[test]
fn freshly_made_seeds_decode_too() {
    for target in TARGETS {
        for (index, bytes) in seeds(target).iter().enumerate() {
            assert!(run(target, bytes).is_ok(), "{target} seed {index}");
        }
    }
}

/// Rewrites the committed seed inputs: `cargo test -p magnetar-sketches --test fuzz_corpus --
/// --ignored`.
#[test]
#[ignore]
fn write_seed_corpus() {
    for target in TARGETS {
        let directory = corpus_dir(target);
        std::fs::create_dir_all(&directory).unwrap();
        for (index, bytes) in seeds(target).iter().enumerate() {
            std::fs::write(directory.join(format!("seed-{index}")), bytes).unwrap();
        }
        // A foreign input: not a sketch at all.
        std::fs::write(directory.join("foreign-0"), b"{\"not\": \"a sketch\"}").unwrap();
    }
}
