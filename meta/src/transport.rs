//! Raft messages between nodes: one sending task per peer, fed by a bounded queue, that sends
//! what has accumulated as one `MetaPeer.Raft` call. raft-rs messages travel as opaque bytes
//! (rust-protobuf encoded) inside our own prost message.
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
use tonic::transport::{Channel, Endpoint};

use crate::node::{NodeHandle, Request};

/// Messages waiting for one peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Most messages in one call.
const MESSAGES_PER_CALL: usize = 256;
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
                .timeout(Duration::from_secs(10))
                .tcp_nodelay(true)
                .connect_lazy(),
            Err(error) => {
                tracing::error!(peer = self.peer_id, endpoint = %self.endpoint, %error,
                    "unusable peer endpoint");
                return;
            }
        };
        let mut client = MetaPeerClient::<Channel>::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES);
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
            match client.raft(request).await {
                Ok(_) => {
                    if has_snapshot {
                        self.node
                            .report(Request::SnapshotReport(self.peer_id, true));
                    }
                }
                Err(status) => {
                    tracing::debug!(peer = self.peer_id, %status, "raft messages not delivered");
                    if has_snapshot {
                        self.node
                            .report(Request::SnapshotReport(self.peer_id, false));
                    }
                    self.node.report(Request::Unreachable(self.peer_id));
                }
            }
        }
    }
}
