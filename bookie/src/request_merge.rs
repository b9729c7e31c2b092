//! Merging add requests queued together on a shared stream into one message, each ledger
//! keeping its own writer token. No I/O.
//!
//! Every message costs a frame, a socket write and a read on each side, and one journal command
//! and one response at the bookie; many ledgers' small requests queued at once cost far less as
//! one. The first request's token stays `writer_token`; a ledger whose token differs from it is
//! listed in `ledger_tokens`. Merging stops at a size bound, at a request of the other kind
//! (recovery or not), and at a ledger whose token would clash with one already in the message.

use bytes::Bytes;
use magnetar_proto::bookie::{AddRequest, LedgerToken};

/// Most payload bytes one merged message carries (a single request may be larger on its own).
pub const MAX_MERGED_PAYLOAD_BYTES: usize = 4 << 20;

/// Payload bytes of a request's entries.
pub fn payload_bytes(request: &AddRequest) -> usize {
    request
        .entries
        .iter()
        .map(|entry| entry.payload.len())
        .sum()
}

/// The token a request presents for `ledger_id`: its entry in `ledger_tokens`, else
/// `writer_token`. The bookie checks entries against it.
pub fn token_for<'a>(
    ledger_tokens: &'a [LedgerToken],
    writer_token: &'a Bytes,
    ledger_id: u64,
) -> &'a Bytes {
    ledger_tokens
        .iter()
        .find(|listed| listed.ledger_id == ledger_id)
        .map_or(writer_token, |listed| &listed.writer_token)
}

fn token_of(request: &AddRequest, ledger_id: u64) -> &Bytes {
    token_for(&request.ledger_tokens, &request.writer_token, ledger_id)
}

/// Whether `request` already carries entries of `ledger_id` or names its token.
fn carries(request: &AddRequest, ledger_id: u64) -> bool {
    request
        .ledger_tokens
        .iter()
        .any(|listed| listed.ledger_id == ledger_id)
        || request
            .entries
            .iter()
            .any(|entry| entry.ledger_id == ledger_id)
}

/// Appends `next` to `merged` when it fits, adding its payload to `merged_payload_bytes` (kept
/// by the caller so a long merge does not count again and again); otherwise hands it back
/// untouched.
pub fn absorb(
    merged: &mut AddRequest,
    merged_payload_bytes: &mut usize,
    next: AddRequest,
) -> Result<(), AddRequest> {
    let next_payload_bytes = payload_bytes(&next);
    if next.recovery != merged.recovery
        || *merged_payload_bytes + next_payload_bytes > MAX_MERGED_PAYLOAD_BYTES
    {
        return Err(next);
    }
    let mut ledgers: Vec<u64> = Vec::new();
    for entry in &next.entries {
        if !ledgers.contains(&entry.ledger_id) {
            ledgers.push(entry.ledger_id);
        }
    }
    let clash = ledgers.iter().any(|&ledger_id| {
        carries(merged, ledger_id) && token_of(merged, ledger_id) != token_of(&next, ledger_id)
    });
    if clash {
        return Err(next);
    }
    for &ledger_id in &ledgers {
        let token = token_of(&next, ledger_id);
        if !carries(merged, ledger_id) && *token != merged.writer_token {
            merged.ledger_tokens.push(LedgerToken {
                ledger_id,
                writer_token: token.clone(),
            });
        }
    }
    merged.entries.extend(next.entries);
    *merged_payload_bytes += next_payload_bytes;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::new_entry;

    fn request(
        ledger_id: u64,
        entry_ids: std::ops::Range<u64>,
        token: &'static [u8],
    ) -> AddRequest {
        AddRequest {
            entries: entry_ids
                .map(|entry_id| new_entry(ledger_id, entry_id, -1, Bytes::from_static(b"x")))
                .collect(),
            writer_token: Bytes::from_static(token),
            ..AddRequest::default()
        }
    }

    /// Merges `next` into `merged`, its byte count taken afresh.
    fn absorb_into(merged: &mut AddRequest, next: AddRequest) -> Result<(), AddRequest> {
        let mut bytes = payload_bytes(merged);
        absorb(merged, &mut bytes, next)
    }

    #[test]
    fn ledgers_with_other_tokens_are_listed_and_entries_keep_their_order() {
        let mut merged = request(1, 0..2, b"one");
        absorb_into(&mut merged, request(2, 0..1, b"two")).expect("merges");
        absorb_into(&mut merged, request(1, 2..3, b"one")).expect("merges");
        absorb_into(&mut merged, request(3, 0..1, b"one")).expect("merges");
        let order: Vec<(u64, u64)> = merged
            .entries
            .iter()
            .map(|entry| (entry.ledger_id, entry.entry_id))
            .collect();
        assert_eq!(order, vec![(1, 0), (1, 1), (2, 0), (1, 2), (3, 0)]);
        assert_eq!(merged.writer_token, Bytes::from_static(b"one"));
        assert_eq!(
            merged.ledger_tokens,
            vec![LedgerToken {
                ledger_id: 2,
                writer_token: Bytes::from_static(b"two"),
            }]
        );
        for ledger_id in [1, 3] {
            assert_eq!(token_of(&merged, ledger_id), &Bytes::from_static(b"one"));
        }
        assert_eq!(token_of(&merged, 2), &Bytes::from_static(b"two"));
    }

    #[test]
    fn a_clashing_token_or_the_other_kind_is_handed_back() {
        let mut merged = request(1, 0..1, b"one");
        // Ledger 1 again, with another token: it must not change what ledger 1 presents.
        let clash = request(1, 1..2, b"impostor");
        assert_eq!(absorb_into(&mut merged, clash.clone()), Err(clash));
        let mut recovery = request(2, 0..1, b"one");
        recovery.recovery = true;
        assert_eq!(absorb_into(&mut merged, recovery.clone()), Err(recovery));
        assert_eq!(merged, request(1, 0..1, b"one"), "left as it was");
    }

    #[test]
    fn merging_stops_at_the_size_bound() {
        let big = |ledger_id| AddRequest {
            entries: vec![new_entry(
                ledger_id,
                0,
                -1,
                Bytes::from(vec![0u8; MAX_MERGED_PAYLOAD_BYTES / 2 + 1]),
            )],
            ..AddRequest::default()
        };
        let mut merged = big(1);
        let second = big(2);
        assert_eq!(absorb_into(&mut merged, second.clone()), Err(second));
        assert!(absorb_into(&mut merged, request(3, 0..1, b"")).is_ok());
    }
}
