//! The ledger client against real components in-process: an embedded single-node metadata
//! store and several bookies on loopback ports, driven through the public API.

mod common;

use std::time::Duration;

use bytes::Bytes;
use magnetar_bookie::ledger::framing::frame;
use magnetar_bookie::ledger::{available_bookies, LedgerClient, LedgerClientConfig};
use magnetar_bookie::{
    new_entry, BookieClient, LedgerError, LedgerOptions, LedgerState, RunningBookie,
};
use magnetar_meta::{MetaClient, MetaConfig, MetaServer};
use magnetar_proto::bookie::AddRequest;

/// Fields drop in order: bookies, then the store, then the directories under them.
struct Cluster {
    bookies: Vec<Option<RunningBookie>>,
    meta: MetaServer,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn start(bookie_count: usize) -> Cluster {
        let meta_dir = tempfile::tempdir().expect("temp dir");
        let meta = MetaServer::start(MetaConfig {
            data_dir: meta_dir.path().to_path_buf(),
            listen: "127.0.0.1:0".into(),
            ..MetaConfig::default()
        })
        .await
        .expect("meta starts");
        let mut dirs = vec![meta_dir];
        let mut bookies = Vec::new();
        for index in 0..bookie_count {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut config = common::small_config(dir.path());
            config.meta_endpoints = vec![meta.endpoint().to_string()];
            config.rack = format!("rack-{}", index % 2);
            config.registration_ttl = Duration::from_secs(2);
            bookies.push(Some(
                RunningBookie::start(config).await.expect("bookie starts"),
            ));
            dirs.push(dir);
        }
        Cluster {
            _dirs: dirs,
            meta,
            bookies,
        }
    }

    fn meta_client(&self) -> MetaClient {
        MetaClient::new(&[self.meta.endpoint().to_string()]).expect("meta client")
    }

    fn client(&self) -> LedgerClient {
        LedgerClient::new(
            self.meta_client(),
            LedgerClientConfig {
                add_timeout: Duration::from_secs(3),
                rpc_timeout: Duration::from_secs(3),
                ..LedgerClientConfig::default()
            },
        )
    }

    fn address(&self, index: usize) -> String {
        self.bookies[index]
            .as_ref()
            .expect("bookie running")
            .local_addr()
            .to_string()
    }

    fn index_of(&self, address: &str) -> usize {
        (0..self.bookies.len())
            .find(|&index| self.bookies[index].is_some() && self.address(index) == address)
            .expect("address of a running bookie")
    }

    async fn stop_bookie(&mut self, index: usize) {
        if let Some(bookie) = self.bookies[index].take() {
            bookie.shutdown().await.expect("bookie stops");
        }
    }
}

fn payload(entry: u64) -> Bytes {
    Bytes::from(format!(
        "entry-{entry:08}-{}",
        "x".repeat((entry % 50) as usize)
    ))
}

