//! Publish and subscribe end to end through the client library, against an in-process cluster
//! of 3 metadata nodes, 3 bookies (3/3/2) and 2 brokers over loopback gRPC.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use magnetar_broker::service::namespaces;
use magnetar_broker::TopicName;
use magnetar_client::{
    Client, ClientError, Consumer, DeadLetterPolicy, ErrorCode, InitialPosition, MessageId,
    OutgoingMessage, SubscriptionType,
};
use magnetar_tests::cluster::{Cluster, ClusterShape};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const RECEIVE_TIMEOUT: Duration = Duration::from_secs(20);

async fn receive(consumer: &Consumer) -> Result<magnetar_client::ReceivedMessage, String> {
    consumer
        .receive_timeout(RECEIVE_TIMEOUT)
        .await
        .map_err(|error| error.to_string())?
        .ok_or_else(|| format!("no message within {RECEIVE_TIMEOUT:?}"))
}

async fn publish(
    client: &Client,
    topic: &str,
    count: usize,
    keys: usize,
) -> Result<Vec<MessageId>, ClientError> {
    let producer = client.producer(topic).create().await?;
    let mut receipts = Vec::new();
    for index in 0..count {
        let message = OutgoingMessage::new(format!("message-{index}"))
            .with_key(format!("key-{}", index % keys.max(1)))
            .with_property("index", index.to_string());
        receipts.push(producer.send_async(message).await?);
    }
    let mut ids = Vec::new();
    for receipt in receipts {
        ids.push(receipt.await?);
    }
    Ok(ids)
}

/// A consumer of the default (Exclusive) type that starts at the topic's oldest message.
async fn subscribe_from_earliest(
    client: &Client,
    topic: &str,
    subscription: &str,
) -> Result<Consumer, ClientError> {
    client
        .consumer(topic, subscription)
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await
}

