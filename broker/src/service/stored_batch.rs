//! What a subscription needs to know of a stored batch before it hands the entry out. Entries
//! go to consumers as they were read (see `EntryDelivery` in broker.proto), so dispatch never
//! builds the batch's messages: it counts them by walking the encoded fields, and decodes the
//! batch only when Key_Shared needs each message's key.

use bytes::Bytes;
use magnetar_proto::broker::StoredBatch;
use magnetar_proto::prost::{DecodeError, Message as _};
use magnetar_proto::stored_batch::MessageRecords;

use crate::dispatch::key_hash;

/// An entry as a subscription keeps it until every message of it is acknowledged.
#[derive(Debug, Clone)]
pub struct ReadBatch {
    /// The stored `StoredBatch` bytes.
    pub bytes: Bytes,
    pub message_count: u32,
    /// Each message's key hash (the empty key for a message without one); filled only for
    /// Key_Shared.
    pub key_hashes: Vec<u32>,
}

impl ReadBatch {
    /// Reads what dispatch needs of `bytes`; `with_keys` also hashes each message's key.
    pub fn parse(bytes: Bytes, with_keys: bool) -> Result<Self, DecodeError> {
        if with_keys {
            let batch = StoredBatch::decode(bytes.clone())?;
            let key_hashes = batch
                .messages
                .iter()
                .map(|message| key_hash(message.key.as_deref().unwrap_or("").as_bytes()))
                .collect();
            return Ok(Self {
                bytes,
                message_count: batch.messages.len() as u32,
                key_hashes,
            });
        }
        Ok(Self {
            message_count: message_count(&bytes)?,
            bytes,
            key_hashes: Vec::new(),
        })
    }
}

/// How many messages an encoded `StoredBatch` holds, checking the wire format of every
/// top-level field on the way.
pub fn message_count(bytes: &Bytes) -> Result<u32, DecodeError> {
    MessageRecords::new(bytes.clone()).try_fold(0, |count, record| record.map(|_| count + 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use magnetar_proto::broker::Message;

    fn encoded(keys: &[Option<&str>]) -> Bytes {
        StoredBatch {
            producer_name: "producer".into(),
            first_sequence_id: 7,
            publish_time_ms: 1_700_000_000_000,
            messages: keys
                .iter()
                .map(|key| Message {
                    payload: Bytes::from_static(b"payload"),
                    key: key.map(str::to_string),
                    ..Message::default()
                })
                .collect(),
        }
        .encode_to_vec()
        .into()
    }

    #[test]
    fn counts_messages_without_decoding_them() {
        for count in [0usize, 1, 3, 300] {
            let keys = vec![None; count];
            assert_eq!(message_count(&encoded(&keys)).expect("valid"), count as u32);
        }
    }

    #[test]
    fn keys_are_hashed_only_when_asked_for() {
        let bytes = encoded(&[Some("a"), None, Some("b")]);
        let plain = ReadBatch::parse(bytes.clone(), false).expect("valid");
        assert_eq!(plain.message_count, 3);
        assert!(plain.key_hashes.is_empty());
        let keyed = ReadBatch::parse(bytes, true).expect("valid");
        assert_eq!(
            keyed.key_hashes,
            vec![key_hash(b"a"), key_hash(b""), key_hash(b"b")]
        );
    }

    #[test]
    fn malformed_bytes_are_refused() {
        let bytes = encoded(&[Some("a"), Some("b")]);
        let truncated = &bytes[..bytes.len() - 2];
        assert!(message_count(&Bytes::copy_from_slice(truncated)).is_err());
        assert!(message_count(&Bytes::from_static(&[0xff, 0xff, 0xff])).is_err());
        assert!(ReadBatch::parse(Bytes::copy_from_slice(truncated), true).is_err());
    }
}
