//! A Magnetar cluster of real processes on loopback: 3 `magnetar meta`, 3 `magnetar bookie`
//! (ledgers at 3/3/2) and 2 `magnetar broker`. A producer publishes keyed messages while
//! Exclusive, Failover and Key_Shared subscriptions consume them; meanwhile the test SIGKILLs
//! the broker owning the topic and, later, one bookie (restarted on its directory after a
//! moment). Afterwards:
//! - every acknowledged message was consumed at least once by every subscription;
//! - the log holds each message exactly once (deduplication absorbed the resends);
//! - each key's messages were consumed in order: no message was consumed before every earlier
//!   message of its key had been consumed at least once (by any consumer of the subscription;
//!   a redelivery or a late duplicate from a consumer that lost its keys may go back).
//!
//! The bookie to kill comes from a seed printed at the start; `MAGNETAR_CRASH_SEED=<n>`
//! replays it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use magnetar_bookie::ledger::available_bookies;
use magnetar_broker::admin::client::AdminClient;
use magnetar_broker::admin::Method;
use magnetar_broker::bundles::DEFAULT_BUNDLES;
use magnetar_broker::service::namespaces::{self, NamespacePolicies};
use magnetar_broker::service::ownership::{bundle_for, live_brokers, owner_key, owner_of};
use magnetar_broker::TopicName;
use magnetar_client::{Client, Consumer, InitialPosition, OutgoingMessage, SubscriptionType};
use magnetar_meta::MetaClient;
use magnetar_tests::{crash_seed, free_port, wait_until_async, MagnetarProcess};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// In a namespace that retains consumed data, so the final count can read the whole log.
const TOPIC: &str = "persistent://crash/kept/events";
const MESSAGES: usize = 3_000;
const KEYS: usize = 16;
/// Messages queued before waiting for their receipts.
const WINDOW: usize = 50;
const STARTUP: Duration = Duration::from_secs(60);
const CATCH_UP: Duration = Duration::from_secs(120);

struct Bookie {
    address: String,
    dir: PathBuf,
    meta_list: String,
    process: Option<MagnetarProcess>,
}

impl Bookie {
    fn start(&mut self) -> std::io::Result<()> {
        let data_dir = self.dir.to_string_lossy().to_string();
        self.process = Some(MagnetarProcess::start(&[
            "bookie",
            "--data-dir",
            &data_dir,
            "--listen",
            &self.address,
            "--meta",
            &self.meta_list,
            "--registration-ttl-ms",
            "2000",
            "--journal-file-size-bytes",
            "16777216",
        ])?);
        Ok(())
    }
}

struct Broker {
    address: String,
    /// The admin API's address.
    http: String,
    process: Option<MagnetarProcess>,
}

/// Fields drop in order: brokers, bookies, the metadata group, then the directories.
struct Processes {
    brokers: Vec<Broker>,
    bookies: Vec<Bookie>,
    _meta: Vec<MagnetarProcess>,
    meta_endpoints: Vec<String>,
    _dirs: Vec<tempfile::TempDir>,
}

