//! Round trips of every kind, and hostile bytes: truncated, corrupted, foreign, and corrupted
//! payloads resealed with a valid checksum so they reach the kind decoders.

use magnetar_sketches::fuzzing::run;
use magnetar_sketches::{
    build, decode, Answer, CountMin, FrequentItems, Hll, Item, Kll, Params, Sketch, SketchError,
    Theta,
};

fn reseal(bytes: &mut [u8]) {
    let body = bytes.len() - 4;
    let checksum = crc32c::crc32c(&bytes[..body]);
    bytes[body..].copy_from_slice(&checksum.to_le_bytes());
}

/// A small deterministic generator for the mutations, so a failure replays from its seed.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn sample_params() -> Params {
    Params::new()
        .with("inner", "kll")
        .with("width", 64)
        .with("depth", 3)
        .with("lg_k", 8)
        .with("k", 16)
        .with("max_map_size", 16)
        .with("capacity", 500)
        .with("bucket_count", 8)
}

const KINDS: [&str; 9] = [
    "count_min",
    "hll",
    "theta",
    "kll",
    "frequent_items",
    "bloom",
    "reservoir",
    "weighted_sample",
    "window",
];

fn filled(kind: &str) -> Vec<u8> {
    let mut stored = build(kind, &sample_params()).unwrap();
    for value in 0..3000i64 {
        stored.update(value * 3, Item::Int(value % 701)).unwrap();
    }
    stored.to_bytes()
}

#[test]
fn every_kind_round_trips_to_identical_bytes_and_answers() {
    let queries: [(&str, Params); 5] = [
        ("estimate", Params::new().with("item", "5")),
        ("quantile", Params::new().with("rank", 0.3)),
        ("top", Params::new().with("k", 5)),
        ("contains", Params::new().with("item", "5")),
        ("sample", Params::new()),
    ];
    for kind in KINDS {
        let bytes = filled(kind);
        let restored = decode(&bytes).unwrap();
        assert!(
            restored.to_bytes() == bytes,
            "{kind} bytes change in a round trip"
        );
        if kind == "window" {
            // Its answers merge KLL buckets, and KLL merges are randomised.
            continue;
        }
        let original = decode(&bytes).unwrap();
        for (query, args) in &queries {
            let expected = original.query(query, args).ok();
            let actual = restored.query(query, args).ok();
            assert_eq!(actual, expected, "{kind} {query}");
        }
    }
}

#[test]
fn windows_of_every_inner_kind_round_trip() {
    for inner in &KINDS[..8] {
        let params = sample_params().with("inner", inner);
        let mut stored = build("window", &params).unwrap();
        for value in 0..2000i64 {
            stored.update(value * 7, Item::Int(value % 301)).unwrap();
        }
        let bytes = stored.to_bytes();
        let restored = decode(&bytes).unwrap_or_else(|error| panic!("window of {inner}: {error}"));
        // A decoded frequent-items map is rebuilt by insertion, so its items may serialize in
        // another order: same content, other bytes. The other kinds are byte-stable.
        if *inner != "frequent_items" {
            assert!(
                restored.to_bytes() == bytes,
                "window of {inner} changes in a round trip"
            );
        }
        let mut merged = restored.clone();
        merged.merge(&stored).unwrap();
    }
}

#[test]
fn truncated_and_bit_flipped_envelopes_are_refused() {
    for kind in KINDS {
        let bytes = filled(kind);
        for length in (0..bytes.len()).step_by(7) {
            assert!(
                decode(&bytes[..length]).is_err(),
                "{kind} truncated to {length}"
            );
        }
        let mut state = 11;
        for _ in 0..200 {
            let mut corrupted = bytes.clone();
            let index = next(&mut state) as usize % corrupted.len();
            corrupted[index] ^= 1 << (next(&mut state) % 8);
            assert!(decode(&corrupted).is_err(), "{kind} flip at {index}");
        }
    }
    for foreign in [&b""[..], b"MGSK", b"\x01\x02\x03", b"PK\x03\x04 zip file"] {
        assert!(matches!(decode(foreign), Err(SketchError::Corrupt(_))));
    }
}

