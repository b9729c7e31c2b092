//! The broker: stateless owner of topic bundles. It holds managed ledgers (a topic's log as a
//! list of ledgers), cursors, subscriptions and dispatch, the client-facing gRPC service, and
//! the HTTP admin API. Every durable fact lives in bookies and the metadata store.
//!
//! # Layout
//! - [`managed_ledger`]: a topic's log: positions, cursor acknowledgement state, retention,
//!   rollover and the entry cache.

pub mod managed_ledger;
