//! Smoke runs of `magnetar perf bookie`, from the build the other tests use: the benchmark runs
//! end to end against a bookie it starts, and its closing JSON line holds every figure.

use std::process::Command;

use magnetar_tests::process::magnetar_binary;
use serde_json::Value;

/// Keys every run reports.
const FIGURES: [&str; 9] = [
    "adds_per_sec",
    "mb_per_sec",
    "add_p50_us",
    "add_p99_us",
    "add_p999_us",
    "fsyncs_per_sec",
    "entries_per_fsync",
    "raw_fsync_p50_us",
    "raw_fsync_p99_us",
];

/// Runs `magnetar perf bookie` for `entries` adds of 100 bytes, with `args`, in a fresh
/// directory; checks that every add was acknowledged and every figure reported, and returns the
/// JSON line.
fn perf_bookie(entries: u64, args: &[&str]) -> Value {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let output = Command::new(magnetar_binary())
        .args(["perf", "bookie", "--json", "--entry-size", "100"])
        .arg(format!("--entries={entries}"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .output()
        .expect("magnetar runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "perf bookie {args:?} failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().expect("perf bookie printed a line");
    let json: Value =
        serde_json::from_str(line).unwrap_or_else(|error| panic!("not JSON ({error}): {line}"));
    for key in FIGURES {
        figure(&json, key);
    }
    assert_eq!(figure(&json, "entries"), entries as f64);
    assert_eq!(figure(&json, "failed_adds"), 0.0);
    json
}

fn figure(json: &Value, key: &str) -> f64 {
    json.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no figure {key} in {json}"))
}

#[test]
fn an_unlimited_run_acknowledges_every_add_and_reports_every_figure() {
    let json = perf_bookie(20_000, &["--writers", "4", "--connections", "2"]);
    assert_eq!(figure(&json, "connections"), 2.0);
    assert!(figure(&json, "adds_per_sec") > 0.0);
    assert!(figure(&json, "entries_per_fsync") >= 1.0);
    // The writers and the bookie ran in this process, and adds cost it some CPU.
    assert!(figure(&json, "process_cpu_cores") > 0.0);
    assert!(figure(&json, "process_cpu_us_per_add") > 0.0);
    let busy = figure(&json, "machine_cpu_busy_pct");
    assert!((0.0..=100.0).contains(&busy), "machine busy {busy}%");
    assert!(
        json.get("floor_p50_us").is_none(),
        "an unpaced run has no floor: {json}"
    );
}

#[test]
fn a_paced_run_also_reports_both_floors_at_its_rate() {
    let json = perf_bookie(2_000, &["--writers", "2", "--rate", "4000"]);
    assert_eq!(figure(&json, "rate"), 4000.0);
    // The writers share one connection unless asked otherwise, as the ledger client's do.
    assert_eq!(figure(&json, "connections"), 1.0);
    for floor in ["floor", "socket_floor"] {
        let p50_us = figure(&json, &format!("{floor}_p50_us"));
        let p99_us = figure(&json, &format!("{floor}_p99_us"));
        assert!(
            p50_us >= 1.0 && p99_us >= p50_us,
            "{floor} p50 {p50_us} us, p99 {p99_us} us"
        );
    }
}
