//! Ledger storage through the gRPC service: reads from the write cache and from entry logs,
//! restart with journal replay, deletion and compaction, LAC long polls.

mod common;

use std::time::Duration;

use common::{add_all, check_all, small_config, start};

#[tokio::test]
async fn entries_survive_flush_and_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (bookie, client) = start(small_config(dir.path())).await;
    add_all(&client, 1, 3000, 700).await;
    add_all(&client, 2, 50, 10).await;
    check_all(&client, 1, 3000, 700).await;
    // Force the cache to the entry logs, then read back through the index.
    bookie.storage().flush().expect("flush");
    check_all(&client, 1, 3000, 700).await;
    bookie.shutdown().await.expect("clean shutdown");

    let (bookie, client) = start(small_config(dir.path())).await;
    check_all(&client, 1, 3000, 700).await;
    check_all(&client, 2, 50, 10).await;
    let lac = client.read_lac(1, None, Duration::ZERO).await.expect("lac");
    assert_eq!((lac.last_add_confirmed, lac.last_entry_id), (2998, 2999));
    bookie.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn checkpointed_journal_files_are_recycled() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = small_config(dir.path());
    let journal_dir = config.journal_dir();
    let (bookie, client) = start(config).await;
    // 4 MiB journal files: 12 MB of entries rolls the journal several times.
    add_all(&client, 5, 12_000, 1000).await;
    bookie.storage().flush().expect("flush");
    let info = client.info().await.expect("info");
    assert!(
        info.journal_file_count <= 3,
        "old journal files are retired once checkpointed: {} remain",
        info.journal_file_count
    );
    let spares = || {
        std::fs::read_dir(&journal_dir)
            .expect("journal dir")
            .filter_map(|entry| entry.ok())
            .filter(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".journal-spare")
            })
            .count()
    };
    assert!(
        (1..=2).contains(&spares()),
        "checkpointed files are kept as spares, at most 2: {} found",
        spares()
    );
    // A second round goes through recycled files; every entry of both rounds reads back,
    // also after a restart.
    add_all(&client, 6, 12_000, 1000).await;
    let recycled = std::fs::read_dir(&journal_dir)
        .expect("journal dir")
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".journal"))
        .filter_map(|entry| std::fs::read(entry.path()).ok())
        // The header's flags word (bytes 12..16) has bit 0 set in a recycled file.
        .filter(|bytes| bytes.len() >= 16 && bytes[12] & 1 == 1)
        .count();
    assert!(
        recycled >= 1,
        "the second round reuses a spare journal file"
    );
    check_all(&client, 5, 12_000, 1000).await;
    check_all(&client, 6, 12_000, 1000).await;
    bookie.shutdown().await.expect("clean shutdown");
    let (bookie, client) = start(small_config(dir.path())).await;
    check_all(&client, 5, 12_000, 1000).await;
    check_all(&client, 6, 12_000, 1000).await;
    bookie.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn compaction_reclaims_deleted_ledgers_and_keeps_live_entries() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = small_config(dir.path());
    config.compaction_interval = Duration::from_secs(3600);
    let (bookie, client) = start(config).await;
    // Interleave three ledgers so every entry log holds some of each.
    for round in 0..6u64 {
        for ledger in [10u64, 11, 12] {
            let first = round * 300;
            let entries = (first..first + 300)
                .map(|id| common::entry(ledger, id, 1000))
                .collect();
            let results = common::add(
                &client,
                magnetar_proto::bookie::AddRequest {
                    entries,
                    ..Default::default()
                },
            )
            .await;
            assert!(results.iter().all(|result| result.code == 0));
        }
        bookie.storage().flush().expect("flush");
    }
    let logs_before = client.info().await.expect("info").entry_log_count;
    let bytes_before = dir_bytes(&dir.path().join("ledgers"));
    client.delete_ledger(10).await.expect("delete 10");
    client.delete_ledger(11).await.expect("delete 11");
    let error = client
        .read(10, 0, 0)
        .await
        .expect_err("a deleted ledger is gone");
    assert!(error.to_string().contains("NoSuchLedger"), "{error}");

    let report = bookie.storage().compact().expect("compaction");
    assert!(report.logs_removed > 0, "{report:?}");
    let bytes_after = dir_bytes(&dir.path().join("ledgers"));
    assert!(
        bytes_after * 2 < bytes_before,
        "two thirds of the data were deleted: {bytes_before} -> {bytes_after} bytes"
    );
    check_all(&client, 12, 1800, 1000).await;
    bookie.shutdown().await.expect("clean shutdown");

    // The compacted layout is what a restart sees.
    let (bookie, client) = start(small_config(dir.path())).await;
    check_all(&client, 12, 1800, 1000).await;
    assert!(client.info().await.expect("info").entry_log_count <= logs_before);
    bookie.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn lac_long_poll_waits_for_the_next_entry() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (bookie, client) = start(small_config(dir.path())).await;
    add_all(&client, 3, 5, 10).await;
    let now = client
        .read_lac(3, Some(2), Duration::from_secs(5))
        .await
        .expect("lac");
    assert!(now.advanced && now.last_add_confirmed == 3);

    let timed_out = client
        .read_lac(3, Some(3), Duration::from_millis(50))
        .await
        .expect("lac");
    assert!(!timed_out.advanced, "nothing new: the poll times out");

    let poller = {
        let client = client.clone();
        tokio::spawn(async move { client.read_lac(3, Some(3), Duration::from_secs(20)).await })
    };
    // Entry 5 carries LAC 4, which passes 3 and wakes the poll.
    let results = common::add(
        &client,
        magnetar_proto::bookie::AddRequest {
            entries: vec![common::entry(3, 5, 10)],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(results[0].code, 0);
    let woken = poller.await.expect("poller").expect("lac");
    assert!(woken.advanced);
    assert_eq!(woken.last_add_confirmed, 4);
    bookie.shutdown().await.expect("clean shutdown");
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|item| item.ok()?.metadata().ok())
        .map(|meta| meta.len())
        .sum()
}