/// Polls `attempt` until it gives a value or `timeout` passes.
async fn wait_for<T, F, Fut>(timeout: Duration, mut attempt: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = attempt().await {
            return Some(value);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Adds `range` pipelined and checks each completes with the expected id.
async fn add_range(writer: &magnetar_bookie::LedgerWriter, range: std::ops::Range<u64>) {
    let mut pending = Vec::new();
    for entry in range.clone() {
        pending.push(writer.add_pipelined(payload(entry)).await.expect("queued"));
    }
    for (entry, add) in range.zip(pending) {
        assert_eq!(add.await.expect("add completes"), entry);
    }
}

async fn check_entries(reader: &magnetar_bookie::LedgerReader, count: u64) {
    if count == 0 {
        return;
    }
    let entries = reader.read(0, count - 1).await.expect("read");
    assert_eq!(entries.len() as u64, count);
    for (expected, entry) in entries.iter().enumerate() {
        assert_eq!(entry.entry_id, expected as u64);
        assert_eq!(entry.payload, payload(expected as u64), "entry {expected}");
    }
}

fn length_of(count: u64) -> u64 {
    (0..count).map(|entry| payload(entry).len() as u64).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn create_add_read_close() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client();
    let writer = client
        .create(LedgerOptions::default())
        .await
        .expect("create");
    let ledger_id = writer.ledger_id();
    add_range(&writer, 0..1000).await;
    assert_eq!(writer.last_add_confirmed(), 999);

    // Open without fencing while the writer is live: readable up to the bookies' LAC.
    let tail = client.open(ledger_id).await.expect("open");
    assert!(!tail.is_closed());
    // Entries carry the LAC of when they were sent, so the bookies' LAC trails the writer.
    let lac = tail.last_add_confirmed();
    assert!((-1..=999).contains(&lac), "LAC {lac}");
    check_entries(&tail, (lac + 1) as u64).await;
    match tail.read(0, 1000).await {
        Err(LedgerError::NotYet { .. }) => {}
        other => panic!("read past LAC: {other:?}"),
    }

    // A tailing reader sees the LAC move when more is written.
    add_range(&writer, 1000..1100).await;
    let moved = tail
        .wait_for_lac_past(lac, Duration::from_secs(10))
        .await
        .expect("long poll");
    assert!(moved >= 999, "LAC moved from {lac} to {moved}");
    check_entries(&tail, (moved + 1) as u64).await;

    let closed = writer.close().await.expect("close");
    assert_eq!(closed.state, LedgerState::Closed);
    assert_eq!(closed.last_entry_id, 1099);
    assert_eq!(closed.length, length_of(1100));
    let (stored, _) = client.read_metadata(ledger_id).await.expect("metadata");
    assert_eq!(stored, closed);

    let reader = client.open(ledger_id).await.expect("open closed");
    assert!(reader.is_closed());
    check_entries(&reader, 1100).await;
    assert_eq!(
        reader.read_entry(1099).await.expect("last").length_through,
        closed.length
    );
    match reader.read(1099, 1100).await {
        Err(LedgerError::PastEnd {
            last_entry_id: 1099,
            ..
        }) => {}
        other => panic!("read past the end: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_fail_over_to_other_bookies() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    let writer = client
        .create(LedgerOptions::default())
        .await
        .expect("create");
    let ledger_id = writer.ledger_id();
    add_range(&writer, 0..300).await;
    writer.close().await.expect("close");
    // Each bookie is first choice for a third of the entries; stop one of them.
    let (metadata, _) = client.read_metadata(ledger_id).await.expect("metadata");
    let first = cluster.index_of(&metadata.segments[0].bookies[0]);
    cluster.stop_bookie(first).await;
    let reader = client.open(ledger_id).await.expect("open");
    check_entries(&reader, 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writer_replaces_a_failed_bookie_and_goes_on() {
    let mut cluster = Cluster::start(4).await;
    let client = cluster.client();
    let writer = client
        .create(LedgerOptions::default())
        .await
        .expect("create");
    let ledger_id = writer.ledger_id();
    add_range(&writer, 0..500).await;
    let (before, _) = client.read_metadata(ledger_id).await.expect("metadata");
    let victim = before.segments[0].bookies[1].clone();
    cluster.stop_bookie(cluster.index_of(&victim)).await;
    add_range(&writer, 500..1000).await;
    let closed = writer.close().await.expect("close");
    assert_eq!(closed.last_entry_id, 999);
    assert_eq!(closed.segments.len(), 2, "{:?}", closed.segments);
    assert!(!closed.last_segment().bookies.contains(&victim));
    assert!(closed.segments[1].first_entry_id >= 500);
    let reader = client.open(ledger_id).await.expect("open");
    check_entries(&reader, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovery_closes_an_open_ledger_and_fences_its_writer() {
    let cluster = Cluster::start(3).await;
    let writer_client = cluster.client();
    let writer = writer_client
        .create(LedgerOptions::default())
        .await
        .expect("create");
    let ledger_id = writer.ledger_id();
    add_range(&writer, 0..300).await;

    let recovering = cluster.client();
    let reader = recovering.recover(ledger_id).await.expect("recover");
    let metadata = reader.metadata();
    assert_eq!(metadata.state, LedgerState::Closed);
    assert_eq!(
        metadata.last_entry_id, 299,
        "every acknowledged entry is kept"
    );
    assert_eq!(metadata.length, length_of(300));
    check_entries(&reader, 300).await;

    // The old writer is fenced: its adds and its close fail, and nothing more appears.
    match writer.add(payload(300)).await {
        Err(LedgerError::Fenced { .. }) => {}
        other => panic!("add after recovery: {other:?}"),
    }
    match writer.close().await {
        Err(LedgerError::Fenced { .. }) => {}
        other => panic!("close after recovery: {other:?}"),
    }
    let again = recovering.recover(ledger_id).await.expect("recover again");
    assert_eq!(again.metadata().last_entry_id, 299);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_recoveries_agree_on_a_partly_written_tail() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client();
    let writer = client
        .create(LedgerOptions::default())
        .await
        .expect("create");
    let ledger_id = writer.ledger_id();
    add_range(&writer, 0..100).await;
    let (metadata, _) = client.read_metadata(ledger_id).await.expect("metadata");
    // The writer "crashes" after sending entry 100 to one bookie only: it was never
    // acknowledged, but recovery cannot know and keeps it.
    drop(writer);
    let token = metadata.writer_token();
    let lone = BookieClient::connect(&metadata.segments[0].bookies[2])
        .await
        .expect("connect");
    let entry = new_entry(ledger_id, 100, 98, frame(length_of(101), &payload(100)));
    let results = common::add(
        &lone,
        AddRequest {
            entries: vec![entry],
            writer_token: token,
            recovery: false,
            ledger_tokens: Vec::new(),
        },
    )
    .await;
    assert_eq!(results[0].code, 0, "{}", results[0].message);

    let (one, other) = (cluster.client(), cluster.client());
    let (first, second) = tokio::join!(one.recover(ledger_id), other.recover(ledger_id));
    let (first, second) = (first.expect("first"), second.expect("second"));
    assert_eq!(first.metadata(), second.metadata());
    assert_eq!(first.metadata().last_entry_id, 100);
    assert_eq!(first.metadata().length, length_of(101));
    check_entries(&first, 101).await;
    // The kept tail was written again to the whole write quorum.
    for address in &metadata.segments[0].bookies {
        let bookie = BookieClient::connect(address).await.expect("connect");
        let stored = bookie.read(ledger_id, 100, 100).await.expect("entry 100");
        assert_eq!(stored.len(), 1, "entry 100 on {address}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovery_ends_at_the_first_missing_entry() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client();
    let writer = client
        .create(LedgerOptions::default())
        .await
        .expect("create");
    let ledger_id = writer.ledger_id();
    add_range(&writer, 0..50).await;
    drop(writer);
    // An empty ledger and one with entries both recover to exactly what was acknowledged.
    let empty = client
        .create(LedgerOptions::default())
        .await
        .expect("create");
    let empty_id = empty.ledger_id();
    drop(empty);
    let reader = cluster.client().recover(ledger_id).await.expect("recover");
    assert_eq!(reader.metadata().last_entry_id, 49);
    let reader = cluster
        .client()
        .recover(empty_id)
        .await
        .expect("recover empty");
    assert_eq!(reader.metadata().last_entry_id, -1);
    assert_eq!(reader.metadata().length, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovery_replaces_a_bookie_that_missed_the_fence() {
    let mut cluster = Cluster::start(4).await;
    let client = cluster.client();
    let writer = client
        .create(LedgerOptions::default())
        .await
        .expect("create");
    let ledger_id = writer.ledger_id();
    add_range(&writer, 0..200).await;
    // The writer dies first (so it makes no ensemble change of its own), then a bookie.
    drop(writer);
    let (metadata, _) = client.read_metadata(ledger_id).await.expect("metadata");
    let dead = metadata.segments[0].bookies[0].clone();
    cluster.stop_bookie(cluster.index_of(&dead)).await;

    let reader = cluster.client().recover(ledger_id).await.expect("recover");
    let closed = reader.metadata();
    assert_eq!(closed.state, LedgerState::Closed);
    assert_eq!(closed.last_entry_id, 199);
    assert_eq!(closed.length, length_of(200));
    check_entries(&reader, 200).await;
    // Whatever tail recovery wrote again went to a bookie that is alive.
    if closed.segments.len() > 1 {
        assert!(!closed.last_segment().bookies.contains(&dead));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recovery_needs_enough_fenced_bookies() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client();
    let writer = client
        .create(LedgerOptions::default())
        .await
        .expect("create");
    let ledger_id = writer.ledger_id();
    add_range(&writer, 0..10).await;
    drop(writer);
    // With 3/3/2, two of three bookies must be fenced; with one left recovery must refuse
    // rather than guess, and leave the ledger for a later attempt.
    cluster.stop_bookie(0).await;
    cluster.stop_bookie(1).await;
    match cluster.client().recover(ledger_id).await {
        Err(LedgerError::RecoveryIncomplete { .. }) => {}
        Err(other) => panic!("recovery with one bookie: {other}"),
        Ok(reader) => panic!(
            "recovery with one bookie closed at {}",
            reader.metadata().last_entry_id
        ),
    }
    let (metadata, _) = client.read_metadata(ledger_id).await.expect("metadata");
    assert_eq!(metadata.state, LedgerState::InRecovery);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delete_removes_entries_and_metadata() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client();
    let writer = client
        .create(LedgerOptions::default())
        .await
        .expect("create");
    let ledger_id = writer.ledger_id();
    add_range(&writer, 0..100).await;
    let metadata = writer.close().await.expect("close");
    client.delete(ledger_id).await.expect("delete");
    match client.read_metadata(ledger_id).await {
        Err(LedgerError::NoSuchLedger { .. }) => {}
        other => panic!("metadata after delete: {other:?}"),
    }
    for address in metadata.all_bookies() {
        let bookie = BookieClient::connect(&address).await.expect("connect");
        assert!(
            bookie.read(ledger_id, 0, 0).await.is_err(),
            "{address} still has it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bookies_register_and_leave() {
    let mut cluster = Cluster::start(3).await;
    let meta = cluster.meta_client();
    let listed = available_bookies(&meta).await.expect("list");
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|bookie| bookie.free_space_bytes > 0));
    assert!(listed.iter().any(|bookie| bookie.rack == "rack-1"));
    let leaving = cluster.address(0);
    cluster.stop_bookie(0).await;
    let listed = available_bookies(&meta).await.expect("list");
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|bookie| bookie.address != leaving));
    // With two bookies left a 3-bookie ensemble cannot be placed.
    match cluster.client().create(LedgerOptions::default()).await {
        Err(LedgerError::NotEnoughBookies {
            needed: 3,
            available: 2,
        }) => {}
        Err(other) => panic!("create with two bookies: {other}"),
        Ok(_) => panic!("create with two bookies succeeded"),
    }
}

/// Seeded mix of adds, bookie stops and restarts, ending in a close or a recovery: every
/// acknowledged entry must read back, in order, with its bytes. Replay with
/// `MAGNETAR_LEDGER_SEED=<n>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_bookie_failures_never_lose_acknowledged_entries() {
    let seed = std::env::var("MAGNETAR_LEDGER_SEED")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("seed {seed} (replay with MAGNETAR_LEDGER_SEED={seed})");
    random_scenario(seed).await;
}

/// Once failed with "not enough bookies": a writer excluded restarted bookies forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn regression_restarted_bookies_can_be_chosen_again() {
    random_scenario(3131867741751610258).await;
}

async fn random_scenario(seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(5).await;
    // A stopped bookie restarts on its data directory and address, as a real one would.
    let configs: Vec<magnetar_bookie::BookieConfig> = (0..5)
        .map(|index| {
            let mut config = common::small_config(cluster._dirs[index + 1].path());
            config.listen = cluster.bookies[index]
                .as_ref()
                .expect("running")
                .local_addr();
            config.meta_endpoints = vec![cluster.meta.endpoint().to_string()];
            config.registration_ttl = Duration::from_secs(2);
            config
        })
        .collect();
    let client = cluster.client();
    let writer = client
        .create(LedgerOptions::default())
        .await
        .expect("create");
    let ledger_id = writer.ledger_id();
    let mut written = 0u64;
    for step in 0..12 {
        let count = rng.random_range(1..400);
        add_range(&writer, written..written + count).await;
        written += count;
        let running: Vec<usize> = (0..5).filter(|&i| cluster.bookies[i].is_some()).collect();
        let stopped: Vec<usize> = (0..5).filter(|&i| cluster.bookies[i].is_none()).collect();
        if running.len() > 4 || (running.len() == 4 && rng.random_bool(0.5)) {
            let victim = running[rng.random_range(0..running.len())];
            println!("step {step}: stop bookie {victim} after {written} entries");
            cluster.stop_bookie(victim).await;
        } else if let Some(&back) = stopped.first() {
            println!("step {step}: restart bookie {back}");
            // The stopped bookie's RocksDB is released once the last connection to it has
            // wound down, which may take a moment after shutdown returns.
            let config = configs[back].clone();
            let restarted = wait_for(Duration::from_secs(30), || {
                let config = config.clone();
                async move { RunningBookie::start(config).await.ok() }
            })
            .await
            .expect("bookie restarts");
            cluster.bookies[back] = Some(restarted);
        }
    }
    let closed = if rng.random_bool(0.5) {
        writer.close().await.expect("close")
    } else {
        drop(writer);
        cluster
            .client()
            .recover(ledger_id)
            .await
            .expect("recover")
            .metadata()
    };
    println!(
        "closed at {} with {} ensembles",
        closed.last_entry_id,
        closed.segments.len()
    );
    assert_eq!(closed.last_entry_id, written as i64 - 1);
    let reader = client.open(ledger_id).await.expect("open");
    check_entries(&reader, written).await;
}
