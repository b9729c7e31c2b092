//! Bad input and fencing: each refusal has its own stable code, and the bookie keeps serving.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{add, entry, small_config, start};
use magnetar_bookie::new_entry;
use magnetar_proto::bookie::{AddRequest, ErrorCode};

#[tokio::test]
async fn each_bad_add_gets_its_own_code_and_good_ones_still_land() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = small_config(dir.path());
    config.max_entry_size_bytes = 1024;
    let (bookie, client) = start(config).await;

    let mut corrupted = entry(1, 1, 10);
    corrupted.payload = Bytes::from_static(b"tampered!!");
    let request = AddRequest {
        entries: vec![
            entry(1, 0, 10),
            corrupted,
            entry(1, 2, 2048),
            entry(1, 3, 10),
        ],
        ..AddRequest::default()
    };
    let codes: Vec<i32> = add(&client, request)
        .await
        .iter()
        .map(|result| result.code)
        .collect();
    assert_eq!(
        codes,
        vec![
            ErrorCode::Ok as i32,
            ErrorCode::CrcMismatch as i32,
            ErrorCode::EntryTooLarge as i32,
            ErrorCode::Ok as i32
        ]
    );

    // Same id, same bytes: acknowledged again. Same id, other bytes: a conflict.
    let resend = add(
        &client,
        AddRequest {
            entries: vec![entry(1, 0, 10)],
            ..AddRequest::default()
        },
    )
    .await;
    assert_eq!(resend[0].code, ErrorCode::Ok as i32);
    let other = new_entry(1, 0, -1, Bytes::from_static(b"different"));
    let conflict = add(
        &client,
        AddRequest {
            entries: vec![other],
            ..AddRequest::default()
        },
    )
    .await;
    assert_eq!(
        conflict[0].code,
        ErrorCode::EntryConflict as i32,
        "{}",
        conflict[0].message
    );

    let missing = client.read(99, 0, 0).await.expect_err("unknown ledger");
    assert!(
        matches!(
            missing,
            magnetar_bookie::BookieError::Remote {
                code: ErrorCode::NoSuchLedger,
                ..
            }
        ),
        "{missing}"
    );
    let absent = client.read(1, 7, 7).await.expect_err("unknown entry");
    assert!(
        matches!(
            absent,
            magnetar_bookie::BookieError::Remote {
                code: ErrorCode::NoSuchEntry,
                ..
            }
        ),
        "{absent}"
    );

    // A token binds the ledger to its writer.
    let with_token = AddRequest {
        entries: vec![entry(2, 0, 10)],
        writer_token: Bytes::from_static(b"writer-a"),
        recovery: false,
        ledger_tokens: Vec::new(),
    };
    assert_eq!(add(&client, with_token).await[0].code, ErrorCode::Ok as i32);
    let stranger = AddRequest {
        entries: vec![entry(2, 1, 10)],
        writer_token: Bytes::from_static(b"writer-b"),
        recovery: false,
        ledger_tokens: Vec::new(),
    };
    assert_eq!(
        add(&client, stranger).await[0].code,
        ErrorCode::Unauthorized as i32
    );

    // Still serving.
    assert_eq!(
        client.read(1, 0, 3).await.expect("read").len(),
        1,
        "entry 1 was refused, so the range stops at 0"
    );
    bookie.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn fencing_stops_a_concurrent_writer_and_reports_the_right_lac() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (bookie, client) = start(small_config(dir.path())).await;
    let ledger_id = 42;

    // The writer streams entries, each carrying LAC = its id - 1, until it sees FENCED.
    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut stream = client.open_add_stream(64).await.expect("stream");
            let mut results = Vec::new();
            let mut next = 0u64;
            let mut fenced_seen = false;
            while !fenced_seen {
                let entries = (next..next + 20)
                    .map(|id| entry(ledger_id, id, 50))
                    .collect();
                next += 20;
                stream
                    .requests
                    .send(AddRequest {
                        entries,
                        ..AddRequest::default()
                    })
                    .await
                    .expect("send");
                let response = stream
                    .responses
                    .message()
                    .await
                    .expect("healthy")
                    .expect("open");
                fenced_seen = response
                    .results
                    .iter()
                    .any(|result| result.code == ErrorCode::Fenced as i32);
                results.extend(response.results);
            }
            results
        })
    };
    // Fence once the writer is well under way.
    common::wait_for_lac(&client, ledger_id, 200).await;
    let (fenced_lac, fenced_last) = client.fence(ledger_id, Bytes::new()).await.expect("fence");
    let results = writer.await.expect("writer");

    let acknowledged: Vec<u64> = results
        .iter()
        .filter(|r| r.code == ErrorCode::Ok as i32)
        .map(|r| r.entry_id)
        .collect();
    let max_acknowledged = *acknowledged.iter().max().expect("some adds landed");
    assert_eq!(
        fenced_last, max_acknowledged as i64,
        "fence reports the last stored entry"
    );
    assert_eq!(
        fenced_lac,
        max_acknowledged as i64 - 1,
        "fence reports the LAC carried by that entry"
    );
    let first_fenced = results
        .iter()
        .find(|r| r.code == ErrorCode::Fenced as i32)
        .expect("fenced")
        .entry_id;
    for result in &results {
        if result.entry_id >= first_fenced {
            assert_eq!(
                result.code,
                ErrorCode::Fenced as i32,
                "every add after the fence fails: {result:?}"
            );
        }
    }

    // Later adds fail; a recovery add (re-replicating the tail) is accepted.
    let late = add(
        &client,
        AddRequest {
            entries: vec![entry(ledger_id, 100_000, 5)],
            ..AddRequest::default()
        },
    )
    .await;
    assert_eq!(late[0].code, ErrorCode::Fenced as i32);
    let recovery = add(
        &client,
        AddRequest {
            entries: vec![entry(ledger_id, 100_001, 5)],
            recovery: true,
            ..AddRequest::default()
        },
    )
    .await;
    assert_eq!(recovery[0].code, ErrorCode::Ok as i32);

    // Fencing survives a restart.
    bookie.shutdown().await.expect("clean shutdown");
    let (bookie, client) = start(small_config(dir.path())).await;
    let after = add(
        &client,
        AddRequest {
            entries: vec![entry(ledger_id, 100_002, 5)],
            ..AddRequest::default()
        },
    )
    .await;
    assert_eq!(after[0].code, ErrorCode::Fenced as i32);
    let _ = Duration::ZERO;
    bookie.shutdown().await.expect("clean shutdown");
}
