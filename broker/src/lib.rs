//! The broker: stateless owner of topic bundles. It holds managed ledgers (a topic's log as a
//! list of ledgers), cursors, subscriptions and dispatch, the client-facing gRPC service, and
//! the HTTP admin API. Every durable fact lives in bookies and the metadata store.
//!
//! # Layout
//! - [`managed_ledger`]: a topic's log over the ledger client: ownership and fencing, appends,
//!   rollover, cursors and their persistence, retention and the entry cache.

pub mod managed_ledger;
