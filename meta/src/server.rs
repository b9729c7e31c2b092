//! The gRPC face of a node: the client `Meta` service (with transparent forwarding from a
//! follower to the leader), the `MetaPeer` service for Raft messages, and [`MetaServer`],
//! which starts a whole node in-process (what `magnetar meta` and an embedding program call).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};

use magnetar_proto::meta::meta_client::MetaClient as WireClient;
use magnetar_proto::meta::meta_peer_server::{MetaPeer, MetaPeerServer};
use magnetar_proto::meta::meta_server::{Meta, MetaServer as WireServer};
use magnetar_proto::meta::{
    command, txn_op, AddMemberRequest, CloseSessionRequest, CloseSessionResponse, Command, Compare,
    DeleteRequest, DeleteResponse, ErrorCode, GetRequest, GetResponse, Header, KeepAliveRequest,
    KeepAliveResponse, ListRequest, ListResponse, MemberResponse, OpenSessionRequest,
    OpenSessionResponse, PipelineRequest, PipelineResponse, PutRequest, PutResponse, RaftRequest,
    RaftResponse, RemoveMemberRequest, StatusRequest, StatusResponse, TxnOp, TxnRequest,
    TxnResponse, WatchRequest, WatchResponse,
};
use parking_lot::Mutex;
use protobuf::Message as _;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status, Streaming};

use crate::config::MetaConfig;
use crate::errors::{MetaError, Result};
use crate::keys::{validate_key, validate_prefix, validate_value};
use crate::node::{self, MemberChange, NodeHandle, ReadOp, ReadOutcome};
use crate::state_machine::CommandOutcome;
use crate::transport::MAX_PEER_MESSAGE_BYTES;

mod pipeline;

/// Marks a request a follower forwarded, so it is never forwarded twice.
const FORWARDED: &str = "x-magnetar-meta-forwarded";
/// Default and largest page of a list.
const DEFAULT_LIST_LIMIT: usize = 1000;
const MAX_LIST_LIMIT: usize = 10_000;
/// Most compares and ops in one transaction.
const MAX_TXN_ITEMS: usize = 1024;
/// Events per watch response (a revision is never split).
const WATCH_EVENTS_PER_RESPONSE: usize = 1000;
/// Largest client message (a 1 MiB value plus its key and framing, or a large txn).
const MAX_CLIENT_MESSAGE_BYTES: usize = 64 << 20;

/// A cached client of another member, with the endpoint it was made for.
type MemberClient = (String, WireClient<Channel>);
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A response that carries a [`Header`].
trait WireResponse: Default + Send + 'static {
    fn header_slot(&mut self) -> &mut Option<Header>;

    fn error_code(&mut self) -> i32 {
        self.header_slot().as_ref().map_or(0, |h| h.error)
    }

    fn from_error(error: MetaError) -> Self {
        let mut response = Self::default();
        let leader_id = match &error {
            MetaError::NotLeader { leader_id } => *leader_id,
            _ => 0,
        };
        *response.header_slot() = Some(Header {
            error: error.code() as i32,
            message: error.to_string(),
            leader_id,
            ..Header::default()
        });
        response
    }
}

macro_rules! wire_responses {
    ($($name:ty),* $(,)?) => {
        $(impl WireResponse for $name {
            fn header_slot(&mut self) -> &mut Option<Header> {
                &mut self.header
            }
        })*
    };
}

wire_responses!(
    GetResponse,
    PutResponse,
    DeleteResponse,
    ListResponse,
    TxnResponse,
    OpenSessionResponse,
    KeepAliveResponse,
    CloseSessionResponse,
    MemberResponse,
    StatusResponse,
);

fn header(revision: u64) -> Option<Header> {
    Some(Header {
        revision,
        ..Header::default()
    })
}

/// Whether a transport error happened before the request left (safe to retry elsewhere).
pub(crate) fn never_sent(status: &Status) -> bool {
    let text = format!("{status:?}").to_lowercase();
    status.code() == tonic::Code::Unavailable
        && (text.contains("connect error")
            || text.contains("connection refused")
            || text.contains("error trying to connect"))
}

