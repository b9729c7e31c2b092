//! The HTTP admin API, `/metrics` and the admin CLI against an in-process cluster of 3
//! metadata nodes, 3 bookies (3/3/2) and 2 brokers: every endpoint group through HTTP, the
//! redirect to a topic's owner, error codes, and the series metrics expose after publishing.

use std::time::Duration;

use magnetar_broker::admin::{AdminClient, HttpResponse, Method};
use magnetar_client::{Client, MessageId, OutgoingMessage};
use magnetar_tests::cluster::{Cluster, ClusterShape};
use magnetar_tests::{magnetar_binary, wait_until_async};
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const DEADLINE: Duration = Duration::from_secs(30);

/// Sends a request through `admin`, following redirects, and returns whatever came back.
async fn send(
    admin: &AdminClient,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> HttpResponse {
    admin
        .send(
            method,
            path,
            body.map(|value| value.to_string().into_bytes()),
        )
        .await
        .unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The status and error code of a failed request (the code is empty on success).
async fn status_and_code(
    admin: &AdminClient,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, String) {
    let response = send(admin, method, path, body).await;
    let code = response.error().map(|error| error.code).unwrap_or_default();
    (response.status.as_u16(), code)
}

/// A successful request's JSON answer (`Null` for an empty one).
async fn json_of(admin: &AdminClient, method: Method, path: &str, body: Option<Value>) -> Value {
    let response = send(admin, method.clone(), path, body).await;
    assert!(
        response.status.is_success(),
        "{method} {path}: {} {}",
        response.status,
        response.text()
    );
    if response.body.is_empty() {
        Value::Null
    } else {
        response.json().expect("the API answers JSON")
    }
}

async fn get(admin: &AdminClient, path: &str) -> Value {
    json_of(admin, Method::GET, path, None).await
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs the `magnetar` binary with `args`; returns (success, stdout, stderr).
async fn magnetar(args: Vec<String>) -> (bool, String, String) {
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(magnetar_binary())
            .args(&args)
            .env_remove("MAGNETAR_ADMIN_URL")
            .output()
            .expect("running magnetar")
    })
    .await
    .expect("the CLI runner finished");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tenants_namespaces_and_policies_round_trip() -> TestResult {
    let cluster = Cluster::start(ClusterShape::default()).await?;
    let first = AdminClient::new(&cluster.admin_url(0))?;
    let second = AdminClient::new(&cluster.admin_url(1))?;

    // Tenants.
    assert!(strings(&get(&first, "/admin/v2/tenants").await).contains(&"public".to_string()));
    let created = send(&first, Method::PUT, "/admin/v2/tenants/acme", None).await;
    assert_eq!(created.status.as_u16(), 204);
    assert_eq!(
        status_and_code(&second, Method::PUT, "/admin/v2/tenants/acme", None).await,
        (409, "ALREADY_EXISTS".into())
    );
    assert_eq!(
        status_and_code(&first, Method::PUT, "/admin/v2/tenants/bad!name", None).await,
        (400, "INVALID_NAME".into())
    );
    assert_eq!(
        status_and_code(&first, Method::GET, "/admin/v2/namespaces/ghost", None).await,
        (404, "TENANT_NOT_FOUND".into())
    );
    assert_eq!(
        status_and_code(&first, Method::DELETE, "/admin/v2/tenants/ghost", None).await,
        (404, "TENANT_NOT_FOUND".into())
    );

    // Namespaces, seen from either broker.
    let created = send(&first, Method::PUT, "/admin/v2/namespaces/acme/eu", None).await;
    assert_eq!(created.status.as_u16(), 204);
    assert_eq!(
        strings(&get(&second, "/admin/v2/namespaces/acme").await),
        vec!["acme/eu".to_string()]
    );
    assert_eq!(
        status_and_code(&first, Method::PUT, "/admin/v2/namespaces/ghost/eu", None).await,
        (404, "TENANT_NOT_FOUND".into())
    );
    assert_eq!(
        status_and_code(&first, Method::PUT, "/admin/v2/namespaces/acme/eu", None).await,
        (409, "ALREADY_EXISTS".into())
    );
    assert_eq!(
        status_and_code(
            &first,
            Method::GET,
            "/admin/v2/namespaces/acme/nope/policies",
            None
        )
        .await,
        (404, "NAMESPACE_NOT_FOUND".into())
    );

    // Policies: set on one broker, read on the other.
    let base = "/admin/v2/namespaces/acme/eu";
    json_of(
        &first,
        Method::POST,
        &format!("{base}/retention"),
        Some(json!({ "retention_minutes": 60, "retention_size_mb": 100 })),
    )
    .await;
    json_of(
        &first,
        Method::POST,
        &format!("{base}/messageTTL"),
        Some(json!(3600)),
    )
    .await;
    json_of(
        &first,
        Method::POST,
        &format!("{base}/backlogQuota"),
        Some(json!({ "limit_entries": 500, "policy": "producer_request_hold" })),
    )
    .await;
    let policies = get(&second, &format!("{base}/policies")).await;
    assert_eq!(policies["retention_minutes"], 60);
    assert_eq!(policies["retention_size_mb"], 100);
    assert_eq!(policies["message_ttl_seconds"], 3600);
    assert_eq!(policies["backlog_quota_entries"], 500);
    assert_eq!(policies["backlog_quota_policy"], "producer_request_hold");
    assert_eq!(
        get(&second, &format!("{base}/messageTTL")).await["message_ttl_seconds"],
        3600
    );
    assert_eq!(
        get(&second, &format!("{base}/retention")).await["retention_size_mb"],
        100
    );
    assert_eq!(
        get(&second, &format!("{base}/backlogQuota")).await["limit_entries"],
        500
    );
    assert_eq!(
        status_and_code(
            &first,
            Method::POST,
            &format!("{base}/backlogQuota"),
            Some(json!({ "limit_entries": 1, "policy": "drop_everything" })),
        )
        .await,
        (400, "INVALID_REQUEST".into())
    );
    let junk = first
        .send(
            Method::POST,
            &format!("{base}/retention"),
            Some(b"{not json".to_vec()),
        )
        .await?;
    assert_eq!(junk.status.as_u16(), 400);
    assert_eq!(
        junk.error().map(|error| error.code).as_deref(),
        Some("INVALID_REQUEST")
    );

    // Deleting in order: a tenant with namespaces refuses.
    assert_eq!(
        status_and_code(&first, Method::DELETE, "/admin/v2/tenants/acme", None).await,
        (409, "NOT_EMPTY".into())
    );
    json_of(&first, Method::DELETE, base, None).await;
    json_of(&first, Method::DELETE, "/admin/v2/tenants/acme", None).await;
    assert!(!strings(&get(&second, "/admin/v2/tenants").await).contains(&"acme".to_string()));

    // Unknown paths and methods answer in the same JSON shape.
    assert_eq!(
        status_and_code(&first, Method::GET, "/admin/v2/nothing", None).await,
        (404, "NOT_FOUND".into())
    );
    assert_eq!(
        status_and_code(&first, Method::POST, "/admin/v2/tenants", None).await,
        (405, "METHOD_NOT_ALLOWED".into())
    );

    // The CLI over the same API.
    let url = cluster.admin_url(1);
    let cli = |args: &[&str]| {
        let mut all: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        all.extend(["--admin-url".to_string(), url.clone()]);
        magnetar(all)
    };
    let (ok, _, stderr) = cli(&["tenants", "create", "cli"]).await;
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = cli(&["namespaces", "create", "cli/ns"]).await;
    assert!(ok, "{stderr}");
    let (ok, _, stderr) = cli(&["namespaces", "set-ttl", "cli/ns", "--seconds", "90"]).await;
    assert!(ok, "{stderr}");
    let (ok, stdout, _) = cli(&["namespaces", "policies", "cli/ns"]).await;
    assert!(
        ok && stdout.contains("\"message_ttl_seconds\": 90"),
        "{stdout}"
    );
    let (ok, _, stderr) = cli(&[
        "topics",
        "create",
        "persistent://cli/ns/t",
        "--partitions",
        "2",
    ])
    .await;
    assert!(ok, "{stderr}");
    let (ok, stdout, _) = cli(&["topics", "list", "cli/ns"]).await;
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("persistent://cli/ns/t-partition-1"),
        "{stdout}"
    );
    assert!(
        stdout.contains("persistent://cli/ns/t (partitioned, 2 partitions)"),
        "{stdout}"
    );
    let (ok, _, stderr) = cli(&["topics", "stats", "persistent://cli/ns/missing"]).await;
    assert!(!ok && stderr.contains("TOPIC_NOT_FOUND"), "{stderr}");
    let (ok, _, stderr) = cli(&["tenants", "delete", "cli"]).await;
    assert!(!ok && stderr.contains("NOT_EMPTY"), "{stderr}");
    let dead = format!("http://127.0.0.1:{}", magnetar_tests::free_port());
    let (ok, _, stderr) = magnetar(vec![
        "tenants".into(),
        "list".into(),
        "--admin-url".into(),
        dead,
    ])
    .await;
    assert!(!ok && stderr.contains("magnetar standalone"), "{stderr}");
    Ok(())
}

/// The metrics line of `series` for `topic`, if present.
fn metric(text: &str, series: &str, topic: &str) -> Option<f64> {
    let labelled = format!("{series}{{");
    let topic_label = format!("topic=\"{topic}\"");
    text.lines()
        .filter(|line| line.starts_with(&labelled) && line.contains(&topic_label))
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_subscriptions_and_metrics_through_http() -> TestResult {
    let cluster = Cluster::start(ClusterShape::default()).await?;
    let admins = [
        AdminClient::new(&cluster.admin_url(0))?,
        AdminClient::new(&cluster.admin_url(1))?,
    ];
    let admin = &admins[0];
    let topic = "persistent://public/default/admin-orders";
    let path = "/admin/v2/persistent/public/default/admin-orders";

    // Create, through whichever broker; creating again is a conflict.
    assert_eq!(
        send(admin, Method::PUT, path, None).await.status.as_u16(),
        204
    );
    assert_eq!(
        status_and_code(&admins[1], Method::PUT, path, None).await,
        (409, "ALREADY_EXISTS".into())
    );
    // Exactly one broker owns it: the other redirects there.
    let mut owner = None;
    let mut redirects = 0;
    for (index, client) in admins.iter().enumerate() {
        let url = format!("{}{path}/stats", client.base_url());
        let response = client.send_once(Method::GET, &url, None).await?;
        match response.status.as_u16() {
            200 => owner = Some(index),
            307 => {
                redirects += 1;
                let location = response.location.clone().unwrap_or_default();
                let other = &admins[1 - index];
                assert_eq!(location, format!("{}{path}/stats", other.base_url()));
                assert_eq!(
                    response.error().map(|e| e.code).as_deref(),
                    Some("NOT_OWNER")
                );
            }
            status => panic!("stats answered {status}: {}", response.text()),
        }
    }
    let owner = owner.expect("one broker serves the topic");
    assert_eq!(redirects, 1, "the other broker redirects to the owner");
    assert!(
        strings(&get(admin, "/admin/v2/persistent/public/default").await)
            .contains(&topic.to_string())
    );

    // Subscriptions made before publishing: one at the start, one at the end.
    let sub = format!("{path}/subscription/audit");
    assert_eq!(
        send(
            admin,
            Method::PUT,
            &format!("{sub}?position=earliest"),
            None
        )
        .await
        .status
        .as_u16(),
        204
    );
    assert_eq!(
        status_and_code(admin, Method::PUT, &sub, None).await,
        (409, "ALREADY_EXISTS".into())
    );
    json_of(
        admin,
        Method::PUT,
        &format!("{path}/subscription/late"),
        None,
    )
    .await;
    assert_eq!(
        status_and_code(
            admin,
            Method::PUT,
            &format!("{path}/subscription/x?position=middle"),
            None
        )
        .await,
        (400, "INVALID_REQUEST".into())
    );

    // Ten messages, one per entry.
    let client = Client::connect(&cluster.service_url(0)).await?;
    let producer = client.producer(topic).batching(false).create().await?;
    let mut ids: Vec<MessageId> = Vec::new();
    for index in 0..10 {
        ids.push(
            producer
                .send(OutgoingMessage::new(format!("message-{index}")))
                .await?,
        );
    }
    let late = format!("{path}/subscription/late");
    json_of(
        admin,
        Method::PUT,
        &format!("{path}/subscription/fresh"),
        None,
    )
    .await;

    let stats = get(admin, &format!("{path}/stats")).await;
    assert_eq!(stats["messages_in"], 10);
    assert_eq!(stats["entries_in"], 10);
    assert_eq!(stats["producers"].as_array().map(Vec::len), Some(1));
    assert_eq!(stats["subscriptions"]["audit"]["backlog_entries"], 10);
    assert_eq!(stats["subscriptions"]["late"]["backlog_entries"], 10);
    assert_eq!(stats["subscriptions"]["fresh"]["backlog_entries"], 0);
    assert_eq!(stats["subscriptions"]["fresh"]["durable"], true, "{stats}");
    assert!(
        stats["storage_size_bytes"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    assert!(
        stats["publish_latency_p99_us"].as_u64().is_some(),
        "{stats}"
    );
    assert!(stats.get("rate_in_msgs_per_sec").is_some(), "{stats}");

    let internal = get(admin, &format!("{path}/internalStats")).await;
    assert_eq!(internal["number_of_entries"], 10, "{internal}");
    let ledgers = internal["ledgers"].as_array().cloned().unwrap_or_default();
    assert!(!ledgers.is_empty());
    assert!(ledgers
        .iter()
        .any(|ledger| ledger["entries"] == 10 && ledger["size_bytes"].as_u64() > Some(0)));
    assert_eq!(internal["cursors"]["audit"]["backlog_entries"], 10);
    assert!(internal["cursors"]["late"]["mark_delete"].is_string());

    // Peek, skip, reset.
    assert_eq!(
        peek(admin, &sub, 3).await,
        ["message-0", "message-1", "message-2"]
    );
    let skipped = json_of(admin, Method::POST, &format!("{sub}/skip/2"), None).await;
    assert_eq!(skipped["skipped_entries"], 2);
    assert_eq!(peek(admin, &sub, 1).await, ["message-2"]);
    json_of(admin, Method::POST, &format!("{sub}/resetcursor/0"), None).await;
    assert_eq!(peek(admin, &sub, 1).await, ["message-0"]);
    let fifth = ids[5];
    json_of(
        admin,
        Method::POST,
        &format!("{sub}/resetcursor"),
        Some(json!({ "ledger_id": fifth.ledger_id, "entry_id": fifth.entry_id })),
    )
    .await;
    assert_eq!(peek(admin, &sub, 2).await, ["message-5", "message-6"]);
    let nth = get(admin, &format!("{sub}/position/2")).await;
    assert_eq!(nth["payload"], "message-6");
    // Skipping past the end skips what there is.
    let skipped = json_of(admin, Method::POST, &format!("{late}/skip/100"), None).await;
    assert_eq!(skipped["skipped_entries"], 10);

    // A consumer sees the reset subscription; the subscription cannot go while it is there.
    let consumer = client.consumer(topic, "audit").subscribe().await?;
    let first = consumer
        .receive_timeout(DEADLINE)
        .await?
        .ok_or("no message after the reset")?;
    assert_eq!(&first.payload[..], b"message-5");
    assert_eq!(
        status_and_code(admin, Method::DELETE, &sub, None).await,
        (409, "BUSY".into())
    );
    // Reset under a live consumer goes through its subscription task.
    json_of(admin, Method::POST, &format!("{sub}/resetcursor/0"), None).await;
    let consumer_ref = &consumer;
    let again = wait_until_async("redelivery from the start", DEADLINE, || async move {
        let message = consumer_ref
            .receive_timeout(Duration::from_millis(200))
            .await
            .ok()??;
        (&message.payload[..] == b"message-0").then_some(message)
    })
    .await?;
    assert_eq!(&again.payload[..], b"message-0");
    drop(consumer);
    let sub_ref = &sub;
    wait_until_async(
        "the subscription deleted once its consumer left",
        DEADLINE,
        || async move {
            (send(admin, Method::DELETE, sub_ref, None)
                .await
                .status
                .as_u16()
                == 204)
                .then_some(())
        },
    )
    .await?;
    assert_eq!(
        strings(&get(admin, &format!("{path}/subscriptions")).await),
        vec!["fresh".to_string(), "late".to_string()]
    );

    // Errors about unknown and malformed things.
    for (method, bad, status, code) in [
        (
            Method::POST,
            format!("{path}/subscription/nosub/skip/1"),
            404,
            "SUBSCRIPTION_NOT_FOUND",
        ),
        (
            Method::DELETE,
            format!("{path}/subscription/nosub"),
            404,
            "SUBSCRIPTION_NOT_FOUND",
        ),
        (
            Method::POST,
            format!("{late}/skip/many"),
            400,
            "INVALID_REQUEST",
        ),
        (
            Method::GET,
            format!("{late}/peek/0"),
            400,
            "INVALID_REQUEST",
        ),
        (
            Method::POST,
            format!("{late}/resetcursor/yesterday"),
            400,
            "INVALID_REQUEST",
        ),
        (
            Method::GET,
            "/admin/v2/persistent/public/default/never-made/stats".into(),
            404,
            "TOPIC_NOT_FOUND",
        ),
        (
            Method::GET,
            "/admin/v2/persistent/public/default/bad!topic/stats".into(),
            400,
            "INVALID_NAME",
        ),
        (
            Method::GET,
            "/admin/v2/persistent/public/nowhere".into(),
            404,
            "NAMESPACE_NOT_FOUND",
        ),
        (
            Method::PUT,
            "/admin/v2/persistent/public/nowhere/t".into(),
            404,
            "NAMESPACE_NOT_FOUND",
        ),
    ] {
        assert_eq!(
            status_and_code(admin, method.clone(), &bad, None).await,
            (status, code.to_string()),
            "{method} {bad}"
        );
    }

    // Metrics on the owner, after the publishing above.
    let metrics_url = format!("{}/metrics", admins[owner].base_url());
    let (owner_admin, metrics_url) = (&admins[owner], &metrics_url);
    let text = wait_until_async("the topic's series in /metrics", DEADLINE, || async move {
        let response = owner_admin
            .send_once(Method::GET, metrics_url, None)
            .await
            .ok()?;
        let text = response.text();
        (metric(&text, "magnetar_topic_messages_in_total", topic) == Some(10.0)).then_some(text)
    })
    .await?;
    assert!(metric(&text, "magnetar_topic_messages_out_total", topic).unwrap_or(0.0) >= 2.0);
    assert_eq!(metric(&text, "magnetar_topic_producers", topic), Some(1.0));
    assert!(metric(&text, "magnetar_topic_storage_size_bytes", topic).unwrap_or(0.0) > 0.0);
    assert!(metric(&text, "magnetar_topic_rate_in_msgs_per_second", topic).is_some());
    assert_eq!(
        metric(&text, "magnetar_topic_publish_latency_seconds_count", topic),
        Some(10.0)
    );
    assert!(text.lines().any(
        |line| line.starts_with("magnetar_subscription_backlog_entries{")
            && line.contains("subscription=\"fresh\"")
            && line.ends_with(" 0")
    ));
    assert!(text
        .lines()
        .any(|line| line.starts_with("magnetar_broker_topics ")));
    assert!(text.contains("# TYPE magnetar_topic_publish_latency_seconds histogram"));

    // Deleting: refused while the producer is connected, then gone.
    assert_eq!(
        status_and_code(admin, Method::DELETE, path, None).await,
        (409, "BUSY".into())
    );
    producer.close().await?;
    wait_until_async(
        "the topic deleted once its producer left",
        DEADLINE,
        || async move {
            (send(admin, Method::DELETE, path, None)
                .await
                .status
                .as_u16()
                == 204)
                .then_some(())
        },
    )
    .await?;
    assert_eq!(
        status_and_code(&admins[1], Method::GET, &format!("{path}/stats"), None).await,
        (404, "TOPIC_NOT_FOUND".into())
    );
    assert!(
        !strings(&get(admin, "/admin/v2/persistent/public/default").await)
            .contains(&topic.to_string())
    );

    // Partitioned: create with three partitions, subscribe all, stats per partition, delete.
    let parted = "/admin/v2/persistent/public/default/admin-parted";
    json_of(
        &admins[1],
        Method::PUT,
        &format!("{parted}/partitions"),
        Some(json!(3)),
    )
    .await;
    assert_eq!(
        get(admin, &format!("{parted}/partitions")).await["partitions"],
        3
    );
    let listed = strings(&get(admin, "/admin/v2/persistent/public/default").await);
    for index in 0..3 {
        let partition = format!("persistent://public/default/admin-parted-partition-{index}");
        assert!(
            listed.contains(&partition),
            "{partition} missing from {listed:?}"
        );
    }
    let partitioned = get(admin, "/admin/v2/persistent/public/default/partitioned").await;
    assert!(partitioned
        .as_array()
        .is_some_and(|items| items.iter().any(|item| item["topic"]
            == "persistent://public/default/admin-parted"
            && item["partitions"] == 3)));
    assert_eq!(
        status_and_code(admin, Method::PUT, parted, None).await,
        (409, "ALREADY_EXISTS".into())
    );
    assert_eq!(
        status_and_code(
            admin,
            Method::PUT,
            &format!("{path}-x/partitions"),
            Some(json!(0))
        )
        .await,
        (400, "INVALID_REQUEST".into())
    );
    json_of(
        admin,
        Method::PUT,
        &format!("{parted}/subscription/all?position=earliest"),
        None,
    )
    .await;
    assert_eq!(
        strings(&get(&admins[1], &format!("{parted}/subscriptions")).await),
        vec!["all".to_string()]
    );
    let stats = get(admin, &format!("{parted}/stats")).await;
    assert_eq!(stats["partitions"], 3);
    assert_eq!(
        stats["per_partition"].as_object().map(|map| map.len()),
        Some(3)
    );
    for (name, partition) in stats["per_partition"]
        .as_object()
        .cloned()
        .unwrap_or_default()
    {
        assert!(
            partition["subscriptions"]["all"].is_object(),
            "{name}: {partition}"
        );
    }
    json_of(admin, Method::DELETE, &format!("{parted}/partitions"), None).await;
    assert_eq!(
        get(&admins[1], &format!("{parted}/partitions")).await["partitions"],
        0
    );
    let listed = strings(&get(admin, "/admin/v2/persistent/public/default").await);
    assert!(
        listed.iter().all(|name| !name.contains("admin-parted")),
        "{listed:?}"
    );
    Ok(())
}

/// The payloads of the next `count` messages of a subscription, by peeking.
async fn peek(admin: &AdminClient, subscription_path: &str, count: u32) -> Vec<String> {
    get(admin, &format!("{subscription_path}/peek/{count}"))
        .await
        .as_array()
        .map(|messages| {
            messages
                .iter()
                .filter_map(|message| message["payload"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
