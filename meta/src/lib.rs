//! The metadata store: a Raft-replicated key-value service in ZooKeeper's place. Every other
//! role keeps its shared truth here (bookies alive, ledger ensembles, topic ledgers and
//! cursors, bundle ownership, function assignments).
//!
//! What it offers: `/`-separated keys with byte values (1 MiB at most); a version per key (the
//! revision of its last change) and a global revision; get, put and delete, each optionally
//! conditional on a version; paged lists by prefix; multi-key transactions (compares, then
//! puts and deletes applied atomically); watches from any retained revision, in order and
//! without gaps; sessions with a TTL whose ephemeral keys vanish when the session ends; a
//! sequential-id helper. Reads and writes are linearizable from any node.
//!
//! How: raft-rs `RawNode` on one thread per node, RocksDB for the Raft log, hard state and
//! state machine (written atomically per Ready), tonic for clients and peers.
//!
//! # Layout
//! - [`config`]: [`MetaConfig`], every knob with its default, and `validate()`.
//! - [`errors`]: [`MetaError`] and its stable wire codes.
//! - [`keys`]: what a well-formed key, prefix and value is.
//! - [`codec`]: the checksummed, versioned envelope of every record on disk.
//! - [`state_machine`]: the replicated state and how a committed command changes it (pure).
//! - [`session`]: the leader's session-expiry decisions (pure).
//! - [`watch`]: the bounded log of recent events that watchers read from.
//! - [`raft_log`]: the Raft log as raft-rs reads it (`raft::Storage`).
//! - [`store`]: RocksDB key layout, loading at startup, atomic batches.
//! - [`handle`]: [`node::NodeHandle`], the requests a node takes and the state it shares.
//! - [`node`]: the Raft thread: proposals, batching, Ready handling, reads, snapshots.
//! - [`transport`]: Raft messages to peers over gRPC.
//! - [`server`]: the gRPC services, forwarding to the leader, and [`MetaServer`] to start a
//!   node in-process.
//! - [`client`]: [`MetaClient`], sessions and watch streams.

pub mod client;
pub mod codec;
pub mod config;
pub mod errors;
pub mod handle;
pub mod keys;
pub mod node;
pub mod raft_log;
pub mod server;
pub mod session;
pub mod state_machine;
pub mod store;
pub mod transport;
pub mod watch;

pub use client::{delete_op, put_op, version_is, ListPage, MetaClient, Session, WatchStream};
pub use config::{parse_peers, MetaConfig};
pub use errors::{MetaError, Result};
pub use magnetar_proto::meta::{event, Event, KeyValue, Member};
pub use server::MetaServer;
