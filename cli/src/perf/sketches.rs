//! `magnetar perf sketches`: ns/update and ns/merge of every sketch kind, ours beside the
//! `datasketches` crate measured in the same run. The measuring lives in
//! `magnetar_sketches::bench`; this command parses flags and prints.

use clap::Args;
use magnetar_sketches::bench::{self, BenchOptions};

use super::report::Figures;

#[derive(Args)]
pub struct SketchesPerfArgs {
    /// Print only the closing JSON line.
    #[arg(long)]
    json: bool,
    /// Updates per timed round.
    #[arg(long, default_value_t = 1_000_000)]
    updates: usize,
    /// Merges per timed round.
    #[arg(long, default_value_t = 200)]
    merges: usize,
    /// Timed rounds; the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Seed of the synthetic streams.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn run(args: SketchesPerfArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.updates >= 10, "--updates must be at least 10");
    let options = BenchOptions {
        updates: args.updates,
        merges: args.merges.max(1),
        rounds: args.rounds.max(1),
        seed: args.seed,
    };
    let results = bench::run(&options);
    let mut figures = Figures::default();
    for result in &results {
        if !args.json {
            let theirs = |value: Option<f64>| {
                value.map_or_else(
                    || "n/a (the crate has no such kind)".to_owned(),
                    |ns| format!("{ns:.1} ns"),
                )
            };
            println!(
                "{:<15} update {:>6.1} ns (datasketches {}), merge {:>9.1} ns (datasketches {})  [{}]",
                result.kind,
                result.update_ns,
                theirs(result.datasketches_update_ns),
                result.merge_ns,
                theirs(result.datasketches_merge_ns),
                result.parameters
            );
        }
        figures.set_f64(&format!("{}_update_ns", result.kind), result.update_ns);
        figures.set_f64(&format!("{}_merge_ns", result.kind), result.merge_ns);
        // A kind the crate lacks has no datasketches key: absent, not zero.
        if let Some(ns) = result.datasketches_update_ns {
            figures.set_f64(&format!("datasketches_{}_update_ns", result.kind), ns);
        }
        if let Some(ns) = result.datasketches_merge_ns {
            figures.set_f64(&format!("datasketches_{}_merge_ns", result.kind), ns);
        }
    }
    figures.print_json_line();
    Ok(())
}
