//! The `Broker` gRPC service: lookups, and one task per producer or consumer stream.
//!
//! A producer's stream queues each batch with the topic as it arrives (so batches are stored
//! in the order sent) and answers receipts in that order as they become durable. A consumer's
//! stream forwards permits, acks and redelivery requests to its subscription task and relays
//! what the task sends back. Failures of one request are answered on the stream; a malformed
//! request never takes the broker down.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::{FuturesOrdered, Stream, StreamExt};
use magnetar_proto::broker::broker_server::Broker;
use magnetar_proto::broker::{
    consume_request, consume_response, produce_request, produce_response, seek, ConsumeRequest,
    ConsumeResponse, Deliveries, Error as WireError, ErrorCode,
    InitialPosition as WireInitialPosition, LookupRequest, LookupResponse, MessageId,
    PartitionedMetadataRequest, PartitionedMetadataResponse, ProduceRequest, ProduceResponse,
    ProducerOpened, SendFailed, Subscribe, Subscribed, SubscriptionType as WireSubscriptionType,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::error::{BrokerError, BrokerResult};
use super::pending::{IndexRange, MessageRef};
use super::subscription::{
    before, ConsumerEvent, ConsumerLink, SeekTo, SubscriptionHandle, CONSUMER_EVENT_QUEUE,
};
use super::topic::{PendingSend, SendOutcome, Topic};
use super::BrokerService;
use crate::dispatch::SubscriptionType;
use crate::managed_ledger::{InitialPosition, Position};
use crate::TopicName;

/// Receipts a producer stream has waiting before it stops reading more sends.
const MAX_PENDING_SENDS_PER_PRODUCER: usize = 10_000;
/// How often a consumer stream checks that its topic was not taken over.
const OWNERSHIP_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The gRPC face of a [`BrokerService`].
#[derive(Clone)]
pub struct BrokerGrpc {
    service: Arc<BrokerService>,
}

impl BrokerGrpc {
    pub fn new(service: Arc<BrokerService>) -> Self {
        Self { service }
    }
}

fn parse_topic(topic: &str) -> BrokerResult<TopicName> {
    TopicName::parse(topic).map_err(|invalid| BrokerError::InvalidName(invalid.to_string()))
}

fn wire(error: &BrokerError) -> Option<WireError> {
    Some(error.to_wire())
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Broker for BrokerGrpc {
    async fn lookup(
        &self,
        request: Request<LookupRequest>,
    ) -> Result<Response<LookupResponse>, Status> {
        let result = async {
            let topic = parse_topic(&request.get_ref().topic)?;
            let address = self.service.lookup(&topic).await?;
            Ok::<_, BrokerError>((topic, address))
        }
        .await;
        Ok(Response::new(match result {
            Ok((topic, broker_address)) => LookupResponse {
                error: None,
                broker_address,
                topic: topic.to_string(),
            },
            Err(error) => LookupResponse {
                error: wire(&error),
                ..LookupResponse::default()
            },
        }))
    }

    async fn get_partitioned_metadata(
        &self,
        request: Request<PartitionedMetadataRequest>,
    ) -> Result<Response<PartitionedMetadataResponse>, Status> {
        let result = async {
            self.service.check_serving()?;
            let topic = parse_topic(&request.get_ref().topic)?;
            self.service.partitions(&topic).await
        }
        .await;
        Ok(Response::new(match result {
            Ok(partitions) => PartitionedMetadataResponse {
                error: None,
                partitions,
            },
            Err(error) => PartitionedMetadataResponse {
                error: wire(&error),
                partitions: 0,
            },
        }))
    }

    type ProduceStream = ResponseStream<ProduceResponse>;

    async fn produce(
        &self,
        request: Request<Streaming<ProduceRequest>>,
    ) -> Result<Response<Self::ProduceStream>, Status> {
        let (responses, outbound) = mpsc::channel(1024);
        tokio::spawn(run_producer(
            self.service.clone(),
            request.into_inner(),
            responses,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound))))
    }

    type ConsumeStream = ResponseStream<ConsumeResponse>;

    async fn consume(
        &self,
        request: Request<Streaming<ConsumeRequest>>,
    ) -> Result<Response<Self::ConsumeStream>, Status> {
        let (responses, outbound) = mpsc::channel(CONSUMER_EVENT_QUEUE);
        tokio::spawn(run_consumer(
            self.service.clone(),
            request.into_inner(),
            responses,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound))))
    }
}