#[test]
fn resealed_hostile_payloads_never_panic() {
    for kind in KINDS {
        let bytes = filled(kind);
        let seed = 0x5eed_0000 + bytes.len() as u64;
        println!("hostile payloads for {kind}: seed {seed}");
        let mut state = seed;
        for _ in 0..400 {
            let mut hostile = bytes.clone();
            let body = hostile.len() - 4;
            for _ in 0..1 + next(&mut state) % 4 {
                let index = next(&mut state) as usize % body;
                hostile[index] = next(&mut state) as u8;
            }
            reseal(&mut hostile);
            let _ = run("envelope", &hostile);
        }
    }
}

#[test]
fn datasketches_payloads_round_trip_and_mutations_never_panic() {
    let mut hll = Hll::new(10, 4).unwrap();
    let mut theta = Theta::new(9).unwrap();
    let mut kll = Kll::new(50).unwrap();
    let mut frequent = FrequentItems::new(32).unwrap();
    for value in 0..5000i64 {
        hll.update_i64(value);
        theta.update_i64(value);
        kll.update_f64(value as f64).unwrap();
        frequent.update_str(&(value % 300).to_string());
    }
    let inputs = [
        ("datasketches_hll", hll.to_datasketches_bytes()),
        ("datasketches_theta", theta.to_datasketches_bytes()),
        ("datasketches_kll", kll.to_datasketches_bytes()),
        (
            "datasketches_frequent_items",
            frequent.to_datasketches_bytes(),
        ),
    ];
    assert_eq!(
        Hll::from_datasketches_bytes(&inputs[0].1)
            .unwrap()
            .estimate(),
        hll.estimate()
    );
    assert_eq!(
        Theta::from_datasketches_bytes(9, &inputs[1].1)
            .unwrap()
            .estimate(),
        theta.estimate()
    );
    assert_eq!(
        Kll::from_datasketches_bytes(&inputs[2].1)
            .unwrap()
            .quantile(0.5)
            .unwrap(),
        kll.quantile(0.5).unwrap()
    );
    assert_eq!(
        FrequentItems::from_datasketches_bytes(&inputs[3].1)
            .unwrap()
            .estimate("7"),
        frequent.estimate("7")
    );
    let mut state = 77;
    println!("datasketches payload mutations: seed 77");
    for (target, bytes) in &inputs {
        for length in 0..bytes.len().min(300) {
            let _ = run(target, &bytes[..length]);
        }
        for _ in 0..400 {
            let mut hostile = bytes.clone();
            for _ in 0..1 + next(&mut state) % 3 {
                let index = next(&mut state) as usize % hostile.len();
                hostile[index] = next(&mut state) as u8;
            }
            let _ = run(target, &hostile);
        }
    }
}

#[test]
fn an_envelope_naming_other_parameters_than_its_payload_is_refused() {
    let hll = Hll::new(10, 8).unwrap();
    let bytes = magnetar_sketches::envelope::encode(
        magnetar_sketches::Kind::Hll,
        &Params::new().with("lg_k", 11),
        &hll.to_datasketches_bytes(),
    );
    assert!(Hll::from_bytes(&bytes).is_err());
    // The bytes of one kind are not another kind.
    let count_min = CountMin::new(16, 2, false).unwrap().to_bytes();
    assert!(Hll::from_bytes(&count_min).is_err());
    let Answer::Estimate { estimate, .. } = CountMin::from_bytes(&count_min)
        .unwrap()
        .query("estimate", &Params::new().with("item", "x"))
        .unwrap()
    else {
        panic!("count_min estimate answers an estimate");
    };
    assert_eq!(estimate, 0.0);
}
