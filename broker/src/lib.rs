//! The broker: stateless owner of topic bundles. It will hold managed ledgers (a topic's log as
//! a list of ledgers), cursors, subscriptions and dispatch, the client-facing gRPC service, and
//! the HTTP admin API.