type ProduceSender = mpsc::Sender<Result<ProduceResponse, Status>>;

fn produce_response(kind: produce_response::Kind) -> Result<ProduceResponse, Status> {
    Ok(ProduceResponse { kind: Some(kind) })
}

async fn run_producer(
    service: Arc<BrokerService>,
    mut inbound: Streaming<ProduceRequest>,
    responses: ProduceSender,
) {
    let open = match inbound.message().await {
        Ok(Some(ProduceRequest {
            kind: Some(produce_request::Kind::Open(open)),
        })) => open,
        Ok(Some(_)) => {
            let error = BrokerError::Protocol("the first request must open the producer".into());
            let _ = responses
                .send(produce_response(produce_response::Kind::Closed(
                    error.to_wire(),
                )))
                .await;
            return;
        }
        _ => return,
    };
    let opened = async {
        let topic_name = parse_topic(&open.topic)?;
        let topic = service.topic(&topic_name).await?;
        let producer_name = if open.producer_name.is_empty() {
            format!("{}-{}", service.address(), service.next_id())
        } else {
            open.producer_name.clone()
        };
        let last_sequence_id = topic.add_producer(&producer_name)?;
        Ok::<_, BrokerError>((topic, producer_name, last_sequence_id))
    }
    .await;
    let (topic, producer_name, last_sequence_id) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            let _ = responses
                .send(produce_response(produce_response::Kind::Closed(
                    error.to_wire(),
                )))
                .await;
            return;
        }
    };
    let opened = ProducerOpened {
        topic: topic.name.to_string(),
        producer_name: producer_name.clone(),
        last_sequence_id,
        max_message_size_bytes: service.config().max_message_size_bytes as u64,
    };
    if responses
        .send(produce_response(produce_response::Kind::Opened(opened)))
        .await
        .is_ok()
    {
        serve_producer(&topic, &producer_name, &mut inbound, &responses, &service).await;
    }
    topic.remove_producer(&producer_name);
    if topic.is_fenced() {
        service.forget_topic(&topic.name);
    }
    debug!(topic = %topic.name, producer = %producer_name, "producer closed");
}

