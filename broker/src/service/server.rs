//! A running broker: the gRPC listener, the HTTP admin API and metrics, the metadata session
//! that holds its registration and bundle ownership, and a watchdog that re-registers after
//! the session is lost.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use magnetar_bookie::ledger::{LedgerClient, LedgerClientConfig};
use magnetar_meta::MetaClient;
use magnetar_proto::broker::broker_server::BrokerServer;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use super::config::BrokerConfig;
use super::error::{BrokerError, BrokerResult};
use super::grpc::BrokerGrpc;
use super::{namespaces, ownership, policies, BrokerService};
use crate::admin::{AdminContext, AdminServer, RateTracker};

/// How often the watchdog checks the session.
const SESSION_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// A broker serving until [`RunningBroker::shutdown`].
pub struct RunningBroker {
    service: Arc<BrokerService>,
    local_addr: SocketAddr,
    server_stop: Option<oneshot::Sender<()>>,
    server_task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    admin: Option<AdminServer>,
    watchdog: JoinHandle<()>,
}

/// Registers the broker as live, with the HTTP address admin requests are redirected to.
async fn register(
    meta: &MetaClient,
    address: &str,
    http_address: &str,
    session_id: u64,
) -> BrokerResult<()> {
    let registration = ownership::BrokerRegistration {
        http_address: http_address.to_string(),
    };
    meta.put_ephemeral(
        &ownership::broker_key(address),
        serde_json::to_vec(&registration).unwrap_or_default(),
        session_id,
        None,
    )
    .await?;
    Ok(())
}

/// Binds `listen`; returns the listener, the bound address, and the address to advertise
/// (`advertise`, or the bound one when empty). `flag` names the setting to change on failure.
async fn bind(
    listen: SocketAddr,
    advertise: &str,
    flag: &str,
) -> BrokerResult<(tokio::net::TcpListener, SocketAddr, String)> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| {
            BrokerError::Unavailable(format!(
                "cannot listen on {listen}: {error}; pick another {flag} address"
            ))
        })?;
    let local_addr = listener
        .local_addr()
        .map_err(|error| BrokerError::Unavailable(error.to_string()))?;
    let advertised = if advertise.is_empty() {
        local_addr.to_string()
    } else {
        advertise.to_string()
    };
    Ok((listener, local_addr, advertised))
}

impl RunningBroker {
    pub async fn start(config: BrokerConfig) -> BrokerResult<Self> {
        config.validate().map_err(BrokerError::Protocol)?;
        let meta = MetaClient::new(&config.meta_endpoints)?;
        namespaces::ensure_default(&meta).await?;
        let ledgers = LedgerClient::new(meta.clone(), LedgerClientConfig::default());
        let (listener, local_addr, address) =
            bind(config.listen, &config.advertise_address, "--listen").await?;
        let (http_listener, _, http_address) = bind(
            config.http_listen,
            &config.advertise_http_address,
            "--http-listen",
        )
        .await?;
        let session = meta.open_session(config.session_ttl()).await?;
        let session_id = session.id();
        let service = BrokerService::new(
            config.clone(),
            address.clone(),
            meta.clone(),
            ledgers,
            session,
        );

        let incoming = TcpListenerStream::new(listener).map(|connection| {
            if let Ok(stream) = &connection {
                let _ = stream.set_nodelay(true);
            }
            connection
        });
        // Twice the limit on the wire, so an oversized batch reaches the broker and is refused
        // with MESSAGE_TOO_LARGE instead of breaking the stream.
        let limit = 2 * config.max_message_size_bytes + (1 << 20);
        let grpc = BrokerServer::new(BrokerGrpc::new(service.clone()))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit.max(64 << 20));
        let (server_stop, stop_signal) = oneshot::channel::<()>();
        let server_task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(grpc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stop_signal.await;
                }),
        );
        let admin = AdminServer::start(
            http_listener,
            Arc::new(AdminContext {
                service: service.clone(),
                http_address: http_address.clone(),
                rates: Arc::new(RateTracker::default()),
            }),
        )
        .map_err(|error| BrokerError::Unavailable(format!("starting the HTTP server: {error}")))?;
        // Registered once serving, so lookups never send clients to a broker not listening.
        register(&meta, &address, &http_address, session_id).await?;
        info!(%address, %http_address, "broker serving");
        let watchdog = tokio::spawn(watch_session(service.clone(), meta, address, http_address));
        tokio::spawn(policies::maintain(
            Arc::downgrade(&service),
            Duration::from_millis(config.policy_check_interval_ms),
        ));
        Ok(Self {
            service,
            local_addr,
            server_stop: Some(server_stop),
            server_task: Some(server_task),
            admin: Some(admin),
            watchdog,
        })
    }

    /// The address the HTTP admin API and metrics are served on.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    /// `http://host:port` of the admin API.
    pub fn admin_url(&self) -> String {
        self.http_addr()
            .map(|address| format!("http://{address}"))
            .unwrap_or_default()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address clients reach this broker at.
    pub fn address(&self) -> &str {
        self.service.address()
    }

    pub fn service(&self) -> &Arc<BrokerService> {
        &self.service
    }

    /// Stops serving, closes every topic (so the next owner needs no recovery) and the session.
    pub async fn shutdown(mut self) {
        self.watchdog.abort();
        if let Some(stop) = self.server_stop.take() {
            let _ = stop.send(());
        }
        if let Some(admin) = self.admin.take() {
            admin.shutdown().await;
        }
        self.service.shutdown().await;
        if let Some(task) = self.server_task.take() {
            let _ = task.await;
        }
    }

    /// Stops at once without closing anything: what a crash looks like to the others (its
    /// session expires after its TTL).
    pub fn abort(mut self) {
        self.service.halt();
        self.watchdog.abort();
        if let Some(admin) = self.admin.take() {
            admin.abort();
        }
        if let Some(task) = self.server_task.take() {
            task.abort();
        }
        if let Some(session) = self.service.session.lock().take() {
            session.abandon();
        }
    }
}

/// Re-registers under a new session when the store reports the old one expired.
async fn watch_session(
    service: Arc<BrokerService>,
    meta: MetaClient,
    address: String,
    http_address: String,
) {
    loop {
        tokio::time::sleep(SESSION_CHECK_INTERVAL).await;
        if !service.session_lost() {
            continue;
        }
        match meta.open_session(service.config().session_ttl()).await {
            Ok(session) => {
                let session_id = session.id();
                service.replace_session(session);
                if let Err(error) = register(&meta, &address, &http_address, session_id).await {
                    warn!(%error, "re-registering the broker failed; will retry");
                } else {
                    info!("broker re-registered under a new session");
                }
            }
            Err(error) => warn!(%error, "opening a new metadata session failed; will retry"),
        }
    }
}
