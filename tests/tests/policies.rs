//! Namespace policies applied by brokers, end to end through the client against an in-process
//! cluster (3 metadata nodes, 3 bookies at 3/3/2, 2 brokers): message TTL, retention, and the
//! backlog quota with each of its policies.

use std::sync::Arc;
use std::time::Duration;

use magnetar_broker::service::namespaces::{self, NamespacePolicies};
use magnetar_broker::service::Topic;
use magnetar_broker::TopicName;
use magnetar_client::{Client, ErrorCode, InitialPosition, OutgoingMessage, SubscriptionType};
use magnetar_tests::cluster::{Cluster, ClusterShape};
use magnetar_tests::wait::wait_until_async;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const DEADLINE: Duration = Duration::from_secs(20);

/// Creates `tenant/namespace` with `policies` (the tenant too, if missing).
async fn namespace_with(
    cluster: &Cluster,
    tenant: &str,
    namespace: &str,
    policies: NamespacePolicies,
) -> TestResult {
    let meta = cluster.meta_client();
    namespaces::create_tenant(&meta, tenant).await?;
    namespaces::create_namespace(&meta, tenant, namespace, &policies).await?;
    Ok(())
}

/// The topic as loaded by whichever broker serves it.
fn served(cluster: &Cluster, topic: &str) -> Option<Arc<Topic>> {
    let name = TopicName::parse(topic).ok()?;
    cluster
        .brokers
        .iter()
        .flatten()
        .find_map(|broker| broker.service().loaded_topic(&name))
}

