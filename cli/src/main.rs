//! `magnetar`: one binary for every role (bookie, meta, ...), the admin and data commands, and
//! the `perf` benchmarks.

mod bookie_cmd;
mod logging;
mod meta_cmd;
mod perf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "magnetar",
    version,
    about = "Magnetar: stream functions on a replicated log"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a bookie (ledger storage node).
    Bookie(bookie_cmd::BookieArgs),
    /// Run one node of the metadata store (a Raft group).
    Meta(meta_cmd::MetaArgs),
    /// Benchmarks that print figures and end with one JSON line.
    #[command(subcommand)]
    Perf(perf::PerfCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Perf(_) => "warn",
        _ => "info",
    };
    logging::init(default_level);
    match cli.command {
        Command::Bookie(args) => bookie_cmd::run(args),
        Command::Meta(args) => meta_cmd::run(args),
        Command::Perf(command) => perf::run(command),
    }
}
