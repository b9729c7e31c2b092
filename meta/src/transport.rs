//! Raft messages between nodes: one sending task per peer, fed by a bounded queue, that sends
//! what has accumulated as one message on a long-lived `MetaPeer.RaftStream` (a batch holding
//! a snapshot goes as one `MetaPeer.Raft` call instead, so its delivery can be reported).
//! raft-rs messages travel as opaque bytes (rust-protobuf encoded) inside our own prost
//! message.
//!
//! A full queue drops messages: Raft resends what matters (heartbeats, appends after a
//! rejection, snapshots after a failure report), so a slow peer never blocks the node.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use magnetar_proto::meta::meta_peer_client::MetaPeerClient;
use magnetar_proto::meta::RaftRequest;
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::node::{NodeHandle, Request};

/// Messages waiting for one peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Most messages in one call or stream message.
const MESSAGES_PER_CALL: usize = 256;
/// Batches waiting in a peer's stream for the connection.
const STREAM_QUEUE: usize = 64;
/// Longest wait for a peer to take a snapshot.
const SNAPSHOT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// gRPC message limit between nodes (a snapshot is one message).
pub const MAX_PEER_MESSAGE_BYTES: usize = 256 << 20;

struct Peer {
    endpoint: String,
    queue: mpsc::Sender<Message>,
}

/// The node's outgoing side.
pub struct Transport {
    self_id: u64,
    runtime: tokio::runtime::Handle,
    node: NodeHandle,
    peers: HashMap<u64, Peer>,
}

impl Transport {
    pub fn new(self_id: u64, runtime: tokio::runtime::Handle, node: NodeHandle) -> Self {
        Self {
            self_id,
            runtime,
            node,
            peers: HashMap::new(),
        }
    }

    /// Starts sending tasks for new members, stops those of removed ones.
    pub fn update(&mut self, members: &[magnetar_proto::meta::Member]) {
        self.peers.retain(|id, peer| {
            members
                .iter()
                .any(|m| m.id == *id && m.endpoint == peer.endpoint)
        });
        for member in members {
            if member.id == self.self_id
                || self.peers.contains_key(&member.id)
                || member.endpoint.is_empty()
            {
                continue;
            }
            let (queue, outbox) = mpsc::channel(PEER_QUEUE);
            let sender = PeerSender {
                self_id: self.self_id,
                peer_id: member.id,
                endpoint: member.endpoint.clone(),
                node: self.node.clone(),
            };
            self.runtime.spawn(sender.run(outbox));
            self.peers.insert(
                member.id,
                Peer {
                    endpoint: member.endpoint.clone(),
                    queue,
                },
            );
        }
    }

    /// Queues messages for their peers.
    pub fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            let is_snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
            let delivered = match self.peers.get(&to) {
                Some(peer) => peer.queue.try_send(message).is_ok(),
                None => false,
            };
            if !delivered {
                if is_snapshot {
                    self.node.report(Request::SnapshotReport(to, false));
                }
                self.node.report(Request::Unreachable(to));
            }
        }
    }
}

struct PeerSender {
    self_id: u64,
    peer_id: u64,
    endpoint: String,
    node: NodeHandle,
}

impl PeerSender {
    async fn run(self, mut outbox: mpsc::Receiver<Message>) {
        let channel = match Endpoint::from_shared(format!("http://{}", self.endpoint)) {
            Ok(endpoint) => endpoint
                .connect_timeout(Duration::from_millis(500))
                .tcp_nodelay(true)
                .connect_lazy(),
            Err(error) => {
                tracing::error!(peer = self.peer_id, endpoint = %self.endpoint, %error,
                    "unusable peer endpoint");
                return;
            }
        };
        let client = MetaPeerClient::<Channel>::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
        let mut stream: Option<mpsc::Sender<RaftRequest>> = None;
        while let Some(first) = outbox.recv().await {
            let mut batch = vec![first];
            while batch.len() < MESSAGES_PER_CALL {
                match outbox.try_recv() {
                    Ok(message) => batch.push(message),
                    Err(_) => break,
                }
            }
            let has_snapshot = batch
                .iter()
                .any(|m| m.get_msg_type() == MessageType::MsgSnapshot);
            let messages: Vec<Bytes> = batch
                .iter()
                .filter_map(|m| m.write_to_bytes().ok().map(Bytes::from))
                .collect();
            let request = RaftRequest {
                from: self.self_id,
                messages,
            };
            if has_snapshot {
                self.send_call(client.clone(), request).await;
                continue;
            }
            let open = match stream.take() {
                Some(open) if !open.is_closed() => open,
                _ => self.open_stream(client.clone()),
            };
            // A stream that broke has reported the peer unreachable; Raft resends what
            // mattered, so this batch is simply dropped.
            if open.send(request).await.is_ok() {
                stream = Some(open);
            }
        }
    }

    /// One awaited call, for batches holding a snapshot: Raft must hear whether it arrived.
    async fn send_call(&self, mut client: MetaPeerClient<Channel>, request: RaftRequest) {
        let failure = match tokio::time::timeout(SNAPSHOT_CALL_TIMEOUT, client.raft(request)).await
        {
            Ok(Ok(_)) => None,
            Ok(Err(status)) => Some(status.to_string()),
            Err(_) => Some(format!("no answer in {SNAPSHOT_CALL_TIMEOUT:?}")),
        };
        self.node
            .report(Request::SnapshotReport(self.peer_id, failure.is_none()));
        if let Some(reason) = failure {
            tracing::debug!(peer = self.peer_id, %reason, "snapshot not delivered");
            self.node.report(Request::Unreachable(self.peer_id));
        }
    }

    /// Opens the stream to the peer; its task reports the peer unreachable when it breaks.
    fn open_stream(&self, mut client: MetaPeerClient<Channel>) -> mpsc::Sender<RaftRequest> {
        let (sender, receiver) = mpsc::channel(STREAM_QUEUE);
        let node = self.node.clone();
        let peer_id = self.peer_id;
        tokio::spawn(async move {
            let outcome = client.raft_stream(ReceiverStream::new(receiver)).await;
            if let Err(status) = outcome {
                tracing::debug!(peer = peer_id, %status, "raft stream broke");
            }
            // Ended either way (the peer stopped or the connection broke): messages queued
            // in it may be lost, so Raft should probe the peer again.
            node.report(Request::Unreachable(peer_id));
        });
        sender
    }
}
