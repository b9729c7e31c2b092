//! Magnetar's wire protocols and the Rust code generated from them.
//!
//! Every service speaks gRPC (tonic) with prost messages; the `.proto` files under `proto/` are
//! the source of truth and are compiled at build time with a vendored protoc.
//!
//! # Layout
//! - [`bookie`]: the storage node's service (adds, reads, fencing, ledger deletion, info).
//! - [`meta`]: the metadata store's client and peer services, and its internal records.
//! - [`broker`]: the client protocol: lookup, producers, consumers and readers, and the
//!   stored form of a topic's entries.
//! - [`stored_batch`]: the message records of a stored batch, walked without decoding them.
//!
//! Byte fields are generated as [`bytes::Bytes`](prost::bytes::Bytes) so payloads move through
//! the servers without copies.

/// The bookie's service: `proto/bookie.proto`.
pub mod bookie {
    tonic::include_proto!("magnetar.bookie");
}

/// The metadata store's services: `proto/meta.proto`.
pub mod meta {
    tonic::include_proto!("magnetar.meta");
}

/// The broker's client protocol: `proto/broker.proto`.
pub mod broker {
    tonic::include_proto!("magnetar.broker");

    impl ErrorCode {
        /// Whether a client answers it by looking the topic up again and retrying; a producer
        /// resends from its oldest unacknowledged batch.
        pub fn is_retryable(self) -> bool {
            matches!(
                self,
                ErrorCode::NotOwner | ErrorCode::ServiceUnavailable | ErrorCode::TooBusy
            )
        }
    }
}

pub mod stored_batch;

pub use prost;
pub use tonic;
