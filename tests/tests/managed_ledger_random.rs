//! A seeded randomised run of the managed ledger over real `magnetar bookie` processes: appends,
//! bookies SIGKILLed and restarted on their data, rollovers and reopens by a new owner. After
//! every step the log read from the start must equal the sequence of acknowledged appends.
//!
//! The seed is printed; `MAGNETAR_SEED=<n>` replays a run.
//!
//! A second test pipelines appends across bookie failures that no ensemble change can absorb
//! and checks that appends queued at one failure count are stored as a prefix.

use std::time::Duration;

use bytes::Bytes;
use magnetar_bookie::ledger::{available_bookies, LedgerClient, LedgerClientConfig};
use magnetar_bookie::LedgerOptions;
use magnetar_broker::managed_ledger::{
    ManagedLedger, ManagedLedgerConfig, Position, RolloverPolicy, SubmittedAppend,
};
use magnetar_meta::{MetaClient, MetaConfig, MetaServer};
use magnetar_tests::{free_port, wait_until_async, MagnetarProcess};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BOOKIES: usize = 5;

struct Bookie {
    address: String,
    dir: tempfile::TempDir,
    process: Option<MagnetarProcess>,
}

/// Fields drop in order: bookies (killed on drop), then the store.
struct Cluster {
    bookies: Vec<Bookie>,
    meta: MetaServer,
    _meta_dir: tempfile::TempDir,
}

fn start_bookie(address: &str, dir: &std::path::Path, meta: &str) -> MagnetarProcess {
    let data_dir = dir.to_string_lossy().to_string();
    MagnetarProcess::start(&[
        "bookie",
        "--data-dir",
        &data_dir,
        "--listen",
        address,
        "--meta",
        meta,
        "--registration-ttl-ms",
        "1000",
        "--journal-file-size-bytes",
        "4194304",
        "--entry-log-size-bytes",
        "4194304",
        "--min-free-space-bytes",
        "1048576",
    ])
    .expect("magnetar bookie starts")
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
        let bookies = (0..count)
            .map(|_| {
                let dir = tempfile::tempdir().expect("temp dir");
                let address = format!("127.0.0.1:{}", free_port());
                let process = start_bookie(&address, dir.path(), meta.endpoint());
                Bookie {
                    address,
                    dir,
                    process: Some(process),
                }
            })
            .collect();
        let cluster = Cluster {
            bookies,
            meta,
            _meta_dir: meta_dir,
        };
        cluster.wait_for_registered(count).await;
        cluster
    }

    fn meta_client(&self) -> MetaClient {
        MetaClient::new(&[self.meta.endpoint().to_string()]).expect("meta client")
    }

    async fn wait_for_registered(&self, count: usize) {
        let meta = self.meta_client();
        wait_until_async("bookies to register", Duration::from_secs(60), || {
            let meta = meta.clone();
            async move {
                let listed = available_bookies(&meta).await.ok()?;
                (listed.len() == count).then_some(())
            }
        })
        .await
        .expect("bookies registered");
    }

    fn client(&self) -> LedgerClient {
        LedgerClient::new(
            self.meta_client(),
            LedgerClientConfig {
                add_timeout: Duration::from_secs(2),
                rpc_timeout: Duration::from_secs(2),
                ..LedgerClientConfig::default()
            },
        )
    }

    fn kill(&mut self, index: usize) {
        if let Some(mut process) = self.bookies[index].process.take() {
            process.kill();
        }
    }

    /// Restarts a killed bookie on its own address and data directory.
    async fn restart(&mut self, index: usize) {
        let bookie = &mut self.bookies[index];
        if bookie.process.is_none() {
            bookie.process = Some(start_bookie(
                &bookie.address,
                bookie.dir.path(),
                self.meta.endpoint(),
            ));
        }
    }
}

fn config() -> ManagedLedgerConfig {
    ManagedLedgerConfig {
        ledger_options: LedgerOptions {
            ensemble_size: 3,
            write_quorum: 3,
            ack_quorum: 2,
            ..LedgerOptions::default()
        },
        rollover: RolloverPolicy {
            max_entries: 40,
            ..RolloverPolicy::default()
        },
        ..ManagedLedgerConfig::default()
    }
}

fn payload(index: usize) -> Bytes {
    let mut bytes = format!("append-{index}-").into_bytes();
    bytes.resize(120, (index % 251) as u8);
    Bytes::from(bytes)
}

