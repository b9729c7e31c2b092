//! A delivered entry, message by message. The broker sends each entry as it is stored (a
//! `StoredBatch`, see broker.proto), so the client does the unpacking. Messages are decoded one
//! at a time as the consumer takes them: a batch of a thousand messages never becomes a
//! thousand-element vector first.

use std::sync::Arc;

use magnetar_proto::broker::{self, EntryDelivery, StoredBatchHeader};
use magnetar_proto::prost::{DecodeError, Message as _};
use magnetar_proto::stored_batch::MessageRecords;

use crate::message::{MessageId, ReceivedMessage};

/// Why a delivered entry could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UnpackError {
    #[error("the entry is not a message batch: {0}")]
    Decode(#[from] DecodeError),
    #[error("index {index} is not in the batch, or not in ascending order")]
    NotInBatch { index: u32 },
}

/// The messages of one delivered entry, in index order. After an error it ends.
pub(crate) struct EntryMessages {
    /// The batch's message records not read yet, with their indexes.
    records: std::iter::Enumerate<MessageRecords>,
    /// The indexes delivered; `None` for all of them.
    indexes: Option<Vec<u32>>,
    redelivery_counts: Vec<u32>,
    /// Messages handed out so far.
    delivered: usize,
    failed: bool,
    topic: Arc<str>,
    partition: i32,
    ledger_id: u64,
    entry_id: i64,
    producer_name: Arc<str>,
    first_sequence_id: u64,
    publish_time_ms: u64,
}

impl EntryMessages {
    pub(crate) fn new(
        entry: EntryDelivery,
        topic: &Arc<str>,
        partition: i32,
    ) -> Result<Self, UnpackError> {
        let header = StoredBatchHeader::decode(entry.batch.clone())?;
        Ok(Self {
            records: MessageRecords::new(entry.batch).enumerate(),
            indexes: (!entry.indexes.is_empty()).then_some(entry.indexes),
            redelivery_counts: entry.redelivery_counts,
            delivered: 0,
            failed: false,
            topic: topic.clone(),
            partition,
            ledger_id: entry.ledger_id,
            entry_id: entry.entry_id,
            producer_name: Arc::from(header.producer_name),
            first_sequence_id: header.first_sequence_id,
            publish_time_ms: header.publish_time_ms,
        })
    }

    fn message(&self, index: u32, message: broker::Message) -> ReceivedMessage {
        ReceivedMessage {
            id: MessageId {
                partition: self.partition,
                ledger_id: self.ledger_id,
                entry_id: self.entry_id,
                batch_index: index as i32,
            },
            topic: self.topic.clone(),
            payload: message.payload,
            key: message.key,
            properties: message.properties,
            event_time_ms: message.event_time_ms,
            publish_time_ms: self.publish_time_ms,
            producer_name: self.producer_name.clone(),
            sequence_id: self.first_sequence_id + u64::from(index),
            redelivery_count: self
                .redelivery_counts
                .get(self.delivered)
                .copied()
                .unwrap_or(0),
        }
    }

    fn fail(&mut self, error: UnpackError) -> Option<Result<ReceivedMessage, UnpackError>> {
        self.failed = true;
        Some(Err(error))
    }
}

impl Iterator for EntryMessages {
    type Item = Result<ReceivedMessage, UnpackError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let wanted = match &self.indexes {
            None => None,
            Some(indexes) => Some(*indexes.get(self.delivered)?),
        };
        loop {
            let (index, record) = match self.records.next() {
                Some((index, Ok(record))) => (index as u32, record),
                None => {
                    return match wanted {
                        None => None,
                        Some(index) => self.fail(UnpackError::NotInBatch { index }),
                    }
                }
                Some((_, Err(error))) => return self.fail(error.into()),
            };
            if wanted.is_some_and(|wanted| wanted != index) {
                continue;
            }
            return match broker::Message::decode(record) {
                Ok(message) => {
                    let received = self.message(index, message);
                    self.delivered += 1;
                    Some(Ok(received))
                }
                Err(error) => self.fail(error.into()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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

    fn unpack(entry: EntryDelivery) -> Result<Vec<ReceivedMessage>, UnpackError> {
        let topic: Arc<str> = Arc::from("persistent://public/default/t");
        EntryMessages::new(entry, &topic, 2)?.collect()
    }

    #[test]
    fn a_whole_entry_unpacks_into_every_message_of_its_batch() {
        let entry = EntryDelivery {
            ledger_id: 3,
            entry_id: 9,
            batch: stored(&["a", "b", "c"]),
            ..EntryDelivery::default()
        };
        let messages = unpack(entry).expect("valid");
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
        let entry = EntryDelivery {
            ledger_id: 1,
            entry_id: 0,
            batch: stored(&["a", "b", "c", "d"]),
            indexes: vec![1, 3],
            redelivery_counts: vec![2, 0],
        };
        let messages = unpack(entry).expect("valid");
        let seen: Vec<(i32, u32)> = messages
            .iter()
            .map(|message| (message.id.batch_index, message.redelivery_count))
            .collect();
        assert_eq!(seen, vec![(1, 2), (3, 0)]);
        assert_eq!(messages[1].key.as_deref(), Some("d"));
    }

    #[test]
    fn damaged_bytes_and_foreign_or_unordered_indexes_are_errors() {
        let damaged = EntryDelivery {
            batch: Bytes::from_static(&[0xff, 0xff, 0xff]),
            ..EntryDelivery::default()
        };
        assert!(unpack(damaged).is_err());
        let bytes = stored(&["a", "b"]);
        let truncated = EntryDelivery {
            batch: bytes.slice(..bytes.len() - 3),
            ..EntryDelivery::default()
        };
        assert!(unpack(truncated).is_err());
        for indexes in [vec![5], vec![1, 0]] {
            let foreign = EntryDelivery {
                batch: stored(&["a", "b"]),
                indexes,
                ..EntryDelivery::default()
            };
            assert!(matches!(
                unpack(foreign),
                Err(UnpackError::NotInBatch { .. })
            ));
        }
    }
}
