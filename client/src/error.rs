//! The client's errors. Broker refusals keep the protocol's stable [`ErrorCode`].

use magnetar_proto::broker::{Error as WireError, ErrorCode};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// The broker refused the request; `code` is stable, `message` says what to do.
    #[error("{message} ({code:?})")]
    Broker { code: ErrorCode, message: String },
    /// No broker could be reached.
    #[error("cannot reach the broker at {address}: {reason}; is `magnetar standalone` (or a broker) running?")]
    Unreachable { address: String, reason: String },
    /// The producer, consumer or client was closed.
    #[error("closed")]
    Closed,
    /// A caller mistake caught before anything was sent.
    #[error("{0}")]
    InvalidArgument(String),
    /// Waited longer than the operation's timeout.
    #[error("timed out after {0} ms")]
    Timeout(u64),
}

impl ClientError {
    pub fn from_wire(error: &WireError) -> Self {
        ClientError::Broker {
            code: ErrorCode::try_from(error.code).unwrap_or(ErrorCode::ProtocolError),
            message: error.message.clone(),
        }
    }

    /// The broker's code, if the broker refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether retrying (after a new lookup) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Broker { code, .. } => code.is_retryable(),
            ClientError::Unreachable { .. } | ClientError::Timeout(_) => true,
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;
