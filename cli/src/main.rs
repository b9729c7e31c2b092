//! `magnetar`: one binary for every role (bookie, meta, ...), the admin and data commands, and
//! the `perf` benchmarks.

mod admin_cmd;
mod bookie_cmd;
mod broker_cmd;
mod client_cmd;
mod logging;
mod meta_cmd;
mod perf;
mod standalone;

use clap::{Parser, Subcommand};

// Every role moves many small buffers between threads (messages, entries, protocol frames).
// glibc's allocator serialises such frees on its arena locks and spends time consolidating;
// mimalloc keeps per-thread heaps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Run everything in one process: metadata store, bookie and broker. Start here.
    Standalone(standalone::StandaloneArgs),
    /// Run a broker (serves topics to clients; keeps no state of its own).
    Broker(broker_cmd::BrokerArgs),
    /// Publish messages to a topic.
    Produce(client_cmd::ProduceArgs),
    /// Receive (and acknowledge) messages from a subscription.
    Consume(client_cmd::ConsumeArgs),
    /// Run a bookie (ledger storage node).
    Bookie(bookie_cmd::BookieArgs),
    /// Run one node of the metadata store (a Raft group).
    Meta(meta_cmd::MetaArgs),
    /// Tenants: list, create, delete (through a broker's admin API).
    Tenants(admin_cmd::TenantsArgs),
    /// Namespaces and their policies: retention, message TTL, backlog quota.
    Namespaces(admin_cmd::NamespacesArgs),
    /// Topics and subscriptions: create, delete, stats, reset, skip, peek.
    Topics(admin_cmd::TopicsArgs),
    /// Benchmarks that print figures and end with one JSON line.
    #[command(subcommand)]
    Perf(perf::PerfCommand),
}

fn main() -> anyhow::Result<()> {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Perf(_)
        | Command::Produce(_)
        | Command::Consume(_)
        | Command::Tenants(_)
        | Command::Namespaces(_)
        | Command::Topics(_) => "warn",
        _ => "info",
    };
    logging::init(default_level);
    match cli.command {
        Command::Standalone(args) => standalone::run(args),
        Command::Broker(args) => broker_cmd::run(args),
        Command::Produce(args) => client_cmd::produce(args),
        Command::Consume(args) => client_cmd::consume(args),
        Command::Bookie(args) => bookie_cmd::run(args),
        Command::Meta(args) => meta_cmd::run(args),
        Command::Tenants(args) => admin_cmd::tenants(args),
        Command::Namespaces(args) => admin_cmd::namespaces(args),
        Command::Topics(args) => admin_cmd::topics(args),
        Command::Perf(command) => perf::run(command),
    }
}

/// With transparent huge pages, the first touch of fresh heap memory zeroes 2 MiB at once; the
/// allocator takes fresh memory often enough that this showed as stalls of tens of
/// milliseconds in publish latency. 4 KiB pages spread that cost. Best effort: an old kernel
/// without the setting just keeps its default.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
