//! Shared set-up for the bookie's integration tests: a real bookie on a loopback port over a
//! temporary directory, and a connected client.

#![allow(dead_code)]

use std::time::Duration;

use bytes::Bytes;
use magnetar_bookie::{new_entry, BookieClient, BookieConfig, RunningBookie};
use magnetar_proto::bookie::{AddRequest, AddResult, Entry};

/// A configuration with small files so tests exercise rollover, flushes and compaction.
pub fn small_config(dir: &std::path::Path) -> BookieConfig {
    BookieConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("loopback address"),
        journal_file_size_bytes: 4 * 1024 * 1024,
        write_cache_flush_bytes: 1024 * 1024,
        entry_log_size_bytes: 1024 * 1024,
        flush_interval: Duration::from_millis(200),
        min_free_space_bytes: 1024 * 1024,
        ..BookieConfig::default()
    }
}

pub async fn start(config: BookieConfig) -> (RunningBookie, BookieClient) {
    let bookie = RunningBookie::start(config).await.expect("bookie starts");
    let client = BookieClient::connect(&bookie.local_addr().to_string())
        .await
        .expect("client connects");
    (bookie, client)
}

/// The payload tests write for an entry, so a read can be checked byte for byte.
pub fn payload_for(ledger_id: u64, entry_id: u64, size: usize) -> Bytes {
    let mut bytes = Vec::with_capacity(size);
    let mut state = ledger_id.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ entry_id;
    while bytes.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    Bytes::from(bytes)
}

pub fn entry(ledger_id: u64, entry_id: u64, size: usize) -> Entry {
    new_entry(
        ledger_id,
        entry_id,
        entry_id as i64 - 1,
        payload_for(ledger_id, entry_id, size),
    )
}

/// Sends one request on a fresh stream and gathers a result for each of its entries.
pub async fn add(client: &BookieClient, request: AddRequest) -> Vec<AddResult> {
    let expected = request.entries.len();
    let mut stream = client.open_add_stream(16).await.expect("open stream");
    stream.requests.send(request).await.expect("send");
    let mut results = Vec::new();
    while results.len() < expected {
        let response = tokio::time::timeout(Duration::from_secs(30), stream.responses.message())
            .await
            .expect("results within 30 s")
            .expect("stream healthy")
            .expect("stream open");
        results.extend(response.results);
    }
    results.sort_by_key(|result| (result.ledger_id, result.entry_id));
    results
}

/// Adds entries `0..count` of a ledger and asserts they all succeed.
pub async fn add_all(client: &BookieClient, ledger_id: u64, count: u64, size: usize) {
    for first in (0..count).step_by(500) {
        let entries = (first..(first + 500).min(count))
            .map(|id| entry(ledger_id, id, size))
            .collect();
        let results = add(
            client,
            AddRequest {
                entries,
                ..AddRequest::default()
            },
        )
        .await;
        for result in results {
            assert_eq!(
                result.code, 0,
                "add {}:{} failed: {}",
                result.ledger_id, result.entry_id, result.message
            );
        }
    }
}

/// Reads entries `0..count` and checks every byte.
pub async fn check_all(client: &BookieClient, ledger_id: u64, count: u64, size: usize) {
    let mut next = 0;
    while next < count {
        let entries = client.read(ledger_id, next, count - 1).await.expect("read");
        assert!(!entries.is_empty());
        for read in entries {
            assert_eq!(
                read,
                entry(ledger_id, next, size),
                "entry {ledger_id}:{next}"
            );
            next += 1;
        }
    }
}

/// Polls until the bookie's LAC for a ledger reaches `at_least`.
pub async fn wait_for_lac(client: &BookieClient, ledger_id: u64, at_least: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(reading) = client
            .read_lac(ledger_id, Some(at_least - 1), Duration::from_secs(1))
            .await
        {
            if reading.last_add_confirmed >= at_least {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "LAC of {ledger_id} never reached {at_least}"
        );
    }
}
