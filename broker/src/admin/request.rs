//! Reading requests and writing JSON responses, so that every malformed input becomes an
//! [`ApiError`] in the API's JSON shape (axum's own rejections are plain text).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::ApiError;

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut response = (status, body).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "{{\"code\":\"INTERNAL\",\"message\":\"encoding the response failed: {error}\"}}"
            ),
        )
            .into_response(),
    }
}

/// A 200 answer with a JSON body.
pub fn ok<T: Serialize>(value: &T) -> Response {
    json(StatusCode::OK, value)
}

/// A 204 answer: done, nothing to say.
pub fn done() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Path parameters, with a JSON error when they cannot be read.
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Params(value))
            .map_err(|rejection| ApiError::invalid(format!("bad path: {rejection}")))
    }
}

/// The query string's parameters. Values are taken as written: the API's parameters are
/// words and numbers, which need no percent-decoding.
pub struct Query(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Query(parse_query(parts.uri.query().unwrap_or(""))))
    }
}

pub fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => (pair.to_string(), String::new()),
        })
        .collect()
}

/// A JSON body, or `None` when the body is empty.
pub fn optional_body<T: DeserializeOwned>(body: &Bytes) -> Result<Option<T>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|error| ApiError::invalid(format!("the body is not the expected JSON: {error}")))
}

/// A JSON body that must be there.
pub fn body<T: DeserializeOwned>(body: &Bytes, example: &str) -> Result<T, ApiError> {
    optional_body(body)?
        .ok_or_else(|| ApiError::invalid(format!("a JSON body is required, for example {example}")))
}

/// A count from the path: a whole number within `1..=max`.
pub fn count(text: &str, what: &str, max: u64) -> Result<u64, ApiError> {
    match text.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::invalid(format!(
            "{what} must be a whole number from 1 to {max}, not {text:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_split_into_pairs() {
        let query = parse_query("position=earliest&force&x=");
        assert_eq!(query["position"], "earliest");
        assert_eq!(query["force"], "");
        assert_eq!(query["x"], "");
        assert!(parse_query("").is_empty());
    }

    #[test]
    fn counts_refuse_zero_junk_and_excess() {
        assert_eq!(count("3", "n", 10).unwrap(), 3);
        for bad in ["0", "-1", "x", "11", ""] {
            let error = count(bad, "n", 10).unwrap_err();
            assert_eq!(error.code, "INVALID_REQUEST", "{bad}");
        }
    }

    #[test]
    fn bodies_are_optional_or_required() {
        let empty = Bytes::from_static(b" \n");
        assert_eq!(optional_body::<u64>(&empty).unwrap(), None);
        assert!(body::<u64>(&empty, "5").is_err());
        assert_eq!(body::<u64>(&Bytes::from_static(b"5"), "5").unwrap(), 5);
        assert!(body::<u64>(&Bytes::from_static(b"{"), "5").is_err());
    }
}
