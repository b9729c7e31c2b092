//! The admin API's errors: every failure is a JSON body `{"code": ..., "message": ...}` with a
//! stable code (the broker's [`ErrorCode`] names where one fits) and a fitting HTTP status.
//! A request about a topic another broker owns is answered with a 307 redirect to that
//! broker's HTTP address, carried here too so handlers can return it with `?`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use magnetar_proto::broker::ErrorCode;
use serde::Serialize;

use crate::service::BrokerError;

/// Codes of the admin API that the client protocol has no name for.
pub mod codes {
    /// The request is malformed: a body that is not the expected JSON, a count that is not
    /// a number, a policy name that does not exist.
    pub const INVALID_REQUEST: &str = "INVALID_REQUEST";
    /// Creating something that already exists.
    pub const ALREADY_EXISTS: &str = "ALREADY_EXISTS";
    pub const TENANT_NOT_FOUND: &str = "TENANT_NOT_FOUND";
    /// Deleting a tenant that has namespaces, or a namespace that has topics.
    pub const NOT_EMPTY: &str = "NOT_EMPTY";
    /// Deleting a topic or subscription that has connected producers or consumers.
    pub const BUSY: &str = "BUSY";
    /// No such path.
    pub const NOT_FOUND: &str = "NOT_FOUND";
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
}

/// A failed admin request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Set on a redirect: where the request must go instead.
    pub location: Option<String>,
}

/// The JSON body of an error.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            location: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::INVALID_REQUEST, message)
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, codes::ALREADY_EXISTS, message)
    }

    pub fn tenant_not_found(tenant: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            codes::TENANT_NOT_FOUND,
            format!(
                "tenant {tenant} does not exist; create it with `magnetar tenants create {tenant}`"
            ),
        )
    }

    /// Sends the client to the broker owning the topic.
    pub fn redirect(location: String, owner: &str) -> Self {
        Self {
            status: StatusCode::TEMPORARY_REDIRECT,
            code: ErrorCode::NotOwner.as_str_name(),
            message: format!("the topic is served by {owner}; follow the Location header"),
            location: Some(location),
        }
    }
}

/// The HTTP status of each broker error.
fn status_of(error: &BrokerError) -> StatusCode {
    match error {
        BrokerError::InvalidName(_)
        | BrokerError::Protocol(_)
        | BrokerError::InvalidMessageId(_)
        | BrokerError::CumulativeAckNotAllowed(_) => StatusCode::BAD_REQUEST,
        BrokerError::TopicNotFound(_)
        | BrokerError::NamespaceNotFound(_)
        | BrokerError::SubscriptionNotFound(_) => StatusCode::NOT_FOUND,
        BrokerError::ConsumerBusy(_)
        | BrokerError::ProducerBusy(_)
        | BrokerError::SubscriptionTypeMismatch { .. } => StatusCode::CONFLICT,
        BrokerError::MessageTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        BrokerError::BacklogQuotaExceeded(_) | BrokerError::TooBusy(_) => {
            StatusCode::TOO_MANY_REQUESTS
        }
        // Ownership moved between the redirect decision and the work: the client retries.
        BrokerError::NotOwner { .. } | BrokerError::Unavailable(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> Self {
        Self::new(
            status_of(&error),
            error.code().as_str_name(),
            error.to_string(),
        )
    }
}

impl From<crate::managed_ledger::ManagedLedgerError> for ApiError {
    fn from(error: crate::managed_ledger::ManagedLedgerError) -> Self {
        BrokerError::from(error).into()
    }
}

impl From<magnetar_meta::MetaError> for ApiError {
    fn from(error: magnetar_meta::MetaError) -> Self {
        BrokerError::from(error).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_string(),
            message: self.message,
        };
        let mut response = super::request::json(self.status, &body);
        if let Some(location) = self
            .location
            .and_then(|location| HeaderValue::from_str(&location).ok())
        {
            response.headers_mut().insert(header::LOCATION, location);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_errors_keep_their_codes_with_fitting_statuses() {
        for (error, status, code) in [
            (
                BrokerError::InvalidName("x".into()),
                StatusCode::BAD_REQUEST,
                "INVALID_NAME",
            ),
            (
                BrokerError::TopicNotFound("t".into()),
                StatusCode::NOT_FOUND,
                "TOPIC_NOT_FOUND",
            ),
            (
                BrokerError::NamespaceNotFound("a/b".into()),
                StatusCode::NOT_FOUND,
                "NAMESPACE_NOT_FOUND",
            ),
            (
                BrokerError::SubscriptionNotFound("s".into()),
                StatusCode::NOT_FOUND,
                "SUBSCRIPTION_NOT_FOUND",
            ),
            (
                BrokerError::Unavailable("down".into()),
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVICE_UNAVAILABLE",
            ),
        ] {
            let api = ApiError::from(error);
            assert_eq!((api.status, api.code), (status, code));
        }
    }
}
