//! The header the ledger client puts in front of every payload: the ledger's length in bytes
//! up to and including this entry (8 bytes, big-endian), as BookKeeper's entry header does.
//! It lets recovery close a ledger with its exact length from the last entry alone.

use bytes::{BufMut, Bytes, BytesMut};
use magnetar_proto::bookie::Entry;

use super::error::LedgerError;

/// Bytes of the header.
pub const HEADER_BYTES: usize = 8;

/// The stored payload of an entry: header, then the caller's payload.
pub fn frame(length_through_entry: u64, payload: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(HEADER_BYTES + payload.len());
    framed.put_u64(length_through_entry);
    framed.put_slice(payload);
    framed.freeze()
}

/// Splits a stored entry into (ledger length through it, caller's payload).
pub fn unframe(entry: &Entry) -> Result<(u64, Bytes), LedgerError> {
    let stored = &entry.payload;
    if stored.len() < HEADER_BYTES {
        return Err(LedgerError::ReadFailed {
            ledger_id: entry.ledger_id,
            entry_id: entry.entry_id,
            reason: format!("{} bytes is too short for a ledger entry", stored.len()),
        });
    }
    let mut header = [0u8; HEADER_BYTES];
    header.copy_from_slice(&stored[..HEADER_BYTES]);
    Ok((u64::from_be_bytes(header), stored.slice(HEADER_BYTES..)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::new_entry;

    #[test]
    fn frames_round_trip_and_short_payloads_are_refused() {
        let entry = new_entry(1, 2, 1, frame(1234, b"hello"));
        let (length, payload) = unframe(&entry).unwrap();
        assert_eq!(length, 1234);
        assert_eq!(payload.as_ref(), b"hello");
        let short = new_entry(1, 2, 1, Bytes::from_static(b"abc"));
        assert!(unframe(&short).is_err());
    }
}
