//! The journal's on-disk format: a file header, then records, each checksummed.
//!
//! ```text
//! file:   magic "MGNJRNL\0" (8) | format version u32 LE | flags u32 LE | records... | zeros
//! record: body length u32 LE | CRC32C(file id u64 LE, body) u32 LE | body
//! body:   kind u8 (1 = entry) | ledger id u64 LE | entry id u64 LE | LAC i64 LE
//!         | entry CRC32C u32 LE | payload
//! ```
//!
//! New files are preallocated with zeros, so a zero length marks the end of what was written.
//! A record cut short by a crash, or one whose checksum fails, ends the replay of its file: the
//! group commit acknowledged nothing past a write it had not finished.
//!
//! A file whose records are all in ledger storage is recycled rather than deleted: renamed to
//! the next id and written over, which costs no zero-filling and no block allocation. Its
//! flags then say so, and the records it held before still follow the new ones. Each record's
//! checksum starts from its file's id, so an earlier life's record fails it and ends the replay
//! like a torn one. Version 1 files (no file id in the checksum, never recycled) still replay.

use bytes::{Buf, Bytes};
use magnetar_proto::bookie::Entry;

pub const JOURNAL_MAGIC: [u8; 8] = *b"MGNJRNL\0";
pub const JOURNAL_FORMAT_VERSION: u32 = 2;
/// Header flag: the file was recycled, so an earlier file's records may follow its own.
const RECYCLED_FLAG: u32 = 1;
pub const FILE_HEADER_BYTES: u64 = 16;
/// Length and checksum before each body.
pub const RECORD_HEADER_BYTES: usize = 8;
const ENTRY_KIND: u8 = 1;
const ENTRY_BODY_FIXED_BYTES: usize = 1 + 8 + 8 + 8 + 4;

/// Bytes an entry with `payload_bytes` of payload takes in the journal.
pub fn entry_record_bytes(payload_bytes: usize) -> usize {
    RECORD_HEADER_BYTES + ENTRY_BODY_FIXED_BYTES + payload_bytes
}

/// The header every journal file starts with.
pub fn file_header(recycled: bool) -> [u8; FILE_HEADER_BYTES as usize] {
    let mut header = [0u8; FILE_HEADER_BYTES as usize];
    header[0..8].copy_from_slice(&JOURNAL_MAGIC);
    header[8..12].copy_from_slice(&JOURNAL_FORMAT_VERSION.to_le_bytes());
    let flags = if recycled { RECYCLED_FLAG } else { 0 };
    header[12..16].copy_from_slice(&flags.to_le_bytes());
    header
}

/// What a valid header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileHeader {
    /// Where each record's checksum starts (see [`checksum_seed`]).
    pub checksum_seed: u32,
    /// Recycled: a checksum mismatch may be an earlier file's record, not damage.
    pub recycled: bool,
}

/// The checksum state a record of file `file_id` starts from: the CRC32C of the id.
pub fn checksum_seed(file_id: u64) -> u32 {
    crc32c::crc32c(&file_id.to_le_bytes())
}