async fn publish_unbatched(client: &Client, topic: &str, count: usize) -> TestResult {
    let producer = client.producer(topic).batching(false).create().await?;
    for index in 0..count {
        producer
            .send(OutgoingMessage::new(format!("message-{index}")))
            .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn message_ttl_expires_what_no_consumer_took() -> TestResult {
    let cluster = Cluster::start(ClusterShape::default()).await?;
    namespace_with(
        &cluster,
        "ttl",
        "short",
        NamespacePolicies {
            message_ttl_seconds: 1,
            ..NamespacePolicies::default()
        },
    )
    .await?;
    let topic = "persistent://ttl/short/events";
    let client = Client::connect(&cluster.service_url(0)).await?;
    // The subscription exists, with no consumer left to take what is published.
    drop(
        client
            .subscribe(topic, "idle", SubscriptionType::Shared)
            .await?,
    );
    publish_unbatched(&client, topic, 30).await?;
    let backlog = |topic: Arc<Topic>| async move {
        topic.stats().await.subscriptions["idle"].backlog_entries
    };
    let served_topic = served(&cluster, topic).ok_or("the topic is served")?;
    assert!(
        backlog(served_topic.clone()).await > 0,
        "the newest messages are younger than the TTL"
    );
    wait_until_async("the TTL to expire the backlog", DEADLINE, || {
        let served_topic = served_topic.clone();
        async move { (backlog(served_topic).await == 0).then_some(()) }
    })
    .await?;

    // A consumer coming back gets what was published after, not what expired.
    let consumer = client
        .subscribe(topic, "idle", SubscriptionType::Shared)
        .await?;
    let producer = client.producer(topic).create().await?;
    producer.send(OutgoingMessage::new("fresh")).await?;
    let message = consumer
        .receive_timeout(DEADLINE)
        .await?
        .ok_or("the fresh message arrives")?;
    assert_eq!(message.payload.as_ref(), b"fresh");
    consumer.ack(&message).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_keeps_consumed_ledgers_only_when_asked() -> TestResult {
    let cluster = Cluster::start(ClusterShape {
        ledger_rollover_entries: 5,
        ..ClusterShape::default()
    })
    .await?;
    namespace_with(
        &cluster,
        "keep",
        "hour",
        NamespacePolicies {
            retention_minutes: 60,
            retention_size_mb: 100,
            ..NamespacePolicies::default()
        },
    )
    .await?;
    let client = Client::connect(&cluster.service_url(0)).await?;
    let mut trimmed = Vec::new();
    for topic in [
        "persistent://public/default/consumed",
        "persistent://keep/hour/consumed",
    ] {
        let consumer = client
            .subscribe(topic, "all", SubscriptionType::Exclusive)
            .await?;
        publish_unbatched(&client, topic, 40).await?;
        for _ in 0..40 {
            let message = consumer
                .receive_timeout(DEADLINE)
                .await?
                .ok_or("every message arrives")?;
            consumer.ack(&message).await?;
        }
        let served_topic = served(&cluster, topic).ok_or("the topic is served")?;
        assert!(
            served_topic.ledger.ledger_ids().len() > 2,
            "40 entries at 5 per ledger roll over"
        );
        // Retention runs on the policy task too; trimming here makes the outcome certain.
        wait_until_async("the acks to reach the cursor", DEADLINE, || {
            let served_topic = served_topic.clone();
            async move {
                (served_topic.stats().await.subscriptions["all"].backlog_entries == 0).then_some(())
            }
        })
        .await?;
        served_topic.ledger.trim().await?;
        trimmed.push(served_topic.ledger.ledger_ids().len());
        drop(consumer);
    }
    assert!(
        trimmed[0] <= 2,
        "the default keeps nothing consumed: {} ledgers left",
        trimmed[0]
    );
    assert!(
        trimmed[1] > 2,
        "retention of an hour keeps every consumed ledger: {} left",
        trimmed[1]
    );

    // What retention kept is there for a new subscription from the earliest message.
    let reader = client
        .consumer("persistent://keep/hour/consumed", "late")
        .initial_position(InitialPosition::Earliest)
        .subscribe()
        .await?;
    for index in 0..40 {
        let message = reader
            .receive_timeout(DEADLINE)
            .await?
            .ok_or("retained messages arrive")?;
        assert_eq!(
            message.payload.as_ref(),
            format!("message-{index}").as_bytes()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backlog_quota_rejects_producers_until_consumers_catch_up() -> TestResult {
    let cluster = Cluster::start(ClusterShape::default()).await?;
    namespace_with(
        &cluster,
        "quota",
        "reject",
        NamespacePolicies {
            backlog_quota_entries: 10,
            backlog_quota_policy: "producer_exception".into(),
            ..NamespacePolicies::default()
        },
    )
    .await?;
    let topic = "persistent://quota/reject/events";
    let client = Client::connect(&cluster.service_url(0)).await?;
    let consumer = client
        .subscribe(topic, "slow", SubscriptionType::Exclusive)
        .await?;
    // Sends succeed until the quota check sees the backlog over 10 entries.
    let producer = client.producer(topic).batching(false).create().await?;
    let stored = std::sync::atomic::AtomicUsize::new(0);
    let refused = wait_until_async("a send refused over the quota", DEADLINE, || {
        let (producer, stored) = (&producer, &stored);
        async move {
            match producer.send(OutgoingMessage::new("over")).await {
                Ok(_) => {
                    stored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    None
                }
                Err(error) => Some(error),
            }
        }
    })
    .await?;
    assert_eq!(
        refused.code(),
        Some(ErrorCode::BacklogQuotaExceeded),
        "{refused}"
    );
    let stored = stored.into_inner();
    assert!(stored > 10, "refused only over the quota, after {stored}");

    // The consumer catches up: sends are accepted again.
    for _ in 0..stored {
        let message = consumer
            .receive_timeout(DEADLINE)
            .await?
            .ok_or("every stored message reaches the consumer")?;
        consumer.ack(&message).await?;
    }
    wait_until_async("sends accepted again", DEADLINE, || {
        let producer = &producer;
        async move {
            producer
                .send(OutgoingMessage::new("under"))
                .await
                .ok()
                .map(|_| ())
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backlog_quota_holds_producers_until_consumers_catch_up() -> TestResult {
    let cluster = Cluster::start(ClusterShape::default()).await?;
    namespace_with(
        &cluster,
        "quota",
        "hold",
        NamespacePolicies {
            backlog_quota_entries: 10,
            backlog_quota_policy: "producer_request_hold".into(),
            ..NamespacePolicies::default()
        },
    )
    .await?;
    let topic = "persistent://quota/hold/events";
    let client = Client::connect(&cluster.service_url(0)).await?;
    let consumer = client
        .subscribe(topic, "slow", SubscriptionType::Exclusive)
        .await?;
    // The quota check runs on its own clock and may hold these sends part way through, so
    // their receipts are awaited only once the consumer has drained the backlog.
    let first_producer = client.producer(topic).batching(false).create().await?;
    let mut first_receipts = Vec::new();
    for index in 0..20 {
        let receipt = first_producer
            .send_async(OutgoingMessage::new(format!("message-{index}")))
            .await?;
        first_receipts.push(receipt);
    }
    let served_topic = served(&cluster, topic).ok_or("the topic is served")?;
    wait_until_async("the quota check to hold producers", DEADLINE, || {
        let served_topic = served_topic.clone();
        async move { served_topic.holds_producers().then_some(()) }
    })
    .await?;
    let producer = client.producer(topic).batching(false).create().await?;
    let held = producer.send_async(OutgoingMessage::new("held")).await?;
    let mut held = Box::pin(held);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut held)
            .await
            .is_err(),
        "a send over the quota waits"
    );
    // Everything published reaches the consumer once it acknowledges what it holds, the held
    // message included (after the first producer's, if the hold caught that one mid-way).
    let mut payloads = std::collections::BTreeSet::new();
    while payloads.len() < 21 {
        let message = consumer
            .receive_timeout(DEADLINE)
            .await?
            .ok_or("the backlog and the held message reach the consumer")?;
        consumer.ack(&message).await?;
        payloads.insert(String::from_utf8(message.payload.to_vec())?);
    }
    assert!(payloads.contains("held"), "the held message is delivered");
    tokio::time::timeout(DEADLINE, held)
        .await
        .map_err(|_| "the held send completes once the backlog is under the quota")??;
    for receipt in first_receipts {
        tokio::time::timeout(DEADLINE, receipt)
            .await
            .map_err(|_| "every send before the hold completes")??;
    }
    Ok(())
}
