//! The envelope of every record written to RocksDB: a format version and a CRC32C, verified
//! on read, so a torn or foreign record is reported instead of being trusted.
//!
//! Layout: `[format version: u8][crc32c of the payload: u32 LE][payload]`.

use crate::errors::{MetaError, Result};

/// The only record format written so far.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_BYTES: usize = 5;

/// Wraps a payload in the envelope.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks the envelope and returns the payload.
pub fn open(record: &[u8]) -> Result<&[u8]> {
    if record.len() < HEADER_BYTES {
        return Err(MetaError::Internal(format!(
            "record of {} bytes is shorter than its header",
            record.len()
        )));
    }
    if record[0] != FORMAT_VERSION {
        return Err(MetaError::Internal(format!(
            "record format version {} is not supported (expected {FORMAT_VERSION})",
            record[0]
        )));
    }
    let mut crc_bytes = [0u8; 4];
    crc_bytes.copy_from_slice(&record[1..HEADER_BYTES]);
    let payload = &record[HEADER_BYTES..];
    if crc32c::crc32c(payload) != u32::from_le_bytes(crc_bytes) {
        return Err(MetaError::Internal("record checksum mismatch".to_string()));
    }
    Ok(payload)
}

/// Decodes a sealed prost record.
pub fn open_prost<M: prost::Message + Default>(record: &[u8]) -> Result<M> {
    M::decode(open(record)?).map_err(|e| MetaError::Internal(format!("undecodable record: {e}")))
}

/// Encodes and seals a prost record.
pub fn seal_prost<M: prost::Message>(message: &M) -> Vec<u8> {
    seal(&message.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_records_open_and_damage_is_caught() {
        let sealed = seal(b"payload");
        assert_eq!(open(&sealed).ok(), Some(&b"payload"[..]));

        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![1, 0, 0], "too short"),
            (
                {
                    let mut v = sealed.clone();
                    v[0] = 9;
                    v
                },
                "unknown version",
            ),
            (
                {
                    let mut v = sealed.clone();
                    let last = v.len() - 1;
                    v[last] ^= 1;
                    v
                },
                "flipped payload bit",
            ),
        ];
        for (record, what) in cases {
            assert!(open(&record).is_err(), "{what}");
        }
    }
}
