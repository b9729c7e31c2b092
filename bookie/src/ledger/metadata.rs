//! Ledger metadata: what the metadata store holds about one ledger, and its encoding.
//!
//! Stored at `/ledgers/<id>` as JSON with a `format` number, so an operator can read it with
//! any tool and a newer client can refuse a format it does not know. The key's version is the
//! only concurrency control: every change is a compare-and-set on the version it was read at.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::error::{LedgerError, LedgerResult};
use super::quorum::Quorums;

/// The encoding's format number; bumped on any incompatible change.
pub const METADATA_FORMAT: u32 = 1;

/// Metadata store folder of ledgers.
pub const LEDGERS_PREFIX: &str = "/ledgers/";

/// Sequence counter ledger ids come from.
pub const LEDGER_ID_COUNTER: &str = "/ids/ledgers";

/// The key of a ledger's metadata.
pub fn ledger_key(ledger_id: u64) -> String {
    format!("{LEDGERS_PREFIX}{ledger_id}")
}

/// A ledger's lifecycle, as in BookKeeper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerState {
    /// A writer may be adding entries.
    Open,
    /// A recovery has fenced (or is fencing) the ledger and will close it.
    InRecovery,
    /// The last entry id and length are final.
    Closed,
}

/// The bookies holding entries from `first_entry_id` until the next segment's first entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    pub first_entry_id: u64,
    /// Bookie addresses (`host:port`); entry e goes to Qw of them starting at e mod E.
    pub bookies: Vec<String>,
}

/// Everything the metadata store holds about a ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerMetadata {
    pub format: u32,
    pub ledger_id: u64,
    pub ensemble_size: usize,
    pub write_quorum: usize,
    pub ack_quorum: usize,
    pub state: LedgerState,
    /// -1 while nothing is known to be written; final once Closed.
    pub last_entry_id: i64,
    /// Payload bytes of entries `0..=last_entry_id`; final once Closed.
    pub length: u64,
    /// Milliseconds since the Unix epoch.
    pub creation_time_ms: u64,
    /// Ensembles keyed by their first entry id, ascending; never empty.
    pub segments: Vec<Segment>,
    /// Hex of the token bookies require from the writer and from recovery.
    pub writer_token_hex: String,
    /// Whatever the creator attached (the managed ledger records its topic here).
    pub custom: BTreeMap<String, String>,
}

impl LedgerMetadata {
    /// Encodes for the metadata store.
    pub fn encode(&self) -> Bytes {
        // Serialising plain structs of strings and numbers cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decodes what the metadata store holds at `key`, checking format and invariants.
    pub fn decode(key: &str, bytes: &[u8]) -> LedgerResult<Self> {
        let corrupt = |reason: String| LedgerError::CorruptMetadata {
            key: key.to_string(),
            reason,
        };
        let metadata: Self =
            serde_json::from_slice(bytes).map_err(|error| corrupt(error.to_string()))?;
        if metadata.format != METADATA_FORMAT {
            return Err(corrupt(format!(
                "format {} is not the supported {METADATA_FORMAT}",
                metadata.format
            )));
        }
        metadata.validate().map_err(corrupt)?;
        Ok(metadata)
    }

    /// The structural rules every stored metadata must satisfy.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.ensemble_size >= self.write_quorum
            && self.write_quorum >= self.ack_quorum
            && self.ack_quorum >= 1
            && self.ensemble_size <= 64)
        {
            return Err(format!(
                "quorums E={} Qw={} Qa={} break 64 >= E >= Qw >= Qa >= 1",
                self.ensemble_size, self.write_quorum, self.ack_quorum
            ));
        }
        if self.segments.is_empty() {
            return Err("no ensemble".into());
        }
        let mut previous: Option<u64> = None;
        for segment in &self.segments {
            if segment.bookies.len() != self.ensemble_size {
                return Err(format!(
                    "ensemble at entry {} has {} bookies, not {}",
                    segment.first_entry_id,
                    segment.bookies.len(),
                    self.ensemble_size
                ));
            }
            if previous.is_some_and(|first| first >= segment.first_entry_id) {
                return Err("ensembles are not in ascending entry order".into());
            }
            previous = Some(segment.first_entry_id);
        }
        if self.segments[0].first_entry_id != 0 {
            return Err("the first ensemble does not start at entry 0".into());
        }
        if self.last_entry_id < -1 {
            return Err(format!("last entry id {} < -1", self.last_entry_id));
        }
        Ok(())
    }

    /// The writer token as bytes (empty if the stored hex is malformed, which bookies refuse).
    pub fn writer_token(&self) -> Bytes {
        decode_hex(&self.writer_token_hex).map_or_else(Bytes::new, Bytes::from)
    }

    /// The ensemble holding `entry_id`.
    pub fn segment_for(&self, entry_id: u64) -> &Segment {
        let index = self
            .segments
            .partition_point(|segment| segment.first_entry_id <= entry_id);
        // validate() guarantees a segment starting at 0, so index >= 1.
        &self.segments[index.saturating_sub(1)]
    }

    /// The ledger's quorum sizes; stored metadata that breaks their rules is corrupt.
    pub fn quorums(&self) -> LedgerResult<Quorums> {
        Quorums::new(self.ensemble_size, self.write_quorum, self.ack_quorum).map_err(|reason| {
            LedgerError::CorruptMetadata {
                key: super::ledger_key(self.ledger_id),
                reason,
            }
        })
    }

    /// The current (last) ensemble.
    pub fn last_segment(&self) -> &Segment {
        // validate() guarantees at least one segment.
        &self.segments[self.segments.len() - 1]
    }

    /// Every distinct bookie that holds or held entries of the ledger.
    pub fn all_bookies(&self) -> Vec<String> {
        let mut bookies: Vec<String> = self
            .segments
            .iter()
            .flat_map(|segment| segment.bookies.iter().cloned())
            .collect();
        bookies.sort();
        bookies.dedup();
        bookies
    }

    /// Installs `bookies` as the ensemble from `first_entry_id` on: replaces the last segment
    /// if it starts there (none of its entries completed), else appends a new segment.
    pub fn set_ensemble_from(&mut self, first_entry_id: u64, bookies: Vec<String>) {
        match self.segments.last_mut() {
            Some(last) if last.first_entry_id >= first_entry_id => {
                last.bookies = bookies;
            }
            _ => self.segments.push(Segment {
                first_entry_id,
                bookies,
            }),
        }
        // A segment that started after first_entry_id holds no completed entry either; merge.
        while self.segments.len() >= 2 {
            let n = self.segments.len();
            if self.segments[n - 2].first_entry_id >= first_entry_id {
                let last = self.segments.remove(n - 1);
                self.segments[n - 2].bookies = last.bookies;
            } else {
                break;
            }
        }
        let single = self.segments.len() == 1;
        if let Some(last) = self.segments.last_mut() {
            last.first_entry_id = if single { 0 } else { first_entry_id };
        }
    }
}

