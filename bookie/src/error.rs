//! The bookie's errors, and the stable wire code each one maps to.

use magnetar_proto::bookie::ErrorCode;

/// Everything that can go wrong in the bookie or its client.
#[derive(Debug, thiserror::Error)]
pub enum BookieError {
    /// A configuration field is out of range.
    #[error("invalid bookie configuration: {field} {reason}")]
    InvalidConfig { field: String, reason: String },
    /// A payload is larger than the configured limit.
    #[error(
        "entry {ledger_id}:{entry_id} is {size_bytes} bytes, over the {limit_bytes}-byte limit"
    )]
    EntryTooLarge {
        ledger_id: u64,
        entry_id: u64,
        size_bytes: usize,
        limit_bytes: usize,
    },
    /// The entry's CRC32C does not match its fields.
    #[error("entry {ledger_id}:{entry_id} failed its CRC32C check")]
    CrcMismatch { ledger_id: u64, entry_id: u64 },
    /// The bookie holds nothing for this ledger.
    #[error("no such ledger {ledger_id}")]
    NoSuchLedger { ledger_id: u64 },
    /// The ledger exists but not this entry.
    #[error("no such entry {ledger_id}:{entry_id}")]
    NoSuchEntry { ledger_id: u64, entry_id: u64 },
    /// The ledger is fenced; only recovery adds are accepted.
    #[error("ledger {ledger_id} is fenced")]
    Fenced { ledger_id: u64 },
    /// The entry id was already written with different bytes.
    #[error("entry {ledger_id}:{entry_id} was already written with different bytes")]
    EntryConflict { ledger_id: u64, entry_id: u64 },
    /// The bookie accepts no adds at the moment.
    #[error("bookie is read-only: {reason}")]
    ReadOnly { reason: String },
    /// The writer token does not match the ledger's.
    #[error("writer token does not match the one ledger {ledger_id} was created with")]
    Unauthorized { ledger_id: u64 },
    /// A request field is missing or out of range.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The bookie is stopping.
    #[error("bookie is shutting down")]
    ShuttingDown,
    /// A long poll ended without its condition.
    #[error("timed out")]
    Timeout,
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// RocksDB failed.
    #[error("index: {context}: {source}")]
    Index {
        context: String,
        #[source]
        source: rocksdb::Error,
    },
    /// Bytes on disk failed their checksum or format check.
    #[error("corrupt data in {location}: {reason}")]
    Corrupt { location: String, reason: String },
    /// A remote bookie answered with an error code (client side).
    #[error("bookie answered {code:?}: {message}")]
    Remote { code: ErrorCode, message: String },
    /// The gRPC transport failed (client side).
    #[error("transport: {0}")]
    Transport(String),
}

impl BookieError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub fn index(context: impl Into<String>, source: rocksdb::Error) -> Self {
        Self::Index {
            context: context.into(),
            source,
        }
    }

    /// The stable code this error travels as.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::EntryTooLarge { .. } => ErrorCode::EntryTooLarge,
            Self::CrcMismatch { .. } => ErrorCode::CrcMismatch,
            Self::NoSuchLedger { .. } => ErrorCode::NoSuchLedger,
            Self::NoSuchEntry { .. } => ErrorCode::NoSuchEntry,
            Self::Fenced { .. } => ErrorCode::Fenced,
            Self::EntryConflict { .. } => ErrorCode::EntryConflict,
            Self::ReadOnly { .. } => ErrorCode::ReadOnly,
            Self::Unauthorized { .. } => ErrorCode::Unauthorized,
            Self::InvalidRequest(_) | Self::InvalidConfig { .. } => ErrorCode::InvalidRequest,
            Self::ShuttingDown => ErrorCode::ShuttingDown,
            Self::Timeout => ErrorCode::Timeout,
            Self::Io { .. } | Self::Index { .. } | Self::Corrupt { .. } | Self::Transport(_) => {
                ErrorCode::IoError
            }
            Self::Remote { code, .. } => *code,
        }
    }

    /// Whether the error says a disk is out of space.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            Self::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            Self::Index { source, .. } => {
                let text = source.to_string();
                text.contains("No space left") || text.contains("NoSpace")
            }
            _ => false,
        }
    }
}

pub type Result<T, E = BookieError> = std::result::Result<T, E>;
