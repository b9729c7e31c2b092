//! The envelope around every serialized sketch: magic, format version, kind, parameters,
//! payload and a CRC-32C over all of it.
//!
//! ```text
//! offset  size  field
//! 0       4     magic "MGSK"
//! 4       1     format version (1)
//! 5       1     kind code (see `Kind`)
//! 6       2     parameter text length P, little-endian, at most MAX_PARAMS_LEN
//! 8       P     parameter text, `name=value;...`
//! 8+P     4     payload length N, little-endian
//! 12+P    N     payload (for HLL, Theta, KLL and frequent items: DataSketches bytes)
//! 12+P+N  4     CRC-32C of bytes 0..12+P+N, little-endian
//! ```
//!
//! Decoding checks the checksum before reading any field past the header, and every length
//! against the bytes actually present, so it allocates nothing beyond the input's size.

use crate::error::{Result, SketchError};
use crate::kind::Kind;
use crate::params::{Params, MAX_PARAMS_LEN};

const MAGIC: &[u8; 4] = b"MGSK";
/// The envelope format this version writes and reads.
pub const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 8;
const CHECKSUM_LEN: usize = 4;

/// A decoded envelope, borrowing its payload from the input.
#[derive(Debug)]
pub struct Envelope<'a> {
    pub kind: Kind,
    pub params: Params,
    pub payload: &'a [u8],
}

/// Wraps `payload` of `kind` with `params`.
pub fn encode(kind: Kind, params: &Params, payload: &[u8]) -> Vec<u8> {
    let params_text = params.to_string();
    // Parameters are produced by this crate from validated values and stay far below the
    // bound; truncating would corrupt them, so the bound is checked when decoding instead.
    let params_len = params_text.len().min(u16::MAX as usize);
    let mut bytes = Vec::with_capacity(HEADER_LEN + params_len + 4 + payload.len() + CHECKSUM_LEN);
    bytes.extend_from_slice(MAGIC);
    bytes.push(FORMAT_VERSION);
    bytes.push(kind.code());
    bytes.extend_from_slice(&(params_len as u16).to_le_bytes());
    bytes.extend_from_slice(&params_text.as_bytes()[..params_len]);
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(payload);
    let checksum = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&checksum.to_le_bytes());
    bytes
}

fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    let field = bytes.get(offset..offset + 2)?;
    Some(u16::from_le_bytes([field[0], field[1]]))
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset + 4)?;
    Some(u32::from_le_bytes([field[0], field[1], field[2], field[3]]))
}

/// Checks and opens an envelope.
pub fn decode(bytes: &[u8]) -> Result<Envelope<'_>> {
    if bytes.len() < HEADER_LEN + 4 + CHECKSUM_LEN {
        return Err(SketchError::corrupt(format!(
            "{} bytes is shorter than the smallest envelope ({} bytes)",
            bytes.len(),
            HEADER_LEN + 4 + CHECKSUM_LEN
        )));
    }
    if &bytes[..4] != MAGIC {
        return Err(SketchError::corrupt(
            "not a Magnetar sketch (magic bytes differ)",
        ));
    }
    let version = bytes[4];
    if version != FORMAT_VERSION {
        return Err(SketchError::corrupt(format!(
            "envelope format version {version} is not supported (this build reads {FORMAT_VERSION})"
        )));
    }
    let body_len = bytes.len() - CHECKSUM_LEN;
    let stored = read_u32(bytes, body_len).unwrap_or_default();
    let computed = crc32c::crc32c(&bytes[..body_len]);
    if stored != computed {
        return Err(SketchError::corrupt(format!(
            "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        )));
    }
    let kind = Kind::from_code(bytes[5])?;
    let params_len = usize::from(read_u16(bytes, 6).unwrap_or_default());
    if params_len > MAX_PARAMS_LEN {
        return Err(SketchError::corrupt(format!(
            "parameter text of {params_len} bytes exceeds {MAX_PARAMS_LEN}"
        )));
    }
    let params_end = HEADER_LEN + params_len;
    let payload_len_offset = params_end;
    let payload_len = read_u32(bytes, payload_len_offset)
        .ok_or_else(|| SketchError::corrupt("truncated before the payload length"))?
        as usize;
    let payload_start = payload_len_offset + 4;
    if payload_start.checked_add(payload_len) != Some(body_len) {
        return Err(SketchError::corrupt(format!(
            "payload length {payload_len} does not match the {} bytes present",
            body_len.saturating_sub(payload_start)
        )));
    }
    let params_text = std::str::from_utf8(&bytes[HEADER_LEN..params_end])
        .map_err(|_| SketchError::corrupt("parameter text is not UTF-8"))?;
    let params = Params::parse(params_text)?;
    Ok(Envelope {
        kind,
        params,
        payload: &bytes[payload_start..body_len],
    })
}

/// Opens an envelope that must hold `expected`.
pub fn decode_kind(bytes: &[u8], expected: Kind) -> Result<Envelope<'_>> {
    let envelope = decode(bytes)?;
    if envelope.kind != expected {
        return Err(SketchError::corrupt(format!(
            "expected a {} sketch, found {}",
            expected.name(),
            envelope.kind.name()
        )));
    }
    Ok(envelope)
}

/// Runs a decoder of a third-party format so that a panic inside it on hostile bytes becomes
/// an error instead of taking down the worker that is restoring state. Callers also exercise
/// what was decoded (estimate, merge, re-encode) inside the guard: some malformed states decode
/// cleanly and fail only when used, and this is where they are cheapest to refuse.
pub(crate) fn guard_foreign_decoder<T>(
    what: &str,
    decoder: impl FnOnce() -> Result<T>,
) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decoder)).unwrap_or_else(|_| {
        Err(SketchError::corrupt(format!(
            "the {what} decoder rejected the payload"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_single_byte_corruption_is_caught() {
        let params = Params::new().with("lg_k", 12);
        let bytes = encode(Kind::Hll, &params, b"payload bytes");
        let envelope = decode(&bytes).unwrap();
        assert_eq!(envelope.kind, Kind::Hll);
        assert_eq!(envelope.params, params);
        assert_eq!(envelope.payload, b"payload bytes");
        for index in 0..bytes.len() {
            let mut corrupted = bytes.clone();
            corrupted[index] ^= 0x40;
            assert!(
                decode(&corrupted).is_err(),
                "flip at {index} went unnoticed"
            );
        }
        for length in 0..bytes.len() {
            assert!(decode(&bytes[..length]).is_err(), "truncation to {length}");
        }
    }

    #[test]
    fn newer_format_versions_are_refused_by_name() {
        let mut bytes = encode(Kind::Bloom, &Params::new(), b"");
        bytes[4] = 2;
        let error = decode(&bytes).unwrap_err();
        assert!(error.to_string().contains("version 2"), "{error}");
    }
}
