//! The serving side of `Meta.Pipeline`: one task per stream runs the stream's ops
//! concurrently, each through the handler of its own call (validation and forwarding
//! included), and sends whatever has completed by the time the stream can take another
//! message as one response. The stream ends when the client closes its side or the node
//! stops.

use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use magnetar_proto::meta::meta_server::Meta;
use magnetar_proto::meta::{
    pipelined_op, pipelined_result, GetResponse, PipelineRequest, PipelineResponse, PipelinedOp,
    PipelinedResult,
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::{Service, WireResponse};
use crate::errors::MetaError;

/// Ops of one stream running at once; the stream is not read further until some complete.
const MAX_OPS_IN_FLIGHT: usize = 4096;
/// Most results in one response message.
const MAX_RESULTS_PER_RESPONSE: usize = 1024;
/// Response messages waiting for the transport.
pub(super) const RESPONSES_QUEUED: usize = 64;

/// Serves one pipeline stream until the client closes it (or the node stops) and every op
/// taken is answered.
pub(super) async fn serve(
    service: Service,
    mut inbound: Streaming<PipelineRequest>,
    outbound: mpsc::Sender<std::result::Result<PipelineResponse, Status>>,
) {
    let mut running = FuturesUnordered::new();
    // A stopping node takes no more ops and ends the stream once those running are answered,
    // so the server's graceful stop need not wait for the client to leave.
    let mut shutdown = service.shutdown.clone();
    let mut open = !*shutdown.borrow_and_update();
    loop {
        tokio::select! {
            changed = shutdown.changed(), if open => {
                if changed.is_err() || *shutdown.borrow() {
                    open = false;
                }
            }
            message = inbound.next(), if open && running.len() < MAX_OPS_IN_FLIGHT => {
                match message {
                    Some(Ok(request)) => {
                        for op in request.ops {
                            running.push(run(service.clone(), op));
                        }
                    }
                    // The client is done sending (or its stream broke): answer what runs.
                    Some(Err(_)) | None => open = false,
                }
            }
            Some(first) = running.next(), if !running.is_empty() => {
                let mut results = vec![first];
                while results.len() < MAX_RESULTS_PER_RESPONSE {
                    match running.next().now_or_never() {
                        Some(Some(result)) => results.push(result),
                        _ => break,
                    }
                }
                if outbound.send(Ok(PipelineResponse { results })).await.is_err() {
                    return;
                }
            }
            else => return,
        }
    }
}

/// One op, answered as its own call would be.
async fn run(service: Service, op: PipelinedOp) -> PipelinedResult {
    use pipelined_op::Op;
    use pipelined_result::Result as Answer;
    let answer = match op.op {
        Some(Op::Get(request)) => Answer::Get(unwrap(service.get(Request::new(request)).await)),
        Some(Op::Put(request)) => Answer::Put(unwrap(service.put(Request::new(request)).await)),
        Some(Op::Delete(request)) => {
            Answer::Delete(unwrap(service.delete(Request::new(request)).await))
        }
        Some(Op::Txn(request)) => Answer::Txn(unwrap(service.txn(Request::new(request)).await)),
        None => Answer::Get(GetResponse::from_error(MetaError::InvalidArgument(
            "a pipelined op names no operation".into(),
        ))),
    };
    PipelinedResult {
        id: op.id,
        result: Some(answer),
    }
}

/// The handlers answer every refusal in the header; a transport status becomes one too.
fn unwrap<R: WireResponse>(outcome: std::result::Result<Response<R>, Status>) -> R {
    match outcome {
        Ok(response) => response.into_inner(),
        Err(status) => R::from_error(MetaError::Internal(status.message().to_string())),
    }
}
