//! Messages as an application sends and receives them, and their ids.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use magnetar_proto::broker;

/// A message's place in its topic: (ledger, entry, index in the entry's batch), and the
/// partition (-1 for a topic that is not partitioned). Ids order as the topic does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    pub partition: i32,
    pub ledger_id: u64,
    pub entry_id: i64,
    pub batch_index: i32,
}

impl MessageId {
    /// Before the first message of the topic (for readers and seeks).
    pub const EARLIEST: MessageId = MessageId {
        partition: -1,
        ledger_id: 0,
        entry_id: -1,
        batch_index: -1,
    };
    /// After the last message published so far.
    pub const LATEST: MessageId = MessageId {
        partition: -1,
        ledger_id: u64::MAX,
        entry_id: i64::MAX,
        batch_index: -1,
    };

    pub(crate) fn from_wire(id: &broker::MessageId, partition: i32) -> Self {
        Self {
            partition,
            ledger_id: id.ledger_id,
            entry_id: id.entry_id,
            batch_index: id.batch_index,
        }
    }

    pub(crate) fn to_wire(self) -> broker::MessageId {
        broker::MessageId {
            ledger_id: self.ledger_id,
            entry_id: self.entry_id,
            batch_index: self.batch_index,
            partition: self.partition,
        }
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}:{}:{}:{}",
            self.ledger_id, self.entry_id, self.batch_index, self.partition
        )
    }
}

/// A message to send: payload, optional key, properties and event time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub payload: Bytes,
    pub key: Option<String>,
    pub properties: HashMap<String, String>,
    pub event_time_ms: u64,
}

impl OutgoingMessage {
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            ..Self::default()
        }
    }

    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    pub fn with_event_time_ms(mut self, event_time_ms: u64) -> Self {
        self.event_time_ms = event_time_ms;
        self
    }

    pub(crate) fn encoded_len_estimate(&self) -> usize {
        self.payload.len()
            + self.key.as_ref().map_or(0, String::len)
            + self
                .properties
                .iter()
                .map(|(name, value)| name.len() + value.len() + 4)
                .sum::<usize>()
            + 16
    }

    pub(crate) fn into_wire(self) -> broker::Message {
        broker::Message {
            payload: self.payload,
            key: self.key,
            properties: self.properties,
            event_time_ms: self.event_time_ms,
        }
    }
}

impl<T: Into<Bytes>> From<T> for OutgoingMessage {
    fn from(payload: T) -> Self {
        OutgoingMessage::new(payload)
    }
}

/// A message delivered to a consumer or reader.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub id: MessageId,
    /// The topic (the partition's name for a partitioned topic).
    pub topic: Arc<str>,
    pub payload: Bytes,
    pub key: Option<String>,
    pub properties: HashMap<String, String>,
    pub event_time_ms: u64,
    pub publish_time_ms: u64,
    pub producer_name: Arc<str>,
    pub sequence_id: u64,
    /// How many times this message was delivered to the subscription before.
    pub redelivery_count: u32,
}

impl ReceivedMessage {
    /// The payload as UTF-8 text, lossily.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}