fn index_of(message: &magnetar_client::ReceivedMessage) -> usize {
    message.properties["index"]
        .parse()
        .expect("the test sets an index property")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_subscription_type_delivers_as_promised() -> TestResult {
    let cluster = Cluster::start(ClusterShape::default()).await?;
    // Through the second broker: lookups send the client wherever the topic lives.
    let client = Client::connect(&cluster.service_url(1)).await?;

    // Exclusive: everything, in order; a second consumer is refused.
    let topic = "persistent://public/default/exclusive";
    let exclusive = subscribe_from_earliest(&client, topic, "sub").await?;
    let refused = client
        .subscribe(topic, "sub", SubscriptionType::Exclusive)
        .await
        .err()
        .and_then(|error| error.code());
    assert_eq!(refused, Some(ErrorCode::ConsumerBusy));
    let ids = publish(&client, topic, 500, 7).await?;
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "receipts come in order"
    );
    for (expected, id) in ids.iter().enumerate() {
        let message = receive(&exclusive).await?;
        assert_eq!(index_of(&message), expected);
        assert_eq!(message.id, *id);
    }
    let last = receive_none_then_ack_cumulative(&exclusive, ids[499]).await;
    assert!(last.is_ok());
    let refused = client
        .subscribe(topic, "shared-sub", SubscriptionType::Shared)
        .await?;
    let cumulative = refused
        .ack_cumulative(&fake_message(ids[0]))
        .await
        .err()
        .and_then(|error| error.code());
    assert_eq!(cumulative, Some(ErrorCode::CumulativeAckNotAllowed));

    // Shared: two consumers split the messages; every message is delivered once when acked.
    let topic = "persistent://public/default/shared";
    let first = client
        .subscribe(topic, "sub", SubscriptionType::Shared)
        .await?;
    let second = client
        .subscribe(topic, "sub", SubscriptionType::Shared)
        .await?;
    // Shared hands out whole entries (a producer batch is one entry, as in Pulsar), so this
    // producer sends one message per entry for the split to be visible.
    let producer = client.producer(topic).batching(false).create().await?;
    for index in 0..400 {
        producer
            .send(
                OutgoingMessage::new(format!("message-{index}"))
                    .with_property("index", index.to_string()),
            )
            .await?;
    }
    let mut seen = HashSet::new();
    let mut per_consumer = [0usize; 2];
    while seen.len() < 400 {
        let (which, message) = tokio::select! {
            message = receive(&first) => (0, message?),
            message = receive(&second) => (1, message?),
        };
        per_consumer[which] += 1;
        assert!(
            seen.insert(index_of(&message)),
            "delivered twice: {}",
            index_of(&message)
        );
        if which == 0 {
            first.ack(&message).await?;
        } else {
            second.ack(&message).await?;
        }
    }
    assert!(
        per_consumer.iter().all(|&count| count >= 100),
        "round robin serves both consumers: {per_consumer:?}"
    );

    // Key_Shared: a key always goes to one consumer, in order.
    let topic = "persistent://public/default/key-shared";
    let consumers = [
        client
            .consumer(topic, "sub")
            .subscription_type(SubscriptionType::KeyShared)
            .consumer_name("a")
            .subscribe()
            .await?,
        client
            .consumer(topic, "sub")
            .subscription_type(SubscriptionType::KeyShared)
            .consumer_name("b")
            .subscribe()
            .await?,
    ];
    publish(&client, topic, 600, 20).await?;
    let mut owner_of_key: HashMap<String, usize> = HashMap::new();
    let mut last_index_of_key: HashMap<String, usize> = HashMap::new();
    let mut received = 0;
    while received < 600 {
        let (which, message) = tokio::select! {
            message = receive(&consumers[0]) => (0, message?),
            message = receive(&consumers[1]) => (1, message?),
        };
        let key = message.key.clone().unwrap_or_default();
        assert_eq!(
            *owner_of_key.entry(key.clone()).or_insert(which),
            which,
            "key {key} moved"
        );
        let index = index_of(&message);
        if let Some(previous) = last_index_of_key.insert(key.clone(), index) {
            assert!(previous < index, "key {key}: {index} after {previous}");
        }
        consumers[which].ack(&message).await?;
        received += 1;
    }
    assert_eq!(
        owner_of_key.values().collect::<HashSet<_>>().len(),
        2,
        "keys spread over both"
    );

    // Failover: the preferred consumer gets everything; when it leaves, the other takes over
    // and gets what was not acknowledged.
    let topic = "persistent://public/default/failover";
    let primary = client
        .consumer(topic, "sub")
        .subscription_type(SubscriptionType::Failover)
        .consumer_name("primary")
        .priority_level(0)
        .subscribe()
        .await?;
    let standby = client
        .consumer(topic, "sub")
        .subscription_type(SubscriptionType::Failover)
        .consumer_name("standby")
        .priority_level(1)
        .subscribe()
        .await?;
    publish(&client, topic, 100, 3).await?;
    for expected in 0..50 {
        let message = receive(&primary).await?;
        assert_eq!(index_of(&message), expected);
        primary.ack(&message).await?;
    }
    assert!(standby
        .receive_timeout(Duration::from_millis(200))
        .await?
        .is_none());
    drop(primary);
    let mut indexes = Vec::new();
    while indexes.len() < 50 {
        let message = receive(&standby).await?;
        indexes.push(index_of(&message));
        standby.ack(&message).await?;
    }
    indexes.sort_unstable();
    assert_eq!(indexes, (50..100).collect::<Vec<_>>());
    Ok(())
}

/// A message standing for `id` (only its id matters to acks).
fn fake_message(id: MessageId) -> magnetar_client::ReceivedMessage {
    magnetar_client::ReceivedMessage {
        id,
        topic: "".into(),
        payload: Default::default(),
        key: None,
        properties: Default::default(),
        event_time_ms: 0,
        publish_time_ms: 0,
        producer_name: "".into(),
        sequence_id: 0,
        redelivery_count: 0,
    }
}

