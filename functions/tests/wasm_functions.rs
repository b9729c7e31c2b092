//! The example functions, built to WebAssembly, run through the real runtime (wasmtime) over
//! real state (RocksDB): their behaviour, the limits, the module cache, deploy-time checks,
//! state isolation and snapshots.

use std::collections::HashMap;
use std::sync::Arc;

use magnetar_functions::examples::example_wasm;
use magnetar_functions::{
    FunctionError, FunctionInstance, FunctionModule, InstanceSettings, Limits, Message, Runtime,
    RuntimeConfig, StateStore, WasmInstance,
};
use magnetar_sketches::Params;

struct Fixture {
    _directory: tempfile::TempDir,
    runtime: Runtime,
    store: StateStore,
}

fn fixture() -> Fixture {
    let directory = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_directory: Some(directory.path().join("modules")),
        pooled_instances: 16,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let store = StateStore::open(directory.path().join("state")).unwrap();
    Fixture {
        _directory: directory,
        runtime,
        store,
    }
}

impl Fixture {
    fn module(&self, example: &str) -> Arc<FunctionModule> {
        self.runtime
            .deploy(&example_wasm(example).unwrap())
            .unwrap()
    }

    fn instance_with(
        &self,
        example: &str,
        name: &str,
        limits: Limits,
        user_config: &[(&str, &str)],
    ) -> WasmInstance {
        let settings = InstanceSettings {
            name: name.to_owned(),
            limits,
            user_config: user_config
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect::<HashMap<_, _>>(),
        };
        self.runtime
            .instantiate(
                &self.module(example),
                settings,
                self.store.function(name).unwrap(),
            )
            .unwrap()
    }

    fn instance(&self, example: &str, user_config: &[(&str, &str)]) -> WasmInstance {
        self.instance_with(example, example, Limits::default(), user_config)
    }
}

fn messages(payloads: &[&str]) -> Vec<Message> {
    payloads
        .iter()
        .enumerate()
        .map(|(index, payload)| {
            let key = format!("k{index}");
            Message::new("in", Some(key.as_bytes()), payload.as_bytes())
        })
        .collect()
}

fn payloads(outcome: &magnetar_functions::BatchOutcome) -> Vec<String> {
    outcome
        .outputs
        .iter()
        .map(|output| String::from_utf8(output.payload.clone()).unwrap())
        .collect()
}

#[test]
fn identity_outputs_every_message_unchanged() {
    let fixture = fixture();
    let mut instance = fixture.instance("identity", &[]);
    let mut input = messages(&["a", "", "ccc"]);
    input[1].key = None;
    let outcome = instance.process_batch(&input).unwrap();
    assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
    assert_eq!(payloads(&outcome), vec!["a", "", "ccc"]);
    assert_eq!(outcome.outputs[0].key.as_deref(), Some(&b"k0"[..]));
    assert_eq!(outcome.outputs[1].key, None);
    assert!(outcome.outputs.iter().all(|output| output.topic.is_none()));
    let metrics = instance.metrics();
    assert_eq!((metrics.messages_in, metrics.messages_out), (3, 3));
    assert!(metrics.fuel_used > 0);
    assert!(metrics.peak_memory_bytes >= 64 << 10);
}

#[test]
fn filter_passes_only_matching_payloads() {
    let fixture = fixture();
    let mut instance = fixture.instance("filter", &[("contains", "ERR")]);
    let outcome = instance
        .process_batch(&messages(&["ok", "ERR disk", "fine", "an ERR"]))
        .unwrap();
    assert_eq!(payloads(&outcome), vec!["ERR disk", "an ERR"]);
    assert_eq!(instance.metrics().messages_out, 2);
}

