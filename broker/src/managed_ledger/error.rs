//! The managed ledger's errors: stable variants the broker maps to client-facing codes.

use magnetar_bookie::LedgerError;
use magnetar_meta::MetaError;

/// Everything a managed ledger can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ManagedLedgerError {
    /// Another owner opened this managed ledger and fenced this one out. Nothing more can be
    /// written through this instance; the topic must be looked up again.
    #[error("managed ledger {name} is owned by another broker now; look the topic up again")]
    Fenced { name: String },
    /// The managed ledger was closed by its owner.
    #[error("managed ledger {name} is closed")]
    Closed { name: String },
    /// The name is empty or holds characters the metadata layout cannot carry.
    #[error("invalid managed ledger or cursor name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// No cursor of that name exists.
    #[error("no cursor {cursor} on managed ledger {name}")]
    NoSuchCursor { name: String, cursor: String },
    /// The position is not in the log (deleted by retention, or past its end).
    #[error("position {position} is not in managed ledger {name}")]
    InvalidPosition { name: String, position: String },
    /// The stored metadata of the managed ledger or a cursor cannot be decoded.
    #[error("corrupt managed ledger metadata at {key}: {reason}")]
    CorruptMetadata { key: String, reason: String },
    /// Too many appends are waiting; retry after some complete.
    #[error("managed ledger {name} has too many appends pending ({limit}); retry shortly")]
    Busy { name: String, limit: usize },
    /// An append could not be stored; the ledger has been (or is being) replaced and later
    /// appends may succeed.
    #[error("append to {name} failed: {source}")]
    AppendFailed {
        name: String,
        #[source]
        source: LedgerError,
    },
    /// A ledger client call failed.
    #[error("ledger: {0}")]
    Ledger(#[from] LedgerError),
    /// A metadata store call failed.
    #[error("metadata store: {0}")]
    Meta(#[from] MetaError),
}

pub type ManagedLedgerResult<T> = std::result::Result<T, ManagedLedgerError>;