/// The `Meta` and `MetaPeer` services of one node.
#[derive(Clone)]
struct Service {
    node: NodeHandle,
    config: MetaConfig,
    leaders: std::sync::Arc<Mutex<HashMap<u64, MemberClient>>>,
    shutdown: watch::Receiver<bool>,
}

impl Service {
    fn id(&self) -> u64 {
        self.node.shared.id
    }

    /// A client for another member (cached, connected lazily).
    fn member_client(&self, id: u64) -> Option<WireClient<Channel>> {
        let endpoint = self.node.shared.endpoint_of(id)?;
        let mut clients = self.leaders.lock();
        if let Some((known, client)) = clients.get(&id) {
            if *known == endpoint {
                return Some(client.clone());
            }
        }
        let channel = Endpoint::from_shared(format!("http://{endpoint}"))
            .ok()?
            .connect_timeout(Duration::from_millis(500))
            .timeout(self.config.request_timeout * 2)
            .tcp_nodelay(true)
            .connect_lazy();
        let client = WireClient::new(channel)
            .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES);
        clients.insert(id, (endpoint, client.clone()));
        Some(client)
    }

    /// Fills the header's leader and revision fields.
    fn decorate<R: WireResponse>(&self, mut response: R) -> R {
        let leader_id = self.node.shared.leader_id();
        let head = self.node.shared.watch.head_revision();
        let header = response.header_slot().get_or_insert_with(Header::default);
        if header.leader_id == 0 {
            header.leader_id = leader_id;
        }
        if header.revision == 0 {
            header.revision = head;
        }
        if let Some(endpoint) = self.node.shared.endpoint_of(header.leader_id) {
            header.leader_endpoint = endpoint;
        }
        response
    }

    /// Runs a request here if this node leads, else forwards it to the leader, waiting for
    /// one to be elected up to the request timeout.
    async fn route<R, Local, Forward>(
        &self,
        metadata: &MetadataMap,
        local: Local,
        forward: Forward,
    ) -> R
    where
        R: WireResponse,
        Local: Fn() -> BoxFuture<Result<R>>,
        Forward: Fn(WireClient<Channel>) -> BoxFuture<std::result::Result<Response<R>, Status>>,
    {
        let forwarded = metadata.contains_key(FORWARDED);
        let deadline = Instant::now() + self.config.request_timeout;
        let mut leader_changes = self.node.shared.leader_changes();
        loop {
            leader_changes.borrow_and_update();
            let hint = match local().await {
                Ok(response) => return self.decorate(response),
                Err(MetaError::NotLeader { leader_id }) if !forwarded => leader_id,
                Err(error) => return self.decorate(R::from_error(error)),
            };
            if hint != 0 && hint != self.id() {
                if let Some(client) = self.member_client(hint) {
                    match forward(client).await {
                        Ok(response) => {
                            let mut response = response.into_inner();
                            if response.error_code() != ErrorCode::NotLeader as i32 {
                                return self.decorate(response);
                            }
                        }
                        Err(status) if never_sent(&status) => {}
                        Err(status) => {
                            return self.decorate(R::from_error(MetaError::Unavailable(format!(
                                "forwarding to the leader (node {hint}): {}",
                                status.message()
                            ))))
                        }
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return self.decorate(R::from_error(MetaError::NoQuorum(
                    "no leader could be reached in time".into(),
                )));
            }
            // Wait for the leader to change, but not long: our view may simply be stale.
            let pause = deadline.min(now + self.config.tick_interval * 2);
            let _ = tokio::time::timeout_at(pause.into(), leader_changes.changed()).await;
        }
    }

    fn check_txn(&self, txn: &TxnRequest) -> Result<()> {
        if txn.compares.len() + txn.ops.len() > MAX_TXN_ITEMS {
            return Err(MetaError::InvalidArgument(format!(
                "a transaction holds at most {MAX_TXN_ITEMS} compares and ops"
            )));
        }
        for compare in &txn.compares {
            validate_key(&compare.key, self.config.max_key_bytes)?;
        }
        for op in &txn.ops {
            validate_key(&op.key, self.config.max_key_bytes)?;
            validate_value(&op.value, self.config.max_value_bytes)?;
            if txn_op::Kind::try_from(op.kind).is_err() {
                return Err(MetaError::InvalidArgument(format!(
                    "unknown op kind {}",
                    op.kind
                )));
            }
        }
        Ok(())
    }
}

fn txn_command(txn: TxnRequest, conflict_is_error: bool) -> Command {
    Command {
        id: 0,
        op: Some(command::Op::Txn(txn)),
        conflict_is_error,
    }
}

fn conditional(key: &str, expected_version: Option<u64>) -> Vec<Compare> {
    expected_version
        .map(|version| Compare {
            key: key.to_string(),
            version,
        })
        .into_iter()
        .collect()
}

fn unexpected<T>(outcome: CommandOutcome) -> Result<T> {
    Err(MetaError::Internal(format!(
        "unexpected outcome {outcome:?}"
    )))
}

fn with_forwarded<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    request
}

