//! `MetaClient`: the Rust client of the metadata store.
//!
//! It talks to any node (followers forward to the leader) and moves to the leader named in
//! response headers, so most requests take one hop. Gets, puts, deletes and transactions
//! travel over one `Pipeline` stream per node (`client/pipeline.rs`): a stream message per op
//! instead of a whole call, and ops queued together leave together. Reads and requests that
//! certainly did not leave are retried on other nodes; a write whose connection broke
//! mid-flight is not retried (it may have been applied) and answers UNAVAILABLE. Watches
//! reconnect by themselves and resume from the next revision, so a caller sees every change
//! exactly once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use magnetar_proto::meta::meta_client::MetaClient as WireClient;
use magnetar_proto::meta::{
    txn_op, AddMemberRequest, CloseSessionRequest, Compare, DeleteRequest, ErrorCode, Event,
    GetRequest, Header, KeepAliveRequest, KeyValue, ListRequest, Member, OpenSessionRequest,
    PutRequest, RemoveMemberRequest, StatusRequest, StatusResponse, TxnOp, TxnRequest, TxnResponse,
    WatchRequest,
};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use crate::errors::{MetaError, Result};
use crate::server::never_sent;

const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// How a failed call may be retried.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads: any transport failure is retried on another node.
    Always,
    /// Writes: only failures that certainly changed nothing.
    IfDefinite,
}

mod pipeline;

use pipeline::Pipeline;

struct Node {
    endpoint: String,
    link: Link,
}

/// The two ways to one node: plain calls, and the pipeline stream for gets, puts, deletes
/// and transactions.
#[derive(Clone)]
struct Link {
    client: WireClient<Channel>,
    pipeline: Pipeline,
}

/// A handle on the metadata store; cheap to clone.
#[derive(Clone)]
pub struct MetaClient {
    nodes: Arc<Mutex<Vec<Node>>>,
    current: Arc<AtomicUsize>,
    timeout: Duration,
}

/// One page of a list.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    pub revision: u64,
}

fn connect(endpoint: &str) -> Result<Link> {
    let channel = Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(|e| MetaError::InvalidArgument(format!("endpoint {endpoint:?}: {e}")))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .connect_lazy();
    let client = WireClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    Ok(Link {
        pipeline: Pipeline::new(client.clone()),
        client,
    })
}

fn check(header: Option<Header>) -> Result<Header> {
    let header = header.unwrap_or_default();
    let code = ErrorCode::try_from(header.error).unwrap_or(ErrorCode::Internal);
    match MetaError::from_wire(code, header.message.clone(), header.leader_id) {
        Some(error) => Err(error),
        None => Ok(header),
    }
}

