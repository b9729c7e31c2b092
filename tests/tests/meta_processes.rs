//! Real `magnetar meta` processes: the leader is SIGKILLed and restarted; every acknowledged
//! write must be on every node, and the restarted node must catch up.
//!
//! Needs the binary: `cargo build -p magnetar` first (the harness says so if it is missing).

mod meta_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meta_support::MetaGroup;

type TestResult = Result<(), Box<dyn std::error::Error>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_leader_restarts_and_every_acknowledged_write_is_everywhere() -> TestResult {
    let mut group = MetaGroup::start(3)?;
    let leader = group.leader(Duration::from_secs(20)).await?;
    let client = group.client()?.with_timeout(Duration::from_secs(5));

    let mut acknowledged = BTreeMap::new();
    for i in 0..100u32 {
        let key = format!("/acked/{i:04}");
        if client.put(&key, format!("before-{i}")).await.is_ok() {
            acknowledged.insert(key, format!("before-{i}"));
        }
    }
    assert_eq!(
        acknowledged.len(),
        100,
        "a healthy group acknowledges every write"
    );

    let killed_at = Instant::now();
    group.kill(leader);
    let mut first_after = None;
    for i in 0..100u32 {
        let key = format!("/acked/{i:04}");
        let value = format!("after-{i}");
        if client.put(&key, value.clone()).await.is_ok() {
            first_after.get_or_insert_with(|| killed_at.elapsed());
            acknowledged.insert(key, value);
        }
    }
    println!("first write acknowledged {first_after:?} after SIGKILL of the leader");
    assert!(
        first_after.is_some(),
        "the surviving majority acknowledged nothing"
    );

    group.restart(leader)?;
    let revision = client.list("/", "", 1, true).await?.revision;
    for id in 1..=3 {
        group
            .wait_for_revision(id, revision, Duration::from_secs(20))
            .await?;
    }
    // Each node's own copy (a local read, no forwarding) holds every acknowledged write.
    for endpoint in &group.endpoints {
        let kvs = magnetar_meta::MetaClient::local_list_all(endpoint, "/acked/").await?;
        let held: BTreeMap<String, String> = kvs
            .into_iter()
            .map(|kv| (kv.key, String::from_utf8_lossy(&kv.value).into_owned()))
            .collect();
        for (key, value) in &acknowledged {
            assert_eq!(held.get(key), Some(value), "{key} on {endpoint}");
        }
    }
    assert!(
        group.terminate_all(),
        "SIGTERM must shut every node down cleanly"
    );
    Ok(())
}
