//! The crate's one error type.

use thiserror::Error;

/// Everything that can go wrong when building, merging, decoding or querying a sketch.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SketchError {
    /// A construction parameter is outside its valid range; the message names the range.
    #[error("invalid parameter `{name}` for {kind}: {message}")]
    InvalidParameter {
        kind: &'static str,
        name: &'static str,
        message: String,
    },
    /// The kind name given to the registry is not one this crate knows.
    #[error("unknown sketch kind `{0}` (known kinds: {known})", known = crate::registry::KIND_NAMES.join(", "))]
    UnknownKind(String),
    /// Two sketches cannot be merged because their kinds or parameters differ.
    #[error("cannot merge {kind}: {ours} differs from {theirs}")]
    ParameterMismatch {
        kind: &'static str,
        ours: String,
        theirs: String,
    },
    /// The bytes are not a sketch this version can read: truncated, corrupted, foreign or of a
    /// newer format version.
    #[error("cannot decode sketch bytes: {0}")]
    Corrupt(String),
    /// The query name is not one this kind answers, or its arguments are wrong.
    #[error("bad query `{query}` on {kind}: {message}")]
    BadQuery {
        kind: &'static str,
        query: String,
        message: String,
    },
    /// An event arrived later than the window's allowed lateness and was not counted.
    #[error("event at {event_time_ms} ms is older than the allowed lateness (oldest accepted {oldest_accepted_ms} ms)")]
    TooLate {
        event_time_ms: i64,
        oldest_accepted_ms: i64,
    },
    /// A numeric update got a value the kind cannot hold (NaN for quantiles).
    #[error("invalid item for {kind}: {message}")]
    InvalidItem { kind: &'static str, message: String },
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, SketchError>;

impl SketchError {
    pub(crate) fn corrupt(message: impl Into<String>) -> Self {
        SketchError::Corrupt(message.into())
    }

    pub(crate) fn parameter(
        kind: &'static str,
        name: &'static str,
        message: impl Into<String>,
    ) -> Self {
        SketchError::InvalidParameter {
            kind,
            name,
            message: message.into(),
        }
    }

    pub(crate) fn mismatch(
        kind: &'static str,
        ours: impl Into<String>,
        theirs: impl Into<String>,
    ) -> Self {
        SketchError::ParameterMismatch {
            kind,
            ours: ours.into(),
            theirs: theirs.into(),
        }
    }
}
