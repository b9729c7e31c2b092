//! The message records of an encoded `StoredBatch`, walked without building the messages. A
//! broker counts them to dispatch an entry it never decodes; a client decodes them one at a
//! time as its application takes them.

use prost::bytes::{Buf, Bytes};
use prost::encoding::{decode_key, skip_field, DecodeContext, WireType};
use prost::DecodeError;

/// `StoredBatch.messages`' field number.
const MESSAGES_FIELD: u32 = 4;

/// Each message record (an encoded `Message`) of an encoded `StoredBatch`, in order, sharing
/// the batch's buffer; other fields are checked and skipped. After an error it ends.
pub struct MessageRecords {
    rest: Bytes,
    failed: bool,
}

impl MessageRecords {
    pub fn new(batch: Bytes) -> Self {
        Self {
            rest: batch,
            failed: false,
        }
    }
}

impl Iterator for MessageRecords {
    type Item = Result<Bytes, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed && self.rest.has_remaining() {
            let outcome = decode_key(&mut self.rest).and_then(|(tag, wire_type)| {
                if tag == MESSAGES_FIELD && wire_type == WireType::LengthDelimited {
                    let mut record = Bytes::new();
                    prost::encoding::bytes::merge(
                        wire_type,
                        &mut record,
                        &mut self.rest,
                        DecodeContext::default(),
                    )?;
                    Ok(Some(record))
                } else {
                    skip_field(wire_type, tag, &mut self.rest, DecodeContext::default())?;
                    Ok(None)
                }
            });
            match outcome {
                Ok(Some(record)) => return Some(Ok(record)),
                Ok(None) => {}
                Err(error) => {
                    self.failed = true;
                    return Some(Err(error));
                }
            }
        }
        None
    }
}
