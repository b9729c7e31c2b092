//! The broker service's errors, each mapped to a stable [`ErrorCode`] of the client protocol.

use magnetar_proto::broker::{Error as WireError, ErrorCode};

use crate::managed_ledger::ManagedLedgerError;

/// Everything a broker request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("{0}")]
    InvalidName(String),
    #[error("message batch of {size} bytes is over the limit of {limit} bytes")]
    MessageTooLarge { size: usize, limit: usize },
    #[error("topic {topic} is served by another broker; look it up again")]
    NotOwner { topic: String },
    #[error("topic {0} does not exist and auto-creation is off")]
    TopicNotFound(String),
    #[error("namespace {0} does not exist; create it with `magnetar namespaces create`")]
    NamespaceNotFound(String),
    #[error("subscription {0} is exclusive and already has a consumer")]
    ConsumerBusy(String),
    #[error("producer {0} is already connected to this topic")]
    ProducerBusy(String),
    #[error("cumulative acknowledgement is not allowed on {0} subscriptions")]
    CumulativeAckNotAllowed(&'static str),
    #[error("subscription {0} does not exist")]
    SubscriptionNotFound(String),
    #[error(
        "subscription {name} is {existing}; close its consumers before using it as {requested}"
    )]
    SubscriptionTypeMismatch {
        name: String,
        existing: &'static str,
        requested: &'static str,
    },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("service unavailable: {0}; retry shortly")]
    Unavailable(String),
    #[error("backlog quota of namespace {0} is exhausted; consumers must catch up first")]
    BacklogQuotaExceeded(String),
    #[error("invalid message id: {0}")]
    InvalidMessageId(String),
    #[error("topic {0} has too many sends waiting; retry shortly")]
    TooBusy(String),
}

impl BrokerError {
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::InvalidName(_) => ErrorCode::InvalidName,
            BrokerError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            BrokerError::NotOwner { .. } => ErrorCode::NotOwner,
            BrokerError::TopicNotFound(_) => ErrorCode::TopicNotFound,
            BrokerError::NamespaceNotFound(_) => ErrorCode::NamespaceNotFound,
            BrokerError::ConsumerBusy(_) => ErrorCode::ConsumerBusy,
            BrokerError::ProducerBusy(_) => ErrorCode::ProducerBusy,
            BrokerError::CumulativeAckNotAllowed(_) => ErrorCode::CumulativeAckNotAllowed,
            BrokerError::SubscriptionNotFound(_) => ErrorCode::SubscriptionNotFound,
            BrokerError::SubscriptionTypeMismatch { .. } => ErrorCode::SubscriptionTypeMismatch,
            BrokerError::Protocol(_) => ErrorCode::ProtocolError,
            BrokerError::Unavailable(_) => ErrorCode::ServiceUnavailable,
            BrokerError::BacklogQuotaExceeded(_) => ErrorCode::BacklogQuotaExceeded,
            BrokerError::InvalidMessageId(_) => ErrorCode::InvalidMessageId,
            BrokerError::TooBusy(_) => ErrorCode::TooBusy,
        }
    }

    /// The error as the client protocol carries it.
    pub fn to_wire(&self) -> WireError {
        WireError {
            code: self.code() as i32,
            message: self.to_string(),
        }
    }
}

impl From<ManagedLedgerError> for BrokerError {
    fn from(error: ManagedLedgerError) -> Self {
        match error {
            ManagedLedgerError::Fenced { name } => BrokerError::NotOwner { topic: name },
            ManagedLedgerError::InvalidName { name, reason } => {
                BrokerError::InvalidName(format!("{name:?}: {reason}"))
            }
            ManagedLedgerError::NoSuchCursor { cursor, .. } => {
                BrokerError::SubscriptionNotFound(cursor)
            }
            ManagedLedgerError::InvalidPosition { position, .. } => {
                BrokerError::InvalidMessageId(position)
            }
            ManagedLedgerError::Busy { name, .. } => BrokerError::TooBusy(name),
            other => BrokerError::Unavailable(other.to_string()),
        }
    }
}

impl From<magnetar_meta::MetaError> for BrokerError {
    fn from(error: magnetar_meta::MetaError) -> Self {
        BrokerError::Unavailable(format!("metadata store: {error}"))
    }
}

pub type BrokerResult<T> = Result<T, BrokerError>;