/// Builds the local and forwarding closures of a request and routes it.
macro_rules! route {
    ($self:ident, $request:ident, $method:ident, |$service:ident, $message:ident| $local:expr) => {{
        let metadata = $request.metadata().clone();
        let message = $request.into_inner();
        let service = $self.clone();
        let local_message = message.clone();
        let response = $self
            .route(
                &metadata,
                move || {
                    let $service = service.clone();
                    let $message = local_message.clone();
                    Box::pin(async move { $local })
                },
                move |mut client| {
                    let message = message.clone();
                    Box::pin(async move { client.$method(with_forwarded(message)).await })
                },
            )
            .await;
        Ok(Response::new(response))
    }};
}

#[tonic::async_trait]
impl Meta for Service {
    async fn get(
        &self,
        request: Request<GetRequest>,
    ) -> std::result::Result<Response<GetResponse>, Status> {
        route!(self, request, get, |service, message| {
            validate_key(&message.key, service.config.max_key_bytes)?;
            match service.node.read(ReadOp::Get { key: message.key }).await? {
                ReadOutcome::Get(kv, revision) => Ok(GetResponse {
                    header: header(revision),
                    kv,
                }),
                ReadOutcome::List(..) => Err(MetaError::Internal("a list for a get".into())),
            }
        })
    }

