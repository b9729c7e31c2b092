//! One AddEntries stream shared by several ledgers, against a real bookie over loopback: each
//! ledger gets exactly its own results, one ledger's refusal leaves the others alone, and every
//! ledger hears when the stream ends.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{add, entry, payload_for, small_config, start};
use magnetar_bookie::{RouteEvent, SharedAddStream};
use magnetar_proto::bookie::{AddRequest, AddResult, ErrorCode, LedgerToken};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(30);

fn request(ledger_id: u64, first: u64, count: u64, token: &'static [u8]) -> AddRequest {
    AddRequest {
        entries: (first..first + count)
            .map(|entry_id| entry(ledger_id, entry_id, 64))
            .collect(),
        writer_token: Bytes::from_static(token),
        ..AddRequest::default()
    }
}

/// Gathers `expected` results from a route, failing on anything but results.
async fn gather(route: &mut UnboundedReceiver<RouteEvent>, expected: usize) -> Vec<AddResult> {
    let mut results = Vec::new();
    while results.len() < expected {
        match tokio::time::timeout(WAIT, route.recv()).await {
            Ok(Some(RouteEvent::Results(more))) => results.extend(more),
            other => panic!("expected results, got {other:?}"),
        }
    }
    results
}

#[tokio::test]
async fn ledgers_sharing_a_stream_each_get_their_own_results() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (bookie, client) = start(small_config(dir.path())).await;
    let stream = SharedAddStream::open(&client, 64).await.expect("open");
    let tokens: [&'static [u8]; 3] = [b"writer-1", b"writer-2", b"writer-3"];
    let mut routes = BTreeMap::new();
    for ledger_id in 1..=3u64 {
        routes.insert(ledger_id, stream.subscribe(ledger_id).expect("open stream"));
    }
    // Interleaved requests of three ledgers, each with its own writer token.
    for first in (0..300).step_by(20) {
        for ledger_id in 1..=3u64 {
            let token = tokens[ledger_id as usize - 1];
            stream
                .requests()
                .send(request(ledger_id, first, 20, token))
                .await
                .expect("send");
        }
    }
    for (ledger_id, (_subscription, route)) in &mut routes {
        let results = gather(route, 300).await;
        assert!(
            results.iter().all(|result| result.ledger_id == *ledger_id),
            "ledger {ledger_id} got another ledger's result"
        );
        assert!(results
            .iter()
            .all(|result| result.code == ErrorCode::Ok as i32));
        let mut ids: Vec<u64> = results.iter().map(|result| result.entry_id).collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..300).collect::<Vec<_>>());
    }
    let read = client.read(2, 299, 299).await.expect("read");
    assert_eq!(read[0].payload, payload_for(2, 299, 64));
    bookie.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn a_refused_ledger_fails_alone_and_a_dropped_subscription_stops_its_route() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (bookie, client) = start(small_config(dir.path())).await;
    let stream = SharedAddStream::open(&client, 64).await.expect("open");
    let (_fenced_subscription, mut fenced) = stream.subscribe(10).expect("open stream");
    let (_healthy_subscription, mut healthy) = stream.subscribe(11).expect("open stream");
    let (gone_subscription, mut gone) = stream.subscribe(12).expect("open stream");

    stream
        .requests()
        .send(request(10, 0, 5, b""))
        .await
        .expect("send");
    assert_eq!(gather(&mut fenced, 5).await.len(), 5);
    client.fence(10, Bytes::new()).await.expect("fence");
    drop(gone_subscription);

    // Ledger 12 before 11: a stream's requests reach the journal in order, so once 11's
    // results are in, 12's adds are durable too.
    for ledger_id in [10, 12, 11] {
        let first = if ledger_id == 10 { 5 } else { 0 };
        stream
            .requests()
            .send(request(ledger_id, first, 5, b""))
            .await
            .expect("send");
    }
    let refused = gather(&mut fenced, 5).await;
    assert!(refused
        .iter()
        .all(|result| result.code == ErrorCode::Fenced as i32));
    let stored = gather(&mut healthy, 5).await;
    assert!(stored
        .iter()
        .all(|result| result.code == ErrorCode::Ok as i32));
    // Ledger 12's adds landed, but nobody routes its results any more.
    assert!(
        gone.recv().await.is_none(),
        "a dropped subscription's route ends"
    );
    assert_eq!(client.read(12, 4, 4).await.expect("read").len(), 1);
    bookie.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn every_ledger_hears_when_the_shared_stream_ends() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (bookie, client) = start(small_config(dir.path())).await;
    let stream = SharedAddStream::open(&client, 64).await.expect("open");
    let mut routes: Vec<_> = (20..23u64)
        .map(|ledger_id| stream.subscribe(ledger_id).expect("open stream"))
        .collect();
    stream
        .requests()
        .send(request(20, 0, 3, b""))
        .await
        .expect("send");
    assert_eq!(gather(&mut routes[0].1, 3).await.len(), 3);

    bookie.shutdown().await.expect("clean shutdown");
    for (_subscription, route) in &mut routes {
        match tokio::time::timeout(WAIT, route.recv()).await {
            Ok(Some(RouteEvent::Ended { reason })) => {
                assert!(reason.contains("add stream"), "{reason}")
            }
            other => panic!("expected the end of the stream, got {other:?}"),
        }
    }
    assert!(stream.is_closed());
    assert!(
        stream.subscribe(30).is_none(),
        "an ended stream takes no one"
    );
}

#[tokio::test]
async fn a_request_of_several_ledgers_checks_each_ledgers_own_token() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (bookie, client) = start(small_config(dir.path())).await;
    let listed = |ledger_id: u64, token: &'static [u8]| LedgerToken {
        ledger_id,
        writer_token: Bytes::from_static(token),
    };
    let mut merged = request(40, 0, 2, b"writer-40");
    merged.entries.extend(request(41, 0, 2, b"").entries);
    merged.ledger_tokens = vec![listed(41, b"writer-41")];
    let results = add(&client, merged).await;
    assert!(
        results
            .iter()
            .all(|result| result.code == ErrorCode::Ok as i32),
        "{results:?}"
    );

    // Ledger 41 listed with another token: only its entries are refused.
    let mut stranger = request(40, 2, 1, b"writer-40");
    stranger.entries.extend(request(41, 2, 1, b"").entries);
    stranger.ledger_tokens = vec![listed(41, b"someone-else")];
    let results = add(&client, stranger).await;
    let codes: Vec<(u64, i32)> = results
        .iter()
        .map(|result| (result.ledger_id, result.code))
        .collect();
    assert_eq!(
        codes,
        vec![
            (40, ErrorCode::Ok as i32),
            (41, ErrorCode::Unauthorized as i32)
        ]
    );
    bookie.shutdown().await.expect("clean shutdown");
}
