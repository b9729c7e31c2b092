//! The bookie: Magnetar's durable ledger storage node, as Apache BookKeeper's bookie is.
//!
//! A ledger is an append-only sequence of entries with a single writer. A bookie stores the
//! entries it is sent, acknowledging each only once it is on disk (journal, group commit,
//! fdatasync), serves reads, and fences a ledger on request so a crashed writer's successor can
//! close it safely. Replication across bookies is the job of the ledger client (module
//! [`ledger`], used by the broker); a bookie knows only its own copy.
//!
//! Write path: gRPC `AddEntries` -> checks (size, CRC32C, token, fencing) -> journal queue ->
//! one write + one fdatasync per group -> write cache -> answer. In the background the flusher
//! writes the cache to entry logs and the RocksDB index and moves the journal checkpoint; the
//! compactor reclaims entry logs of deleted ledgers.
//!
//! # Layout
//! - [`config`]: [`BookieConfig`], every knob with its default and range.
//! - [`error`]: [`BookieError`] and its stable wire codes.
//! - [`entry`]: the entry checksum shared by writers, bookies and readers.
//! - [`journal_record`]: journal file format (encode, decode, torn-tail detection); no I/O.
//! - [`directory`]: listing id-named files and syncing a directory.
//! - [`journal`]: the group-commit writer thread.
//! - [`journal_file`]: journal files made ahead (zero-filled or recycled) and retired.
//! - [`write_cache`]: entries durable in the journal, not yet in an entry log.
//! - `write_back`: pages written to the disk ahead of an fdatasync, in bounded pieces.
//! - `write_pace`: how fast the flusher and the compactor write, in steps rather than one
//!   burst that holds the disk and a CPU from the add path.
//! - [`entry_log`]: append-only entry log files and their reader.
//! - [`index`]: RocksDB: entry locations, ledger metadata, log usage, checkpoint.
//! - [`storage`]: ledger storage tying the above together; flusher and journal replay.
//! - [`compaction`]: garbage collection of entry logs.
//! - [`disk`]: free space and the read-only state.
//! - `thread_priority`: background threads run below the threads that answer adds.
//! - [`server`]: the gRPC service.
//! - [`bookie`]: [`RunningBookie`], start and orderly shutdown.
//! - [`client`]: [`BookieClient`] for one bookie.
//! - [`shared_add_stream`]: one AddEntries stream per bookie shared by every ledger written
//!   there, its results routed back by ledger id.
//! - [`request_merge`]: add requests queued together merged into one message, each ledger with
//!   its own writer token; no I/O.
//! - [`ledger`]: the ledger client ([`LedgerClient`]): bookie registration, ensemble
//!   placement, quorum logic, the single writer with ensemble changes, readers, recovery with
//!   fencing, deletion. Everything that replicates a ledger across bookies lives there.

pub mod bookie;
pub mod client;
pub mod compaction;
pub mod config;
pub mod directory;
pub mod disk;
pub mod entry;
pub mod entry_log;
pub mod error;
pub mod index;
pub mod journal;
pub mod journal_file;
pub mod journal_record;
pub mod ledger;
pub mod request_merge;
pub mod server;
pub mod shared_add_stream;
pub mod storage;
mod thread_priority;
mod write_back;
pub mod write_cache;
mod write_pace;

pub use bookie::RunningBookie;
pub use client::{AddStream, BookieClient, LacReading};
pub use config::BookieConfig;
pub use entry::{entry_checksum_ok, entry_crc32c, new_entry};
pub use error::{BookieError, Result};
pub use ledger::{
    LedgerClient, LedgerClientConfig, LedgerEntry, LedgerError, LedgerMetadata, LedgerOptions,
    LedgerReader, LedgerState, LedgerWriter,
};
pub use shared_add_stream::{RouteEvent, SharedAddStream, Subscription, WeakSharedAddStream};
