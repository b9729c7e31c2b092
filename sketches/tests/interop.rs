//! Interoperability with the Python `datasketches` package (the C++ library): Python reads our
//! HLL, Theta, KLL and frequent-items bytes and reports the estimates we report, and we read
//! the bytes Python writes and report Python's estimates.
//!
//! The test needs a Python with `datasketches` installed. It uses the interpreter named by
//! `MAGNETAR_SKETCHES_PYTHON` when set; otherwise it creates (once, and reuses) a virtual
//! environment under the build's temporary directory with `python3 -m venv` and installs the
//! pinned package from PyPI. Set `MAGNETAR_SKIP_PYTHON_INTEROP=1` only where no Python exists.

use std::path::{Path, PathBuf};
use std::process::Command;

use magnetar_sketches::streams::zipf_keys;
use magnetar_sketches::{FrequentItems, Hll, Kll, Sketch, Theta};

const PYTHON_PACKAGE: &str = "datasketches==5.2.0";
const SEED: u64 = 2024;

const SCRIPT: &str = r#"
import json, sys
import datasketches as ds

directory = sys.argv[1]
def read(name):
    with open(f"{directory}/{name}", "rb") as handle:
        return handle.read()
def write(name, data):
    with open(f"{directory}/{name}", "wb") as handle:
        handle.write(data)

ranks = [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]
probes = [line for line in read("probes.txt").decode().split("\n") if line]

def kll_answers(sketch):
    return {"n": sketch.n, "quantiles": [sketch.get_quantile(r, True) for r in ranks]}

def frequent_answers(sketch):
    return {
        "total_weight": sketch.total_weight,
        "estimates": [sketch.get_estimate(p) for p in probes],
        "lower": [sketch.get_lower_bound(p) for p in probes],
        "upper": [sketch.get_upper_bound(p) for p in probes],
    }

report = {
    "ours": {
        "hll": ds.hll_sketch.deserialize(read("rust_hll.bin")).get_estimate(),
        "theta": ds.compact_theta_sketch.deserialize(read("rust_theta.bin")).get_estimate(),
        "kll": kll_answers(ds.kll_doubles_sketch.deserialize(read("rust_kll.bin"))),
        "frequent": frequent_answers(ds.frequent_strings_sketch.deserialize(read("rust_frequent.bin"))),
    }
}

items = [line for line in read("stream.txt").decode().split("\n") if line]
values = [float(line) for line in read("values.txt").decode().split("\n") if line]
hll = ds.hll_sketch(12, ds.tgt_hll_type.HLL_4)
theta = ds.update_theta_sketch(12)
frequent = ds.frequent_strings_sketch(8)
for item in items:
    hll.update(item)
    theta.update(item)
    frequent.update(item)
kll = ds.kll_doubles_sketch(200)
for value in values:
    kll.update(value)
write("python_hll.bin", hll.serialize_compact())
write("python_theta.bin", theta.compact().serialize())
write("python_kll.bin", kll.serialize())
write("python_frequent.bin", frequent.serialize())
report["python"] = {
    "hll": hll.get_estimate(),
    "theta": theta.compact().get_estimate(),
    "kll": kll_answers(kll),
    "frequent": frequent_answers(frequent),
}
print(json.dumps(report))
"#;

const RANKS: [f64; 7] = [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99];

fn python() -> Option<PathBuf> {
    if std::env::var("MAGNETAR_SKIP_PYTHON_INTEROP").as_deref() == Ok("1") {
        return None;
    }
    if let Ok(python) = std::env::var("MAGNETAR_SKETCHES_PYTHON") {
        return Some(PathBuf::from(python));
    }
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("datasketches-venv");
    let python = venv.join("bin").join("python");
    let ready = python.exists()
        && Command::new(&python)
            .args(["-c", "import datasketches"])
            .status()
            .is_ok_and(|status| status.success());
    if !ready {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 must be installed (or set MAGNETAR_SKETCHES_PYTHON)");
        assert!(status.success(), "python3 -m venv {venv:?} failed");
        let status = Command::new(&python)
            .args(["-m", "pip", "install", "--quiet", PYTHON_PACKAGE])
            .status()
            .expect("pip runs");
        assert!(status.success(), "pip install {PYTHON_PACKAGE} failed");
    }
    Some(python)
}

fn number(value: &serde_json::Value) -> f64 {
    value.as_f64().expect("a number")
}

fn close(left: f64, right: f64) -> bool {
    (left - right).abs() <= 1e-9 * left.abs().max(1.0)
}

