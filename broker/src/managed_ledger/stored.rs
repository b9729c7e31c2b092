//! What a managed ledger keeps in the metadata store, and where.
//!
//! - `/managed-ledgers/<name>`: [`StoredLog`], the ordered list of the topic's ledgers. Every
//!   change (a new ledger, a closed one, ledgers deleted by retention) is a compare-and-set on
//!   its version: the version is the owner's lease on the log, so an owner that loses a CAS
//!   knows another has taken over.
//! - `/cursors/<name>/<cursor>`: a cursor's [`CursorState`](super::CursorState) bytes.

use serde::{Deserialize, Serialize};

use super::error::{ManagedLedgerError, ManagedLedgerResult};
use super::position::{Layout, LedgerSpan};
use super::retention::LedgerInfo;

const FORMAT: u32 = 1;

pub fn log_key(name: &str) -> String {
    format!("/managed-ledgers/{name}")
}

pub fn cursor_prefix(name: &str) -> String {
    format!("/cursors/{name}/")
}

pub fn cursor_key(name: &str, cursor: &str) -> String {
    format!("/cursors/{name}/{cursor}")
}

/// Checks a managed ledger name (`/`-separated segments) or, with `single_segment`, a cursor
/// name.
pub fn validate_name(name: &str, single_segment: bool) -> ManagedLedgerResult<()> {
    let invalid = |reason: &str| ManagedLedgerError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() || name.len() > 512 {
        return Err(invalid("names are 1 to 512 bytes"));
    }
    if single_segment && name.contains('/') {
        return Err(invalid("a cursor name may not contain '/'"));
    }
    if name.split('/').any(str::is_empty) {
        return Err(invalid("empty path segment"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/-_.=:%".contains(c))
    {
        return Err(invalid("use letters, digits and - _ . = : % only"));
    }
    Ok(())
}

/// One ledger of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLedger {
    pub ledger_id: u64,
    /// Entries of this ledger that belong to the log, `0..entries`. Set when the ledger is
    /// closed; while it is the current ledger, the owner's count is authoritative.
    pub entries: u64,
    pub size_bytes: u64,
    pub created_at_ms: u64,
    /// `None` while it is the ledger being written.
    pub closed_at_ms: Option<u64>,
}

/// The log as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredLog {
    pub format: u32,
    pub ledgers: Vec<StoredLedger>,
}

impl StoredLog {
    pub fn new() -> Self {
        Self {
            format: FORMAT,
            ledgers: Vec::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Plain numbers and vectors always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(key: &str, bytes: &[u8]) -> ManagedLedgerResult<Self> {
        let corrupt = |reason: String| ManagedLedgerError::CorruptMetadata {
            key: key.to_string(),
            reason,
        };
        let log: StoredLog =
            serde_json::from_slice(bytes).map_err(|error| corrupt(error.to_string()))?;
        if log.format != FORMAT {
            return Err(corrupt(format!(
                "format {} is not {FORMAT}; upgrade this broker",
                log.format
            )));
        }
        if log
            .ledgers
            .windows(2)
            .any(|pair| pair[0].ledger_id >= pair[1].ledger_id)
        {
            return Err(corrupt("ledger ids are not increasing".into()));
        }
        Ok(log)
    }

    /// The ordering view of the ledgers: closed ledgers end at their last entry; the last
    /// ledger, when open, is open-ended.
    pub fn layout(&self) -> Layout {
        Layout::new(
            self.ledgers
                .iter()
                .map(|ledger| LedgerSpan {
                    ledger_id: ledger.ledger_id,
                    last_entry_id: ledger.closed_at_ms.map(|_| ledger.entries as i64 - 1),
                })
                .collect(),
        )
    }

    /// The retention view of the ledgers.
    pub fn ledger_infos(&self) -> Vec<LedgerInfo> {
        self.ledgers
            .iter()
            .map(|ledger| LedgerInfo {
                ledger_id: ledger.ledger_id,
                entries: ledger.entries,
                size_bytes: ledger.size_bytes,
                closed_at_ms: ledger.closed_at_ms,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("public/default/orders", false).is_ok());
        assert!(validate_name("public//orders", false).is_err());
        assert!(validate_name("", false).is_err());
        assert!(validate_name("sub/name", true).is_err());
        assert!(validate_name("a b", true).is_err());
    }

    #[test]
    fn the_log_round_trips_and_refuses_disorder() {
        let mut log = StoredLog::new();
        log.ledgers.push(StoredLedger {
            ledger_id: 4,
            entries: 3,
            size_bytes: 30,
            created_at_ms: 1,
            closed_at_ms: Some(2),
        });
        log.ledgers.push(StoredLedger {
            ledger_id: 9,
            entries: 0,
            size_bytes: 0,
            created_at_ms: 3,
            closed_at_ms: None,
        });
        assert_eq!(StoredLog::decode("k", &log.encode()).unwrap(), log);
        assert_eq!(log.layout().spans()[0].last_entry_id, Some(2));
        assert_eq!(log.layout().spans()[1].last_entry_id, None);
        log.ledgers.swap(0, 1);
        assert!(StoredLog::decode("k", &log.encode()).is_err());
        assert!(StoredLog::decode("k", b"{").is_err());
    }
}
