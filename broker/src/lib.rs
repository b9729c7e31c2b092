//! The broker: stateless owner of topic bundles. It holds managed ledgers (a topic's log as a
//! list of ledgers), cursors, subscriptions and dispatch, the client-facing gRPC service, and
//! the HTTP admin API. Every durable fact lives in bookies and the metadata store.
//!
//! # Layout
//! - [`managed_ledger`]: a topic's log over the ledger client: ownership and fencing, appends,
//!   rollover, cursors and their persistence, retention and the entry cache.
//! - [`topic_name`]: Pulsar's topic names, bare names and partitions.
//! - [`dispatch`]: which consumer gets the next message, for each subscription type.
//! - [`bundles`]: a namespace's hash ranges, the unit of topic ownership.
//! - [`dedup`]: producer sequence ids, so a resent message is stored once.
//! - [`service`]: the broker as a service: bundle ownership and lookup, served topics with
//!   their producers and subscriptions, the gRPC client protocol, a running broker.
//! - [`admin`]: the HTTP admin API (tenants, namespaces, topics, subscriptions), Prometheus
//!   metrics at `/metrics`, and the small HTTP client the CLI and tests use.
//! - [`latency`]: a fixed-bucket latency histogram for publish latencies.

pub mod admin;
pub mod bundles;
pub mod dedup;
pub mod dispatch;
pub mod latency;
pub mod managed_ledger;
pub mod service;
pub mod topic_name;

pub use dispatch::{ConsumerSlot, Dispatcher, SubscriptionType};
pub use service::{BrokerConfig, BrokerError, BrokerService, RunningBroker};
pub use topic_name::{InvalidTopicName, TopicName};
