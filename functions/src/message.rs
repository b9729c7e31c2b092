//! What a function instance is handed and what it gives back, for WebAssembly and built-in
//! functions alike.

use crate::error::{FunctionError, Result};
use crate::metering::InstanceMetrics;

/// Where a message sits in its topic: (ledger, entry, index in the entry's batch, partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageId {
    pub ledger_id: u64,
    pub entry_id: u64,
    pub batch_index: i32,
    pub partition: i32,
}

/// One input message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub properties: Vec<(String, String)>,
    pub event_time_ms: i64,
    pub id: MessageId,
}

impl Message {
    /// A message with only a payload (and optionally a key), for tests and benchmarks.
    pub fn new(topic: &str, key: Option<&[u8]>, payload: &[u8]) -> Self {
        Message {
            topic: topic.to_owned(),
            key: key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
            ..Message::default()
        }
    }
}

/// One message a function emitted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Output {
    /// `None`: the function's default output topic.
    pub topic: Option<String>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub properties: Vec<(String, String)>,
}

/// A message of the batch that failed; the others were processed.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageFailure {
    /// Its index in the batch.
    pub index: usize,
    pub error: FunctionError,
}

/// The result of one batch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchOutcome {
    /// Emitted messages, in the order they were emitted.
    pub outputs: Vec<Output>,
    /// Messages that failed, in batch order.
    pub failures: Vec<MessageFailure>,
}

/// A running function, WebAssembly or built-in: what the worker drives.
pub trait FunctionInstance: Send {
    /// Processes a batch in order. Per-message failures are in the outcome; an `Err` means
    /// the instance itself could not go on (its state store failed).
    fn process_batch(&mut self, messages: &[Message]) -> Result<BatchOutcome>;

    /// Writes state kept in memory (sketches) to the store.
    fn flush(&mut self) -> Result<()>;

    /// Counters of this instance since it was created.
    fn metrics(&self) -> InstanceMetrics;
}