#[test]
fn python_datasketches_reads_our_bytes_and_we_read_theirs() {
    let Some(python) = python() else {
        println!("MAGNETAR_SKIP_PYTHON_INTEROP=1: interoperability not checked");
        return;
    };
    println!("interop stream seed {SEED}");
    let keys = zipf_keys(SEED, 100_000, 50_000, 1.05);
    let items: Vec<String> = keys.iter().map(|key| format!("item-{key}")).collect();
    let values: Vec<f64> = keys.iter().map(|&key| key as f64 * 0.5).collect();
    let probes: Vec<String> = (0..20).map(|key| format!("item-{key}")).collect();

    let mut hll = Hll::new(12, 8).unwrap();
    let mut theta = Theta::new(12).unwrap();
    let mut frequent = FrequentItems::new(256).unwrap();
    let mut kll = Kll::new(200).unwrap();
    for item in &items {
        hll.update_bytes(item.as_bytes());
        theta.update_bytes(item.as_bytes());
        frequent.update_str(item);
    }
    for &value in &values {
        kll.update_f64(value).unwrap();
    }

    let directory = tempfile::tempdir().unwrap();
    let write =
        |name: &str, bytes: &[u8]| std::fs::write(directory.path().join(name), bytes).unwrap();
    write("rust_hll.bin", &hll.to_datasketches_bytes());
    write("rust_theta.bin", &theta.to_datasketches_bytes());
    write("rust_kll.bin", &kll.to_datasketches_bytes());
    write("rust_frequent.bin", &frequent.to_datasketches_bytes());
    write("stream.txt", items.join("\n").as_bytes());
    let value_lines: Vec<String> = values.iter().map(|value| format!("{value:?}")).collect();
    write("values.txt", value_lines.join("\n").as_bytes());
    write("probes.txt", probes.join("\n").as_bytes());

    let output = Command::new(&python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(directory.path())
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    // Python reads our bytes and reports our estimates.
    let ours = &report["ours"];
    assert!(close(number(&ours["hll"]), hll.estimate()), "hll {ours}");
    assert!(
        close(number(&ours["theta"]), theta.estimate()),
        "theta {ours}"
    );
    assert_eq!(ours["kll"]["n"].as_u64(), Some(kll.count()));
    for (index, rank) in RANKS.iter().enumerate() {
        let expected = kll.quantile(*rank).unwrap().unwrap();
        assert!(
            close(number(&ours["kll"]["quantiles"][index]), expected),
            "kll rank {rank}"
        );
    }
    assert_eq!(
        ours["frequent"]["total_weight"].as_u64(),
        Some(frequent.total_weight())
    );
    for (index, probe) in probes.iter().enumerate() {
        let row = frequent.estimate(probe);
        assert_eq!(
            ours["frequent"]["estimates"][index].as_u64(),
            Some(row.estimate),
            "{probe}"
        );
        assert_eq!(
            ours["frequent"]["lower"][index].as_u64(),
            Some(row.lower_bound),
            "{probe}"
        );
        assert_eq!(
            ours["frequent"]["upper"][index].as_u64(),
            Some(row.upper_bound),
            "{probe}"
        );
    }

    // We read Python's bytes and report Python's estimates.
    let theirs = &report["python"];
    let read = |name: &str| std::fs::read(directory.path().join(name)).unwrap();
    let their_hll = Hll::from_datasketches_bytes(&read("python_hll.bin")).unwrap();
    assert!(
        close(their_hll.estimate(), number(&theirs["hll"])),
        "hll {theirs}"
    );
    // Both sides hashed the same strings the same way and saw them in the same order, so even
    // the history-based estimates agree.
    assert!(
        close(their_hll.estimate(), hll.estimate()),
        "hll hashing differs"
    );
    let their_theta = Theta::from_datasketches_bytes(12, &read("python_theta.bin")).unwrap();
    assert!(
        close(their_theta.estimate(), number(&theirs["theta"])),
        "theta {theirs}"
    );
    let bound = 3.0 / 4095.0f64.sqrt() * their_theta.estimate();
    assert!((their_theta.estimate() - theta.estimate()).abs() <= bound);
    let their_kll = Kll::from_datasketches_bytes(&read("python_kll.bin")).unwrap();
    assert_eq!(their_kll.count(), kll.count());
    for (index, rank) in RANKS.iter().enumerate() {
        let actual = their_kll.quantile(*rank).unwrap().unwrap();
        assert!(
            close(actual, number(&theirs["kll"]["quantiles"][index])),
            "kll rank {rank}"
        );
    }
    let their_frequent =
        FrequentItems::from_datasketches_bytes(&read("python_frequent.bin")).unwrap();
    assert_eq!(their_frequent.total_weight(), frequent.total_weight());
    for (index, probe) in probes.iter().enumerate() {
        let row = their_frequent.estimate(probe);
        assert_eq!(
            theirs["frequent"]["estimates"][index].as_u64(),
            Some(row.estimate),
            "{probe}"
        );
        assert_eq!(
            theirs["frequent"]["upper"][index].as_u64(),
            Some(row.upper_bound),
            "{probe}"
        );
    }
    // And what we read merges with what we built.
    let mut union = hll.clone();
    union.merge(&their_hll).unwrap();
    assert!(
        (union.estimate() - hll.estimate()).abs()
            <= 3.0 * hll.relative_standard_error() * hll.estimate()
    );
}
