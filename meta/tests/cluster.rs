//! In-process groups of metadata nodes over loopback gRPC, driven through the public client.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use magnetar_meta::{event, MetaClient, MetaConfig, MetaError, MetaServer};
use magnetar_proto::meta::ErrorCode;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Polls `condition` until it returns Some, failing after `timeout`.
async fn poll<T, F, Fut>(what: &str, timeout: Duration, mut condition: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = condition().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Cluster {
    _dirs: Vec<tempfile::TempDir>,
    configs: Vec<MetaConfig>,
    servers: Vec<Option<MetaServer>>,
}

impl Cluster {
    async fn start(
        size: u64,
        tune: impl Fn(&mut MetaConfig),
    ) -> Result<Cluster, Box<dyn std::error::Error>> {
        let mut peers = BTreeMap::new();
        for id in 1..=size {
            peers.insert(id, format!("127.0.0.1:{}", free_port()?));
        }
        let mut dirs = Vec::new();
        let mut configs = Vec::new();
        for (id, endpoint) in &peers {
            let dir = tempfile::tempdir()?;
            let mut config = MetaConfig {
                id: *id,
                data_dir: dir.path().to_path_buf(),
                listen: endpoint.clone(),
                peers: peers.clone(),
                ..MetaConfig::default()
            };
            tune(&mut config);
            dirs.push(dir);
            configs.push(config);
        }
        let mut servers = Vec::new();
        for config in &configs {
            servers.push(Some(MetaServer::start(config.clone()).await?));
        }
        Ok(Cluster {
            _dirs: dirs,
            configs,
            servers,
        })
    }

    fn endpoints(&self) -> Vec<String> {
        self.configs.iter().map(|c| c.listen.clone()).collect()
    }

    fn client(&self) -> Result<MetaClient, MetaError> {
        MetaClient::new(&self.endpoints())
    }

    /// The id of the leader every running node agrees on.
    async fn leader(&self) -> Result<u64, String> {
        poll("an agreed leader", Duration::from_secs(10), || async move {
            let mut seen = None;
            for server in self.servers.iter().flatten() {
                let status = server.status().await.ok()?;
                if status.leader_id == 0 || seen.is_some_and(|l| l != status.leader_id) {
                    return None;
                }
                seen = Some(status.leader_id);
            }
            seen.filter(|leader| self.servers[(*leader - 1) as usize].is_some())
        })
        .await
    }

    async fn kill(&mut self, id: u64) -> Result<(), MetaError> {
        match self.servers[(id - 1) as usize].take() {
            Some(server) => server.shutdown().await,
            None => Ok(()),
        }
    }

    async fn restart(&mut self, id: u64) -> Result<(), MetaError> {
        let server = MetaServer::start(self.configs[(id - 1) as usize].clone()).await?;
        self.servers[(id - 1) as usize] = Some(server);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_node_serves_every_operation_and_survives_a_restart() -> TestResult {
    let mut cluster = Cluster::start(1, |_| {}).await?;
    let client = cluster.client()?;
    let v1 = client.put("/a/x", "1").await?;
    assert!(v1 > 0);
    assert_eq!(client.get("/a/x").await?.map(|kv| kv.version), Some(v1));
    // CAS: wrong version refused, right one accepted, create-if-absent refused.
    let conflict = client.put_if_version("/a/x", "2", v1 + 100).await;
    assert_eq!(
        conflict.err().map(|e| e.code()),
        Some(ErrorCode::VersionConflict)
    );
    let v2 = client.put_if_version("/a/x", "2", v1).await?;
    assert!(v2 > v1);
    let exists = client.put_if_version("/a/x", "3", 0).await;
    assert_eq!(
        exists.err().map(|e| e.code()),
        Some(ErrorCode::VersionConflict)
    );
    client.put_if_version("/a/y", "new", 0).await?;
    // Bad input has its own codes.
    let codes = [
        (
            client.put("no-slash", "v").await.err(),
            ErrorCode::MalformedKey,
        ),
        (
            client.put("/a//b", "v").await.err(),
            ErrorCode::MalformedKey,
        ),
        (
            client
                .put(&format!("/{}", "k".repeat(5000)), "v")
                .await
                .err(),
            ErrorCode::KeyTooLarge,
        ),
        (
            client.put("/big", vec![0u8; (1 << 20) + 1]).await.err(),
            ErrorCode::ValueTooLarge,
        ),
        (
            client.put_ephemeral("/e", "v", 4242, None).await.err(),
            ErrorCode::UnknownSession,
        ),
    ];
    for (error, expected) in codes {
        assert_eq!(error.map(|e| e.code()), Some(expected));
    }
    // A value of exactly 1 MiB fits.
    client.put("/big", vec![7u8; 1 << 20]).await?;
    // Transactions: all or nothing.
    let failed = client
        .txn(
            vec![
                magnetar_meta::version_is("/a/x", v2),
                magnetar_meta::version_is("/a/z", 9),
            ],
            vec![
                magnetar_meta::put_op("/a/z", "z", 0),
                magnetar_meta::delete_op("/a/x"),
            ],
        )
        .await?;
    assert!(!failed.succeeded);
    assert_eq!(failed.failed_compares, vec![1]);
    assert!(client.get("/a/z").await?.is_none());
    let done = client
        .txn(
            vec![
                magnetar_meta::version_is("/a/x", v2),
                magnetar_meta::version_is("/a/z", 0),
            ],
            vec![
                magnetar_meta::put_op("/a/z", "z", 0),
                magnetar_meta::delete_op("/a/x"),
            ],
        )
        .await?;
    assert!(done.succeeded);
    assert!(client.get("/a/x").await?.is_none());
    // Paged list.
    for i in 0..25 {
        client.put(&format!("/list/{i:03}"), "v").await?;
    }
    let page = client.list("/list/", "", 10, true).await?;
    assert_eq!(page.kvs.len(), 10);
    assert!(page.more);
    assert_eq!(client.list_all("/list/").await?.len(), 25);
    // Delete with a condition.
    assert!(!client.delete("/nothing", None).await?);
    let stale = client.delete("/a/y", Some(1)).await;
    assert_eq!(
        stale.err().map(|e| e.code()),
        Some(ErrorCode::VersionConflict)
    );
    assert!(client.delete("/a/y", None).await?);
    // Sequential ids are unique and increasing.
    let first = client.next_sequential_id("/ids/ledger").await?;
    let second = client.next_sequential_id("/ids/ledger").await?;
    assert_eq!(second, first + 1);

    let revision = client.list("/", "", 1, true).await?.revision;
    cluster.kill(1).await?;
    cluster.restart(1).await?;
    let client = cluster.client()?;
    assert_eq!(client.list("/", "", 1, true).await?.revision, revision);
    assert_eq!(
        client.get("/a/z").await?.map(|kv| kv.value.to_vec()),
        Some(b"z".to_vec())
    );
    assert_eq!(client.list_all("/list/").await?.len(), 25);
    assert_eq!(client.next_sequential_id("/ids/ledger").await?, second + 1);
    cluster.kill(1).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_replicate_and_elect_a_new_leader_when_the_leader_dies() -> TestResult {
    let mut cluster = Cluster::start(3, |_| {}).await?;
    let leader = cluster.leader().await?;
    // Through a follower: forwarded to the leader.
    let follower = if leader == 1 { 2 } else { 1 };
    let via_follower = MetaClient::new(&[cluster.configs[(follower - 1) as usize].listen.clone()])?;
    for i in 0..50 {
        via_follower.put(&format!("/k/{i}"), format!("{i}")).await?;
    }
    assert_eq!(via_follower.list_all("/k/").await?.len(), 50);

    let client = cluster.client()?;
    let killed_at = Instant::now();
    cluster.kill(leader).await?;
    client.put("/after", "failover").await?;
    let failover = killed_at.elapsed();
    println!("failover: first write after the leader was stopped took {failover:?}");
    let new_leader = cluster.leader().await?;
    assert_ne!(new_leader, leader);
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?}"
    );

    // The old leader comes back and catches up.
    cluster.restart(leader).await?;
    let revision = client.list("/", "", 1, true).await?.revision;
    let restarted = &cluster.servers[(leader - 1) as usize];
    poll(
        "the restarted node to catch up",
        Duration::from_secs(10),
        || async move {
            let status = restarted.as_ref()?.status().await.ok()?;
            (status.revision >= revision).then_some(())
        },
    )
    .await?;
    for id in 1..=3 {
        cluster.kill(id).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watches_see_every_change_once_in_order_across_a_leader_change() -> TestResult {
    let mut cluster = Cluster::start(3, |_| {}).await?;
    let leader = cluster.leader().await?;
    let client = cluster.client()?;
    // Watch through the leader itself, so its death forces the watch to move.
    let leader_endpoint = cluster.configs[(leader - 1) as usize].listen.clone();
    let mut endpoints = vec![leader_endpoint];
    endpoints.extend(cluster.endpoints());
    let watcher = MetaClient::new(&endpoints)?;
    let mut stream = watcher.watch("/w/", 0).await?;

    let writer = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..200u32 {
                if client
                    .put(&format!("/w/{}", i % 7), format!("{i}"))
                    .await
                    .is_ok()
                {
                    acknowledged.push(i);
                }
            }
            acknowledged
        })
    };
    // Let some changes through, then stop the leader mid-stream.
    let mut seen = Vec::new();
    while seen.len() < 40 {
        match stream.next().await {
            Some(Ok(events)) => seen.extend(events),
            other => return Err(format!("watch ended early: {other:?}").into()),
        }
    }
    cluster.kill(leader).await?;
    let acknowledged = writer.await?;
    let final_revision = client.list("/w/", "", 1, true).await?.revision;
    while seen.last().map_or(0, |e| e.revision) < final_revision {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(events))) => seen.extend(events),
            other => return Err(format!("watch stalled: {other:?}").into()),
        }
    }
    // Strictly increasing revisions (one put per revision): no duplicate, in order.
    for pair in seen.windows(2) {
        assert!(
            pair[0].revision < pair[1].revision,
            "out of order or duplicate: {pair:?}"
        );
    }
    // Every acknowledged write is there, with its value.
    let values: Vec<u32> = seen
        .iter()
        .filter(|e| e.kind == event::Kind::Put as i32)
        .filter_map(|e| String::from_utf8_lossy(&e.kv.as_ref()?.value).parse().ok())
        .collect();
    for i in &acknowledged {
        assert!(
            values.contains(i),
            "acknowledged write {i} never seen by the watch"
        );
    }
    // And the events are exactly the store's changes: the last event per key is its state.
    for kv in client.list_all("/w/").await? {
        let last = seen
            .iter()
            .rev()
            .find(|e| e.kv.as_ref().is_some_and(|k| k.key == kv.key));
        assert_eq!(last.map(|e| e.revision), Some(kv.version));
    }
    for id in 1..=3 {
        cluster.kill(id).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ephemeral_keys_vanish_when_their_session_ends() -> TestResult {
    let mut cluster = Cluster::start(3, |_| {}).await?;
    cluster.leader().await?;
    let client = cluster.client()?;
    let ttl = Duration::from_millis(600);
    let election_timeout = cluster.configs[0].election_timeout();

    // Closed: the key goes at once, with a delete event.
    let session = client.open_session(ttl).await?;
    client
        .put_ephemeral("/live/closed", "x", session.id(), None)
        .await?;
    let mut stream = client.watch("/live/", 0).await?;
    session.close().await?;
    assert!(client.get("/live/closed").await?.is_none());
    let events = stream.next().await.ok_or("watch ended")??;
    assert_eq!(events[0].kind, event::Kind::Delete as i32);

    // Kept alive past its TTL: still there.
    let session = client.open_session(ttl).await?;
    client
        .put_ephemeral("/live/owner", "me", session.id(), None)
        .await?;
    tokio::time::sleep(ttl * 2).await;
    assert!(
        client.get("/live/owner").await?.is_some(),
        "a kept-alive session expired"
    );

    // Owner stops: gone within TTL + one election timeout.
    let stopped_at = Instant::now();
    session.abandon();
    let bound = ttl + election_timeout;
    let reader = &client;
    poll("the ephemeral key to vanish", bound * 3, || async move {
        reader
            .get("/live/owner")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await?;
    let gone_after = stopped_at.elapsed();
    println!("ephemeral key gone {gone_after:?} after its owner stopped (bound {bound:?})");
    assert!(gone_after <= bound, "took {gone_after:?}, bound {bound:?}");
    for id in 1..=3 {
        cluster.kill(id).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_minority_answers_no_quorum_in_bounded_time() -> TestResult {
    let mut cluster = Cluster::start(3, |c| c.request_timeout = Duration::from_secs(1)).await?;
    let leader = cluster.leader().await?;
    let survivor = (1..=3).find(|id| *id != leader).ok_or("no follower")?;
    for id in 1..=3 {
        if id != survivor {
            cluster.kill(id).await?;
        }
    }
    let alone = MetaClient::new(&[cluster.configs[(survivor - 1) as usize].listen.clone()])?
        .with_timeout(Duration::from_secs(3));
    let started = Instant::now();
    let result = alone.put("/minority", "x").await;
    let took = started.elapsed();
    assert_eq!(result.err().map(|e| e.code()), Some(ErrorCode::NoQuorum));
    assert!(
        took < Duration::from_secs(3),
        "no-quorum answer took {took:?}"
    );
    cluster.kill(survivor).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_member_catches_up_from_a_snapshot() -> TestResult {
    let mut cluster = Cluster::start(3, |c| c.compact_after_entries = 20).await?;
    cluster.leader().await?;
    let client = cluster.client()?;
    for i in 0..100 {
        client.put(&format!("/s/{i:03}"), format!("{i}")).await?;
    }
    // A fourth node joins: the log it would need is compacted, so it gets a snapshot.
    let dir = tempfile::tempdir()?;
    let endpoint = format!("127.0.0.1:{}", free_port()?);
    let mut peers: BTreeMap<u64, String> = cluster.configs[0].peers.clone();
    peers.insert(4, endpoint.clone());
    let config = MetaConfig {
        id: 4,
        data_dir: dir.path().to_path_buf(),
        listen: endpoint.clone(),
        peers,
        join: true,
        compact_after_entries: 20,
        ..MetaConfig::default()
    };
    let members = client.add_member(4, &endpoint).await?;
    assert_eq!(members.len(), 4);
    let joined = MetaServer::start(config).await?;
    let revision = client.list("/", "", 1, true).await?.revision;
    let joined_ref = &joined;
    poll(
        "the new member to catch up",
        Duration::from_secs(10),
        || async move {
            let status = joined_ref.status().await.ok()?;
            (status.revision >= revision).then_some(())
        },
    )
    .await?;
    // It serves linearizable reads (forwarded) and holds the data itself.
    let via_new = MetaClient::new(&[endpoint])?;
    assert_eq!(via_new.list_all("/s/").await?.len(), 100);
    let members = client.remove_member(4).await?;
    assert_eq!(members.len(), 3);
    joined.shutdown().await?;
    for id in 1..=3 {
        cluster.kill(id).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_ops_from_many_callers_each_get_their_own_answer() -> TestResult {
    use magnetar_proto::meta::meta_client::MetaClient as WireClient;
    use magnetar_proto::meta::{pipelined_result, PipelineRequest, PipelinedOp};

    let cluster = Cluster::start(3, |_| {}).await?;
    cluster.leader().await?;
    // The client starts at node 1, perhaps a follower: then its first ops are forwarded.
    let client = cluster.client()?;
    let mut tasks = Vec::new();
    for caller in 0..32u32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..20u32 {
                let key = format!("/pipeline/{caller}");
                let value = format!("{caller}-{round}");
                let version = client.put(&key, value.clone()).await?;
                let read = client
                    .get(&key)
                    .await?
                    .ok_or(MetaError::Internal("gone".into()))?;
                if read.version != version || read.value.as_ref() != value.as_bytes() {
                    return Err(MetaError::Internal(format!(
                        "{key}: wrote {value} at {version}, read {:?} at {}",
                        read.value, read.version
                    )));
                }
            }
            Ok::<_, MetaError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }

    // On the wire: an op naming no operation is refused in its header, the others answered
    // under their own ids, and the stream stays usable.
    let endpoint = cluster.endpoints()[0].clone();
    let mut wire = WireClient::connect(format!("http://{endpoint}")).await?;
    let ops = vec![
        PipelinedOp { id: 7, op: None },
        PipelinedOp {
            id: 8,
            op: Some(magnetar_proto::meta::pipelined_op::Op::Get(
                magnetar_proto::meta::GetRequest {
                    key: "/pipeline/0".into(),
                },
            )),
        },
    ];
    let outbound = tokio_stream::iter(vec![PipelineRequest { ops }]);
    let mut inbound = wire.pipeline(outbound).await?.into_inner();
    let mut answered = BTreeMap::new();
    while let Some(response) = inbound.message().await? {
        for result in response.results {
            answered.insert(result.id, result.result);
        }
    }
    match answered.get(&7) {
        Some(Some(pipelined_result::Result::Get(response))) => assert_eq!(
            response.header.as_ref().map(|h| h.error),
            Some(ErrorCode::InvalidArgument as i32)
        ),
        other => panic!("op 7 answered {other:?}"),
    }
    match answered.get(&8) {
        Some(Some(pipelined_result::Result::Get(response))) => {
            assert_eq!(response.header.as_ref().map(|h| h.error), Some(0));
            assert_eq!(
                response.kv.as_ref().map(|kv| kv.value.as_ref()),
                Some(b"0-19".as_slice())
            );
        }
        other => panic!("op 8 answered {other:?}"),
    }
    Ok(())
}
