//! Deterministic payloads, so a reader can check every byte of an entry it never saw written.

use bytes::Bytes;

/// The payload of entry `entry_id` of a run identified by `seed`, `size` bytes long.
pub fn entry_payload(seed: u64, entry_id: u64, size: usize) -> Bytes {
    let mut state = (seed ^ entry_id.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1;
    let mut bytes = Vec::with_capacity(size + 8);
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    Bytes::from(bytes)
}
