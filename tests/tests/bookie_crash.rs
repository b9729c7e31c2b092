//! Crash safety of a real `magnetar bookie` process.
//!
//! Several writers stream entries; at a random moment (from the printed seed) the process is
//! SIGKILLed, then restarted on the same directory. Every acknowledged entry must read back
//! byte-identical, nothing the writers never sent may appear, and the bookie must not report a
//! LAC beyond what its writers had acknowledged. Seeds: `MAGNETAR_CRASH_SEEDS=1,2,3` replays.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use magnetar_bookie::{new_entry, BookieClient};
use magnetar_proto::bookie::{AddRequest, ErrorCode};
use magnetar_tests::{free_port, wait_until_async, MagnetarProcess};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TOTAL_ENTRIES: u64 = 200_000;
const WRITERS: u64 = 4;
const ENTRY_BYTES: usize = 100;

fn payload(seed: u64, ledger_id: u64, entry_id: u64) -> Bytes {
    let mut state = seed ^ ledger_id.rotate_left(32) ^ entry_id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut bytes = Vec::with_capacity(ENTRY_BYTES);
    while bytes.len() < ENTRY_BYTES {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(ENTRY_BYTES);
    Bytes::from(bytes)
}

fn seeds() -> Vec<u64> {
    if let Ok(list) = std::env::var("MAGNETAR_CRASH_SEEDS") {
        return list
            .split(',')
            .filter_map(|seed| seed.trim().parse().ok())
            .collect();
    }
    let fresh = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos() as u64)
        .unwrap_or(7);
    vec![1, 2, fresh]
}

fn start_bookie(dir: &std::path::Path, port: u16) -> MagnetarProcess {
    let data_dir = dir.to_string_lossy().to_string();
    let listen = format!("127.0.0.1:{port}");
    MagnetarProcess::start(&[
        "bookie",
        "--data-dir",
        &data_dir,
        "--listen",
        &listen,
        "--journal-file-size-bytes",
        "8388608",
        "--write-cache-flush-bytes",
        "2097152",
        "--entry-log-size-bytes",
        "4194304",
        "--min-free-space-bytes",
        "1048576",
    ])
    .expect("magnetar bookie starts")
}

async fn connect(port: u16) -> BookieClient {
    let address = format!("127.0.0.1:{port}");
    wait_until_async(
        "the bookie to accept connections",
        Duration::from_secs(30),
        || {
            let address = address.clone();
            async move {
                let client = BookieClient::connect(&address).await.ok()?;
                client.info().await.ok()?;
                Some(client)
            }
        },
    )
    .await
    .expect("bookie reachable")
}

/// What one writer saw before the crash.
struct WriterRecord {
    ledger_id: u64,
    sent: u64,
    acknowledged: Vec<bool>,
}

impl WriterRecord {
    /// Highest id below which every entry was acknowledged, as the writer's LAC.
    fn contiguous_lac(&self) -> i64 {
        self.acknowledged
            .iter()
            .position(|acked| !acked)
            .unwrap_or(self.acknowledged.len()) as i64
            - 1
    }
}

async fn write_until_killed(
    client: BookieClient,
    seed: u64,
    ledger_id: u64,
    quota: u64,
    acked_total: Arc<AtomicU64>,
) -> WriterRecord {
    let mut rng = StdRng::seed_from_u64(seed ^ ledger_id);
    let mut record = WriterRecord {
        ledger_id,
        sent: 0,
        acknowledged: vec![false; quota as usize],
    };
    let Ok(mut stream) = client.open_add_stream(64).await else {
        return record;
    };
    let mut in_flight = 0u64;
    loop {
        while record.sent < quota && in_flight < 2_000 {
            let count = rng.random_range(1..=100).min(quota - record.sent);
            let lac = record.contiguous_lac();
            let entries = (record.sent..record.sent + count)
                .map(|id| new_entry(ledger_id, id, lac, payload(seed, ledger_id, id)))
                .collect();
            if stream
                .requests
                .send(AddRequest {
                    entries,
                    ..AddRequest::default()
                })
                .await
                .is_err()
            {
                return record;
            }
            record.sent += count;
            in_flight += count;
        }
        if in_flight == 0 {
            return record;
        }
        match stream.responses.message().await {
            Ok(Some(response)) => {
                for result in response.results {
                    in_flight -= 1;
                    assert_eq!(result.ledger_id, ledger_id);
                    if result.code == ErrorCode::Ok as i32 {
                        record.acknowledged[result.entry_id as usize] = true;
                        acked_total.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            // The process died: whatever was not acknowledged stays unacknowledged.
            _ => return record,
        }
    }
}

async fn crash_and_verify(seed: u64) {
    println!("bookie crash test seed {seed} (replay with MAGNETAR_CRASH_SEEDS={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let kill_after = rng.random_range(1_000..TOTAL_ENTRIES - 10_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut bookie = start_bookie(dir.path(), port);
    let client = connect(port).await;

    let acked_total = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let client = client.clone();
            let acked_total = acked_total.clone();
            tokio::spawn(write_until_killed(
                client,
                seed,
                100 + writer,
                TOTAL_ENTRIES / WRITERS,
                acked_total,
            ))
        })
        .collect();
    wait_until_async(
        "enough acknowledgements to crash",
        Duration::from_secs(120),
        || {
            let acked = acked_total.load(Ordering::Relaxed);
            async move { (acked >= kill_after).then_some(()) }
        },
    )
    .await
    .expect("writers make progress");
    bookie.kill();
    let mut records = Vec::new();
    for writer in writers {
        records.push(writer.await.expect("writer task"));
    }
    let acknowledged: usize = records
        .iter()
        .map(|r| r.acknowledged.iter().filter(|a| **a).count())
        .sum();
    println!(
        "killed after {} acknowledged entries (threshold {kill_after})",
        acknowledged
    );

    let port = free_port();
    let mut bookie = start_bookie(dir.path(), port);
    let client = connect(port).await;
    for record in &records {
        let mut stored = Vec::new();
        if record.sent > 0 {
            let mut next = 0;
            while next < record.sent {
                match client.read(record.ledger_id, next, record.sent - 1).await {
                    Ok(entries) if !entries.is_empty() => {
                        next += entries.len() as u64;
                        stored.extend(entries);
                    }
                    _ => break,
                }
            }
        }
        for (position, entry) in stored.iter().enumerate() {
            assert_eq!(
                entry.entry_id, position as u64,
                "entries come back in order"
            );
            assert_eq!(
                entry.payload,
                payload(seed, record.ledger_id, entry.entry_id),
                "byte-identical"
            );
        }
        for (entry_id, acked) in record.acknowledged.iter().enumerate() {
            if *acked {
                assert!(
                    (entry_id as u64) < stored.len() as u64,
                    "seed {seed}: acknowledged entry {}:{entry_id} is missing after the crash",
                    record.ledger_id
                );
            }
        }
        assert!(
            stored.len() as u64 <= record.sent,
            "nothing appears that was never sent"
        );
        if let Ok(lac) = client
            .read_lac(record.ledger_id, None, Duration::ZERO)
            .await
        {
            assert!(
                lac.last_add_confirmed <= record.contiguous_lac(),
                "seed {seed}: bookie reports LAC {} but the writer had only {} acknowledged",
                lac.last_add_confirmed,
                record.contiguous_lac()
            );
        }
    }
    assert!(bookie.terminate(), "the bookie exits cleanly on SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_entries_survive_sigkill() {
    for seed in seeds() {
        crash_and_verify(seed).await;
    }
}