#[test]
fn enrichment_adds_properties_and_keeps_existing_ones() {
    let fixture = fixture();
    let mut instance = fixture.instance("enrich", &[("region", "eu-west")]);
    let mut input = messages(&["hello"]);
    input[0].properties = vec![("trace".to_owned(), "t1".to_owned())];
    let outcome = instance.process_batch(&input).unwrap();
    assert_eq!(
        outcome.outputs[0].properties,
        vec![
            ("trace".to_owned(), "t1".to_owned()),
            ("region".to_owned(), "eu-west".to_owned()),
            ("payload-bytes".to_owned(), "5".to_owned()),
        ]
    );
}

#[test]
fn word_count_keeps_counters_state_and_metrics() {
    let fixture = fixture();
    let mut instance = fixture.instance("wordcount", &[]);
    let outcome = instance
        .process_batch(&messages(&["the cat", "The dog", "a cat THE"]))
        .unwrap();
    assert!(outcome.outputs.is_empty());
    let state = instance.state_mut().unwrap();
    assert_eq!(state.counter_get(b"word:the").unwrap(), 3);
    assert_eq!(state.counter_get(b"word:cat").unwrap(), 2);
    assert_eq!(state.counter_get(b"word:dog").unwrap(), 1);
    assert_eq!(state.counter_get(b"messages").unwrap(), 3);
    assert_eq!(state.get(b"last:k1").unwrap(), Some(b"The dog".to_vec()));
    assert_eq!(instance.user_metric("words"), Some(7.0));

    // The guest reads its state back through state_list and state_get.
    let query = vec![Message::new("in", None, b"?last k2")];
    let outcome = instance.process_batch(&query).unwrap();
    assert_eq!(payloads(&outcome), vec!["keys=k0,k1,k2;value=a cat THE"]);
}

