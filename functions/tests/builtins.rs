//! Each built-in function gives the same sketch as the sketches crate fed the same values, and
//! malformed input is counted and skipped, or sent to the dead-letter topic.

use magnetar_functions::{BuiltinConfig, BuiltinInstance, FunctionInstance, Message, StateStore};
use magnetar_sketches::{registry, Answer, Item, Params, Stored};

fn store() -> (tempfile::TempDir, StateStore) {
    let directory = tempfile::tempdir().unwrap();
    let store = StateStore::open(directory.path()).unwrap();
    (directory, store)
}

fn json_messages(count: usize) -> Vec<Message> {
    (0..count)
        .map(|index| {
            let user = format!("user-{}", index % 37);
            let payload = format!(
                r#"{{"user": "{user}", "latency_ms": {}, "status": {}}}"#,
                (index * 7919) % 1000,
                if index % 5 == 0 { 500 } else { 200 }
            );
            let mut message = Message::new("events", Some(user.as_bytes()), payload.as_bytes());
            message.event_time_ms = (index as i64) * 10;
            message
        })
        .collect()
}

/// Runs a built-in over `messages` in batches of 64, flushes, and returns its stored sketch
/// (and the instance, with the directory its state lives in).
fn run(
    name: &str,
    params: &Params,
    messages: &[Message],
) -> (Stored, BuiltinInstance, tempfile::TempDir) {
    let (directory, store) = store();
    let config = BuiltinConfig::from_params(name, params).unwrap();
    let mut instance = BuiltinInstance::new(config, store.function(name).unwrap()).unwrap();
    for batch in messages.chunks(64) {
        instance.process_batch(batch).unwrap();
    }
    instance.flush().unwrap();
    let sketch_name = params
        .get("sketch_name")
        .map(str::to_owned)
        .unwrap_or_else(|| {
            magnetar_functions::BuiltinKind::from_name(name)
                .unwrap()
                .sketch_kind()
                .to_owned()
        });
    let stored = instance
        .state_mut()
        .sketch(&sketch_name)
        .unwrap()
        .expect("the flushed sketch is in the state")
        .clone();
    (stored, instance, directory)
}

/// The same sketch built directly with the sketches crate.
fn direct(kind: &str, params: &Params, items: &[Item<'_>]) -> Stored {
    let mut sketch = registry::build(kind, params).unwrap();
    for item in items {
        sketch.update(0, *item).unwrap();
    }
    sketch
}

fn users(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|message| String::from_utf8(message.key.clone().unwrap()).unwrap())
        .collect()
}

#[test]
fn count_min_over_the_key_equals_the_sketch_crate() {
    let messages = json_messages(2000);
    let params = Params::new()
        .with("extract", "key")
        .with("width", 512)
        .with("depth", 4);
    let (stored, _, _directory) = run("count-min", &params, &messages);
    let users = users(&messages);
    let items: Vec<Item<'_>> = users.iter().map(|user| Item::Str(user)).collect();
    let expected = direct(
        "count_min",
        &Params::new().with("width", 512).with("depth", 4),
        &items,
    );
    assert_eq!(stored.to_bytes(), expected.to_bytes());
}