/// Lowercase hex of bytes.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LedgerMetadata {
        LedgerMetadata {
            format: METADATA_FORMAT,
            ledger_id: 7,
            ensemble_size: 3,
            write_quorum: 3,
            ack_quorum: 2,
            state: LedgerState::Open,
            last_entry_id: -1,
            length: 0,
            creation_time_ms: 1,
            segments: vec![Segment {
                first_entry_id: 0,
                bookies: vec!["a:1".into(), "b:1".into(), "c:1".into()],
            }],
            writer_token_hex: encode_hex(&[0, 1, 0xab, 0xff]),
            custom: BTreeMap::from([("topic".to_string(), "t".to_string())]),
        }
    }

    #[test]
    fn round_trips_and_checks_format() {
        let metadata = sample();
        let bytes = metadata.encode();
        assert_eq!(
            LedgerMetadata::decode("/ledgers/7", &bytes).unwrap(),
            metadata
        );
        assert_eq!(metadata.writer_token().as_ref(), &[0, 1, 0xab, 0xff]);
        let mut future = metadata.clone();
        future.format = 2;
        assert!(LedgerMetadata::decode("/ledgers/7", &future.encode()).is_err());
        assert!(LedgerMetadata::decode("/ledgers/7", b"{not json").is_err());
        let mut bad = metadata;
        bad.ack_quorum = 4;
        assert!(LedgerMetadata::decode("/ledgers/7", &bad.encode()).is_err());
    }

    proptest::proptest! {
        /// Any bytes decode to metadata that passes validation, or to an error; never a panic.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if let Ok(metadata) = LedgerMetadata::decode("/ledgers/1", &bytes) {
                proptest::prop_assert!(metadata.validate().is_ok());
            }
        }

        /// Ensemble changes at increasing entries keep the metadata valid and map every entry
        /// to the ensemble installed last at or before it.
        #[test]
        fn ensemble_changes_keep_segments_valid(changes in proptest::collection::vec((0u64..50, 0usize..3), 0..20)) {
            let mut metadata = sample();
            let mut from = 0;
            for (step, (advance, index)) in changes.into_iter().enumerate() {
                from += advance;
                let mut bookies = metadata.last_segment().bookies.clone();
                bookies[index] = format!("new-{step}:1");
                metadata.set_ensemble_from(from, bookies.clone());
                proptest::prop_assert!(metadata.validate().is_ok(), "{:?}", metadata.segments);
                proptest::prop_assert_eq!(&metadata.segment_for(from).bookies, &bookies);
                let decoded = LedgerMetadata::decode("/ledgers/7", &metadata.encode()).ok();
                proptest::prop_assert_eq!(decoded.as_ref(), Some(&metadata));
            }
        }
    }

    #[test]
    fn segments_are_found_and_replaced() {
        let mut metadata = sample();
        metadata.set_ensemble_from(10, vec!["a:1".into(), "d:1".into(), "c:1".into()]);
        assert_eq!(metadata.segments.len(), 2);
        assert_eq!(metadata.segment_for(9).bookies[1], "b:1");
        assert_eq!(metadata.segment_for(10).bookies[1], "d:1");
        // A second change at the same entry replaces the segment that holds nothing complete.
        metadata.set_ensemble_from(10, vec!["a:1".into(), "d:1".into(), "e:1".into()]);
        assert_eq!(metadata.segments.len(), 2);
        assert_eq!(metadata.segment_for(100).bookies[2], "e:1");
        // A change before anything completed replaces the first segment and keeps it at 0.
        let mut fresh = sample();
        fresh.set_ensemble_from(0, vec!["x:1".into(), "b:1".into(), "c:1".into()]);
        assert_eq!(fresh.segments.len(), 1);
        assert_eq!(fresh.segments[0].first_entry_id, 0);
        assert!(fresh.validate().is_ok());
        assert_eq!(metadata.all_bookies().len(), 5);
    }
}