impl MetaClient {
    /// A client over the given endpoints (`host:port`); connections are made on first use.
    pub fn new(endpoints: &[String]) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(MetaError::InvalidArgument("no endpoint given".into()));
        }
        let nodes = endpoints
            .iter()
            .map(|endpoint| {
                Ok(Node {
                    endpoint: endpoint.clone(),
                    link: connect(endpoint)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            nodes: Arc::new(Mutex::new(nodes)),
            current: Arc::new(AtomicUsize::new(0)),
            timeout: Duration::from_secs(10),
        })
    }

    /// How long one call may keep retrying across nodes.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The endpoint requests go to now.
    pub fn current_endpoint(&self) -> String {
        let nodes = self.nodes.lock();
        let index = self.current.load(Ordering::Relaxed) % nodes.len();
        nodes[index].endpoint.clone()
    }

    fn pick(&self) -> (usize, Link) {
        let nodes = self.nodes.lock();
        let index = self.current.load(Ordering::Relaxed) % nodes.len();
        (index, nodes[index].link.clone())
    }

    fn rotate_from(&self, index: usize) {
        let _ =
            self.current
                .compare_exchange(index, index + 1, Ordering::Relaxed, Ordering::Relaxed);
        let len = self.nodes.lock().len();
        if self.current.load(Ordering::Relaxed) >= len {
            self.current.store(0, Ordering::Relaxed);
        }
    }

    /// Follows a leader hint from a response header.
    fn follow(&self, header: &Header) {
        if header.leader_endpoint.is_empty() {
            return;
        }
        let mut nodes = self.nodes.lock();
        let index = match nodes
            .iter()
            .position(|n| n.endpoint == header.leader_endpoint)
        {
            Some(index) => index,
            None => match connect(&header.leader_endpoint) {
                Ok(link) => {
                    nodes.push(Node {
                        endpoint: header.leader_endpoint.clone(),
                        link,
                    });
                    nodes.len() - 1
                }
                Err(_) => return,
            },
        };
        self.current.store(index, Ordering::Relaxed);
    }

    /// Calls one RPC with retries across nodes as `retry` allows.
    async fn call<R, F, Fut>(
        &self,
        retry: Retry,
        header_of: fn(&R) -> Option<Header>,
        call: F,
    ) -> Result<R>
    where
        F: Fn(Link) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<R>, Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(10);
        loop {
            let (index, link) = self.pick();
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = match tokio::time::timeout(remaining, call(link)).await {
                Ok(attempt) => attempt,
                Err(_) => {
                    // A hung node: the request may have been applied.
                    self.rotate_from(index);
                    return Err(MetaError::Unavailable("the call timed out".into()));
                }
            };
            let error = match attempt {
                Ok(response) => {
                    let response = response.into_inner();
                    let header = header_of(&response).unwrap_or_default();
                    match check(Some(header.clone())) {
                        Ok(header) => {
                            self.follow(&header);
                            return Ok(response);
                        }
                        Err(
                            error @ (MetaError::NotLeader { .. }
                            | MetaError::ShuttingDown
                            | MetaError::Busy),
                        ) => {
                            if header.leader_endpoint.is_empty() {
                                self.rotate_from(index);
                            } else {
                                self.follow(&header);
                            }
                            error
                        }
                        Err(MetaError::NoQuorum(message)) if retry == Retry::Always => {
                            self.rotate_from(index);
                            MetaError::NoQuorum(message)
                        }
                        Err(error) => return Err(error),
                    }
                }
                Err(status) => {
                    self.rotate_from(index);
                    let error = MetaError::Unavailable(status.message().to_string());
                    if retry == Retry::IfDefinite && !never_sent(&status) {
                        return Err(error);
                    }
                    error
                }
            };
            if Instant::now() + backoff >= deadline {
                return Err(error);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// The key's value and version, or None when absent.
    pub async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let request = GetRequest { key: key.into() };
        let response = self
            .call(
                Retry::Always,
                |r: &magnetar_proto::meta::GetResponse| r.header.clone(),
                |link| {
                    let request = request.clone();
                    async move { link.pipeline.get(request).await }
                },
            )
            .await?;
        Ok(response.kv)
    }

    async fn put_request(&self, request: PutRequest) -> Result<u64> {
        let response = self
            .call(
                Retry::IfDefinite,
                |r: &magnetar_proto::meta::PutResponse| r.header.clone(),
                |link| {
                    let request = request.clone();
                    async move { link.pipeline.put(request).await }
                },
            )
            .await?;
        Ok(response.version)
    }

    /// Writes a key unconditionally; returns its new version.
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<u64> {
        self.put_request(PutRequest {
            key: key.into(),
            value: value.into(),
            expected_version: None,
            session_id: 0,
        })
        .await
    }

    /// Writes a key only if its version is `expected_version` (0 = only if absent).
    pub async fn put_if_version(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        expected_version: u64,
    ) -> Result<u64> {
        self.put_request(PutRequest {
            key: key.into(),
            value: value.into(),
            expected_version: Some(expected_version),
            session_id: 0,
        })
        .await
    }

    /// Writes an ephemeral key owned by a session (deleted when the session ends).
    pub async fn put_ephemeral(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        session_id: u64,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        self.put_request(PutRequest {
            key: key.into(),
            value: value.into(),
            expected_version,
            session_id,
        })
        .await
    }

    /// Deletes a key, optionally only at a given version; returns whether it existed.
    pub async fn delete(&self, key: &str, expected_version: Option<u64>) -> Result<bool> {
        let request = DeleteRequest {
            key: key.into(),
            expected_version,
        };
        let response = self
            .call(
                Retry::IfDefinite,
                |r: &magnetar_proto::meta::DeleteResponse| r.header.clone(),
                |link| {
                    let request = request.clone();
                    async move { link.pipeline.delete(request).await }
                },
            )
            .await?;
        Ok(response.deleted)
    }

    /// One page of keys under `prefix` after `start_after` (empty = from the start).
    pub async fn list(
        &self,
        prefix: &str,
        start_after: &str,
        limit: u32,
        keys_only: bool,
    ) -> Result<ListPage> {
        let request = ListRequest {
            prefix: prefix.into(),
            start_after: start_after.into(),
            limit,
            keys_only,
            local: false,
        };
        let response = self
            .call(
                Retry::Always,
                |r: &magnetar_proto::meta::ListResponse| r.header.clone(),
                |Link { client: mut c, .. }| {
                    let request = request.clone();
                    async move { c.list(request).await }
                },
            )
            .await?;
        Ok(ListPage {
            revision: response.header.map_or(0, |h| h.revision),
            kvs: response.kvs,
            more: response.more,
        })
    }

    /// Every key under `prefix`, page after page (not one snapshot when pages are many).
    pub async fn list_all(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        let mut all = Vec::new();
        let mut start_after = String::new();
        loop {
            let page = self.list(prefix, &start_after, 0, false).await?;
            if let Some(last) = page.kvs.last() {
                start_after = last.key.clone();
            }
            all.extend(page.kvs);
            if !page.more {
                return Ok(all);
            }
        }
    }

    /// Applies `ops` atomically if every compare holds.
    pub async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> Result<TxnResponse> {
        let request = TxnRequest { compares, ops };
        self.call(
            Retry::IfDefinite,
            |r: &TxnResponse| r.header.clone(),
            |link| {
                let request = request.clone();
                async move { link.pipeline.txn(request).await }
            },
        )
        .await
    }

    /// The next number of a counter kept at `key`, unique across all callers (ids may skip a
    /// number when a write's outcome was unknown, never repeat one).
    pub async fn next_sequential_id(&self, key: &str) -> Result<u64> {
        loop {
            let current = self.get(key).await?;
            let (value, version) = match &current {
                Some(kv) => {
                    let bytes: [u8; 8] = kv.value.as_ref().try_into().map_err(|_| {
                        MetaError::InvalidArgument(format!("{key} does not hold a counter"))
                    })?;
                    (u64::from_be_bytes(bytes), kv.version)
                }
                None => (0, 0),
            };
            let next = value + 1;
            let response = self
                .txn(
                    vec![Compare {
                        key: key.into(),
                        version,
                    }],
                    vec![put_op(key, next.to_be_bytes().to_vec(), 0)],
                )
                .await?;
            if response.succeeded {
                return Ok(next);
            }
        }
    }

    /// Opens a session whose ephemeral keys live while keepalives arrive within `ttl`.
    pub async fn open_session(&self, ttl: Duration) -> Result<Session> {
        let request = OpenSessionRequest {
            ttl_ms: ttl.as_millis() as u64,
        };
        let response = self
            .call(
                Retry::IfDefinite,
                |r: &magnetar_proto::meta::OpenSessionResponse| r.header.clone(),
                |Link { client: mut c, .. }| async move { c.open_session(request).await },
            )
            .await?;
        Ok(Session::start(self.clone(), response.session_id, ttl))
    }

    /// One keepalive for a session.
    pub async fn keep_alive(&self, session_id: u64) -> Result<()> {
        let request = KeepAliveRequest { session_id };
        self.call(
            Retry::Always,
            |r: &magnetar_proto::meta::KeepAliveResponse| r.header.clone(),
            |Link { client: mut c, .. }| async move { c.keep_alive(request).await },
        )
        .await
        .map(|_| ())
    }

    pub async fn close_session(&self, session_id: u64) -> Result<()> {
        let request = CloseSessionRequest { session_id };
        self.call(
            Retry::IfDefinite,
            |r: &magnetar_proto::meta::CloseSessionResponse| r.header.clone(),
            |Link { client: mut c, .. }| async move { c.close_session(request).await },
        )
        .await
        .map(|_| ())
    }

    pub async fn add_member(&self, id: u64, endpoint: &str) -> Result<Vec<Member>> {
        let request = AddMemberRequest {
            id,
            endpoint: endpoint.into(),
        };
        let response = self
            .call(
                Retry::IfDefinite,
                |r: &magnetar_proto::meta::MemberResponse| r.header.clone(),
                |Link { client: mut c, .. }| {
                    let request = request.clone();
                    async move { c.add_member(request).await }
                },
            )
            .await?;
        Ok(response.members)
    }

    pub async fn remove_member(&self, id: u64) -> Result<Vec<Member>> {
        let request = RemoveMemberRequest { id };
        let response = self
            .call(
                Retry::IfDefinite,
                |r: &magnetar_proto::meta::MemberResponse| r.header.clone(),
                |Link { client: mut c, .. }| async move { c.remove_member(request).await },
            )
            .await?;
        Ok(response.members)
    }

    /// Every key under `prefix` as the node at `endpoint` holds it, without forwarding or
    /// read index: possibly stale, for checking one replica.
    pub async fn local_list_all(endpoint: &str, prefix: &str) -> Result<Vec<KeyValue>> {
        let mut client = connect(endpoint)?.client;
        let mut all = Vec::new();
        let mut start_after = String::new();
        loop {
            let request = ListRequest {
                prefix: prefix.into(),
                start_after: start_after.clone(),
                limit: 0,
                keys_only: false,
                local: true,
            };
            let response = client
                .list(request)
                .await
                .map_err(|s| MetaError::Unavailable(s.message().to_string()))?
                .into_inner();
            check(response.header.clone())?;
            if let Some(last) = response.kvs.last() {
                start_after = last.key.clone();
            }
            all.extend(response.kvs);
            if !response.more {
                return Ok(all);
            }
        }
    }

    /// The status of the node at `endpoint` (no forwarding, no retries).
    pub async fn status_of(endpoint: &str) -> Result<StatusResponse> {
        let mut client = connect(endpoint)?.client;
        let response = client
            .status(StatusRequest {})
            .await
            .map_err(|s| MetaError::Unavailable(s.message().to_string()))?
            .into_inner();
        check(response.header.clone())?;
        Ok(response)
    }

    /// Every change under `prefix` from `start_revision` on (0 = changes after now), in order
    /// and without gaps, across node failures. The stream ends with an error when the
    /// revisions are compacted (list again, then watch from the listed revision + 1).
    pub async fn watch(&self, prefix: &str, start_revision: u64) -> Result<WatchStream> {
        let start = match start_revision {
            0 => self.list(prefix, "", 1, true).await?.revision + 1,
            revision => revision,
        };
        let (sender, receiver) = mpsc::channel(64);
        let client = self.clone();
        let prefix = prefix.to_string();
        let task = tokio::spawn(async move { client.run_watch(prefix, start, sender).await });
        Ok(WatchStream { receiver, task })
    }

    async fn run_watch(
        self,
        prefix: String,
        mut next: u64,
        sender: mpsc::Sender<Result<Vec<Event>>>,
    ) {
        let mut backoff = Duration::from_millis(10);
        loop {
            let (index, Link { mut client, .. }) = self.pick();
            let request = WatchRequest {
                prefix: prefix.clone(),
                start_revision: next,
            };
            if let Ok(response) = client.watch(request).await {
                let mut stream = response.into_inner();
                loop {
                    let message = match stream.message().await {
                        Ok(Some(message)) => message,
                        Ok(None) | Err(_) => break,
                    };
                    match check(message.header.clone()) {
                        Ok(_) => {}
                        Err(MetaError::ShuttingDown) => break,
                        Err(error) => {
                            let _ = sender.send(Err(error)).await;
                            return;
                        }
                    }
                    backoff = Duration::from_millis(10);
                    let events: Vec<Event> = message
                        .events
                        .into_iter()
                        .filter(|e| e.revision >= next)
                        .collect();
                    if let Some(last) = events.last() {
                        next = last.revision + 1;
                        if sender.send(Ok(events)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            if sender.is_closed() {
                return;
            }
            self.rotate_from(index);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }
}

/// A put op for [`MetaClient::txn`] (`session_id` 0 = persistent).
pub fn put_op(key: &str, value: impl Into<Bytes>, session_id: u64) -> TxnOp {
    TxnOp {
        kind: txn_op::Kind::Put as i32,
        key: key.into(),
        value: value.into(),
        session_id,
    }
}

/// A delete op for [`MetaClient::txn`].
pub fn delete_op(key: &str) -> TxnOp {
    TxnOp {
        kind: txn_op::Kind::Delete as i32,
        key: key.into(),
        ..TxnOp::default()
    }
}

/// A compare for [`MetaClient::txn`]: holds when the key's version is `version` (0 = absent).
pub fn version_is(key: &str, version: u64) -> Compare {
    Compare {
        key: key.into(),
        version,
    }
}

/// Changes delivered by [`MetaClient::watch`], a revision's events together.
pub struct WatchStream {
    receiver: mpsc::Receiver<Result<Vec<Event>>>,
    task: tokio::task::JoinHandle<()>,
}

impl WatchStream {
    /// The next events, or None when the stream ended.
    pub async fn next(&mut self) -> Option<Result<Vec<Event>>> {
        self.receiver.recv().await
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An open session, kept alive in the background until closed or dropped.
pub struct Session {
    id: u64,
    client: MetaClient,
    keepalive: tokio::task::JoinHandle<()>,
    lost: tokio::sync::watch::Receiver<bool>,
}

impl Session {
    fn start(client: MetaClient, id: u64, ttl: Duration) -> Self {
        let (lost_sender, lost) = tokio::sync::watch::channel(false);
        let keeper = client.clone();
        let keepalive = tokio::spawn(async move {
            let period = (ttl / 3).max(Duration::from_millis(10));
            loop {
                tokio::time::sleep(period).await;
                if let Err(MetaError::UnknownSession(_)) = keeper.keep_alive(id).await {
                    let _ = lost_sender.send(true);
                    return;
                }
            }
        });
        Self {
            id,
            client,
            keepalive,
            lost,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the store reported the session gone (expired): its keys are deleted.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Stops the keepalives without closing: the session expires after its TTL (what a
    /// crashed owner looks like to the store).
    pub fn abandon(self) {
        self.keepalive.abort();
    }

    /// Closes the session; its ephemeral keys are deleted now.
    pub async fn close(self) -> Result<()> {
        self.keepalive.abort();
        self.client.close_session(self.id).await
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}