#[test]
fn distinct_over_a_json_field_equals_the_sketch_crate() {
    let messages = json_messages(3000);
    let params = Params::new().with("extract", "user").with("lg_k", 10);
    let (stored, _, _directory) = run("distinct", &params, &messages);
    let users = users(&messages);
    let items: Vec<Item<'_>> = users.iter().map(|user| Item::Str(user)).collect();
    let expected = direct("hll", &Params::new().with("lg_k", 10), &items);
    assert_eq!(stored.to_bytes(), expected.to_bytes());
    let answer = stored.query("estimate", &Params::new()).unwrap();
    match answer {
        Answer::Estimate { estimate, .. } => assert!((estimate - 37.0).abs() < 2.0, "{estimate}"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn quantiles_over_a_numeric_field_equal_the_sketch_crate() {
    // Fewer values than k: KLL compacts at random, but not before it is full, so both
    // sketches hold every value and must answer exactly alike.
    let messages = json_messages(150);
    let params = Params::new().with("extract", "latency_ms").with("k", 200);
    let (stored, _, _directory) = run("quantiles", &params, &messages);
    let values: Vec<f64> = (0..150)
        .map(|index| ((index * 7919) % 1000) as f64)
        .collect();
    let items: Vec<Item<'_>> = values.iter().map(|value| Item::Float(*value)).collect();
    let expected = direct("kll", &Params::new().with("k", 200), &items);
    for rank in ["0.0", "0.1", "0.5", "0.9", "0.99", "1.0"] {
        let args = Params::new().with("rank", rank);
        assert_eq!(
            stored.query("quantile", &args).unwrap(),
            expected.query("quantile", &args).unwrap(),
            "rank {rank}"
        );
    }
}

#[test]
fn top_k_equals_the_sketch_crate() {
    let messages = json_messages(5000);
    let params = Params::new()
        .with("extract", "key")
        .with("max_map_size", 64);
    let (stored, _, _directory) = run("top-k", &params, &messages);
    let users = users(&messages);
    let items: Vec<Item<'_>> = users.iter().map(|user| Item::Str(user)).collect();
    let expected = direct(
        "frequent_items",
        &Params::new().with("max_map_size", 64),
        &items,
    );
    assert_eq!(stored.to_bytes(), expected.to_bytes());
}

#[test]
fn bloom_over_the_payload_equals_the_sketch_crate() {
    let messages = json_messages(500);
    let params = Params::new()
        .with("capacity", 1000)
        .with("false_positive_rate", 0.01);
    let (stored, _, _directory) = run("bloom", &params, &messages);
    let items: Vec<Item<'_>> = messages
        .iter()
        .map(|message| Item::Bytes(&message.payload))
        .collect();
    let expected = direct(
        "bloom",
        &Params::new()
            .with("capacity", 1000)
            .with("false_positive_rate", 0.01),
        &items,
    );
    assert_eq!(stored.to_bytes(), expected.to_bytes());
}

#[test]
fn sample_equals_the_sketch_crate_with_the_same_seed() {
    let messages = json_messages(1000);
    let params = Params::new()
        .with("extract", "key")
        .with("k", 20)
        .with("seed", 9);
    let (stored, _, _directory) = run("sample", &params, &messages);
    let users = users(&messages);
    let items: Vec<Item<'_>> = users.iter().map(|user| Item::Str(user)).collect();
    let expected = direct(
        "reservoir",
        &Params::new().with("k", 20).with("seed", 9),
        &items,
    );
    assert_eq!(stored.to_bytes(), expected.to_bytes());
}

#[test]
fn the_filter_and_the_window_apply_before_the_sketch() {
    let messages = json_messages(1000);
    let params = Params::new()
        .with("extract", "key")
        .with("filter", "status == 500")
        .with("bucket_width_ms", 1000)
        .with("bucket_count", 10);
    let (stored, instance, _directory) = run("count-min", &params, &messages);
    assert_eq!(instance.filtered_out(), 800);
    let mut expected = registry::build(
        "window",
        &Params::new()
            .with("inner", "count_min")
            .with("bucket_width_ms", 1000)
            .with("bucket_count", 10)
            .with("allowed_lateness_ms", 0),
    )
    .unwrap();
    for message in messages.iter().filter(|message| {
        std::str::from_utf8(&message.payload)
            .unwrap()
            .contains("\"status\": 500")
    }) {
        let user = std::str::from_utf8(message.key.as_deref().unwrap()).unwrap();
        expected
            .update(message.event_time_ms, Item::Str(user))
            .unwrap();
    }
    assert_eq!(stored.to_bytes(), expected.to_bytes());
}

#[test]
fn malformed_messages_are_counted_and_skipped_or_dead_lettered() {
    let mut messages = json_messages(10);
    messages.push(Message::new("events", None, b"not json"));
    messages.push(Message::new("events", None, br#"{"other": 1}"#));
    messages.push(Message::new("events", None, br#"{"latency_ms": "slow"}"#));
    let params = Params::new().with("extract", "latency_ms");
    let (_, instance, _run_directory) = run("quantiles", &params, &messages);
    assert_eq!(instance.malformed(), 3);
    assert_eq!(instance.metrics().messages_failed, 3);

    let (_directory, store) = store();
    let config = BuiltinConfig::from_params(
        "quantiles",
        &params.clone().with("dead_letter", "bad-events"),
    )
    .unwrap();
    let mut instance = BuiltinInstance::new(config, store.function("q").unwrap()).unwrap();
    let outcome = instance.process_batch(&messages).unwrap();
    let indexes: Vec<usize> = outcome
        .failures
        .iter()
        .map(|failure| failure.index)
        .collect();
    assert_eq!(indexes, vec![10, 11, 12]);
    assert!(outcome
        .failures
        .iter()
        .all(|failure| failure.error.code() == "FN_MALFORMED_INPUT"));
    assert_eq!(outcome.outputs.len(), 3);
    assert!(outcome
        .outputs
        .iter()
        .all(|output| output.topic.as_deref() == Some("bad-events")));
    assert_eq!(outcome.outputs[0].payload, b"not json");
    assert!(outcome.outputs[0]
        .properties
        .iter()
        .any(|(name, _)| name == "error"));
}

#[test]
fn bad_configs_are_refused_at_deploy() {
    let cases = [
        ("median", Params::new()),
        ("count-min", Params::new().with("extract", "a..b")),
        ("count-min", Params::new().with("filter", "status ~ 3")),
        ("distinct", Params::new().with("lg_k", 99)),
        ("count-min", Params::new().with("bucket_width_ms", 0)),
    ];
    for (name, params) in cases {
        let error = BuiltinConfig::from_params(name, &params).unwrap_err();
        assert!(
            matches!(error.code(), "FN_INVALID_CONFIG" | "FN_SKETCH"),
            "{name} {params}: {error}"
        );
    }
}

#[test]
fn snapshot_and_restore_of_a_built_in_give_identical_answers() {
    let (_directory, store) = store();
    let params = Params::new().with("extract", "key");
    let config = BuiltinConfig::from_params("top-k", &params).unwrap();
    let mut instance =
        BuiltinInstance::new(config.clone(), store.function("top").unwrap()).unwrap();
    let messages = json_messages(600);
    instance.process_batch(&messages[..300]).unwrap();
    instance.flush().unwrap();
    let snapshot = instance.state_mut().snapshot().unwrap();
    let query = Params::new().with("k", 5);
    let before = instance.sketch().query("top", &query).unwrap();
    instance.process_batch(&messages[300..]).unwrap();
    assert_ne!(instance.sketch().query("top", &query).unwrap(), before);

    instance.state_mut().restore(&snapshot).unwrap();
    instance.reload().unwrap();
    assert_eq!(instance.sketch().query("top", &query).unwrap(), before);

    // A new instance of another function restored from the snapshot answers alike.
    let mut other = BuiltinInstance::new(config, store.function("top-copy").unwrap()).unwrap();
    other.state_mut().restore(&snapshot).unwrap();
    other.reload().unwrap();
    assert_eq!(other.sketch().query("top", &query).unwrap(), before);
}