async fn serve_producer(
    topic: &Arc<Topic>,
    producer_name: &str,
    inbound: &mut Streaming<ProduceRequest>,
    responses: &ProduceSender,
    service: &BrokerService,
) {
    let mut ownership_check = tokio::time::interval(OWNERSHIP_CHECK_INTERVAL);
    type Waiting =
        Pin<Box<dyn std::future::Future<Output = Result<ProduceResponse, Status>> + Send>>;
    let mut waiting: FuturesOrdered<Waiting> = FuturesOrdered::new();
    // Beside each waiting answer: the log's failure count when its send was queued, if it
    // can still fail.
    let mut waiting_failures: VecDeque<Option<u64>> = VecDeque::new();
    // Once a send of this stream failed, or may fail, nothing later from it is stored: the
    // producer resends from the failed one on a new stream, and a newer batch stored first
    // would make deduplication take that resend for a duplicate.
    let mut broken = false;
    let mut inbound_open = true;
    let mut quota = topic.quota_watch();
    loop {
        let can_read = inbound_open
            && waiting.len() < MAX_PENDING_SENDS_PER_PRODUCER
            && !topic.holds_producers();
        tokio::select! {
            // The backlog quota's answer changed: a held producer may read again.
            Ok(()) = quota.changed() => {}
            _ = ownership_check.tick() => {
                if topic.is_fenced() || service.check_serving().is_err() {
                    let error = BrokerError::NotOwner { topic: topic.name.to_string() };
                    let _ = responses.send(produce_response(produce_response::Kind::Closed(error.to_wire()))).await;
                    return;
                }
            }
            request = inbound.message(), if can_read => {
                let batch = match request {
                    Ok(Some(ProduceRequest { kind: Some(produce_request::Kind::Send(batch)) })) => batch,
                    Ok(Some(_)) => {
                        let error = BrokerError::Protocol("only sends may follow the open".into());
                        let _ = responses.send(produce_response(produce_response::Kind::Closed(error.to_wire()))).await;
                        return;
                    }
                    Ok(None) | Err(_) => {
                        inbound_open = false;
                        if waiting.is_empty() {
                            return;
                        }
                        continue;
                    }
                };
                let first = batch.first_sequence_id;
                let failed = move |error: BrokerError| {
                    produce_response(produce_response::Kind::Failed(SendFailed {
                        first_sequence_id: first,
                        error: Some(error.to_wire()),
                    }))
                };
                let failures_now = topic.ledger.append_failures();
                // Counts only rise, so the oldest waiting send's count is the one to compare.
                broken |= waiting_failures.iter().flatten().next().is_some_and(|&failures| failures != failures_now);
                let outcome = if broken {
                    Err(BrokerError::Unavailable(
                        "an earlier send of this producer failed; reconnect and send again from it".into(),
                    ))
                } else {
                    topic.send(producer_name, first, batch.messages)
                };
                let (future, can_fail): (Waiting, Option<u64>) = match outcome {
                    Ok(SendOutcome::Duplicate(receipt)) => (
                        Box::pin(async move { produce_response(produce_response::Kind::Receipt(receipt)) }),
                        None,
                    ),
                    Ok(SendOutcome::Queued(pending)) | Ok(SendOutcome::InFlight(pending)) => {
                        let failures = pending.failures_at_submit();
                        (
                            Box::pin(receipt_of(pending, failed, topic.clone(), std::time::Instant::now())),
                            Some(failures),
                        )
                    }
                    Err(error) => {
                        let fenced = matches!(error, BrokerError::NotOwner { .. });
                        broken |= error.code().is_retryable();
                        let response = failed(error);
                        if fenced {
                            let _ = responses.send(response).await;
                            return;
                        }
                        (Box::pin(async move { response }), None)
                    }
                };
                waiting.push_back(future);
                waiting_failures.push_back(can_fail);
            }
            Some(response) = waiting.next(), if !waiting.is_empty() => {
                waiting_failures.pop_front();
                let failure = failed_send_code(&response);
                broken |= failure.is_some_and(ErrorCode::is_retryable);
                let closes = failure == Some(ErrorCode::NotOwner);
                if responses.send(response).await.is_err() || closes {
                    return;
                }
                if !inbound_open && waiting.is_empty() {
                    return;
                }
            }
        }
    }
}

/// The error code of a send's failure, if the answer is one.
fn failed_send_code(response: &Result<ProduceResponse, Status>) -> Option<ErrorCode> {
    match response {
        Ok(ProduceResponse {
            kind:
                Some(produce_response::Kind::Failed(SendFailed {
                    error: Some(error), ..
                })),
        }) => ErrorCode::try_from(error.code).ok(),
        _ => None,
    }
}

async fn receipt_of(
    pending: PendingSend,
    failed: impl FnOnce(BrokerError) -> Result<ProduceResponse, Status>,
    topic: Arc<Topic>,
    arrived: std::time::Instant,
) -> Result<ProduceResponse, Status> {
    match pending.wait().await {
        Ok(receipt) => {
            topic.counters.publish_latency.record(arrived.elapsed());
            produce_response(produce_response::Kind::Receipt(receipt))
        }
        Err(error) => failed(error),
    }
}

type ConsumeSender = mpsc::Sender<Result<ConsumeResponse, Status>>;

fn consume_response(kind: consume_response::Kind) -> Result<ConsumeResponse, Status> {
    Ok(ConsumeResponse { kind: Some(kind) })
}

fn subscription_type(wire: i32) -> BrokerResult<SubscriptionType> {
    match WireSubscriptionType::try_from(wire) {
        Ok(WireSubscriptionType::Exclusive) => Ok(SubscriptionType::Exclusive),
        Ok(WireSubscriptionType::Failover) => Ok(SubscriptionType::Failover),
        Ok(WireSubscriptionType::Shared) => Ok(SubscriptionType::Shared),
        Ok(WireSubscriptionType::KeyShared) => Ok(SubscriptionType::KeyShared),
        Err(_) => Err(BrokerError::Protocol(format!(
            "unknown subscription type {wire}"
        ))),
    }
}

fn message_ref(id: &MessageId) -> MessageRef {
    MessageRef {
        position: Position::new(id.ledger_id, id.entry_id),
        index: id.batch_index.max(0) as u32,
    }
}

