//! One AddEntries stream to a bookie, shared by every ledger a client writes there.
//!
//! A stream per ledger costs the bookie one response message, and so one socket write, per
//! ledger for every group commit that holds its entries, and costs the client a frame per
//! ledger per send. Sharing one stream per bookie (as BookKeeper's per-bookie channel does)
//! lets requests queued together leave in one write and lets one group commit's results come
//! back together. Each ledger sends its own requests; whatever is queued when the transport
//! takes the next message leaves as one message (see [`crate::request_merge`]), each ledger
//! with its own writer token. Results are routed back by ledger id to whoever subscribed for
//! that ledger.
//!
//! A route is a channel of [`RouteEvent`]s. When the stream fails or the bookie ends it, every
//! route gets the reason and then closes, so each ledger reacts as it would to its own stream
//! breaking; the next [`SharedAddStream::open`] makes a new stream.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use magnetar_proto::bookie::{AddRequest, AddResult};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tracing::debug;

use crate::client::BookieClient;
use crate::error::Result;
use crate::request_merge::{absorb, payload_bytes, MAX_MERGED_PAYLOAD_BYTES};

/// What a ledger's route delivers.
#[derive(Debug)]
pub enum RouteEvent {
    /// Results for this route's ledger, in the order the bookie sent them.
    Results(Vec<AddResult>),
    /// The shared stream ended; nothing more comes on this route.
    Ended { reason: String },
}

/// Each ledger's route: the subscription that made it, and where its results go.
type Routes = HashMap<u64, (u64, mpsc::UnboundedSender<RouteEvent>)>;

/// An open shared stream: send any ledger's requests, subscribe to a ledger's results. Clones
/// share the stream, which stays open while any clone (or subscription) lives: once the last
/// is dropped the bookie sees the stream end and lets go of it.
#[derive(Clone)]
pub struct SharedAddStream {
    inner: Arc<Shared>,
}

struct Shared {
    requests: mpsc::Sender<AddRequest>,
    routes: Arc<Mutex<Option<Routes>>>,
    next_subscription: AtomicU64,
}

/// A handle that does not keep the stream open; for a cache of streams in use.
#[derive(Clone)]
pub struct WeakSharedAddStream(Weak<Shared>);

impl WeakSharedAddStream {
    /// The stream, if something still holds it open and it has not ended.
    pub fn upgrade(&self) -> Option<SharedAddStream> {
        let inner = self.0.upgrade()?;
        let stream = SharedAddStream { inner };
        (!stream.is_closed()).then_some(stream)
    }
}

/// A ledger's route on a shared stream; dropping it stops the routing (unless a later
/// subscription of the same ledger has replaced it).
pub struct Subscription {
    stream: SharedAddStream,
    ledger_id: u64,
    id: u64,
}

impl Subscription {
    /// Where this ledger's requests go: the shared stream's requests.
    pub fn requests(&self) -> &mpsc::Sender<AddRequest> {
        self.stream.requests()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(routes) = self.stream.inner.routes.lock().as_mut() {
            if routes
                .get(&self.ledger_id)
                .is_some_and(|(id, _)| *id == self.id)
            {
                routes.remove(&self.ledger_id);
            }
        }
    }
}

impl SharedAddStream {
    /// Opens the stream with room for `queue` requests on the client side, and starts the task
    /// that routes its results.
    pub async fn open(client: &BookieClient, queue: usize) -> Result<Self> {
        let (requests, receiver) = mpsc::channel(queue.max(1));
        let mut responses = client
            .add_entries_from(MergingRequests {
                receiver,
                held: None,
            })
            .await?;
        let routes = Arc::new(Mutex::new(Some(Routes::new())));
        let address = client.address().to_string();
        let router_routes = routes.clone();
        tokio::spawn(async move {
            let reason = loop {
                match responses.message().await {
                    Ok(Some(response)) => route(&router_routes, response.results),
                    Ok(None) => break format!("bookie {address} closed the add stream"),
                    Err(status) => break format!("add stream to {address} failed: {status}"),
                }
            };
            debug!(%reason, "shared add stream ended");
            // Taken under the lock: a subscriber either gets the end or sees the stream closed.
            let ended = router_routes.lock().take().unwrap_or_default();
            for (_, (_, route)) in ended {
                let _ = route.send(RouteEvent::Ended {
                    reason: reason.clone(),
                });
            }
        });
        Ok(Self {
            inner: Arc::new(Shared {
                requests,
                routes,
                next_subscription: AtomicU64::new(0),
            }),
        })
    }

    /// Where requests for any ledger go. Bounded: `try_send` failing with `Full` means the
    /// bookie has fallen `queue` requests behind.
    pub fn requests(&self) -> &mpsc::Sender<AddRequest> {
        &self.inner.requests
    }

    pub fn downgrade(&self) -> WeakSharedAddStream {
        WeakSharedAddStream(Arc::downgrade(&self.inner))
    }

    /// Routes results for `ledger_id` to the returned receiver while the returned
    /// subscription lives, replacing any earlier route of that ledger (whose receiver then
    /// just ends). `None` when the stream has ended: open a new one.
    pub fn subscribe(
        &self,
        ledger_id: u64,
    ) -> Option<(Subscription, mpsc::UnboundedReceiver<RouteEvent>)> {
        let id = self.inner.next_subscription.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = mpsc::unbounded_channel();
        self.inner
            .routes
            .lock()
            .as_mut()?
            .insert(ledger_id, (id, sender));
        let subscription = Subscription {
            stream: self.clone(),
            ledger_id,
            id,
        };
        Some((subscription, receiver))
    }

