//! An entry's checksum: CRC32C over ledger id, entry id, last-add-confirmed and payload.
//!
//! The writer computes it, the bookie checks it on add and stores it, and the reader checks it
//! again on read, so corruption anywhere between two writers' memories is caught.

use bytes::Bytes;
use magnetar_proto::bookie::Entry;

/// The CRC32C of an entry's fields, each id 8 bytes big-endian, then the payload.
pub fn entry_crc32c(ledger_id: u64, entry_id: u64, last_add_confirmed: i64, payload: &[u8]) -> u32 {
    let mut header = [0u8; 24];
    header[0..8].copy_from_slice(&ledger_id.to_be_bytes());
    header[8..16].copy_from_slice(&entry_id.to_be_bytes());
    header[16..24].copy_from_slice(&last_add_confirmed.to_be_bytes());
    let crc = crc32c::crc32c(&header);
    crc32c::crc32c_append(crc, payload)
}

/// Builds an entry with its checksum filled in.
pub fn new_entry(ledger_id: u64, entry_id: u64, last_add_confirmed: i64, payload: Bytes) -> Entry {
    let crc32c = entry_crc32c(ledger_id, entry_id, last_add_confirmed, &payload);
    Entry {
        ledger_id,
        entry_id,
        last_add_confirmed,
        payload,
        crc32c,
    }
}

/// Whether an entry's stored checksum matches its fields.
pub fn entry_checksum_ok(entry: &Entry) -> bool {
    entry_crc32c(
        entry.ledger_id,
        entry.entry_id,
        entry.last_add_confirmed,
        &entry.payload,
    ) == entry.crc32c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_covers_every_field() {
        let entry = new_entry(7, 9, 8, Bytes::from_static(b"payload"));
        assert!(entry_checksum_ok(&entry));
        for mutate in [
            |e: &mut Entry| e.ledger_id += 1,
            |e: &mut Entry| e.entry_id += 1,
            |e: &mut Entry| e.last_add_confirmed += 1,
            |e: &mut Entry| e.payload = Bytes::from_static(b"payloaD"),
        ] {
            let mut changed = entry.clone();
            mutate(&mut changed);
            assert!(!entry_checksum_ok(&changed));
        }
    }
}
