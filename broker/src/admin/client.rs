//! A small client for the admin API, used by the CLI, by the broker itself to fan a
//! partitioned topic's request out to its partitions' owners, and by tests.
//!
//! One HTTP/1.1 connection per request (admin traffic is rare and small), a timeout on each,
//! and redirects followed up to a bound, since any broker answers a topic request by
//! redirecting to the topic's owner.

use std::time::Duration;

use axum::http::{header, Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use super::error::ErrorBody;

/// Redirects followed before giving up: ownership can move while a request is redirected,
/// but not more than a few times in a row.
const MAX_REDIRECTS: usize = 5;
/// Largest response body read, in bytes.
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    /// The URL is not `http://host:port[/path]`.
    #[error("invalid admin URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// Nothing answers at the address.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed midway.
    #[error("HTTP exchange with {address} failed: {reason}")]
    Http { address: String, reason: String },
    /// No answer within the timeout.
    #[error("{address} did not answer within {timeout:?}")]
    Timeout { address: String, timeout: Duration },
    /// More redirects than [`MAX_REDIRECTS`].
    #[error("too many redirects (last to {location}); ownership keeps moving, retry shortly")]
    TooManyRedirects { location: String },
    /// The API answered with an error.
    #[error("{code} ({status}): {message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// A success whose body is not what was expected.
    #[error("unexpected response body: {0}")]
    Decode(String),
}

impl AdminClientError {
    /// The API's error code, when the API answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            AdminClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A response as it came back.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub location: Option<String>,
    pub content_type: Option<String>,
    pub body: Bytes,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, AdminClientError> {
        serde_json::from_slice(&self.body).map_err(|error| {
            AdminClientError::Decode(format!("{error}; the body was {:?}", self.text()))
        })
    }

    /// The error body of a failed request.
    pub fn error(&self) -> Option<ErrorBody> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// A client of one broker's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    /// `http://host:port`, no trailing slash.
    base: String,
    timeout: Duration,
}

/// Splits `http://host:port/path?query` into the authority and the path with its query.
fn split_url(url: &str) -> Result<(String, String), AdminClientError> {
    let invalid = |reason: &str| AdminClientError::InvalidUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(invalid(&format!(
                "scheme {scheme:?} is not supported; use http://"
            )))
        }
        None => url,
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(invalid("no host"));
    }
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

impl AdminClient {
    /// A client of the broker at `url` (`http://host:port`; a bare `host:port` works too).
    pub fn new(url: &str) -> Result<Self, AdminClientError> {
        let (authority, path) = split_url(url.trim_end_matches('/'))?;
        if path != "/" {
            return Err(AdminClientError::InvalidUrl {
                url: url.to_string(),
                reason: "give the broker's base URL, without a path".into(),
            });
        }
        Ok(Self {
            base: format!("http://{authority}"),
            timeout: Duration::from_secs(30),
        })
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends one request to `url` (absolute) and returns whatever came back, redirects
    /// included.
    pub async fn send_once(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
    ) -> Result<HttpResponse, AdminClientError> {
        let (authority, path) = split_url(url)?;
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(&authority)
                .await
                .map_err(|source| AdminClientError::Connect {
                    address: authority.clone(),
                    source,
                })?;
            let http_error = |error: hyper::Error| AdminClientError::Http {
                address: authority.clone(),
                reason: error.to_string(),
            };
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(http_error)?;
            let driver = tokio::spawn(connection);
            let mut request = Request::builder()
                .method(method)
                .uri(path.as_str())
                .header(header::HOST, authority.as_str());
            if body.is_some() {
                request = request.header(header::CONTENT_TYPE, "application/json");
            }
            let request = request
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|error| AdminClientError::InvalidUrl {
                    url: url.to_string(),
                    reason: error.to_string(),
                })?;
            let response = sender.send_request(request).await.map_err(http_error)?;
            let status = response.status();
            let header_text = |name: header::HeaderName| {
                response
                    .headers()
                    .get(name)
                    .and_then(|value| value.to_str().ok())
                    .map(str::to_string)
            };
            let location = header_text(header::LOCATION);
            let content_type = header_text(header::CONTENT_TYPE);
            let limited = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES);
            let body = limited
                .collect()
                .await
                .map_err(|error| AdminClientError::Http {
                    address: authority.clone(),
                    reason: error.to_string(),
                })?
                .to_bytes();
            driver.abort();
            Ok(HttpResponse {
                status,
                location,
                content_type,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(AdminClientError::Timeout {
                    address: authority.clone(),
                    timeout: self.timeout,
                })
            })
    }

    /// Sends a request to `path` of this broker, following redirects to the topic's owner.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<HttpResponse, AdminClientError> {
        let mut url = format!("{}{path}", self.base);
        for _ in 0..=MAX_REDIRECTS {
            let response = self.send_once(method.clone(), &url, body.clone()).await?;
            if !response.status.is_redirection() {
                return Ok(response);
            }
            let Some(location) = response.location else {
                return Err(AdminClientError::Decode(format!(
                    "a {} redirect without a Location header",
                    response.status
                )));
            };
            url = if location.starts_with('/') {
                let (authority, _) = split_url(&url)?;
                format!("http://{authority}{location}")
            } else {
                location
            };
        }
        Err(AdminClientError::TooManyRedirects { location: url })
    }

    /// Sends a request and fails with [`AdminClientError::Api`] unless it succeeded.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<HttpResponse, AdminClientError> {
        let response = self.send(method, path, body).await?;
        if response.status.is_success() {
            return Ok(response);
        }
        Err(match response.error() {
            Some(error) => AdminClientError::Api {
                status: response.status.as_u16(),
                code: error.code,
                message: error.message,
            },
            None => AdminClientError::Api {
                status: response.status.as_u16(),
                code: "HTTP_ERROR".into(),
                message: response.text(),
            },
        })
    }

    /// GETs `path` and decodes its JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, AdminClientError> {
        self.call(Method::GET, path, None).await?.json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_authority_and_path() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/admin/v2/tenants?x=1").unwrap(),
            ("127.0.0.1:8080".into(), "/admin/v2/tenants?x=1".into())
        );
        assert_eq!(
            split_url("localhost:8080").unwrap(),
            ("localhost:8080".into(), "/".into())
        );
        assert_eq!(
            split_url("http://example").unwrap(),
            ("example:80".into(), "/".into())
        );
        assert!(split_url("https://x:1").is_err());
        assert!(split_url("http:///x").is_err());
        assert!(AdminClient::new("http://h:1/admin").is_err());
        assert_eq!(
            AdminClient::new("http://h:1/").unwrap().base_url(),
            "http://h:1"
        );
    }
}
