//! `magnetar perf ...`: benchmarks as commands. Each prints human-readable figures while it
//! runs and ends with exactly one JSON line on stdout holding every figure.

mod bookie;
mod ledger;
mod meta;
mod raw_fsync;
mod report;
mod sketches;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum PerfCommand {
    /// One bookie: adds/s, MB/s, add latency, fsyncs, beside the disk's raw fdatasync latency.
    Bookie(bookie::BookiePerfArgs),
    /// Replicated adds through the ledger client: adds/s and add latency at E/Qw/Qa.
    Ledger(ledger::LedgerPerfArgs),
    /// The metadata store: writes/s, reads/s, latency, leader failover time.
    Meta(meta::MetaPerfArgs),
    /// Sketch update and merge costs, ours beside the `datasketches` crate.
    Sketches(sketches::SketchesPerfArgs),
}

pub fn run(command: PerfCommand) -> anyhow::Result<()> {
    match command {
        PerfCommand::Bookie(args) => bookie::run(args),
        PerfCommand::Ledger(args) => ledger::run(args),
        PerfCommand::Meta(args) => meta::run(args),
        PerfCommand::Sketches(args) => sketches::run(args),
    }
}