async fn receive_none_then_ack_cumulative(
    consumer: &Consumer,
    last: MessageId,
) -> Result<(), String> {
    if let Ok(Some(extra)) = consumer.receive_timeout(Duration::from_millis(100)).await {
        return Err(format!("unexpected message {}", extra.id));
    }
    consumer
        .ack_cumulative(&fake_message(last))
        .await
        .map_err(|error| error.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nacks_redeliver_with_a_count_and_end_in_the_dead_letter_topic() -> TestResult {
    let cluster = Cluster::start(ClusterShape::default()).await?;
    let client = Client::connect(&cluster.service_url(0)).await?;
    let topic = "persistent://public/default/retried";
    let consumer = client
        .consumer(topic, "sub")
        .subscription_type(SubscriptionType::Shared)
        .negative_ack_redelivery_delay(Duration::from_millis(50))
        .dead_letter_policy(DeadLetterPolicy {
            max_redeliveries: 2,
            topic: None,
        })
        .subscribe()
        .await?;
    let dead_letters = subscribe_from_earliest(
        &client,
        "persistent://public/default/retried-sub-DLQ",
        "inspect",
    )
    .await?;
    publish(&client, topic, 1, 1).await?;
    for expected_count in 0..=1 {
        let message = receive(&consumer).await?;
        assert_eq!(message.redelivery_count, expected_count);
        consumer.nack(&message).await?;
    }
    // The third delivery would be redelivery 2: it goes to the dead-letter topic instead.
    let dead = receive(&dead_letters).await?;
    assert_eq!(dead.text(), "message-0");
    assert!(dead.properties.contains_key("ORIGIN_MESSAGE_ID"));
    assert!(consumer
        .receive_timeout(Duration::from_millis(300))
        .await?
        .is_none());

    // Ack timeout: a message not acknowledged in time comes back.
    let topic = "persistent://public/default/timed-out";
    let consumer = client
        .consumer(topic, "sub")
        .subscription_type(SubscriptionType::Shared)
        .ack_timeout(Duration::from_millis(200))
        .subscribe()
        .await?;
    publish(&client, topic, 1, 1).await?;
    let first = receive(&consumer).await?;
    let again = receive(&consumer).await?;
    assert_eq!(first.id, again.id);
    assert_eq!(again.redelivery_count, 1);
    consumer.ack(&again).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acks_made_just_before_a_consumer_leaves_hold_and_only_the_rest_of_a_batch_comes_back(
) -> TestResult {
    let cluster = Cluster::start(ClusterShape::default()).await?;
    let client = Client::connect(&cluster.service_url(0)).await?;
    let topic = "persistent://public/default/partly-acked";
    let subscribe = || {
        client
            .consumer(topic, "sub")
            .subscription_type(SubscriptionType::Shared)
            .subscribe()
    };
    let first = subscribe().await?;
    let ids = publish(&client, topic, 50, 5).await?;
    let mut per_entry: HashMap<(u64, i64), usize> = HashMap::new();
    for id in &ids {
        *per_entry.entry((id.ledger_id, id.entry_id)).or_default() += 1;
    }
    assert!(
        per_entry.values().any(|&count| count > 1),
        "the sends were batched, so an ack can cover part of an entry"
    );

    // Ack the first 30 one by one and leave at once: every one of those acks must reach the
    // broker, and the other 20 (out at this consumer) come back without the acked ones.
    for expected in 0..30 {
        let message = receive(&first).await?;
        assert_eq!(index_of(&message), expected);
        first.ack(&message).await?;
    }
    drop(first);

    let second = subscribe().await?;
    let mut redelivered = Vec::new();
    for _ in 30..50 {
        let message = receive(&second).await?;
        assert_eq!(
            message.redelivery_count, 1,
            "{} was out at the first consumer",
            message.id
        );
        redelivered.push(index_of(&message));
        second.ack(&message).await?;
    }
    redelivered.sort_unstable();
    assert_eq!(redelivered, (30..50).collect::<Vec<_>>());
    assert!(
        second
            .receive_timeout(Duration::from_millis(300))
            .await?
            .is_none(),
        "an acknowledged message came back"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_out_of_room_holds_its_senders_and_loses_nothing() -> TestResult {
    let cluster = Cluster::start(ClusterShape::default()).await?;
    let client = Client::connect(&cluster.service_url(0)).await?;
    let topic = "persistent://public/default/little-room";
    let consumer = subscribe_from_earliest(&client, topic, "sub").await?;
    let producer = client
        .producer(topic)
        .max_pending_messages(4)
        .batch_max_messages(2)
        .create()
        .await?;
    // Far more sends than the pending bound and the partition task's command queue (1024)
    // hold, none awaiting its receipt: later sends can only be queued once earlier messages
    // are durable, so send_async must wait for room rather than fail or pile up.
    let count = 3000;
    let mut receipts = Vec::with_capacity(count);
    let sending_deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for index in 0..count {
        let message = OutgoingMessage::new(format!("message-{index}"))
            .with_property("index", index.to_string());
        let send = tokio::time::timeout_at(sending_deadline, producer.send_async(message));
        let receipt = send
            .await
            .map_err(|_| format!("send {index} found no room within 60 s"))??;
        receipts.push(receipt);
    }
    let mut ids = Vec::with_capacity(count);
    for receipt in receipts {
        ids.push(receipt.await?);
    }
    assert!(
        ids.windows(2).all(|pair| pair[0] < pair[1]),
        "every receipt resolves, in order"
    );
    for expected in 0..count {
        let message = receive(&consumer).await?;
        assert_eq!(index_of(&message), expected);
        consumer.ack(&message).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_start_anywhere_and_seek() -> TestResult {
    let cluster = Cluster::start(ClusterShape::default()).await?;
    let client = Client::connect(&cluster.service_url(0)).await?;
    let topic = "persistent://public/default/read";
    let ids = publish(&client, topic, 50, 5).await?;

    let reader = client
        .reader(topic)
        .start_message_id(MessageId::EARLIEST)
        .create()
        .await?;
    for expected in 0..50 {
        assert_eq!(
            index_of(
                &reader
                    .next_timeout(RECEIVE_TIMEOUT)
                    .await?
                    .ok_or("reader starved")?
            ),
            expected
        );
    }
    let reader = client
        .reader(topic)
        .start_message_id(ids[20])
        .create()
        .await?;
    assert_eq!(
        index_of(
            &reader
                .next_timeout(RECEIVE_TIMEOUT)
                .await?
                .ok_or("reader starved")?
        ),
        21
    );
    let reader = client
        .reader(topic)
        .start_message_id(ids[20])
        .start_inclusive(true)
        .create()
        .await?;
    assert_eq!(
        index_of(
            &reader
                .next_timeout(RECEIVE_TIMEOUT)
                .await?
                .ok_or("reader starved")?
        ),
        20
    );
    reader.seek(ids[3]).await?;
    assert_eq!(
        index_of(
            &reader
                .next_timeout(RECEIVE_TIMEOUT)
                .await?
                .ok_or("reader starved")?
        ),
        3
    );

    // A durable subscription seeks back and gets the messages again.
    let consumer = subscribe_from_earliest(&client, topic, "sub").await?;
    for _ in 0..50 {
        let message = receive(&consumer).await?;
        consumer.ack(&message).await?;
    }
    consumer.seek(ids[40]).await?;
    for expected in 40..50 {
        assert_eq!(index_of(&receive(&consumer).await?), expected);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_topics_route_by_key_and_deliver_everything() -> TestResult {
    let cluster = Cluster::start(ClusterShape::default()).await?;
    let meta = cluster.meta_client();
    let topic = "persistent://public/default/parted";
    namespaces::create_partitioned(&meta, &TopicName::parse(topic)?, 3).await?;
    let client = Client::connect(&cluster.service_url(0)).await?;
    let consumer = client
        .subscribe(topic, "sub", SubscriptionType::Exclusive)
        .await?;
    let ids = publish(&client, topic, 300, 12).await?;
    let partitions: HashSet<i32> = ids.iter().map(|id| id.partition).collect();
    assert_eq!(partitions.len(), 3, "keys spread over the partitions");
    let mut partition_of_key: BTreeMap<String, i32> = BTreeMap::new();
    let mut last_of_key: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..300 {
        let message = receive(&consumer).await?;
        let key = message.key.clone().unwrap_or_default();
        assert_eq!(
            *partition_of_key
                .entry(key.clone())
                .or_insert(message.id.partition),
            message.id.partition
        );
        let index = index_of(&message);
        if let Some(previous) = last_of_key.insert(key, index) {
            assert!(previous < index, "per-key order holds across partitions");
        }
        consumer.ack(&message).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_distinct_errors_and_the_broker_keeps_serving() -> TestResult {
    let cluster = Cluster::start(ClusterShape {
        brokers: 1,
        ..ClusterShape::default()
    })
    .await?;
    let client = Client::connect(&cluster.service_url(0)).await?;
    let invalid = client
        .producer("persistent://public/default/bad name")
        .create()
        .await
        .err()
        .and_then(|e| e.code());
    assert_eq!(invalid, Some(ErrorCode::InvalidName));
    let missing = client
        .producer("persistent://nobody/nothing/topic")
        .create()
        .await
        .err()
        .and_then(|e| e.code());
    assert_eq!(missing, Some(ErrorCode::NamespaceNotFound));
    let producer = client.producer("too-big").batching(false).create().await?;
    let too_big = producer
        .send(vec![0u8; 6 << 20])
        .await
        .err()
        .and_then(|e| e.code());
    assert_eq!(too_big, Some(ErrorCode::MessageTooLarge));
    // The same producer and broker still work.
    producer.send("small").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_brokers_topics_move_and_nothing_acknowledged_is_lost() -> TestResult {
    let shape = ClusterShape::default();
    let mut cluster = Cluster::start(shape.clone()).await?;
    let topic = "persistent://public/default/moving";
    let urls = format!("{},{}", cluster.service_url(0), cluster.service_url(1));
    let client = Client::connect(&urls).await?;
    let consumer = subscribe_from_earliest(&client, topic, "sub").await?;
    let producer = client.producer(topic).name("mover").create().await?;
    let mut acknowledged = Vec::new();
    for index in 0..200 {
        acknowledged.push(
            producer
                .send(
                    OutgoingMessage::new(format!("m{index}"))
                        .with_property("index", index.to_string()),
                )
                .await?,
        );
    }
    // Kill the owner of the topic, as a crash would.
    let owner = {
        let meta = cluster.meta_client();
        let mut owner = None;
        for kv in meta.list_all("/bundle-owners/").await? {
            owner = Some(String::from_utf8_lossy(&kv.value).into_owned());
        }
        owner.ok_or("no bundle owned")?
    };
    let index = cluster
        .brokers
        .iter()
        .position(|broker| broker.as_ref().is_some_and(|b| b.address() == owner))
        .ok_or("owner is not one of ours")?;
    if let Some(broker) = cluster.brokers[index].take() {
        broker.abort();
    }
    // Sends during the move wait and succeed after it.
    for index in 200..300 {
        acknowledged.push(
            producer
                .send(
                    OutgoingMessage::new(format!("m{index}"))
                        .with_property("index", index.to_string()),
                )
                .await?,
        );
    }
    let mut seen = HashSet::new();
    while seen.len() < 300 {
        let message = receive(&consumer).await?;
        seen.insert(index_of(&message));
        consumer.ack(&message).await?;
    }
    assert_eq!(seen.len(), 300);
    Ok(())
}
