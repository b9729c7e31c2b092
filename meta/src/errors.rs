//! The store's errors and their stable wire codes.
//!
//! Errors split in two by what a caller may conclude: *definite* ones say nothing was changed
//! (a refused key, a lost compare, a follower that could not forward), *indefinite* ones say the
//! outcome is unknown (a write that no quorum confirmed in time may still be committed later).

use magnetar_proto::meta::ErrorCode;

/// Everything the metadata store can refuse or fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    /// The key is longer than the configured limit.
    #[error("key of {size} bytes is over the limit of {limit} bytes")]
    KeyTooLarge { size: usize, limit: usize },
    /// The value is larger than the configured limit.
    #[error("value of {size} bytes is over the limit of {limit} bytes")]
    ValueTooLarge { size: usize, limit: usize },
    /// The key is not a well-formed `/`-separated path.
    #[error("malformed key {key:?}: {reason}")]
    MalformedKey { key: String, reason: &'static str },
    /// A compare-and-set lost: the key's version is not the expected one.
    #[error("version conflict on {key:?}: expected {expected}, found {actual}")]
    VersionConflict {
        key: String,
        expected: u64,
        actual: u64,
    },
    /// The session was never opened, has expired or was closed.
    #[error("unknown session {0}")]
    UnknownSession(u64),
    /// No quorum confirmed the request before its deadline (indefinite for writes).
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// A watcher asked for revisions this node no longer holds.
    #[error("revision {requested} is compacted; the oldest held is {oldest}: list again")]
    Compacted { requested: u64, oldest: u64 },
    /// The node's bounded request queue is full; nothing was done.
    #[error("the node is busy: its request queue is full")]
    Busy,
    /// A request field is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The node is shutting down; nothing was done.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// This node is not the leader; `leader_id` is its best guess (0 = unknown).
    #[error("not the leader (leader is {leader_id})")]
    NotLeader { leader_id: u64 },
    /// The connection to the node that handled the request broke (indefinite for writes).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or a disk failure.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The crate's result type.
pub type Result<T, E = MetaError> = std::result::Result<T, E>;

impl MetaError {
    /// The stable wire code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            MetaError::KeyTooLarge { .. } => ErrorCode::KeyTooLarge,
            MetaError::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
            MetaError::MalformedKey { .. } => ErrorCode::MalformedKey,
            MetaError::VersionConflict { .. } => ErrorCode::VersionConflict,
            MetaError::UnknownSession(_) => ErrorCode::UnknownSession,
            MetaError::NoQuorum(_) => ErrorCode::NoQuorum,
            MetaError::Compacted { .. } => ErrorCode::Compacted,
            MetaError::Busy => ErrorCode::Busy,
            MetaError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            MetaError::ShuttingDown => ErrorCode::ShuttingDown,
            MetaError::NotLeader { .. } => ErrorCode::NotLeader,
            MetaError::Unavailable(_) => ErrorCode::Unavailable,
            MetaError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Rebuilds an error from a response header's code and message (client side).
    pub fn from_wire(code: ErrorCode, message: String, leader_id: u64) -> Option<MetaError> {
        Some(match code {
            ErrorCode::Ok => return None,
            ErrorCode::KeyTooLarge => MetaError::KeyTooLarge { size: 0, limit: 0 },
            ErrorCode::ValueTooLarge => MetaError::ValueTooLarge { size: 0, limit: 0 },
            ErrorCode::MalformedKey => MetaError::MalformedKey {
                key: message,
                reason: "refused by the server",
            },
            ErrorCode::VersionConflict => MetaError::VersionConflict {
                key: message,
                expected: 0,
                actual: 0,
            },
            ErrorCode::UnknownSession => MetaError::UnknownSession(0),
            ErrorCode::NoQuorum => MetaError::NoQuorum(message),
            ErrorCode::Compacted => MetaError::Compacted {
                requested: 0,
                oldest: 0,
            },
            ErrorCode::Busy => MetaError::Busy,
            ErrorCode::InvalidArgument => MetaError::InvalidArgument(message),
            ErrorCode::ShuttingDown => MetaError::ShuttingDown,
            ErrorCode::NotLeader => MetaError::NotLeader { leader_id },
            ErrorCode::Unavailable => MetaError::Unavailable(message),
            ErrorCode::Internal => MetaError::Internal(message),
        })
    }

    /// Whether the request certainly changed nothing, so a write may be retried elsewhere.
    pub fn is_definite(&self) -> bool {
        !matches!(
            self,
            MetaError::NoQuorum(_) | MetaError::Unavailable(_) | MetaError::Internal(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_has_its_own_code_and_round_trips() {
        let errors = [
            MetaError::KeyTooLarge { size: 1, limit: 0 },
            MetaError::ValueTooLarge { size: 1, limit: 0 },
            MetaError::MalformedKey {
                key: "x".into(),
                reason: "r",
            },
            MetaError::VersionConflict {
                key: "/a".into(),
                expected: 1,
                actual: 2,
            },
            MetaError::UnknownSession(3),
            MetaError::NoQuorum("t".into()),
            MetaError::Compacted {
                requested: 1,
                oldest: 2,
            },
            MetaError::Busy,
            MetaError::InvalidArgument("a".into()),
            MetaError::ShuttingDown,
            MetaError::NotLeader { leader_id: 2 },
            MetaError::Unavailable("u".into()),
            MetaError::Internal("i".into()),
        ];
        let mut codes: Vec<i32> = errors.iter().map(|e| e.code() as i32).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), errors.len());
        for error in &errors {
            let back = MetaError::from_wire(error.code(), String::new(), 2).expect("an error");
            assert_eq!(back.code(), error.code());
        }
        assert!(MetaError::from_wire(ErrorCode::Ok, String::new(), 0).is_none());
    }
}
