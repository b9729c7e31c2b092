//! A ledger writer to crash: creates a ledger, prints `ledger <id>`, then adds entries
//! pipelined and prints `acked <entry id>` after every 100th completed entry (stdout flushed
//! each time), so a test that SIGKILLs it knows a lower bound of what was acknowledged.
//!
//! Usage: `ledger_writer <meta endpoint> <entries> <entry size> <seed>`.

use std::collections::VecDeque;
use std::io::Write;

use anyhow::{bail, Context};
use magnetar_bookie::ledger::{LedgerClient, LedgerClientConfig, LedgerOptions};
use magnetar_meta::MetaClient;
use magnetar_tests::entry_payload;

/// Entries this writer keeps in flight.
const WINDOW: usize = 2000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [endpoint, entries, size, seed] = args.as_slice() else {
        bail!("usage: ledger_writer <meta endpoint> <entries> <entry size> <seed>");
    };
    let entries: u64 = entries.parse().context("entries")?;
    let size: usize = size.parse().context("entry size")?;
    let seed: u64 = seed.parse().context("seed")?;
    let meta = MetaClient::new(std::slice::from_ref(endpoint))?;
    let client = LedgerClient::new(meta, LedgerClientConfig::default());
    let writer = client.create(LedgerOptions::default()).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "ledger {}", writer.ledger_id())?;
    stdout.flush()?;
    let mut pending = VecDeque::new();
    let mut next = 0;
    while next < entries || !pending.is_empty() {
        if next < entries && pending.len() < WINDOW {
            pending.push_back(
                writer
                    .add_pipelined(entry_payload(seed, next, size))
                    .await?,
            );
            next += 1;
            continue;
        }
        if let Some(add) = pending.pop_front() {
            let entry_id = add.await?;
            if entry_id % 100 == 99 {
                writeln!(stdout, "acked {entry_id}")?;
                stdout.flush()?;
            }
        }
    }
    writer.close().await?;
    writeln!(stdout, "closed")?;
    Ok(())
}
