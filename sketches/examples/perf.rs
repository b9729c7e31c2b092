//! Prints the update and merge costs of every kind, ours beside the `datasketches` crate,
//! without building the whole `magnetar` binary: `cargo run --release --example perf`.

use magnetar_sketches::bench::{run, BenchOptions};

fn main() {
    for figure in run(&BenchOptions::default()) {
        let theirs = |value: Option<f64>| value.map_or("-".to_owned(), |ns| format!("{ns:.1}"));
        println!(
            "{:<15} update {:>7.1} ns (datasketches {:>7}), merge {:>10.1} ns (datasketches {:>10})  [{}]",
            figure.kind,
            figure.update_ns,
            theirs(figure.datasketches_update_ns),
            figure.merge_ns,
            theirs(figure.datasketches_merge_ns),
            figure.parameters
        );
    }
}