#[test]
fn per_key_count_min_over_a_json_field() {
    let fixture = fixture();
    let mut instance = fixture.instance("countmin", &[("field", "page")]);
    let events = [
        ("alice", r#"{"page": "/home", "ms": 3}"#),
        ("alice", r#"{"page": "/home"}"#),
        ("alice", r#"{"page": "/cart"}"#),
        ("bob", r#"{"page": "/home"}"#),
        ("bob", r#"{"no_page": 1}"#),
    ];
    let input: Vec<Message> = events
        .iter()
        .map(|(key, payload)| Message::new("clicks", Some(key.as_bytes()), payload.as_bytes()))
        .collect();
    let outcome = instance.process_batch(&input).unwrap();
    assert_eq!(outcome.failures.len(), 1);
    assert_eq!(outcome.failures[0].index, 4);
    assert_eq!(outcome.failures[0].error.code(), "FN_FAILED");
    let state = instance.state_mut().unwrap();
    let estimate =
        |state: &mut magnetar_functions::FunctionState, sketch: &str, page: &str| match state
            .sketch_query(sketch, "estimate", &Params::new().with("item", page))
            .unwrap()
        {
            Some(magnetar_sketches::Answer::Estimate { estimate, .. }) => estimate,
            other => panic!("unexpected answer {other:?}"),
        };
    assert_eq!(estimate(state, "cm:alice", "/home"), 2.0);
    assert_eq!(estimate(state, "cm:alice", "/cart"), 1.0);
    assert_eq!(estimate(state, "cm:bob", "/home"), 1.0);
    assert_eq!(estimate(state, "cm:bob", "/cart"), 0.0);
}

#[test]
fn fanout_publishes_to_two_topics() {
    let fixture = fixture();
    let mut instance = fixture.instance("fanout", &[("threshold", "4")]);
    let outcome = instance.process_batch(&messages(&["tiny", "abc"])).unwrap();
    let routed: Vec<(Option<String>, String)> = outcome
        .outputs
        .iter()
        .map(|output| {
            (
                output.topic.clone(),
                String::from_utf8(output.payload.clone()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        routed,
        vec![
            (Some("audit".into()), "tiny".into()),
            (Some("large".into()), "tiny".into()),
            (Some("audit".into()), "abc".into()),
            (Some("small".into()), "abc".into()),
        ]
    );
    assert!(outcome.outputs[0]
        .properties
        .contains(&("source".to_owned(), "in".to_owned())));
}

#[test]
fn faults_fail_their_message_and_the_next_runs_normally() {
    let fixture = fixture();
    let limits = Limits {
        memory_bytes: 4 << 20,
        fuel_per_message: 2_000_000,
        ..Limits::default()
    };
    let mut instance = fixture.instance_with("faulty", "faulty", limits, &[]);
    let input = messages(&["a", "loop", "b", "bomb", "c", "trap", "d", "fail", "e"]);
    let outcome = instance.process_batch(&input).unwrap();
    assert_eq!(payloads(&outcome), vec!["a", "b", "c", "d", "e"]);
    let failures: Vec<(usize, &str)> = outcome
        .failures
        .iter()
        .map(|failure| (failure.index, failure.error.code()))
        .collect();
    assert_eq!(
        failures,
        vec![
            (1, "FN_CPU_BUDGET_EXCEEDED"),
            (3, "FN_MEMORY_LIMIT_EXCEEDED"),
            (5, "FN_TRAP"),
            (7, "FN_FAILED"),
        ]
    );
    match &outcome.failures[1].error {
        FunctionError::MemoryLimitExceeded {
            requested_bytes,
            limit_bytes,
        } => {
            assert_eq!(*limit_bytes, 4 << 20);
            assert!(*requested_bytes > 4 << 20);
        }
        other => panic!("unexpected {other}"),
    }
    let metrics = instance.metrics();
    assert_eq!(metrics.restarts, 3);
    assert_eq!(metrics.messages_failed, 4);
    // The loop was stopped by the budget: no message burned more than its own budget.
    assert!(metrics.fuel_used <= input.len() as u64 * limits.fuel_per_message);
    assert!(metrics.fuel_used >= limits.fuel_per_message);
    assert!(metrics.peak_memory_bytes <= 4 << 20);

    // The instance keeps working in later batches.
    let outcome = instance.process_batch(&messages(&["after"])).unwrap();
    assert_eq!(payloads(&outcome), vec!["after"]);
}

#[test]
fn a_loop_alone_in_a_batch_is_stopped() {
    let fixture = fixture();
    let limits = Limits {
        fuel_per_message: 1_000_000,
        ..Limits::default()
    };
    let mut instance = fixture.instance_with("faulty", "loop-only", limits, &[]);
    let outcome = instance.process_batch(&messages(&["loop"])).unwrap();
    assert_eq!(outcome.failures.len(), 1);
    assert!(matches!(
        outcome.failures[0].error,
        FunctionError::CpuBudgetExceeded { fuel: 1_000_000 }
    ));
    // The message's budget, plus the few hundred instructions of taking the batch in.
    let fuel_used = instance.metrics().fuel_used;
    assert!((1_000_000..1_100_000).contains(&fuel_used), "{fuel_used}");
}

#[test]
fn compiled_modules_come_from_the_disk_cache_after_a_restart() {
    let directory = tempfile::tempdir().unwrap();
    let config = RuntimeConfig {
        cache_directory: Some(directory.path().to_owned()),
        pooled_instances: 4,
        ..RuntimeConfig::default()
    };
    let wasm = example_wasm("identity").unwrap();
    let first = Runtime::new(config.clone()).unwrap().deploy(&wasm).unwrap();
    assert!(!first.from_cache());
    let again = Runtime::new(config.clone()).unwrap().deploy(&wasm).unwrap();
    assert!(again.from_cache());
    assert_eq!(first.hash(), again.hash());

    // A damaged cache file is ignored: the module compiles again and still runs.
    for entry in std::fs::read_dir(directory.path()).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xFF;
        std::fs::write(&path, bytes).unwrap();
    }
    let runtime = Runtime::new(config).unwrap();
    let module = runtime.deploy(&wasm).unwrap();
    assert!(!module.from_cache());
    let store_directory = tempfile::tempdir().unwrap();
    let store = StateStore::open(store_directory.path()).unwrap();
    let mut instance = runtime
        .instantiate(
            &module,
            InstanceSettings::default(),
            store.function("f").unwrap(),
        )
        .unwrap();
    let outcome = instance.process_batch(&messages(&["x"])).unwrap();
    assert_eq!(payloads(&outcome), vec!["x"]);
}

#[test]
fn bad_modules_are_refused_at_deploy_with_the_reason() {
    let fixture = fixture();
    let not_wasm = fixture.runtime.deploy(b"definitely not wasm").unwrap_err();
    assert_eq!(not_wasm.code(), "FN_INVALID_MODULE", "{not_wasm}");

    // The smallest valid module: it compiles but exports nothing.
    let empty = fixture.runtime.deploy(b"\0asm\x01\0\0\0").unwrap_err();
    assert_eq!(empty.code(), "FN_ABI_MISMATCH", "{empty}");
    assert!(empty.to_string().contains("memory"), "{empty}");

    // Truncated WebAssembly does not compile.
    let wasm = example_wasm("identity").unwrap();
    let truncated = fixture.runtime.deploy(&wasm[..wasm.len() / 2]).unwrap_err();
    assert_eq!(truncated.code(), "FN_INVALID_MODULE", "{truncated}");
}

#[test]
fn a_memory_limit_above_the_runtime_maximum_is_refused() {
    let fixture = fixture();
    let module = fixture.module("identity");
    let settings = InstanceSettings {
        limits: Limits {
            memory_bytes: fixture.runtime.config().max_memory_bytes + 1,
            ..Limits::default()
        },
        ..InstanceSettings::default()
    };
    let error = fixture
        .runtime
        .instantiate(&module, settings, fixture.store.function("f").unwrap())
        .err()
        .unwrap();
    assert_eq!(error.code(), "FN_INVALID_CONFIG");
}

#[test]
fn two_functions_in_one_process_do_not_see_each_others_state() {
    let fixture = fixture();
    let mut first = fixture.instance_with("wordcount", "first", Limits::default(), &[]);
    let mut second = fixture.instance_with("wordcount", "second", Limits::default(), &[]);
    first.process_batch(&messages(&["apple apple"])).unwrap();
    second.process_batch(&messages(&["pear"])).unwrap();
    let first_state = first.state_mut().unwrap();
    assert_eq!(first_state.counter_get(b"word:apple").unwrap(), 2);
    assert_eq!(first_state.counter_get(b"word:pear").unwrap(), 0);
    let second_state = second.state_mut().unwrap();
    assert_eq!(second_state.counter_get(b"word:pear").unwrap(), 1);
    assert_eq!(second_state.counter_get(b"word:apple").unwrap(), 0);
    let outcome = second
        .process_batch(&[Message::new("in", None, b"?last k0")])
        .unwrap();
    assert_eq!(payloads(&outcome), vec!["keys=k0;value=pear"]);
}

#[test]
fn snapshot_and_restore_give_identical_answers() {
    let fixture = fixture();
    let mut instance = fixture.instance("wordcount", &[]);
    instance
        .process_batch(&messages(&["one two", "two"]))
        .unwrap();
    let snapshot = instance.state_mut().unwrap().snapshot().unwrap();
    instance.process_batch(&messages(&["two three"])).unwrap();
    assert_eq!(
        instance
            .state_mut()
            .unwrap()
            .counter_get(b"word:two")
            .unwrap(),
        3
    );
    instance.state_mut().unwrap().restore(&snapshot).unwrap();
    let state = instance.state_mut().unwrap();
    assert_eq!(state.counter_get(b"word:two").unwrap(), 2);
    assert_eq!(state.counter_get(b"word:three").unwrap(), 0);
    assert_eq!(state.get(b"last:k1").unwrap(), Some(b"two".to_vec()));
    assert_eq!(state.snapshot().unwrap(), snapshot);

    // Another function restored from the snapshot answers the same.
    let mut copy = fixture.store.function("copy").unwrap();
    copy.restore(&snapshot).unwrap();
    assert_eq!(copy.counter_get(b"word:two").unwrap(), 2);
    assert_eq!(copy.snapshot().unwrap(), snapshot);
}
