//! The calling side of `Meta.Pipeline`: one task per node connection owns the stream. It
//! numbers each op, sends whatever callers queued since its last message as one message, and
//! hands every answer to its caller. The stream is opened on first use and again after it
//! breaks; an op that was in flight when it broke fails with UNAVAILABLE (it may have been
//! applied), an op that never left fails with the connection error.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use magnetar_proto::meta::meta_client::MetaClient as WireClient;
use magnetar_proto::meta::{pipelined_op, pipelined_result, PipelineRequest, PipelinedOp};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use tonic::Status;

/// Most ops in one stream message.
const MAX_OPS_PER_MESSAGE: usize = 1024;
/// Callers waiting for the task to take their op.
const QUEUED_OPS: usize = 4096;

type Answer = std::result::Result<pipelined_result::Result, Status>;
type Queued = (pipelined_op::Op, oneshot::Sender<Answer>);

/// A handle on one node's pipeline; clones share the stream.
#[derive(Clone)]
pub(super) struct Pipeline {
    client: WireClient<Channel>,
    queue: Arc<Mutex<Option<mpsc::Sender<Queued>>>>,
}

impl Pipeline {
    pub(super) fn new(client: WireClient<Channel>) -> Self {
        Self {
            client,
            queue: Arc::new(Mutex::new(None)),
        }
    }

    /// The queue of the running task, starting one if there is none or it has ended (the
    /// runtime it ran on may be gone).
    fn queue(&self) -> mpsc::Sender<Queued> {
        let mut slot = self.queue.lock();
        match slot.as_ref() {
            Some(queue) if !queue.is_closed() => queue.clone(),
            _ => {
                let (queue, receiver) = mpsc::channel(QUEUED_OPS);
                tokio::spawn(run(self.client.clone(), receiver));
                *slot = Some(queue.clone());
                queue
            }
        }
    }

    /// Sends one op and waits for its answer.
    pub(super) async fn call(&self, op: pipelined_op::Op) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queue()
            .send((op, reply))
            .await
            .map_err(|_| Status::unavailable("the pipeline task stopped before taking the op"))?;
        answer
            .await
            .map_err(|_| Status::unavailable("the pipeline stopped before answering"))?
    }
}

/// The task: opens the stream when there is work, then sends and answers until it breaks.
async fn run(client: WireClient<Channel>, mut queue: mpsc::Receiver<Queued>) {
    let mut next_id: u64 = 1;
    while let Some(first) = queue.recv().await {
        let (outbound, outbound_queue) = mpsc::unbounded_channel();
        let opened = client
            .clone()
            .pipeline(UnboundedReceiverStream::new(outbound_queue))
            .await;
        let mut inbound = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => {
                // Nothing was sent: every waiting op fails with the connection's error, which
                // the caller may retry on another node.
                let _ = first.1.send(Err(status.clone()));
                while let Ok((_, reply)) = queue.try_recv() {
                    let _ = reply.send(Err(status.clone()));
                }
                continue;
            }
        };
        let mut pending: HashMap<u64, oneshot::Sender<Answer>> = HashMap::new();
        let mut waiting = Some(first);
        let broken = loop {
            let mut ops = Vec::new();
            while ops.len() < MAX_OPS_PER_MESSAGE {
                let Some((op, reply)) = waiting.take().or_else(|| queue.try_recv().ok()) else {
                    break;
                };
                let id = next_id;
                next_id += 1;
                pending.insert(id, reply);
                ops.push(PipelinedOp { id, op: Some(op) });
            }
            if !ops.is_empty() && outbound.send(PipelineRequest { ops }).is_err() {
                break Status::unavailable("the pipeline stream closed");
            }
            tokio::select! {
                queued = queue.recv() => match queued {
                    Some(queued) => waiting = Some(queued),
                    // Every handle is gone; nobody waits for what is pending.
                    None => return,
                },
                message = inbound.next() => match message {
                    Some(Ok(response)) => {
                        for result in response.results {
                            if let Some(reply) = pending.remove(&result.id) {
                                let answer = result
                                    .result
                                    .ok_or_else(|| Status::internal("an answer with no result"));
                                let _ = reply.send(answer);
                            }
                        }
                    }
                    Some(Err(status)) => break status,
                    None => break Status::unavailable("the node closed the pipeline stream"),
                },
            }
        };
        // In flight when the stream broke: the outcome is unknown.
        let status = Status::unavailable(format!("pipeline stream broke: {}", broken.message()));
        for (_, reply) in pending.drain() {
            let _ = reply.send(Err(status.clone()));
        }
    }
}

/// Typed calls: each sends its request as an op and expects the matching answer.
macro_rules! typed_calls {
    ($($name:ident: $request:ty => $op:ident, $response:ty;)*) => {
        impl Pipeline {
            $(pub(super) async fn $name(
                &self,
                request: $request,
            ) -> std::result::Result<tonic::Response<$response>, Status> {
                match self.call(pipelined_op::Op::$op(request)).await? {
                    pipelined_result::Result::$op(response) => Ok(tonic::Response::new(response)),
                    _ => Err(Status::internal("the node answered with another kind of result")),
                }
            })*
        }
    };
}

typed_calls! {
    get: magnetar_proto::meta::GetRequest => Get, magnetar_proto::meta::GetResponse;
    put: magnetar_proto::meta::PutRequest => Put, magnetar_proto::meta::PutResponse;
    delete: magnetar_proto::meta::DeleteRequest => Delete, magnetar_proto::meta::DeleteResponse;
    txn: magnetar_proto::meta::TxnRequest => Txn, magnetar_proto::meta::TxnResponse;
}
