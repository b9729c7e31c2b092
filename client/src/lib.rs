//! The Rust client library: producers, consumers and readers over the broker's gRPC protocol.
//! It depends only on `magnetar-proto`, so a user's program links nothing of the servers.
//!
//! ```no_run
//! use magnetar_client::{Client, SubscriptionType};
//!
//! # async fn example() -> Result<(), magnetar_client::ClientError> {
//! let client = Client::connect("localhost:6660").await?;
//! let producer = client.producer("my-topic").create().await?;
//! let id = producer.send("hello").await?;
//! println!("stored as {id}");
//!
//! let consumer = client
//!     .subscribe("my-topic", "my-subscription", SubscriptionType::Shared)
//!     .await?;
//! let message = consumer.receive().await?;
//! consumer.ack(&message).await?;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/pubsub.rs` runs as it is against a standalone Magnetar:
//! `cargo run -p magnetar-client --example pubsub`.
//!
//! # What it does for you
//! - Lookup: any broker's address will do; each topic is served by the broker the cluster
//!   assigns, and the client follows it when it moves.
//! - Partitioned topics: one stream per partition; keyed messages go to the partition of
//!   their key's hash, others round robin by batch.
//! - Batching (on by default: 1000 messages, 128 KiB or 1 ms) and in-order receipts.
//! - Reconnection with backoff after a broker loss: producers resend what was not
//!   acknowledged (the broker's deduplication stores it once); consumers resubscribe and the
//!   broker redelivers what was not acknowledged.
//! - Negative acknowledgements with a delay, an ack timeout, and a dead-letter topic after a
//!   number of redeliveries, as in Pulsar's client.
//!
//! # Layout
//! - [`connection`]: [`Client`], lookups, connections, backoff.
//! - [`producer`]: [`Producer`] and its builder.
//! - [`consumer`]: [`Consumer`], [`Reader`] and their builders.
//! - [`message`]: [`OutgoingMessage`], [`ReceivedMessage`], [`MessageId`].
//! - [`error`]: [`ClientError`] with the broker's stable codes.
//! - `unpack`: a delivered entry (a stored batch) decoded message by message, over the
//!   proto crate's `stored_batch::MessageRecords`.

pub mod connection;
pub mod consumer;
pub mod error;
pub mod message;
pub mod producer;
mod unpack;

pub use connection::Client;
pub use consumer::{
    Consumer, ConsumerBuilder, DeadLetterPolicy, InitialPosition, Reader, ReaderBuilder,
    SubscriptionType,
};
pub use error::{ClientError, Result};
pub use magnetar_proto::broker::ErrorCode;
pub use message::{MessageId, OutgoingMessage, ReceivedMessage};
pub use producer::{Producer, ProducerBuilder, SendReceipt};
