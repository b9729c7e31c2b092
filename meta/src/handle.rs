//! The async side's view of a node thread: the requests it takes ([`Request`]), the state it
//! shares (leader, member endpoints, watch log) and [`NodeHandle`], the cheap cloneable
//! handle that sends requests over the node's bounded queue and awaits the answers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use magnetar_proto::meta::{Command, KeyValue, Member};
use parking_lot::RwLock;
use raft::prelude::Message;
use tokio::sync::oneshot;

use crate::errors::{MetaError, Result};
use crate::state_machine::CommandOutcome;
use crate::watch::WatchHub;

/// A linearizable read.
#[derive(Debug, Clone)]
pub enum ReadOp {
    Get {
        key: String,
    },
    List {
        prefix: String,
        start_after: String,
        limit: usize,
        keys_only: bool,
    },
}

/// The answer to a read, with the revision it reflects.
#[derive(Debug, Clone)]
pub enum ReadOutcome {
    Get(Option<KeyValue>, u64),
    List(Vec<KeyValue>, bool, u64),
}

/// A membership change.
#[derive(Debug, Clone)]
pub enum MemberChange {
    Add { id: u64, endpoint: String },
    Remove { id: u64 },
}

/// A node's own view, answered without Raft.
#[derive(Debug, Clone, Default)]
pub struct NodeStatus {
    pub id: u64,
    pub leader_id: u64,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub revision: u64,
    pub members: Vec<Member>,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;
pub(crate) type MemberReply = (Reply<Vec<Member>>, Result<Vec<Member>>);

/// What the node thread is asked to do.
pub enum Request {
    Write(Command, Reply<CommandOutcome>),
    Read(ReadOp, Reply<ReadOutcome>),
    /// A read of this node's own state, possibly stale.
    ReadLocal(ReadOp, Reply<ReadOutcome>),
    KeepAlive(u64, Reply<()>),
    ChangeMember(MemberChange, Reply<Vec<Member>>),
    Status(oneshot::Sender<NodeStatus>),
    /// A message from a peer.
    Raft(Box<Message>),
    /// A peer could not be reached.
    Unreachable(u64),
    /// Whether a snapshot reached a peer.
    SnapshotReport(u64, bool),
    Shutdown,
}

/// State shared with the async side: who leads, the members' endpoints, the watch log.
pub struct Shared {
    pub id: u64,
    pub(crate) leader_id: AtomicU64,
    pub(crate) leader_changes: tokio::sync::watch::Sender<u64>,
    pub(crate) members: RwLock<BTreeMap<u64, String>>,
    pub watch: WatchHub,
    pub(crate) stopping: AtomicBool,
}

impl Shared {
    pub fn leader_id(&self) -> u64 {
        self.leader_id.load(Ordering::Acquire)
    }

    pub fn endpoint_of(&self, id: u64) -> Option<String> {
        self.members.read().get(&id).cloned()
    }

    /// A receiver that changes whenever the leader does.
    pub fn leader_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.leader_changes.subscribe()
    }

    pub(crate) fn set_leader(&self, leader_id: u64) {
        self.leader_id.store(leader_id, Ordering::Release);
        self.leader_changes.send_replace(leader_id);
    }

    pub(crate) fn set_members(&self, members: &[Member]) {
        *self.members.write() = members.iter().map(|m| (m.id, m.endpoint.clone())).collect();
    }
}

/// The async side's handle on a node thread; cheap to clone.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) requests: SyncSender<Request>,
    pub shared: Arc<Shared>,
    pub(crate) request_timeout: Duration,
}

impl NodeHandle {
    fn enqueue(&self, request: Request) -> Result<()> {
        self.requests.try_send(request).map_err(|e| match e {
            TrySendError::Full(_) => MetaError::Busy,
            TrySendError::Disconnected(_) => MetaError::ShuttingDown,
        })
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(make(reply))?;
        // The node answers every request by its own deadline; this bound is a safety net.
        match tokio::time::timeout(self.request_timeout * 2, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(MetaError::ShuttingDown),
            Err(_) => Err(MetaError::NoQuorum(
                "the node did not answer in time".into(),
            )),
        }
    }

    pub async fn write(&self, command: Command) -> Result<CommandOutcome> {
        self.ask(|reply| Request::Write(command, reply)).await
    }

    pub async fn read(&self, read: ReadOp) -> Result<ReadOutcome> {
        self.ask(|reply| Request::Read(read, reply)).await
    }

    pub async fn read_local(&self, read: ReadOp) -> Result<ReadOutcome> {
        self.ask(|reply| Request::ReadLocal(read, reply)).await
    }

    pub async fn keep_alive(&self, session_id: u64) -> Result<()> {
        self.ask(|reply| Request::KeepAlive(session_id, reply))
            .await
    }

    pub async fn change_member(&self, change: MemberChange) -> Result<Vec<Member>> {
        self.ask(|reply| Request::ChangeMember(change, reply)).await
    }

    pub async fn status(&self) -> Result<NodeStatus> {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Request::Status(reply))?;
        answer.await.map_err(|_| MetaError::ShuttingDown)
    }

    /// Hands a peer's message to the node; dropped when the queue is full (Raft retries).
    pub fn deliver(&self, message: Message) {
        let _ = self.requests.try_send(Request::Raft(Box::new(message)));
    }

    pub fn report(&self, request: Request) {
        let _ = self.requests.try_send(request);
    }

    /// Asks the node thread to stop (it fails what is pending with SHUTTING_DOWN).
    pub fn stop(&self) {
        // The flag stops the thread even when the queue is too full for the wake-up message.
        self.shared.stopping.store(true, Ordering::Release);
        let _ = self.requests.try_send(Request::Shutdown);
    }
}
