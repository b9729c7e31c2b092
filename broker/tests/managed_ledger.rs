//! The managed ledger against real components in-process: an embedded metadata store and
//! bookies on loopback ports, each over its own temporary directory.

use std::time::Duration;

use bytes::Bytes;
use magnetar_bookie::ledger::{LedgerClient, LedgerClientConfig};
use magnetar_bookie::{BookieConfig, LedgerOptions, RunningBookie};
use magnetar_broker::managed_ledger::{
    InitialPosition, ManagedLedger, ManagedLedgerConfig, ManagedLedgerError, Position,
    RetentionPolicy, RolloverPolicy,
};
use magnetar_meta::{MetaClient, MetaConfig, MetaServer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Polls `condition` until it holds; fails the test with `what` after `timeout`.
async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Cluster {
    _meta_dir: tempfile::TempDir,
    meta: MetaServer,
    bookie_dirs: Vec<tempfile::TempDir>,
    bookies: Vec<Option<RunningBookie>>,
}

fn bookie_config(dir: &std::path::Path, meta_endpoint: &str) -> BookieConfig {
    BookieConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("loopback address"),
        journal_file_size_bytes: 4 * 1024 * 1024,
        write_cache_flush_bytes: 1024 * 1024,
        entry_log_size_bytes: 1024 * 1024,
        flush_interval: Duration::from_millis(200),
        min_free_space_bytes: 1024 * 1024,
        meta_endpoints: vec![meta_endpoint.to_string()],
        registration_ttl: Duration::from_secs(2),
        ..BookieConfig::default()
    }
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
        let mut cluster = Cluster {
            _meta_dir: meta_dir,
            meta,
            bookie_dirs: Vec::new(),
            bookies: Vec::new(),
        };
        for _ in 0..bookie_count {
            let dir = tempfile::tempdir().expect("temp dir");
            let bookie = RunningBookie::start(bookie_config(dir.path(), cluster.meta.endpoint()))
                .await
                .expect("bookie starts");
            cluster.bookie_dirs.push(dir);
            cluster.bookies.push(Some(bookie));
        }
        cluster
    }

    fn client(&self) -> LedgerClient {
        let meta = MetaClient::new(&[self.meta.endpoint().to_string()]).expect("meta client");
        LedgerClient::new(
            meta,
            LedgerClientConfig {
                add_timeout: Duration::from_secs(2),
                rpc_timeout: Duration::from_secs(2),
                ..LedgerClientConfig::default()
            },
        )
    }

    /// Bytes of entry-log files on every running bookie.
    fn entry_log_bytes(&self) -> u64 {
        let mut total = 0;
        for (index, bookie) in self.bookies.iter().enumerate() {
            if bookie.is_none() {
                continue;
            }
            let dir = bookie_config(self.bookie_dirs[index].path(), "").entry_log_dir();
            for file in std::fs::read_dir(dir).expect("entry log dir").flatten() {
                if file.file_name().to_string_lossy().ends_with(".log") {
                    total += file.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
        }
        total
    }
}

fn config(max_entries_per_ledger: u64) -> ManagedLedgerConfig {
    ManagedLedgerConfig {
        ledger_options: LedgerOptions {
            ensemble_size: 3,
            write_quorum: 3,
            ack_quorum: 2,
            ..LedgerOptions::default()
        },
        rollover: RolloverPolicy {
            max_entries: max_entries_per_ledger,
            ..RolloverPolicy::default()
        },
        cursor_flush_interval: Duration::from_millis(50),
        ..ManagedLedgerConfig::default()
    }
}

fn payload(index: usize, size: usize) -> Bytes {
    let mut bytes = format!("entry-{index}-").into_bytes();
    bytes.resize(size.max(bytes.len()), (index % 251) as u8);
    Bytes::from(bytes)
}

/// Every entry of the log, from the first on.
async fn read_all(log: &ManagedLedger) -> Vec<(Position, Bytes)> {
    let mut entries = Vec::new();
    let mut next = Position::new(0, 0);
    loop {
        let batch = log.read(next, 500).await.expect("read");
        let Some(last) = batch.last() else {
            return entries;
        };
        next = Position::new(last.position.ledger_id, last.position.entry_id + 1);
        entries.extend(
            batch
                .into_iter()
                .map(|entry| (entry.position, entry.payload)),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_roll_over_and_read_back_in_order_after_reopen() {
    let cluster = Cluster::start(3).await;
    let log = ManagedLedger::open(cluster.client(), "public/default/orders", config(40))
        .await
        .expect("open");
    let mut positions = Vec::new();
    for index in 0..100 {
        positions.push(log.append(payload(index, 100)).await.expect("append"));
    }
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(log.ledger_ids().len(), 3, "40 entries per ledger");
    let read = read_all(&log).await;
    assert_eq!(read.len(), 100);
    for (index, (position, bytes)) in read.iter().enumerate() {
        assert_eq!(*position, positions[index]);
        assert_eq!(*bytes, payload(index, 100));
    }
    log.close().await.expect("close");
    assert!(matches!(
        log.append(payload(0, 1)).await,
        Err(ManagedLedgerError::Closed { .. })
    ));

    let reopened = ManagedLedger::open(cluster.client(), "public/default/orders", config(40))
        .await
        .expect("reopen");
    // The cache is empty after a reopen: these reads come from the bookies.
    let again = read_all(&reopened).await;
    assert_eq!(again, read);
    let next = reopened.append(payload(100, 100)).await.expect("append");
    assert!(next > positions[99]);
}

/// A reader far behind the writer, with nothing cached: a reader opened on a ledger while it
/// was current must still read it after it is closed, and the last entries of the current
/// ledger must be readable though no later entry carried their LAC to the bookies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_behind_an_uncached_log_reads_to_the_last_entry() {
    let cluster = Cluster::start(3).await;
    let no_cache = ManagedLedgerConfig {
        cache_capacity_bytes: 0,
        ..config(40)
    };
    let log = ManagedLedger::open(cluster.client(), "public/default/behind", no_cache)
        .await
        .expect("open");
    for index in 0..30 {
        log.append(payload(index, 100)).await.expect("append");
    }
    // Opens a reader on the first ledger while it is being written.
    let early = log.read(Position::new(0, 0), 10).await.expect("read");
    assert_eq!(early.len(), 10);
    for index in 30..100 {
        log.append(payload(index, 100)).await.expect("append");
    }
    let read = read_all(&log).await;
    assert_eq!(read.len(), 100, "every entry is read, to the last");
    for (index, (_, bytes)) in read.iter().enumerate() {
        assert_eq!(*bytes, payload(index, 100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cursors_resume_exactly_with_individual_acks_after_reopen() {
    let cluster = Cluster::start(3).await;
    let name = "public/default/cursors";
    let log = ManagedLedger::open(cluster.client(), name, config(25))
        .await
        .expect("open");
    log.open_cursor("sub", InitialPosition::Earliest)
        .await
        .expect("cursor");
    let mut positions = Vec::new();
    for index in 0..60 {
        positions.push(log.append(payload(index, 50)).await.expect("append"));
    }
    log.ack_cumulative("sub", positions[9]).expect("ack");
    for index in [12, 13, 20, 30, 31, 32, 59] {
        log.ack("sub", positions[index]).expect("ack");
    }
    assert_eq!(log.backlog_entries("sub").expect("backlog"), 50 - 7);
    let before = log.cursor_state("sub").expect("state");
    // Persisted in the background, batched; wait for it rather than forcing a flush.
    let meta = MetaClient::new(&[cluster.meta.endpoint().to_string()]).expect("meta");
    let key = format!("/cursors/{name}/sub");
    wait_until(Duration::from_secs(10), "the cursor is persisted", || {
        let meta = meta.clone();
        let key = key.clone();
        let expected = before.clone();
        async move {
            meta.get(&key).await.ok().flatten().is_some_and(|kv| {
                magnetar_broker::managed_ledger::CursorState::decode(&kv.value).ok()
                    == Some(expected.clone())
            })
        }
    })
    .await;
    // No close: the owner simply goes away, and a new owner recovers.
    drop(log);
    let reopened = ManagedLedger::open(cluster.client(), name, config(25))
        .await
        .expect("reopen");
    let after = reopened.cursor_state("sub").expect("state");
    assert_eq!(after, before);
    for (index, position) in positions.iter().enumerate() {
        let acked = index <= 9 || [12, 13, 20, 30, 31, 32, 59].contains(&index);
        assert_eq!(after.is_acked(*position), acked, "entry {index}");
    }
    assert_eq!(reopened.backlog_entries("sub").expect("backlog"), 43);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_owner_fences_the_first_and_nothing_acknowledged_is_lost() {
    let cluster = Cluster::start(3).await;
    let name = "public/default/contested";
    let first = ManagedLedger::open(cluster.client(), name, config(1000))
        .await
        .expect("first owner");
    let first_ledger = first.ledger_ids()[0];
    let mut acknowledged = Vec::new();
    for index in 0..30 {
        let position = first.append(payload(index, 64)).await.expect("append");
        acknowledged.push((position, payload(index, 64)));
    }
    // The first owner keeps appending while the second takes over.
    let writer = first.clone();
    let appended = Arc::new(AtomicUsize::new(0));
    let counter = appended.clone();
    let racing = tokio::spawn(async move {
        let mut accepted = Vec::new();
        let mut refusal = None;
        for index in 30..100_000 {
            match writer.append(payload(index, 64)).await {
                Ok(position) => {
                    accepted.push((position, payload(index, 64)));
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    refusal = Some(error);
                    break;
                }
            }
        }
        (accepted, refusal)
    });
    wait_until(
        Duration::from_secs(10),
        "the first owner is mid-stream",
        || {
            let appended = appended.clone();
            async move { appended.load(Ordering::Relaxed) >= 20 }
        },
    )
    .await;
    let second = ManagedLedger::open(cluster.client(), name, config(1000))
        .await
        .expect("second owner");
    let (accepted, refusal) = racing.await.expect("racing task");
    assert!(
        matches!(refusal, Some(ManagedLedgerError::Fenced { .. })),
        "the first owner learns it lost the log: {refusal:?}"
    );
    assert!(first.is_fenced());
    acknowledged.extend(accepted);
    for index in 0..20 {
        let position = second
            .append(payload(1_000_000 + index, 64))
            .await
            .expect("the second owner writes");
        acknowledged.push((position, payload(1_000_000 + index, 64)));
    }
    assert!(matches!(
        first.append(payload(0, 1)).await,
        Err(ManagedLedgerError::Fenced { .. })
    ));
    // Every acknowledged append is in the log, in order. The only other entries allowed are
    // appends the first owner had sent but not yet seen acknowledged when it was fenced:
    // recovery keeps whatever may have been acknowledged.
    let read = read_all(&second).await;
    let mut log = read.iter().peekable();
    for (position, bytes) in &acknowledged {
        loop {
            let (found_position, found_bytes) = log
                .next()
                .unwrap_or_else(|| panic!("acknowledged {position} is missing from the log"));
            if found_position == position {
                assert_eq!(found_bytes, bytes, "entry {position} differs");
                break;
            }
            assert!(
                found_position.ledger_id == first_ledger
                    && String::from_utf8_lossy(found_bytes).starts_with("entry-")
                    && !String::from_utf8_lossy(found_bytes).starts_with("entry-1000"),
                "unexpected entry {found_position} in the log"
            );
        }
    }
    assert!(
        log.next().is_none(),
        "entries after the last acknowledged one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_deletes_exactly_the_consumed_ledgers_and_bookies_shrink() {
    let cluster = Cluster::start(3).await;
    let mut settings = config(50);
    settings.retention = RetentionPolicy::default();
    let log = ManagedLedger::open(cluster.client(), "public/default/trimmed", settings)
        .await
        .expect("open");
    log.open_cursor("slow", InitialPosition::Earliest)
        .await
        .expect("cursor");
    log.open_cursor("fast", InitialPosition::Earliest)
        .await
        .expect("cursor");
    let mut positions = Vec::new();
    for index in 0..200 {
        positions.push(log.append(payload(index, 8 * 1024)).await.expect("append"));
    }
    let ledgers = log.ledger_ids();
    assert_eq!(ledgers.len(), 4);
    log.ack_cumulative("fast", positions[199]).expect("ack");
    // The slow cursor has consumed the first ledger and part of the third.
    log.ack_cumulative("slow", positions[120]).expect("ack");
    assert_eq!(
        log.trim().await.expect("trim"),
        vec![ledgers[0], ledgers[1]]
    );
    assert_eq!(log.ledger_ids(), ledgers[2..].to_vec());
    // Entries still in the log read back; the deleted ones are gone from the metadata.
    let read = read_all(&log).await;
    assert_eq!(read.first().map(|(p, _)| *p), Some(positions[100]));
    assert_eq!(read.len(), 100);
    let client = cluster.client();
    for &ledger_id in &ledgers[..2] {
        assert!(client.read_metadata(ledger_id).await.is_err());
    }
    // The bookies reclaim the space once their entry logs are compacted.
    for bookie in cluster.bookies.iter().flatten() {
        bookie.storage().flush().expect("flush");
    }
    let before = cluster.entry_log_bytes();
    for bookie in cluster.bookies.iter().flatten() {
        bookie.storage().compact().expect("compact");
    }
    let after = cluster.entry_log_bytes();
    assert!(after < before, "entry logs {before} -> {after} bytes");
    // The deleted ledgers' entries are not readable from any bookie.
    for bookie in cluster.bookies.iter().flatten() {
        let found = bookie.storage().find_entry(ledgers[0], 0).ok().flatten();
        assert!(found.is_none());
    }
}
