//! Messages as an application sends and receives them, and their ids.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use magnetar_proto::broker;
use magnetar_proto::prost::{DecodeError, Message as _};

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

/// Why a delivered entry could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UnpackError {
    #[error("the entry is not a message batch: {0}")]
    Decode(#[from] DecodeError),
    #[error("index {index} (or a repeat of it) is not in a batch of {message_count}")]
    NotInBatch { index: u32, message_count: usize },
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
    /// The messages of one delivered entry: the broker sends the stored batch as it is, with
    /// the indexes meant for this consumer when it is not all of them.
    pub(crate) fn unpack(
        entry: broker::EntryDelivery,
        topic: &Arc<str>,
        partition: i32,
    ) -> Result<Vec<ReceivedMessage>, UnpackError> {
        let batch = broker::StoredBatch::decode(entry.batch)?;
        let producer_name: Arc<str> = Arc::from(batch.producer_name);
        let message_count = batch.messages.len();
        let indexes: Vec<u32> = if entry.indexes.is_empty() {
            (0..message_count as u32).collect()
        } else {
            entry.indexes
        };
        let mut slots: Vec<Option<broker::Message>> =
            batch.messages.into_iter().map(Some).collect();
        let mut messages = Vec::with_capacity(indexes.len());
        for (at, index) in indexes.into_iter().enumerate() {
            let Some(message) = slots.get_mut(index as usize).and_then(Option::take) else {
                return Err(UnpackError::NotInBatch {
                    index,
                    message_count,
                });
            };
            messages.push(ReceivedMessage {
                id: MessageId {
                    partition,
                    ledger_id: entry.ledger_id,
                    entry_id: entry.entry_id,
                    batch_index: index as i32,
                },
                topic: topic.clone(),
                payload: message.payload,
                key: message.key,
                properties: message.properties,
                event_time_ms: message.event_time_ms,
                publish_time_ms: batch.publish_time_ms,
                producer_name: producer_name.clone(),
                sequence_id: batch.first_sequence_id + u64::from(index),
                redelivery_count: entry.redelivery_counts.get(at).copied().unwrap_or(0),
            });
        }
        Ok(messages)
    }

    /// The payload as UTF-8 text, lossily.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(keys: &[&str]) -> Bytes {
        broker::StoredBatch {
            producer_name: "alpha".into(),
            first_sequence_id: 10,
            publish_time_ms: 1234,
            messages: keys
                .iter()
                .map(|key| broker::Message {
                    payload: Bytes::from(format!("payload-{key}")),
                    key: Some(key.to_string()),
                    ..broker::Message::default()
                })
                .collect(),
        }
        .encode_to_vec()
        .into()
    }

    #[test]
    fn a_whole_entry_unpacks_into_every_message_of_its_batch() {
        let topic: Arc<str> = Arc::from("persistent://public/default/t");
        let entry = broker::EntryDelivery {
            ledger_id: 3,
            entry_id: 9,
            batch: stored(&["a", "b", "c"]),
            ..broker::EntryDelivery::default()
        };
        let messages = ReceivedMessage::unpack(entry, &topic, 2).expect("valid");
        assert_eq!(messages.len(), 3);
        for (index, message) in messages.iter().enumerate() {
            assert_eq!(message.id.batch_index, index as i32);
            assert_eq!(
                (
                    message.id.ledger_id,
                    message.id.entry_id,
                    message.id.partition
                ),
                (3, 9, 2)
            );
            assert_eq!(message.sequence_id, 10 + index as u64);
            assert_eq!(&*message.producer_name, "alpha");
            assert_eq!(message.publish_time_ms, 1234);
            assert_eq!(message.redelivery_count, 0);
        }
        assert_eq!(messages[1].key.as_deref(), Some("b"));
        assert_eq!(messages[2].text(), "payload-c");
    }

    #[test]
    fn a_partial_entry_carries_only_its_indexes_with_their_counts() {
        let topic: Arc<str> = Arc::from("t");
        let entry = broker::EntryDelivery {
            ledger_id: 1,
            entry_id: 0,
            batch: stored(&["a", "b", "c", "d"]),
            indexes: vec![1, 3],
            redelivery_counts: vec![2, 0],
        };
        let messages = ReceivedMessage::unpack(entry, &topic, -1).expect("valid");
        let seen: Vec<(i32, u32)> = messages
            .iter()
            .map(|message| (message.id.batch_index, message.redelivery_count))
            .collect();
        assert_eq!(seen, vec![(1, 2), (3, 0)]);
        assert_eq!(messages[1].key.as_deref(), Some("d"));
    }

    #[test]
    fn a_damaged_entry_or_a_foreign_index_is_an_error() {
        let topic: Arc<str> = Arc::from("t");
        let damaged = broker::EntryDelivery {
            batch: Bytes::from_static(&[0xff, 0xff, 0xff]),
            ..broker::EntryDelivery::default()
        };
        assert!(ReceivedMessage::unpack(damaged, &topic, -1).is_err());
        let foreign = broker::EntryDelivery {
            batch: stored(&["a"]),
            indexes: vec![5],
            ..broker::EntryDelivery::default()
        };
        assert!(ReceivedMessage::unpack(foreign, &topic, -1).is_err());
    }
}