/// Where a reader starts: after this position.
fn reader_start(topic: &Topic, subscribe: &Subscribe) -> Position {
    match &subscribe.start_message_id {
        Some(id) if id.ledger_id == u64::MAX => topic.ledger.last_confirmed(),
        Some(id) if id.ledger_id == 0 && id.entry_id < 0 => topic.ledger.earliest(),
        Some(id) => {
            let position = Position::new(id.ledger_id, id.entry_id);
            // The entry is read whole; the client drops messages of a batch before the id.
            before(position)
        }
        None => match WireInitialPosition::try_from(subscribe.initial_position) {
            Ok(WireInitialPosition::Earliest) => topic.ledger.earliest(),
            _ => topic.ledger.last_confirmed(),
        },
    }
}

async fn run_consumer(
    service: Arc<BrokerService>,
    mut inbound: Streaming<ConsumeRequest>,
    responses: ConsumeSender,
) {
    let subscribe = match inbound.message().await {
        Ok(Some(ConsumeRequest {
            kind: Some(consume_request::Kind::Subscribe(subscribe)),
        })) => subscribe,
        Ok(Some(_)) => {
            let error = BrokerError::Protocol("the first request must subscribe".into());
            let _ = responses
                .send(consume_response(consume_response::Kind::Closed(
                    error.to_wire(),
                )))
                .await;
            return;
        }
        _ => return,
    };
    let consumer_id = service.next_id();
    let (events, mut event_inbox) = mpsc::channel(CONSUMER_EVENT_QUEUE);
    let joined = async {
        let topic_name = parse_topic(&subscribe.topic)?;
        let topic = service.topic(&topic_name).await?;
        let kind = subscription_type(subscribe.subscription_type)?;
        let subscription = if subscribe.non_durable {
            let start = reader_start(&topic, &subscribe);
            let start = if subscribe.start_publish_time_ms > 0 {
                None
            } else {
                Some(start)
            };
            let handle = topic.reader(start.unwrap_or(topic.ledger.earliest()));
            if subscribe.start_publish_time_ms > 0 {
                // Joined first so the seek's notice reaches nobody but is harmless.
                (
                    handle,
                    Some(SeekTo::PublishTime(subscribe.start_publish_time_ms)),
                )
            } else {
                (handle, None)
            }
        } else {
            if subscribe.subscription.is_empty() {
                return Err(BrokerError::InvalidName(
                    "a subscription needs a name".into(),
                ));
            }
            let initial = match WireInitialPosition::try_from(subscribe.initial_position) {
                Ok(WireInitialPosition::Earliest) => InitialPosition::Earliest,
                _ => InitialPosition::Latest,
            };
            let handle = topic
                .subscription(&subscribe.subscription, kind, initial, |_| true)
                .await?;
            if handle.kind() != kind {
                return Err(BrokerError::SubscriptionTypeMismatch {
                    name: subscribe.subscription.clone(),
                    existing: super::subscription::type_name(handle.kind()),
                    requested: super::subscription::type_name(kind),
                });
            }
            (handle, None)
        };
        let (handle, seek) = subscription;
        if let Some(seek) = seek {
            handle.seek(seek).await?;
        }
        let name = if subscribe.consumer_name.is_empty() {
            format!("consumer-{consumer_id}")
        } else {
            subscribe.consumer_name.clone()
        };
        handle
            .join(ConsumerLink {
                id: consumer_id,
                name,
                priority: subscribe.priority_level,
                events: events.clone(),
            })
            .await?;
        Ok::<_, BrokerError>((topic, handle))
    }
    .await;
    let (topic, subscription) = match joined {
        Ok(joined) => joined,
        Err(error) => {
            let _ = responses
                .send(consume_response(consume_response::Kind::Closed(
                    error.to_wire(),
                )))
                .await;
            return;
        }
    };
    let subscribed = Subscribed {
        topic: topic.name.to_string(),
        consumer_id,
    };
    if responses
        .send(consume_response(consume_response::Kind::Subscribed(
            subscribed,
        )))
        .await
        .is_ok()
    {
        serve_consumer(
            &subscription,
            consumer_id,
            &topic,
            &mut inbound,
            &mut event_inbox,
            &responses,
            &service,
        )
        .await;
    }
    subscription.leave(consumer_id).await;
    if topic.is_fenced() {
        service.forget_topic(&topic.name);
    }
}

