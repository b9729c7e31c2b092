//! The ledger client's errors. Variants are stable: callers (the managed ledger) match on them
//! to decide between retrying, rolling over to a new ledger and giving up.

use magnetar_meta::MetaError;

use crate::error::BookieError;

/// Everything the ledger client can fail with.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Quorum sizes or other options are out of range.
    #[error("invalid ledger options: {0}")]
    InvalidOptions(String),
    /// No ledger with this id exists in the metadata store.
    #[error("no such ledger {ledger_id}")]
    NoSuchLedger { ledger_id: u64 },
    /// Fewer suitable bookies are registered than the ensemble needs.
    #[error("not enough bookies: need {needed}, {available} suitable")]
    NotEnoughBookies { needed: usize, available: usize },
    /// The ledger was fenced by a recovery: this writer may add nothing more.
    #[error("ledger {ledger_id} is fenced: another client is recovering or has closed it")]
    Fenced { ledger_id: u64 },
    /// The ledger is closed; nothing can be added.
    #[error("ledger {ledger_id} is closed")]
    Closed { ledger_id: u64 },
    /// A read asked for an entry past what is known to be confirmed (open ledger).
    #[error(
        "entry {entry_id} of ledger {ledger_id} is not confirmed yet (LAC {last_add_confirmed})"
    )]
    NotYet {
        ledger_id: u64,
        entry_id: u64,
        last_add_confirmed: i64,
    },
    /// A read asked for an entry past the last entry of a closed ledger.
    #[error(
        "entry {entry_id} is past the end of closed ledger {ledger_id} (last {last_entry_id})"
    )]
    PastEnd {
        ledger_id: u64,
        entry_id: u64,
        last_entry_id: i64,
    },
    /// No bookie of the entry's write quorum could serve it.
    #[error("entry {ledger_id}:{entry_id} could not be read from any bookie: {reason}")]
    ReadFailed {
        ledger_id: u64,
        entry_id: u64,
        reason: String,
    },
    /// Recovery could not decide where the ledger ends (too few bookies answered); retry later.
    #[error("recovery of ledger {ledger_id} is not possible now: {reason}")]
    RecoveryIncomplete { ledger_id: u64, reason: String },
    /// The stored metadata of a ledger (or of a bookie registration) cannot be decoded.
    #[error("corrupt metadata at {key}: {reason}")]
    CorruptMetadata { key: String, reason: String },
    /// A metadata compare-and-set lost to a change nobody else should make.
    #[error("ledger {ledger_id} metadata changed unexpectedly: {reason}")]
    MetadataConflict { ledger_id: u64, reason: String },
    /// Some bookies could not delete the ledger; the metadata was kept so deletion can be
    /// retried.
    #[error("ledger {ledger_id} could not be deleted on {bookies:?}: {reason}")]
    DeleteIncomplete {
        ledger_id: u64,
        bookies: Vec<String>,
        reason: String,
    },
    /// The writer stopped after an earlier failure; the ledger must be recovered.
    #[error("ledger {ledger_id} writer has failed: {reason}")]
    WriterFailed { ledger_id: u64, reason: String },
    /// A bookie call failed.
    #[error("bookie {address}: {source}")]
    Bookie {
        address: String,
        #[source]
        source: BookieError,
    },
    /// A metadata store call failed.
    #[error("metadata store: {0}")]
    Meta(#[from] MetaError),
}

impl LedgerError {
    pub(crate) fn bookie(address: &str, source: BookieError) -> Self {
        Self::Bookie {
            address: address.to_string(),
            source,
        }
    }
}

/// The ledger client's result type.
pub type LedgerResult<T, E = LedgerError> = std::result::Result<T, E>;