fn write_broker_config(
    dir: &Path,
    listen: &str,
    http: &str,
    meta: &[String],
) -> std::io::Result<PathBuf> {
    let endpoints: Vec<String> = meta
        .iter()
        .map(|endpoint| format!("{endpoint:?}"))
        .collect();
    let text = format!(
        "listen = {listen:?}\n\
         http_listen = {http:?}\n\
         meta_endpoints = [{endpoints}]\n\
         ensemble_size = 3\n\
         write_quorum = 3\n\
         ack_quorum = 2\n\
         session_ttl_ms = 2000\n",
        endpoints = endpoints.join(", "),
    );
    let path = dir.join("broker.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

async fn start_cluster() -> Result<Processes, Box<dyn std::error::Error>> {
    let mut dirs = Vec::new();
    let meta_endpoints: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let peers: Vec<String> = meta_endpoints
        .iter()
        .enumerate()
        .map(|(index, endpoint)| format!("{}={endpoint}", index + 1))
        .collect();
    let peers = peers.join(",");
    let mut meta = Vec::new();
    for (index, endpoint) in meta_endpoints.iter().enumerate() {
        let dir = tempfile::tempdir()?;
        let id = (index + 1).to_string();
        let data_dir = dir.path().to_string_lossy().to_string();
        meta.push(MagnetarProcess::start(&[
            "meta",
            "--id",
            &id,
            "--data-dir",
            &data_dir,
            "--listen",
            endpoint,
            "--peers",
            &peers,
        ])?);
        dirs.push(dir);
    }
    let client = MetaClient::new(&meta_endpoints)?;
    wait_until_async("the metadata group to serve", STARTUP, || {
        let client = client.clone();
        async move { client.get("/ready").await.ok().map(|_| ()) }
    })
    .await?;

    let meta_list = meta_endpoints.join(",");
    let mut bookies = Vec::new();
    for _ in 0..3 {
        let dir = tempfile::tempdir()?;
        let mut bookie = Bookie {
            address: format!("127.0.0.1:{}", free_port()),
            dir: dir.path().to_path_buf(),
            meta_list: meta_list.clone(),
            process: None,
        };
        bookie.start()?;
        bookies.push(bookie);
        dirs.push(dir);
    }
    wait_until_async("3 bookies registered", STARTUP, || {
        let client = client.clone();
        async move {
            let available = available_bookies(&client).await.ok()?;
            (available.len() == 3).then_some(())
        }
    })
    .await?;

    let mut brokers = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir()?;
        let listen = format!("127.0.0.1:{}", free_port());
        let http = format!("127.0.0.1:{}", free_port());
        let config = write_broker_config(dir.path(), &listen, &http, &meta_endpoints)?;
        let config = config.to_string_lossy().to_string();
        let process = MagnetarProcess::start(&["broker", "--config", &config])?;
        brokers.push(Broker {
            address: listen,
            http,
            process: Some(process),
        });
        dirs.push(dir);
    }
    wait_until_async("2 brokers registered", STARTUP, || {
        let client = client.clone();
        async move {
            let live = live_brokers(&client).await.ok()?;
            (live.len() == 2).then_some(())
        }
    })
    .await?;
    Ok(Processes {
        brokers,
        bookies,
        _meta: meta,
        meta_endpoints,
        _dirs: dirs,
    })
}

/// What one subscription's consumers saw, in the order they recorded it.
#[derive(Default)]
struct Seen {
    indices: BTreeSet<usize>,
    /// Per key: the lowest sequence number no consumer has seen yet.
    first_unseen_of_key: HashMap<usize, usize>,
    order_violations: Vec<String>,
}

impl Seen {
    /// Two consumers of one subscription can both hold a key for a moment (a Failover consumer
    /// that was just replaced, a Key_Shared key that just moved), so one may show an old
    /// message again after the other went further; that is a duplicate, not disorder. Disorder
    /// is a message seen while an earlier one of its key was never seen.
    fn record(&mut self, index: usize) {
        let key = index % KEYS;
        let sequence = index / KEYS;
        let first_unseen = self.first_unseen_of_key.entry(key).or_insert(0);
        if sequence > *first_unseen {
            self.order_violations.push(format!(
                "key {key}: sequence {sequence} before sequence {first_unseen} was ever seen"
            ));
        }
        self.indices.insert(index);
        while self.indices.contains(&(*first_unseen * KEYS + key)) {
            *first_unseen += 1;
        }
    }
}

fn index_of(message: &magnetar_client::ReceivedMessage) -> Option<usize> {
    message.properties.get("index")?.parse().ok()
}

/// Receives, records and acknowledges until the task is aborted.
fn consume(consumer: Consumer, seen: Arc<Mutex<Seen>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match consumer.receive_timeout(Duration::from_secs(1)).await {
                Ok(Some(message)) => {
                    if let Some(index) = index_of(&message) {
                        seen.lock().expect("no panics while held").record(index);
                    }
                    // A lost ack only means a redelivery.
                    let _ = consumer.ack(&message).await;
                }
                Ok(None) => {}
                Err(error) => println!("consumer: {error}; receiving again"),
            }
        }
    })
}