async fn serve_consumer(
    subscription: &SubscriptionHandle,
    consumer_id: u64,
    topic: &Topic,
    inbound: &mut Streaming<ConsumeRequest>,
    events: &mut mpsc::Receiver<ConsumerEvent>,
    responses: &ConsumeSender,
    service: &BrokerService,
) {
    // A consumer of a topic another broker took over must move there too.
    let mut ownership_check = tokio::time::interval(OWNERSHIP_CHECK_INTERVAL);
    loop {
        tokio::select! {
            _ = ownership_check.tick() => {
                if topic.is_fenced() || service.check_serving().is_err() {
                    let error = BrokerError::NotOwner { topic: topic.name.to_string() };
                    let _ = responses.send(consume_response(consume_response::Kind::Closed(error.to_wire()))).await;
                    return;
                }
            }
            request = inbound.message() => {
                let kind = match request {
                    Ok(Some(ConsumeRequest { kind: Some(kind) })) => kind,
                    Ok(Some(ConsumeRequest { kind: None })) => {
                        let error = BrokerError::Protocol("an empty request".into());
                        let _ = responses.send(consume_response(consume_response::Kind::Error(error.to_wire()))).await;
                        continue;
                    }
                    Ok(None) | Err(_) => return,
                };
                let result = match kind {
                    consume_request::Kind::Subscribe(_) => Err(BrokerError::Protocol(
                        "this stream is already subscribed".into(),
                    )),
                    consume_request::Kind::Flow(flow) => subscription.flow(consumer_id, flow.permits).await,
                    consume_request::Kind::Ack(ack) => {
                        let ranges = ack.message_ids.iter().map(|id| IndexRange::from(message_ref(id)));
                        let ranges = ranges.chain(ack.ranges.iter().map(|range| IndexRange {
                            position: Position::new(range.ledger_id, range.entry_id),
                            first: range.first_index,
                            last: range.last_index,
                        }));
                        subscription.ack(ranges.collect(), ack.cumulative).await
                    }
                    consume_request::Kind::Redeliver(redeliver) => {
                        let messages = if redeliver.message_ids.is_empty() {
                            None
                        } else {
                            Some(redeliver.message_ids.iter().map(message_ref).collect())
                        };
                        subscription.redeliver(consumer_id, messages).await
                    }
                    consume_request::Kind::Seek(request) => {
                        let to = match request.target {
                            Some(seek::Target::MessageId(id)) => {
                                let start = Subscribe { start_message_id: Some(id), ..Subscribe::default() };
                                Ok(SeekTo::After(reader_start(topic, &start)))
                            }
                            Some(seek::Target::PublishTimeMs(time_ms)) => Ok(SeekTo::PublishTime(time_ms)),
                            None => Err(BrokerError::Protocol("a seek needs a target".into())),
                        };
                        match to {
                            Ok(to) => subscription.seek(to).await,
                            Err(error) => Err(error),
                        }
                    }
                };
                if let Err(error) = result {
                    if responses.send(consume_response(consume_response::Kind::Error(error.to_wire()))).await.is_err() {
                        return;
                    }
                }
            }
            event = events.recv() => {
                let response = match event {
                    Some(ConsumerEvent::Deliveries(deliveries)) => {
                        count_dispatched(topic, &deliveries);
                        consume_response(consume_response::Kind::Deliveries(Deliveries { entries: deliveries.entries }))
                    }
                    Some(ConsumerEvent::Active(active)) => consume_response(consume_response::Kind::Active(active)),
                    Some(ConsumerEvent::SeekDone) => consume_response(consume_response::Kind::SeekDone(true)),
                    Some(ConsumerEvent::Error(error)) => consume_response(consume_response::Kind::Error(error.to_wire())),
                    Some(ConsumerEvent::Closed(error)) => {
                        let _ = responses.send(consume_response(consume_response::Kind::Closed(error.to_wire()))).await;
                        return;
                    }
                    None => return,
                };
                if responses.send(response).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Counts what goes out to a consumer, for the topic's dispatch rate.
fn count_dispatched(topic: &Topic, deliveries: &super::subscription::Deliveries) {
    use std::sync::atomic::Ordering::Relaxed;
    let counters = &topic.counters;
    counters
        .messages_out
        .fetch_add(deliveries.message_count, Relaxed);
    counters.bytes_out.fetch_add(deliveries.bytes, Relaxed);
}