async fn read_all(log: &ManagedLedger) -> Vec<(Position, Bytes)> {
    let mut entries = Vec::new();
    let mut next = Position::new(0, 0);
    loop {
        let batch = log.read(next, 500).await.expect("read the log");
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
async fn appends_bookie_kills_rollovers_and_reopens_keep_the_log_exact() {
    let seed = std::env::var("MAGNETAR_SEED")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("seed {seed} (replay with MAGNETAR_SEED={seed})");
    let mut random = StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(BOOKIES).await;
    let name = "public/default/random";
    let mut log = ManagedLedger::open(cluster.client(), name, config())
        .await
        .expect("open");
    let mut acknowledged: Vec<(Position, Bytes)> = Vec::new();
    let mut killed: Option<usize> = None;
    for step in 0..20 {
        match random.random_range(0..4) {
            0 | 1 => {
                let count = random.random_range(1..80);
                let base = acknowledged.len();
                let appends = (0..count).map(|offset| {
                    let log = log.clone();
                    async move {
                        let bytes = payload(base + offset);
                        (log.append(bytes.clone()).await, bytes)
                    }
                });
                for (outcome, bytes) in futures::future::join_all(appends).await {
                    let position = outcome.unwrap_or_else(|error| {
                        panic!("seed {seed} step {step}: an append failed: {error}")
                    });
                    acknowledged.push((position, bytes));
                }
                acknowledged.sort_by_key(|(position, _)| *position);
                println!("step {step}: {count} appends acknowledged");
            }
            2 => match killed.take() {
                Some(index) => {
                    cluster.restart(index).await;
                    cluster.wait_for_registered(BOOKIES).await;
                    println!("step {step}: bookie {index} restarted");
                }
                None => {
                    let index = random.random_range(0..BOOKIES);
                    cluster.kill(index);
                    killed = Some(index);
                    println!("step {step}: bookie {index} killed");
                }
            },
            _ => {
                if random.random_bool(0.5) {
                    log.close().await.expect("close");
                    println!("step {step}: closed, reopened by a new owner");
                } else {
                    println!("step {step}: abandoned, reopened by a new owner");
                }
                drop(log);
                log = ManagedLedger::open(cluster.client(), name, config())
                    .await
                    .unwrap_or_else(|error| panic!("seed {seed} step {step}: reopen: {error}"));
            }
        }
        let read = read_all(&log).await;
        assert_eq!(
            read.len(),
            acknowledged.len(),
            "seed {seed} step {step}: the log and the acknowledged appends differ in length"
        );
        if let Some(index) = (0..read.len()).find(|&index| read[index] != acknowledged[index]) {
            panic!(
                "seed {seed} step {step}: entry {index} is {} but {} was acknowledged there",
                read[index].0, acknowledged[index].0
            );
        }
    }
}

/// Appends queued while the same failure count held are stored as a prefix: once one fails,
/// none queued after it at that count reaches the log, even when the log has a new ledger by
/// its turn. The queueing side follows the rule a producer stream follows: it queues nothing
/// while its oldest unanswered append was queued at an older count.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_queued_behind_a_failed_one_fail_with_it() {
    // Ensembles take every bookie, so losing one fails the ledger being written and no new
    // ledger opens until it is back.
    let mut cluster = Cluster::start(3).await;
    let log = ManagedLedger::open(cluster.client(), "public/default/prefix", config())
        .await
        .expect("open");
    let mut waiting: std::collections::VecDeque<(usize, u64, SubmittedAppend)> =
        std::collections::VecDeque::new();
    // (index, failure count at submit, stored position)
    let mut outcomes: Vec<(usize, u64, Option<Position>)> = Vec::new();
    let mut next = 0usize;
    for round in 0..3 {
        let stored_before = outcomes.iter().filter(|(_, _, at)| at.is_some()).count();
        let killed_at = std::time::Instant::now();
        let mut restarted = false;
        cluster.kill(round % 3);
        // Keep appending through the fault (which lasts a fixed second) until 100 appends
        // are stored after the bookie came back.
        loop {
            if !restarted && killed_at.elapsed() >= Duration::from_secs(1) {
                cluster.restart(round % 3).await;
                restarted = true;
            }
            let stored = outcomes.iter().filter(|(_, _, at)| at.is_some()).count();
            if restarted && stored >= stored_before + 100 {
                break;
            }
            let oldest_current = waiting
                .front()
                .is_none_or(|(_, failures, _)| *failures == log.append_failures());
            if waiting.len() < 32 && oldest_current {
                match log.submit_append(payload(next)) {
                    Ok(append) => waiting.push_back((next, append.failures_at_submit(), append)),
                    Err(error) => panic!("append {next} was refused at once: {error}"),
                }
                next += 1;
                tokio::task::yield_now().await;
                continue;
            }
            let Some((index, failures, append)) = waiting.pop_front() else {
                continue;
            };
            outcomes.push((index, failures, append.wait().await.ok()));
        }
        println!(
            "round {round}: {} appends, {} failed so far",
            outcomes.len(),
            outcomes.iter().filter(|(_, _, at)| at.is_none()).count()
        );
    }
    while let Some((index, failures, append)) = waiting.pop_front() {
        outcomes.push((index, failures, append.wait().await.ok()));
    }
    let failed = outcomes.iter().filter(|(_, _, at)| at.is_none()).count();
    assert!(
        failed > 0,
        "losing a bookie of every ensemble failed no append"
    );
    for (position, (index, failures, stored)) in outcomes.iter().enumerate() {
        if stored.is_some() {
            continue;
        }
        if let Some((later, _, at)) = outcomes[position + 1..]
            .iter()
            .find(|(_, later_failures, at)| later_failures == failures && at.is_some())
        {
            panic!(
                "append {index} failed at failure count {failures}, yet append {later}, queued \
                 after it at the same count, was stored at {at:?}"
            );
        }
    }
    // The log holds exactly the stored appends, in the order they were queued.
    let stored: Vec<Bytes> = outcomes
        .iter()
        .filter(|(_, _, at)| at.is_some())
        .map(|(index, _, _)| payload(*index))
        .collect();
    let read: Vec<Bytes> = read_all(&log)
        .await
        .into_iter()
        .map(|(_, bytes)| bytes)
        .collect();
    assert_eq!(
        read.len(),
        stored.len(),
        "the log and the stored appends differ in length"
    );
    assert!(read == stored, "the log differs from the stored appends");
}