/// Checks the header of file `file_id`; the error says what is wrong.
pub fn check_file_header(bytes: &[u8], file_id: u64) -> Result<FileHeader, String> {
    if bytes.len() < FILE_HEADER_BYTES as usize {
        return Err(format!(
            "file is {} bytes, shorter than its header",
            bytes.len()
        ));
    }
    if bytes[0..8] != JOURNAL_MAGIC {
        return Err("not a journal file (bad magic)".to_string());
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let flags = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    match version {
        // A plain CRC32C is the same as one started from zero.
        1 => Ok(FileHeader {
            checksum_seed: 0,
            recycled: false,
        }),
        JOURNAL_FORMAT_VERSION => Ok(FileHeader {
            checksum_seed: checksum_seed(file_id),
            recycled: flags & RECYCLED_FLAG != 0,
        }),
        _ => Err(format!(
            "journal format version {version}, this bookie reads versions 1 to {JOURNAL_FORMAT_VERSION}"
        )),
    }
}

/// Bytes one entry takes in the journal.
pub fn encoded_entry_len(entry: &Entry) -> usize {
    entry_record_bytes(entry.payload.len())
}

/// Appends an entry's record to `buffer`, checksummed from `seed` (its file's
/// [`checksum_seed`]).
pub fn encode_entry(entry: &Entry, seed: u32, buffer: &mut Vec<u8>) {
    let body_len = ENTRY_BODY_FIXED_BYTES + entry.payload.len();
    let start = buffer.len();
    buffer.reserve(RECORD_HEADER_BYTES + body_len);
    buffer.extend_from_slice(&(body_len as u32).to_le_bytes());
    buffer.extend_from_slice(&[0u8; 4]);
    buffer.push(ENTRY_KIND);
    buffer.extend_from_slice(&entry.ledger_id.to_le_bytes());
    buffer.extend_from_slice(&entry.entry_id.to_le_bytes());
    buffer.extend_from_slice(&entry.last_add_confirmed.to_le_bytes());
    buffer.extend_from_slice(&entry.crc32c.to_le_bytes());
    buffer.extend_from_slice(&entry.payload);
    let crc = crc32c::crc32c_append(seed, &buffer[start + RECORD_HEADER_BYTES..]);
    buffer[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What the scanner found at an offset.
#[derive(Debug, PartialEq)]
pub enum Scanned {
    /// A valid entry record, and the offset of the next record.
    Entry { entry: Entry, next_offset: usize },
    /// Zeros or the end of the file: nothing more was written.
    End,
    /// A record that is cut short or fails its checksum: the tail from here is dropped.
    Torn { reason: String },
}

/// Decodes the record at `offset` of a whole journal file held in `file`, whose records are
/// checksummed from `seed`.
pub fn scan_record(file: &Bytes, offset: usize, seed: u32) -> Scanned {
    let remaining = file.len().saturating_sub(offset);
    if remaining < RECORD_HEADER_BYTES {
        if file[offset.min(file.len())..].iter().all(|byte| *byte == 0) {
            return Scanned::End;
        }
        return Scanned::Torn {
            reason: format!("{remaining} stray bytes shorter than a record header"),
        };
    }
    let mut header = &file[offset..offset + RECORD_HEADER_BYTES];
    let body_len = header.get_u32_le() as usize;
    let expected_crc = header.get_u32_le();
    if body_len == 0 {
        if expected_crc == 0 {
            return Scanned::End;
        }
        return Scanned::Torn {
            reason: "zero-length record with a checksum".to_string(),
        };
    }
    let body_start = offset + RECORD_HEADER_BYTES;
    if body_len > remaining - RECORD_HEADER_BYTES {
        return Scanned::Torn {
            reason: format!(
                "record claims {body_len} bytes, only {} remain",
                remaining - RECORD_HEADER_BYTES
            ),
        };
    }
    let body = file.slice(body_start..body_start + body_len);
    if crc32c::crc32c_append(seed, &body) != expected_crc {
        return Scanned::Torn {
            reason: "record checksum mismatch".to_string(),
        };
    }
    if body[0] != ENTRY_KIND || body.len() < ENTRY_BODY_FIXED_BYTES {
        return Scanned::Torn {
            reason: format!("unknown record kind {} or short body", body[0]),
        };
    }
    let mut fields = &body[1..ENTRY_BODY_FIXED_BYTES];
    let ledger_id = fields.get_u64_le();
    let entry_id = fields.get_u64_le();
    let last_add_confirmed = fields.get_i64_le();
    let crc32c = fields.get_u32_le();
    let entry = Entry {
        ledger_id,
        entry_id,
        last_add_confirmed,
        payload: body.slice(ENTRY_BODY_FIXED_BYTES..),
        crc32c,
    };
    Scanned::Entry {
        entry,
        next_offset: body_start + body_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::new_entry;

    const FILE_ID: u64 = 7;

    fn file_with(entries: &[Entry]) -> Vec<u8> {
        let mut file = file_header(false).to_vec();
        for entry in entries {
            encode_entry(entry, checksum_seed(FILE_ID), &mut file);
        }
        file.extend_from_slice(&[0u8; 64]);
        file
    }

    fn scan_all(file: Vec<u8>) -> (Vec<Entry>, Scanned) {
        scan_file(file, FILE_ID)
    }

    fn scan_file(file: Vec<u8>, file_id: u64) -> (Vec<Entry>, Scanned) {
        let file = Bytes::from(file);
        let header = check_file_header(&file, file_id).expect("valid header");
        let mut offset = FILE_HEADER_BYTES as usize;
        let mut entries = Vec::new();
        loop {
            match scan_record(&file, offset, header.checksum_seed) {
                Scanned::Entry { entry, next_offset } => {
                    entries.push(entry);
                    offset = next_offset;
                }
                other => return (entries, other),
            }
        }
    }

    fn sample_entries() -> Vec<Entry> {
        (0..5)
            .map(|id| {
                new_entry(
                    3,
                    id,
                    id as i64 - 1,
                    Bytes::from(vec![id as u8; 10 + id as usize]),
                )
            })
            .collect()
    }

    #[test]
    fn records_round_trip() {
        let entries = sample_entries();
        let encoded_len: usize = entries.iter().map(encoded_entry_len).sum();
        let file = file_with(&entries);
        assert_eq!(file.len(), FILE_HEADER_BYTES as usize + encoded_len + 64);
        let (read, end) = scan_all(file);
        assert_eq!(read, entries);
        assert_eq!(end, Scanned::End);
    }

    #[test]
    fn torn_tail_stops_replay_after_the_last_whole_record() {
        let entries = sample_entries();
        let mut file = file_header(false).to_vec();
        for entry in &entries {
            encode_entry(entry, checksum_seed(FILE_ID), &mut file);
        }
        // Cut the last record in half, as a crash in the middle of a write would.
        let last_len = encoded_entry_len(&entries[4]);
        file.truncate(file.len() - last_len / 2);
        let (read, end) = scan_all(file);
        assert_eq!(read, entries[..4]);
        assert!(matches!(end, Scanned::Torn { .. }), "{end:?}");
    }

    #[test]
    fn flipped_byte_stops_replay_at_the_damaged_record() {
        let entries = sample_entries();
        let mut file = file_with(&entries);
        let third_record =
            FILE_HEADER_BYTES as usize + entries[..2].iter().map(encoded_entry_len).sum::<usize>();
        file[third_record + RECORD_HEADER_BYTES + 12] ^= 0x40;
        let (read, end) = scan_all(file);
        assert_eq!(read, entries[..2]);
        assert_eq!(
            end,
            Scanned::Torn {
                reason: "record checksum mismatch".into()
            }
        );
    }

    #[test]
    fn length_past_the_end_is_torn_not_a_panic() {
        let mut file = file_header(false).to_vec();
        file.extend_from_slice(&u32::MAX.to_le_bytes());
        file.extend_from_slice(&[1, 2, 3, 4, 5]);
        let (read, end) = scan_all(file);
        assert!(read.is_empty());
        assert!(matches!(end, Scanned::Torn { .. }));
    }

    #[test]
    fn foreign_header_is_rejected() {
        assert!(check_file_header(b"not a journal at all", FILE_ID).is_err());
        let mut header = file_header(false);
        header[8] = 9;
        assert!(check_file_header(&header, FILE_ID)
            .unwrap_err()
            .contains("version 9"));
    }

    #[test]
    fn a_recycled_file_ends_where_the_earlier_files_records_begin() {
        // File 7 held five records; recycled as file 8, it received two new ones over them.
        let old = sample_entries();
        let mut file = file_with(&old);
        let new: Vec<Entry> = (0..2)
            .map(|id| new_entry(9, id, -1, Bytes::from(vec![0xAB; 10 + id as usize])))
            .collect();
        let mut rewritten = file_header(true).to_vec();
        for entry in &new {
            encode_entry(entry, checksum_seed(8), &mut rewritten);
        }
        file[..rewritten.len()].copy_from_slice(&rewritten);
        let (read, end) = scan_file(file.clone(), 8);
        assert_eq!(read, new);
        assert!(matches!(end, Scanned::Torn { .. }), "{end:?}");
        let header = check_file_header(&file, 8).expect("valid header");
        assert!(header.recycled);
    }

    #[test]
    fn version_one_files_still_replay() {
        let entries = sample_entries();
        let mut file = file_header(false).to_vec();
        file[8..12].copy_from_slice(&1u32.to_le_bytes());
        for entry in &entries {
            // Version 1 checksummed the body alone: the same as starting from zero.
            encode_entry(entry, 0, &mut file);
        }
        file.extend_from_slice(&[0u8; 16]);
        let (read, end) = scan_file(file, 123);
        assert_eq!(read, entries);
        assert_eq!(end, Scanned::End);
    }
}
