//! Crash safety of replicated ledgers with real OS processes: `magnetar bookie` processes
//! registered in an embedded metadata store, E/Qw/Qa 3/3/2.
//!
//! - A bookie of the ensemble is SIGKILLed while 100,000 entries are written: the writer
//!   replaces it and goes on, and every acknowledged entry reads back identical.
//! - A bookie of the ensemble is SIGSTOPped: adds go on with the other two, and the writer
//!   replaces the silent bookie once it has owed answers for the add timeout.
//! - The writer process is SIGKILLed mid-stream: recovery closes the ledger with every
//!   acknowledged entry, and concurrent and later recoveries agree on the last entry.
//!
//! Randomised choices come from a seed printed at the start; `MAGNETAR_CRASH_SEED=<n>`
//! replays one.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use magnetar_bookie::ledger::{available_bookies, LedgerClient, LedgerClientConfig};
use magnetar_bookie::LedgerOptions;
use magnetar_meta::{MetaClient, MetaConfig, MetaServer};
use magnetar_tests::{
    crash_seed, entry_payload, free_port, wait_until, wait_until_async, MagnetarProcess,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ENTRY_BYTES: usize = 100;

/// Fields drop in order: bookies, then the store, then the directories under them.
struct Cluster {
    /// (address, process) of each bookie.
    bookies: Vec<(String, MagnetarProcess)>,
    meta: MetaServer,
    _dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    async fn start(count: usize) -> Cluster {
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
        for _ in 0..count {
            let dir = tempfile::tempdir().expect("temp dir");
            let address = format!("127.0.0.1:{}", free_port());
            let data_dir = dir.path().to_string_lossy().to_string();
            let process = MagnetarProcess::start(&[
                "bookie",
                "--data-dir",
                &data_dir,
                "--listen",
                &address,
                "--meta",
                meta.endpoint(),
                "--registration-ttl-ms",
                "2000",
                "--journal-file-size-bytes",
                "16777216",
                "--write-cache-flush-bytes",
                "4194304",
                "--entry-log-size-bytes",
                "16777216",
                "--min-free-space-bytes",
                "1048576",
            ])
            .expect("magnetar bookie starts");
            bookies.push((address, process));
            dirs.push(dir);
        }
        let cluster = Cluster {
            _dirs: dirs,
            meta,
            bookies,
        };
        let meta = cluster.meta_client();
        wait_until_async("every bookie to register", Duration::from_secs(60), || {
            let meta = meta.clone();
            async move {
                let listed = available_bookies(&meta).await.ok()?;
                (listed.len() == count).then_some(())
            }
        })
        .await
        .expect("bookies registered");
        cluster
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

    fn signal(&self, address: &str, signal: i32) {
        let (_, process) = self
            .bookies
            .iter()
            .find(|(candidate, _)| candidate == address)
            .expect("a bookie of the cluster");
        let pid = process.pid().expect("a running bookie") as i32;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, signal) };
    }

    fn kill(&mut self, address: &str) {
        let (_, process) = self
            .bookies
            .iter_mut()
            .find(|(candidate, _)| candidate == address)
            .expect("a bookie of the cluster");
        process.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bookie_killed_while_writing_is_replaced_and_nothing_acknowledged_is_lost() {
    let seed = crash_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let total: u64 = 100_000;
    let kill_after = rng.random_range(10_000..60_000);
    let victim_index = rng.random_range(0..3usize);
    println!("killing ensemble bookie {victim_index} after {kill_after} acknowledged entries");

    let mut cluster = Cluster::start(5).await;
    let client = cluster.client();
    let writer = client
        .create(LedgerOptions::default())
        .await
        .expect("create");
    let ledger_id = writer.ledger_id();
    let (metadata, _) = client.read_metadata(ledger_id).await.expect("metadata");
    let victim = metadata.segments[0].bookies[victim_index].clone();

    let mut pending = VecDeque::new();
    let mut next = 0;
    let mut acknowledged = 0u64;
    let mut killed = false;
    while next < total || !pending.is_empty() {
        if next < total && pending.len() < 5_000 {
            pending.push_back(
                writer
                    .add_pipelined(entry_payload(seed, next, ENTRY_BYTES))
                    .await
                    .expect("queued"),
            );
            next += 1;
            continue;
        }
        let Some(add) = pending.pop_front() else {
            break;
        };
        let entry_id = add.await.expect("every add succeeds despite the crash");
        assert_eq!(entry_id, acknowledged, "adds complete in entry order");
        acknowledged += 1;
        if !killed && acknowledged >= kill_after {
            println!("SIGKILL {victim} at {acknowledged} acknowledged");
            cluster.kill(&victim);
            killed = true;
        }
    }
    assert_eq!(acknowledged, total);
    let closed = writer.close().await.expect("close");
    assert_eq!(closed.last_entry_id, total as i64 - 1);
    assert!(
        closed.segments.len() >= 2,
        "an ensemble change: {:?}",
        closed.segments
    );
    assert!(!closed.last_segment().bookies.contains(&victim));

    let reader = client.open(ledger_id).await.expect("open");
    let mut next = 0u64;
    while next < total {
        let last = (next + 4_999).min(total - 1);
        for entry in reader.read(next, last).await.expect("read") {
            assert_eq!(entry.entry_id, next);
            assert_eq!(
                entry.payload,
                entry_payload(seed, next, ENTRY_BYTES),
                "entry {next}"
            );
            next += 1;
        }
    }
}

/// Adds `range` pipelined (a bounded window) and checks they complete in order.
async fn write_entries(
    writer: &magnetar_bookie::LedgerWriter,
    seed: u64,
    range: std::ops::Range<u64>,
) {
    let mut pending = VecDeque::new();
    let mut expected = range.start;
    for entry in range {
        pending.push_back(
            writer
                .add_pipelined(entry_payload(seed, entry, ENTRY_BYTES))
                .await
                .expect("queued"),
        );
        if pending.len() >= 2_000 {
            let add = pending.pop_front().expect("non-empty");
            assert_eq!(add.await.expect("add succeeds"), expected);
            expected += 1;
        }
    }
    for add in pending {
        assert_eq!(add.await.expect("add succeeds"), expected);
        expected += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_bookie_is_replaced_after_the_add_timeout() {
    let seed = crash_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let victim_index = rng.random_range(0..3usize);
    let cluster = Cluster::start(4).await;
    let client = LedgerClient::new(
        cluster.meta_client(),
        LedgerClientConfig {
            add_timeout: Duration::from_secs(1),
            rpc_timeout: Duration::from_secs(2),
            ..LedgerClientConfig::default()
        },
    );
    let writer = client
        .create(LedgerOptions::default())
        .await
        .expect("create");
    let ledger_id = writer.ledger_id();
    let (metadata, _) = client.read_metadata(ledger_id).await.expect("metadata");
    let victim = metadata.segments[0].bookies[victim_index].clone();
    write_entries(&writer, seed, 0..2_000).await;
    println!("SIGSTOP {victim}");
    cluster.signal(&victim, libc::SIGSTOP);
    // Qa = 2 of the others: adds still complete while the victim is silent.
    write_entries(&writer, seed, 2_000..4_000).await;
    let meta_client = client.clone();
    wait_until_async(
        "the silent bookie to leave the ensemble",
        Duration::from_secs(30),
        || {
            let client = meta_client.clone();
            let victim = victim.clone();
            async move {
                let (metadata, _) = client.read_metadata(ledger_id).await.ok()?;
                (!metadata.last_segment().bookies.contains(&victim)).then_some(())
            }
        },
    )
    .await
    .expect("the hung bookie is replaced");
    write_entries(&writer, seed, 4_000..5_000).await;
    let closed = writer.close().await.expect("close");
    cluster.signal(&victim, libc::SIGCONT);
    assert_eq!(closed.last_entry_id, 4_999);
    let reader = client.open(ledger_id).await.expect("open");
    let entries = reader.read(0, 4_999).await.expect("read");
    assert_eq!(entries.len(), 5_000);
    for (entry_id, entry) in entries.iter().enumerate() {
        assert_eq!(
            entry.payload,
            entry_payload(seed, entry_id as u64, ENTRY_BYTES)
        );
    }
}

/// The `ledger_writer` binary, SIGKILLed when dropped.
struct WriterProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl WriterProcess {
    fn start(meta_endpoint: &str, entries: u64, seed: u64) -> WriterProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ledger_writer"))
            .args([
                meta_endpoint,
                &entries.to_string(),
                &ENTRY_BYTES.to_string(),
                &seed.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("ledger_writer starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    return;
                }
            }
        });
        WriterProcess { child, lines }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WriterProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_writer_is_recovered_and_every_reader_agrees() {
    let seed = crash_seed();
    let mut rng = StdRng::seed_from_u64(seed);
    let kill_after: i64 = rng.random_range(2_000..20_000);
    println!("killing the writer after entry {kill_after} is acknowledged");

    let cluster = Cluster::start(3).await;
    let mut writer = WriterProcess::start(cluster.meta.endpoint(), 10_000_000, seed);
    let mut ledger_id = None;
    let mut acknowledged = -1i64;
    wait_until(
        "the writer to acknowledge enough entries",
        Duration::from_secs(120),
        || {
            while let Ok(line) = writer.lines.try_recv() {
                if let Some(id) = line.strip_prefix("ledger ") {
                    ledger_id = id.parse::<u64>().ok();
                } else if let Some(entry) = line.strip_prefix("acked ") {
                    acknowledged = entry.parse().unwrap_or(acknowledged);
                }
            }
            (acknowledged >= kill_after).then_some(())
        },
    )
    .expect("writer makes progress");
    writer.kill();
    // Lines written before the kill still count: each names an acknowledged entry.
    while let Ok(line) = writer.lines.try_recv() {
        if let Some(entry) = line.strip_prefix("acked ") {
            acknowledged = acknowledged.max(entry.parse().unwrap_or(-1));
        }
    }
    let ledger_id = ledger_id.expect("the writer printed its ledger id");
    println!("writer killed with entry {acknowledged} acknowledged (ledger {ledger_id})");

    let (one, other) = (cluster.client(), cluster.client());
    let (first, second) = tokio::join!(one.recover(ledger_id), other.recover(ledger_id));
    let (first, second) = (first.expect("recovery"), second.expect("recovery"));
    let closed = first.metadata();
    assert_eq!(closed, second.metadata(), "concurrent recoveries agree");
    assert!(
        closed.last_entry_id >= acknowledged,
        "recovered to {} but {acknowledged} was acknowledged",
        closed.last_entry_id
    );
    let later = cluster.client().recover(ledger_id).await.expect("recovery");
    assert_eq!(
        later.metadata(),
        closed,
        "a later recovery sees the same close"
    );

    let last = closed.last_entry_id as u64;
    let mut next = 0u64;
    let mut length = 0u64;
    while next <= last {
        let until = (next + 4_999).min(last);
        for entry in first.read(next, until).await.expect("read") {
            assert_eq!(entry.entry_id, next);
            assert_eq!(
                entry.payload,
                entry_payload(seed, next, ENTRY_BYTES),
                "entry {next}"
            );
            length += entry.payload.len() as u64;
            next += 1;
        }
    }
    assert_eq!(closed.length, length);
}