    /// Whether the stream has ended (or its router stopped).
    pub fn is_closed(&self) -> bool {
        self.inner.routes.lock().is_none() || self.inner.requests.is_closed()
    }
}

/// The requests the transport sends: each time it takes the next message, everything queued by
/// then is merged into it, so merging adds no wait.
struct MergingRequests {
    receiver: mpsc::Receiver<AddRequest>,
    /// A request that did not fit the last message; it starts the next one.
    held: Option<AddRequest>,
}

impl Stream for MergingRequests {
    type Item = AddRequest;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<AddRequest>> {
        let this = &mut *self;
        let mut merged = match this.held.take() {
            Some(request) => request,
            None => match this.receiver.poll_recv(context) {
                Poll::Ready(Some(request)) => request,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            },
        };
        let mut merged_payload_bytes = payload_bytes(&merged);
        while merged_payload_bytes < MAX_MERGED_PAYLOAD_BYTES {
            let Ok(next) = this.receiver.try_recv() else {
                break;
            };
            if let Err(next) = absorb(&mut merged, &mut merged_payload_bytes, next) {
                this.held = Some(next);
                break;
            }
        }
        Poll::Ready(Some(merged))
    }
}

/// Hands each ledger its results; a result for a ledger nobody routes is dropped (its writer
/// has gone or moved on), and a route whose receiver is gone is removed.
fn route(routes: &Mutex<Option<Routes>>, results: Vec<AddResult>) {
    let mut by_ledger = split_by_ledger(results);
    let mut routes = routes.lock();
    let Some(routes) = routes.as_mut() else {
        return;
    };
    for (ledger_id, results) in by_ledger.drain(..) {
        let delivered = routes
            .get(&ledger_id)
            .is_some_and(|(_, route)| route.send(RouteEvent::Results(results)).is_ok());
        if !delivered {
            routes.remove(&ledger_id);
        }
    }
}

/// Groups results by ledger, keeping each ledger's results in order and the ledgers in order of
/// first appearance. A response usually holds one ledger or a few, so a list beats a map.
fn split_by_ledger(results: Vec<AddResult>) -> Vec<(u64, Vec<AddResult>)> {
    // The common case, one ledger: hand the results on as they came.
    match results.first().map(|first| first.ledger_id) {
        None => return Vec::new(),
        Some(ledger_id) if results.iter().all(|result| result.ledger_id == ledger_id) => {
            return vec![(ledger_id, results)];
        }
        Some(_) => {}
    }
    let mut groups: Vec<(u64, Vec<AddResult>)> = Vec::new();
    for result in results {
        match groups
            .iter_mut()
            .find(|(ledger_id, _)| *ledger_id == result.ledger_id)
        {
            Some((_, group)) => group.push(result),
            None => groups.push((result.ledger_id, vec![result])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(ledger_id: u64, entry_id: u64) -> AddResult {
        AddResult {
            ledger_id,
            entry_id,
            ..AddResult::default()
        }
    }

    fn ids(results: &[AddResult]) -> Vec<u64> {
        results.iter().map(|result| result.entry_id).collect()
    }

    #[test]
    fn results_split_by_ledger_in_order() {
        let groups = split_by_ledger(vec![
            result(7, 0),
            result(3, 10),
            result(7, 1),
            result(3, 11),
            result(9, 5),
        ]);
        let shape: Vec<(u64, Vec<u64>)> = groups
            .iter()
            .map(|(ledger_id, results)| (*ledger_id, ids(results)))
            .collect();
        assert_eq!(
            shape,
            vec![(7, vec![0, 1]), (3, vec![10, 11]), (9, vec![5])]
        );
    }

    #[test]
    fn one_ledger_passes_through_and_none_gives_nothing() {
        let groups = split_by_ledger(vec![result(4, 1), result(4, 0)]);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].0, 4);
        assert_eq!(ids(&groups[0].1), vec![1, 0]);
        assert!(split_by_ledger(Vec::new()).is_empty());
    }

    #[test]
    fn routing_reaches_the_latest_subscriber_and_drops_the_rest() {
        let routes = Mutex::new(Some(Routes::new()));
        let (first, mut first_receiver) = mpsc::unbounded_channel();
        let (second, mut second_receiver) = mpsc::unbounded_channel();
        let (gone, gone_receiver) = mpsc::unbounded_channel();
        drop(gone_receiver);
        {
            let mut guard = routes.lock();
            let table = guard.as_mut().expect("open");
            table.insert(1, (0, first));
            table.insert(2, (1, gone));
            // A second subscription of ledger 1 replaces the first.
            table.insert(1, (2, second));
        }
        route(&routes, vec![result(1, 0), result(2, 0), result(4, 0)]);
        match second_receiver.try_recv() {
            Ok(RouteEvent::Results(results)) => assert_eq!(ids(&results), vec![0]),
            other => panic!("expected ledger 1's result, got {other:?}"),
        }
        // The replaced route ended without a result.
        assert!(matches!(
            first_receiver.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        // Ledger 2's receiver was gone, so its route was removed.
        let guard = routes.lock();
        let table = guard.as_ref().expect("open");
        assert!(table.contains_key(&1));
        assert!(!table.contains_key(&2));
    }
}