async fn owner(meta: &MetaClient) -> Option<String> {
    let topic = TopicName::parse(TOPIC).ok()?;
    let key = owner_key(&topic, bundle_for(&topic, DEFAULT_BUNDLES));
    owner_of(meta, &key).await.ok()?
}

/// What a stalled subscription lacks, and what the brokers say of the topic, for the log.
async fn report_stall(cluster: &Processes, seen_by: &[(&str, Arc<Mutex<Seen>>)]) {
    for (subscription, seen) in seen_by {
        let seen = seen.lock().expect("not poisoned");
        let missing: Vec<usize> = (0..MESSAGES)
            .filter(|index| !seen.indices.contains(index))
            .collect();
        println!(
            "subscription {subscription}: {} of {MESSAGES} consumed; missing {} (first {:?})",
            seen.indices.len(),
            missing.len(),
            &missing[..missing.len().min(20)]
        );
    }
    let topic = TOPIC.trim_start_matches("persistent://");
    for broker in cluster
        .brokers
        .iter()
        .filter(|broker| broker.process.is_some())
    {
        let Ok(admin) = AdminClient::new(&broker.http) else {
            continue;
        };
        for what in ["stats", "internalStats"] {
            let path = format!("/admin/v2/persistent/{topic}/{what}");
            match admin.send(Method::GET, &path, None).await {
                Ok(response) => println!("broker {} {what}: {}", broker.address, response.text()),
                Err(error) => println!("broker {} {what}: {error}", broker.address),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_messages_survive_a_broker_and_a_bookie_killed() -> TestResult {
    let mut rng = StdRng::seed_from_u64(crash_seed());
    let mut cluster = start_cluster().await?;
    let meta = MetaClient::new(&cluster.meta_endpoints)?;
    namespaces::create_tenant(&meta, "crash").await?;
    namespaces::create_namespace(
        &meta,
        "crash",
        "kept",
        &NamespacePolicies {
            retention_minutes: 60,
            retention_size_mb: 1024,
            ..NamespacePolicies::default()
        },
    )
    .await?;
    let service_url = cluster
        .brokers
        .iter()
        .map(|broker| broker.address.clone())
        .collect::<Vec<_>>()
        .join(",");
    let client = Client::connect(&service_url).await?;

    let mut subscribers = Vec::new();
    let mut seen_by = Vec::new();
    for (subscription, kind, names) in [
        ("exclusive", SubscriptionType::Exclusive, vec!["only"]),
        (
            "failover",
            SubscriptionType::Failover,
            vec!["first", "second"],
        ),
        ("key-shared", SubscriptionType::KeyShared, vec!["a", "b"]),
    ] {
        let seen = Arc::new(Mutex::new(Seen::default()));
        seen_by.push((subscription, seen.clone()));
        for name in names {
            let consumer = client
                .consumer(TOPIC, subscription)
                .subscription_type(kind)
                .consumer_name(name)
                .initial_position(InitialPosition::Earliest)
                .subscribe()
                .await?;
            subscribers.push(consume(consumer, seen.clone()));
        }
    }

    let producer = client
        .producer(TOPIC)
        .name("crash-producer")
        .create()
        .await?;
    let victim_bookie = rng.random_range(0..cluster.bookies.len());
    let mut broker_killed = false;
    let mut bookie_restart: Option<std::thread::JoinHandle<Bookie>> = None;
    let mut acknowledged = 0usize;
    let started = Instant::now();
    while acknowledged < MESSAGES {
        if !broker_killed && acknowledged >= MESSAGES / 3 {
            let owner = owner(&meta).await.ok_or("the topic has an owner")?;
            let broker = cluster
                .brokers
                .iter_mut()
                .find(|broker| broker.address == owner)
                .ok_or("the owner is one of the brokers")?;
            println!("killing the owning broker {owner} at {acknowledged} acknowledged");
            if let Some(mut process) = broker.process.take() {
                process.kill();
            }
            broker_killed = true;
        }
        if bookie_restart.is_none() && acknowledged >= 2 * MESSAGES / 3 {
            let mut bookie = cluster.bookies.remove(victim_bookie);
            println!(
                "killing bookie {} at {acknowledged} acknowledged; it restarts in 2 s",
                bookie.address
            );
            if let Some(mut process) = bookie.process.take() {
                process.kill();
            }
            // The fault lasts a fixed time while the producer keeps trying; it is not a
            // wait for a condition.
            bookie_restart = Some(std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(2));
                bookie.start().expect("the bookie restarts");
                bookie
            }));
        }
        let mut receipts = Vec::new();
        for index in acknowledged..(acknowledged + WINDOW).min(MESSAGES) {
            let message = OutgoingMessage::new(format!("message-{index}"))
                .with_key(format!("key-{}", index % KEYS))
                .with_property("index", index.to_string());
            receipts.push(producer.send_async(message).await?);
        }
        for receipt in receipts {
            receipt.await?;
            acknowledged += 1;
        }
    }
    println!(
        "{MESSAGES} messages acknowledged in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if let Some(restart) = bookie_restart {
        cluster.bookies.push(
            restart
                .join()
                .map_err(|_| "the bookie restart thread panicked")?,
        );
    }

    for (subscription, seen) in &seen_by {
        let caught_up = wait_until_async(
            &format!("subscription {subscription} to consume all {MESSAGES}"),
            CATCH_UP,
            || {
                let seen = seen.clone();
                async move {
                    let count = seen.lock().expect("not poisoned").indices.len();
                    (count == MESSAGES).then_some(())
                }
            },
        )
        .await;
        if let Err(timed_out) = caught_up {
            report_stall(&cluster, &seen_by).await;
            return Err(timed_out.into());
        }
    }
    for subscriber in subscribers {
        subscriber.abort();
    }
    for (subscription, seen) in &seen_by {
        let seen = seen.lock().expect("not poisoned");
        assert!(
            seen.order_violations.is_empty(),
            "{subscription}: per-key order broken: {:?}",
            &seen.order_violations[..seen.order_violations.len().min(10)]
        );
    }

    // The log holds each message once: a reader from the start counts them.
    let reader = client.reader(TOPIC).create().await?;
    let mut copies: HashMap<usize, usize> = HashMap::new();
    let mut read = 0usize;
    while copies.len() < MESSAGES {
        let message = reader
            .next_timeout(CATCH_UP)
            .await?
            .ok_or("the reader reaches every message")?;
        *copies
            .entry(index_of(&message).ok_or("every message has an index")?)
            .or_default() += 1;
        read += 1;
    }
    // Anything stored twice would sit before the last first copy or right after it.
    while let Some(message) = reader.next_timeout(Duration::from_secs(2)).await? {
        *copies
            .entry(index_of(&message).ok_or("every message has an index")?)
            .or_default() += 1;
        read += 1;
    }
    let twice: Vec<(&usize, &usize)> = copies.iter().filter(|(_, &count)| count > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert_eq!(read, MESSAGES);
    Ok(())
}

#[test]
fn the_order_check_refuses_disorder_and_accepts_late_duplicates() {
    let index = |key: usize, sequence: usize| sequence * KEYS + key;
    let mut seen = Seen::default();
    for sequence in 0..3 {
        seen.record(index(1, sequence));
    }
    // A replaced consumer shows sequence 1 again after its successor reached 2: a duplicate.
    seen.record(index(1, 1));
    seen.record(index(1, 3));
    assert!(
        seen.order_violations.is_empty(),
        "{:?}",
        seen.order_violations
    );
    // Sequence 5 before 4 was ever seen is disorder.
    seen.record(index(1, 5));
    assert_eq!(
        seen.order_violations.len(),
        1,
        "{:?}",
        seen.order_violations
    );
    // A key's first message must be its sequence 0.
    seen.record(index(2, 1));
    assert_eq!(
        seen.order_violations.len(),
        2,
        "{:?}",
        seen.order_violations
    );
}