    async fn put(
        &self,
        request: Request<PutRequest>,
    ) -> std::result::Result<Response<PutResponse>, Status> {
        route!(self, request, put, |service, message| {
            validate_key(&message.key, service.config.max_key_bytes)?;
            validate_value(&message.value, service.config.max_value_bytes)?;
            let txn = TxnRequest {
                compares: conditional(&message.key, message.expected_version),
                ops: vec![TxnOp {
                    kind: txn_op::Kind::Put as i32,
                    key: message.key,
                    value: message.value,
                    session_id: message.session_id,
                }],
            };
            match service.node.write(txn_command(txn, true)).await? {
                CommandOutcome::Txn { revision, .. } => Ok(PutResponse {
                    header: header(revision),
                    version: revision,
                }),
                other => unexpected(other),
            }
        })
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> std::result::Result<Response<DeleteResponse>, Status> {
        route!(self, request, delete, |service, message| {
            validate_key(&message.key, service.config.max_key_bytes)?;
            let txn = TxnRequest {
                compares: conditional(&message.key, message.expected_version),
                ops: vec![TxnOp {
                    kind: txn_op::Kind::Delete as i32,
                    key: message.key,
                    ..TxnOp::default()
                }],
            };
            match service.node.write(txn_command(txn, true)).await? {
                CommandOutcome::Txn {
                    revision, deleted, ..
                } => Ok(DeleteResponse {
                    header: header(revision),
                    deleted: deleted > 0,
                }),
                other => unexpected(other),
            }
        })
    }

    async fn list(
        &self,
        request: Request<ListRequest>,
    ) -> std::result::Result<Response<ListResponse>, Status> {
        route!(self, request, list, |service, message| {
            validate_prefix(&message.prefix, service.config.max_key_bytes)?;
            let limit = match message.limit as usize {
                0 => DEFAULT_LIST_LIMIT,
                limit => limit.min(MAX_LIST_LIMIT),
            };
            let read = ReadOp::List {
                prefix: message.prefix,
                start_after: message.start_after,
                limit,
                keys_only: message.keys_only,
            };
            let outcome = if message.local {
                service.node.read_local(read).await?
            } else {
                service.node.read(read).await?
            };
            match outcome {
                ReadOutcome::List(kvs, more, revision) => Ok(ListResponse {
                    header: header(revision),
                    kvs,
                    more,
                }),
                ReadOutcome::Get(..) => Err(MetaError::Internal("a get for a list".into())),
            }
        })
    }

    async fn txn(
        &self,
        request: Request<TxnRequest>,
    ) -> std::result::Result<Response<TxnResponse>, Status> {
        route!(self, request, txn, |service, message| {
            service.check_txn(&message)?;
            match service.node.write(txn_command(message, false)).await? {
                CommandOutcome::Txn {
                    revision,
                    succeeded,
                    failed_compares,
                    ..
                } => Ok(TxnResponse {
                    header: header(revision),
                    succeeded,
                    failed_compares,
                }),
                other => unexpected(other),
            }
        })
    }

    type WatchStream = ReceiverStream<std::result::Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> std::result::Result<Response<Self::WatchStream>, Status> {
        let request = request.into_inner();
        let (sender, receiver) = mpsc::channel(16);
        let service = self.clone();
        tokio::spawn(async move { service.stream_watch(request, sender).await });
        Ok(Response::new(ReceiverStream::new(receiver)))
    }

    async fn open_session(
        &self,
        request: Request<OpenSessionRequest>,
    ) -> std::result::Result<Response<OpenSessionResponse>, Status> {
        route!(self, request, open_session, |service, message| {
            let ttl = Duration::from_millis(message.ttl_ms);
            if ttl < service.config.min_session_ttl || ttl > service.config.max_session_ttl {
                return Err(MetaError::InvalidArgument(format!(
                    "session TTL {} ms is outside [{:?}, {:?}]",
                    message.ttl_ms, service.config.min_session_ttl, service.config.max_session_ttl
                )));
            }
            let command = Command {
                id: 0,
                op: Some(command::Op::OpenSession(message)),
                conflict_is_error: false,
            };
            match service.node.write(command).await? {
                CommandOutcome::SessionOpened { session_id, ttl_ms } => Ok(OpenSessionResponse {
                    header: None,
                    session_id,
                    ttl_ms,
                }),
                other => unexpected(other),
            }
        })
    }

    async fn keep_alive(
        &self,
        request: Request<KeepAliveRequest>,
    ) -> std::result::Result<Response<KeepAliveResponse>, Status> {
        route!(self, request, keep_alive, |service, message| {
            service.node.keep_alive(message.session_id).await?;
            Ok(KeepAliveResponse { header: None })
        })
    }

    async fn close_session(
        &self,
        request: Request<CloseSessionRequest>,
    ) -> std::result::Result<Response<CloseSessionResponse>, Status> {
        route!(self, request, close_session, |service, message| {
            let command = Command {
                id: 0,
                op: Some(command::Op::CloseSession(message)),
                conflict_is_error: false,
            };
            match service.node.write(command).await? {
                CommandOutcome::SessionClosed { revision } => Ok(CloseSessionResponse {
                    header: header(revision),
                }),
                other => unexpected(other),
            }
        })
    }

    async fn add_member(
        &self,
        request: Request<AddMemberRequest>,
    ) -> std::result::Result<Response<MemberResponse>, Status> {
        route!(self, request, add_member, |service, message| {
            if message.id == 0 || message.endpoint.is_empty() {
                return Err(MetaError::InvalidArgument(
                    "a member needs a non-zero id and an endpoint".into(),
                ));
            }
            let change = MemberChange::Add {
                id: message.id,
                endpoint: message.endpoint,
            };
            let members = service.node.change_member(change).await?;
            Ok(MemberResponse {
                header: None,
                members,
            })
        })
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> std::result::Result<Response<MemberResponse>, Status> {
        route!(self, request, remove_member, |service, message| {
            let members = service
                .node
                .change_member(MemberChange::Remove { id: message.id })
                .await?;
            Ok(MemberResponse {
                header: None,
                members,
            })
        })
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> std::result::Result<Response<StatusResponse>, Status> {
        let response = match self.node.status().await {
            Ok(status) => StatusResponse {
                header: Some(Header {
                    revision: status.revision,
                    leader_id: status.leader_id,
                    ..Header::default()
                }),
                node_id: status.id,
                term: status.term,
                commit_index: status.commit_index,
                applied_index: status.applied_index,
                members: status.members,
                is_leader: status.leader_id == status.id,
            },
            Err(error) => StatusResponse::from_error(error),
        };
        Ok(Response::new(self.decorate(response)))
    }

    type PipelineStream = ReceiverStream<std::result::Result<PipelineResponse, Status>>;

    async fn pipeline(
        &self,
        request: Request<Streaming<PipelineRequest>>,
    ) -> std::result::Result<Response<Self::PipelineStream>, Status> {
        let (sender, receiver) = mpsc::channel(pipeline::RESPONSES_QUEUED);
        tokio::spawn(pipeline::serve(self.clone(), request.into_inner(), sender));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

impl Service {
    async fn stream_watch(
        self,
        request: WatchRequest,
        sender: mpsc::Sender<std::result::Result<WatchResponse, Status>>,
    ) {
        let fail = |error: MetaError| WatchResponse {
            header: Some(Header {
                error: error.code() as i32,
                message: error.to_string(),
                ..Header::default()
            }),
            events: Vec::new(),
        };
        if let Err(error) = validate_prefix(&request.prefix, self.config.max_key_bytes) {
            let _ = sender.send(Ok(fail(error))).await;
            return;
        }
        let hub = &self.node.shared.watch;
        let mut revisions = hub.subscribe();
        let mut shutdown = self.shutdown.clone();
        let mut next = match request.start_revision {
            0 => hub.head_revision() + 1,
            revision => revision,
        };
        loop {
            revisions.borrow_and_update();
            match hub.read(next, &request.prefix, WATCH_EVENTS_PER_RESPONSE) {
                Err(error) => {
                    let _ = sender.send(Ok(fail(error))).await;
                    return;
                }
                Ok((events, next_revision)) => {
                    next = next_revision;
                    if !events.is_empty() {
                        let response = WatchResponse {
                            header: header(hub.head_revision()),
                            events,
                        };
                        if sender.send(Ok(response)).await.is_err() {
                            return;
                        }
                        continue;
                    }
                }
            }
            tokio::select! {
                changed = revisions.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = shutdown.changed() => {
                    let _ = sender.send(Ok(fail(MetaError::ShuttingDown))).await;
                    return;
                }
                _ = sender.closed() => return,
            }
        }
    }
}

#[tonic::async_trait]
impl MetaPeer for Service {
    async fn raft(
        &self,
        request: Request<RaftRequest>,
    ) -> std::result::Result<Response<RaftResponse>, Status> {
        self.deliver_raft(request.into_inner())?;
        Ok(Response::new(RaftResponse {}))
    }

    async fn raft_stream(
        &self,
        request: Request<Streaming<RaftRequest>>,
    ) -> std::result::Result<Response<RaftResponse>, Status> {
        let mut stream = request.into_inner();
        let mut shutdown = self.shutdown.clone();
        if *shutdown.borrow_and_update() {
            return Ok(Response::new(RaftResponse {}));
        }
        loop {
            tokio::select! {
                message = stream.message() => match message? {
                    Some(request) => self.deliver_raft(request)?,
                    None => break,
                },
                // A stopping node ends the stream, so its graceful stop need not wait for
                // the peer to hang up.
                _ = shutdown.changed() => break,
            }
        }
        Ok(Response::new(RaftResponse {}))
    }
}

impl Service {
    /// Hands a batch of peer messages to the Raft thread.
    fn deliver_raft(&self, request: RaftRequest) -> std::result::Result<(), Status> {
        for bytes in request.messages {
            // Only peers call this service; still, bad bytes are refused, never trusted.
            let message = raft::prelude::Message::parse_from_bytes(&bytes)
                .map_err(|e| Status::invalid_argument(format!("undecodable raft message: {e}")))?;
            self.node.deliver(message);
        }
        Ok(())
    }
}

/// A running node: its gRPC server and its Raft thread.
pub struct MetaServer {
    id: u64,
    endpoint: String,
    local_addr: SocketAddr,
    node: NodeHandle,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetaServer {
    /// Starts a node: opens its data directory, starts its Raft thread and serves gRPC on
    /// `config.listen`. A config with no peers starts a single-node group (the embedded
    /// default of `magnetar standalone`).
    pub async fn start(config: MetaConfig) -> Result<MetaServer> {
        config.validate()?;
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .map_err(|e| MetaError::InvalidArgument(format!("binding {}: {e}", config.listen)))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| MetaError::Internal(format!("reading the bound address: {e}")))?;
        let endpoint = if config.advertise.is_empty() {
            config
                .peers
                .get(&config.id)
                .cloned()
                .unwrap_or_else(|| local_addr.to_string())
        } else {
            config.advertise.clone()
        };
        let runtime = tokio::runtime::Handle::current();
        let node_config = config.clone();
        let node_endpoint = endpoint.clone();
        let (node, thread) =
            tokio::task::spawn_blocking(move || node::spawn(node_config, node_endpoint, runtime))
                .await
                .map_err(|e| MetaError::Internal(format!("starting the node: {e}")))??;

        let (shutdown, shutdown_signal) = watch::channel(false);
        let service = Service {
            node: node.clone(),
            config: config.clone(),
            leaders: Default::default(),
            shutdown: shutdown_signal.clone(),
        };
        let mut stop = shutdown_signal;
        let server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(
                WireServer::new(service.clone())
                    .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_CLIENT_MESSAGE_BYTES),
            )
            .add_service(
                MetaPeerServer::new(service)
                    .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
            )
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            });
        let server = tokio::spawn(server);
        tracing::info!(node = config.id, %endpoint, "metadata node started");
        Ok(MetaServer {
            id: config.id,
            endpoint,
            local_addr,
            node,
            shutdown,
            server,
            thread: Some(thread),
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The endpoint clients and peers use (`host:port`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's view of the group.
    pub async fn status(&self) -> Result<node::NodeStatus> {
        self.node.status().await
    }

    /// Stops serving, ends watch streams, stops the Raft thread and waits for it.
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.shutdown.send(true);
        self.node.stop();
        let server = std::mem::replace(&mut self.server, tokio::spawn(async { Ok(()) }));
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| MetaError::Internal(format!("joining the node thread: {e}")))?
                .map_err(|_| MetaError::Internal("the node thread panicked".into()))?;
        }
        Ok(())
    }
}

impl Drop for MetaServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        self.node.stop();
        self.server.abort();
        // Give the Raft thread a bounded moment to let go of RocksDB: a process that exits
        // while the thread still writes aborts in RocksDB's static destructors ("pthread lock:
        // Invalid argument"). `shutdown` is the way to wait for it fully.
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + DROP_JOIN_TIMEOUT;
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}

/// How long dropping a server waits for its Raft thread to stop.
const DROP_JOIN_TIMEOUT: Duration = Duration::from_secs(2);
