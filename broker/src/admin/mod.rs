//! The broker's HTTP face: the admin API in Pulsar's `/admin/v2` shape and Prometheus metrics
//! at `/metrics`, on the broker's HTTP address (8080 by default).
//!
//! Tenants and namespaces live in the metadata store, so any broker answers for them. A request
//! about a topic is answered by the broker owning the topic's bundle: any other broker
//! answers `307 Temporary Redirect` to the owner's HTTP address (as Pulsar's brokers do), so
//! the topic's live state (producers, subscriptions, rates) is read where it is. Errors are
//! JSON `{"code", "message"}` with stable codes.
//!
//! # Layout
//! - [`error`]: [`ApiError`], codes and HTTP statuses.
//! - [`request`]: path, query and body reading that fails in the API's JSON shape.
//! - [`tenants`], [`namespaces`], [`topics`], [`subscriptions`]: one file per resource.
//! - [`metrics`]: the Prometheus text exposition (rendering is pure).
//! - [`rates`]: per-topic message and byte rates, sampled once a second.
//! - [`client`]: [`AdminClient`], used by the CLI, by tests, and by a broker fanning a
//!   partitioned topic's request out to the partitions' owners.
//!
//! The server is a listener, one task per connection with at most [`MAX_CONNECTIONS`] at once
//! (beyond it, new connections wait in the listen backlog), and a stop signal every connection
//! listens to; shutting down waits for connections to finish their current request.

pub mod client;
pub mod error;
pub mod metrics;
pub mod namespaces;
pub mod rates;
pub mod request;
pub mod subscriptions;
pub mod tenants;
pub mod topics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

pub use axum::http::Method;
pub use client::{AdminClient, AdminClientError, HttpResponse};
pub use error::{ApiError, ApiResult};
pub use rates::RateTracker;

use crate::service::BrokerService;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// A connection that sends no complete request headers for this long is closed.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long shutting down waits for open connections to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often per-topic rates are sampled.
pub const RATE_INTERVAL: Duration = Duration::from_secs(1);

/// What every handler works with.
pub struct AdminContext {
    pub service: Arc<BrokerService>,
    /// `host:port` other brokers and redirected clients reach this API at.
    pub http_address: String,
    pub rates: Arc<RateTracker>,
}

impl AdminContext {
    /// A client of this broker's own API: fan-outs go through it and follow redirects.
    pub fn self_client(&self) -> Result<AdminClient, ApiError> {
        AdminClient::new(&self.http_address).map_err(|error| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                format!("this broker's HTTP address is unusable: {error}"),
            )
        })
    }
}

pub type Context = Arc<AdminContext>;

/// Every route of the API.
pub fn router(context: Context) -> Router {
    let topic = "/admin/v2/persistent/{tenant}/{namespace}/{topic}";
    let subscription = format!("{topic}/subscription/{{subscription}}");
    Router::new()
        .route("/metrics", get(metrics::scrape))
        .route("/admin/v2/tenants", get(tenants::list))
        .route(
            "/admin/v2/tenants/{tenant}",
            put(tenants::create).delete(tenants::delete),
        )
        .route("/admin/v2/namespaces/{tenant}", get(namespaces::list))
        .route(
            "/admin/v2/namespaces/{tenant}/{namespace}",
            put(namespaces::create)
                .delete(namespaces::delete)
                .get(namespaces::policies),
        )
        .route(
            "/admin/v2/namespaces/{tenant}/{namespace}/policies",
            get(namespaces::policies),
        )
        .route(
            "/admin/v2/namespaces/{tenant}/{namespace}/retention",
            get(namespaces::get_retention).post(namespaces::set_retention),
        )
        .route(
            "/admin/v2/namespaces/{tenant}/{namespace}/messageTTL",
            get(namespaces::get_ttl).post(namespaces::set_ttl),
        )
        .route(
            "/admin/v2/namespaces/{tenant}/{namespace}/backlogQuota",
            get(namespaces::get_backlog_quota).post(namespaces::set_backlog_quota),
        )
        .route(
            "/admin/v2/persistent/{tenant}/{namespace}",
            get(topics::list),
        )
        .route(
            "/admin/v2/persistent/{tenant}/{namespace}/partitioned",
            get(topics::list_partitioned),
        )
        .route(topic, put(topics::create).delete(topics::delete))
        .route(
            &format!("{topic}/partitions"),
            get(topics::get_partitions)
                .put(topics::create_partitioned)
                .delete(topics::delete_partitioned),
        )
        .route(&format!("{topic}/stats"), get(topics::stats))
        .route(
            &format!("{topic}/internalStats"),
            get(topics::internal_stats),
        )
        .route(&format!("{topic}/subscriptions"), get(subscriptions::list))
        .route(
            &subscription,
            put(subscriptions::create).delete(subscriptions::delete),
        )
        .route(
            &format!("{subscription}/resetcursor/{{timestamp}}"),
            post(subscriptions::reset_to_time),
        )
        .route(
            &format!("{subscription}/resetcursor"),
            post(subscriptions::reset_to_message),
        )
        .route(
            &format!("{subscription}/skip/{{count}}"),
            post(subscriptions::skip),
        )
        .route(
            &format!("{subscription}/peek/{{count}}"),
            get(subscriptions::peek),
        )
        .route(
            &format!("{subscription}/position/{{index}}"),
            get(subscriptions::message_at),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                error::codes::NOT_FOUND,
                "no such path; the API lives under /admin/v2 and metrics at /metrics",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                error::codes::METHOD_NOT_ALLOWED,
                "this path does not take that method",
            )
        })
        .with_state(context)
}

/// The admin HTTP server of a running broker.
pub struct AdminServer {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    sampler: JoinHandle<()>,
}

impl AdminServer {
    /// Serves the API on `listener` until [`AdminServer::shutdown`].
    pub fn start(listener: TcpListener, context: Context) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let sampler = tokio::spawn(rates::sample_periodically(
            context.service.clone(),
            context.rates.clone(),
            stopped.clone(),
        ));
        let server = tokio::spawn(serve(listener, router(context), stopped));
        Ok(Self {
            local_addr,
            stop,
            server,
            sampler,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets open connections finish their request, and returns when they
    /// have (or after a bounded wait).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        let _ = self.sampler.await;
    }

    /// Stops at once, as a crash would.
    pub fn abort(self) {
        self.server.abort();
        self.sampler.abort();
    }
}

async fn serve(listener: TcpListener, router: Router, mut stop: watch::Receiver<bool>) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // The permit is taken before accepting, so at the bound connections wait in the
        // kernel's backlog instead of being accepted and starved.
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    warn!(%error, "accepting an admin connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let router = router.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            serve_connection(stream, router, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, limit.acquire_many(MAX_CONNECTIONS as u32))
        .await
        .is_err()
    {
        warn!("admin connections still open after {DRAIN_TIMEOUT:?}; leaving them");
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let service = TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                debug!(%error, "admin connection ended with an error");
            }
        }
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
