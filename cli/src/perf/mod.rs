//! `magnetar perf ...`: benchmarks as commands. Each prints human-readable figures while it
//! runs and ends with exactly one JSON line on stdout holding every figure.

mod bookie;
mod cpu_usage;
mod function;
mod ledger;
mod meta;
mod pacer;
mod pubsub;
mod raw_fsync;
mod report;
mod sketches;
mod socket_floor;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum PerfCommand {
    /// One bookie: adds/s, MB/s, add latency, fsyncs, beside the disk's raw fdatasync latency.
    Bookie(bookie::BookiePerfArgs),
    /// Replicated adds through the ledger client: adds/s and add latency at E/Qw/Qa.
    Ledger(ledger::LedgerPerfArgs),
    /// The metadata store: writes/s, reads/s, latency, leader failover time.
    Meta(meta::MetaPerfArgs),
    /// Publish through the client: msgs/s, MB/s, publish latency.
    Produce(pubsub::PubSubPerfArgs),
    /// Consume through the client: msgs/s (publishes too, so there is something to read).
    Consume(pubsub::PubSubPerfArgs),
    /// Publish and consume at once: rates, publish and end-to-end latency.
    E2e(pubsub::PubSubPerfArgs),
    /// Sketch update and merge costs, ours beside the `datasketches` crate.
    Sketches(sketches::SketchesPerfArgs),
    /// One function instance in process: msgs/s, call overhead, start time, memory.
    Function(function::FunctionPerfArgs),
}

pub fn run(command: PerfCommand) -> anyhow::Result<()> {
    match command {
        PerfCommand::Bookie(args) => bookie::run(args),
        PerfCommand::Ledger(args) => ledger::run(args),
        PerfCommand::Meta(args) => meta::run(args),
        PerfCommand::Sketches(args) => sketches::run(args),
        PerfCommand::Function(args) => function::run(args),
        PerfCommand::Produce(args) => pubsub::run(pubsub::Mode::Produce, args),
        PerfCommand::Consume(args) => {
            // An existing topic of a running cluster is read as it is; otherwise there is
            // nothing to read, so the run publishes too.
            let mode = if args.topic.is_some() && args.service_url.is_some() {
                pubsub::Mode::Consume
            } else {
                pubsub::Mode::EndToEnd
            };
            pubsub::run(mode, args)
        }
        PerfCommand::E2e(args) => pubsub::run(pubsub::Mode::EndToEnd, args),
    }
}
