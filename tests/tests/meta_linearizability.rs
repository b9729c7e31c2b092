//! Linearizability of the metadata store under leader crashes.
//!
//! Five clients run random get / put / compare-and-set on a few keys of a 3-process group
//! while the leader is SIGKILLed and restarted several times. Each key's history (call and
//! return instants, results) is then checked against a single-register model by a search in
//! the style of Wing & Gong with memoised states (as Porcupine does). Writes whose outcome is
//! unknown (no quorum, broken connection) may have taken effect at any point after their call,
//! or never: they are given an infinite return time.
//!
//! Replay a run with `MAGNETAR_SEED=<seed>`; every run prints its seed.

mod meta_support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use magnetar_meta::{MetaClient, MetaError};
use meta_support::MetaGroup;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// One operation on a register whose values are unique strings.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// A read that saw this value (None = absent).
    Get(Option<String>),
    /// A write that was acknowledged, or whose outcome is unknown.
    Put(String),
    /// A compare-and-set from `expected` to `new`; `succeeded` None = outcome unknown.
    Cas {
        expected: Option<String>,
        new: String,
        succeeded: Option<bool>,
    },
}

#[derive(Debug, Clone)]
struct Operation {
    call: u64,
    /// u64::MAX: the outcome is unknown.
    ret: u64,
    op: Op,
}

/// The register model: the state after `op`, or None when `op` cannot have happened here.
fn step(state: &Option<String>, op: &Op) -> Option<Option<String>> {
    match op {
        Op::Get(seen) => (seen == state).then(|| state.clone()),
        Op::Put(value) => Some(Some(value.clone())),
        Op::Cas {
            expected,
            new,
            succeeded,
        } => match succeeded {
            Some(true) => (state == expected).then(|| Some(new.clone())),
            Some(false) => (state != expected).then(|| state.clone()),
            None if state == expected => Some(Some(new.clone())),
            None => Some(state.clone()),
        },
    }
}

/// Whether some order of the operations, consistent with real time, explains every result.
fn is_linearizable(history: &[Operation]) -> bool {
    let mut operations = history.to_vec();
    operations.sort_by_key(|o| o.call);
    let mut seen = HashSet::new();
    let done = vec![0u64; operations.len().div_ceil(64)];
    search(&operations, done, None, &mut seen)
}

fn is_done(done: &[u64], index: usize) -> bool {
    done[index / 64] & (1 << (index % 64)) != 0
}

fn search(
    operations: &[Operation],
    done: Vec<u64>,
    state: Option<String>,
    seen: &mut HashSet<(Vec<u64>, Option<String>)>,
) -> bool {
    let pending: Vec<usize> = (0..operations.len())
        .filter(|i| !is_done(&done, *i))
        .collect();
    // Operations of unknown outcome can all be placed at the very end (or never happen).
    if pending.iter().all(|i| operations[*i].ret == u64::MAX) {
        return true;
    }
    let earliest_return = pending
        .iter()
        .map(|i| operations[*i].ret)
        .min()
        .unwrap_or(u64::MAX);
    for index in pending {
        let operation = &operations[index];
        if operation.call > earliest_return {
            // Sorted by call: no later operation can come next either.
            break;
        }
        let Some(next_state) = step(&state, &operation.op) else {
            continue;
        };
        let mut next_done = done.clone();
        next_done[index / 64] |= 1 << (index % 64);
        if seen.insert((next_done.clone(), next_state.clone()))
            && search(operations, next_done, next_state, seen)
        {
            return true;
        }
    }
    false
}

fn op(call: u64, ret: u64, op: Op) -> Operation {
    Operation { call, ret, op }
}

#[test]
fn the_checker_accepts_linearizable_and_refuses_other_histories() {
    let value = |v: &str| Some(v.to_string());
    let cases: Vec<(&str, Vec<Operation>, bool)> = vec![
        (
            "a read overlapping a write may see either value",
            vec![
                op(0, 10, Op::Put("a".into())),
                op(20, 40, Op::Put("b".into())),
                op(25, 30, Op::Get(value("a"))),
                op(31, 35, Op::Get(value("b"))),
            ],
            true,
        ),
        (
            "a read after an acknowledged write must see it",
            vec![op(0, 10, Op::Put("a".into())), op(20, 30, Op::Get(None))],
            false,
        ),
        (
            "values never go back in time",
            vec![
                op(0, 10, Op::Put("a".into())),
                op(0, 50, Op::Put("b".into())),
                op(20, 25, Op::Get(value("b"))),
                op(30, 35, Op::Get(value("a"))),
            ],
            false,
        ),
        (
            "two compare-and-sets from the same value cannot both win",
            vec![
                op(0, 10, Op::Put("a".into())),
                op(
                    20,
                    30,
                    Op::Cas {
                        expected: value("a"),
                        new: "b".into(),
                        succeeded: Some(true),
                    },
                ),
                op(
                    20,
                    30,
                    Op::Cas {
                        expected: value("a"),
                        new: "c".into(),
                        succeeded: Some(true),
                    },
                ),
            ],
            false,
        ),
        (
            "a write of unknown outcome may appear later",
            vec![
                op(0, u64::MAX, Op::Put("x".into())),
                op(10, 20, Op::Get(None)),
                op(30, 40, Op::Get(value("x"))),
            ],
            true,
        ),
        (
            "or never, but not come and go",
            vec![
                op(0, u64::MAX, Op::Put("x".into())),
                op(10, 20, Op::Get(value("x"))),
                op(30, 40, Op::Get(None)),
            ],
            false,
        ),
        (
            "a failed compare-and-set saw another value",
            vec![
                op(0, 10, Op::Put("a".into())),
                op(
                    20,
                    30,
                    Op::Cas {
                        expected: value("a"),
                        new: "b".into(),
                        succeeded: Some(false),
                    },
                ),
            ],
            false,
        ),
    ];
    for (what, history, expected) in cases {
        assert_eq!(is_linearizable(&history), expected, "{what}");
    }
}

const KEYS: [&str; 3] = ["/lin/0", "/lin/1", "/lin/2"];
const CLIENTS: usize = 5;
const LEADER_KILLS: usize = 3;

fn indefinite(error: &MetaError) -> bool {
    !error.is_definite()
}

/// One client's random operations until `stop`; returns (key, operation) pairs.
async fn run_client(
    client: MetaClient,
    number: usize,
    seed: u64,
    origin: Instant,
    stopped: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(usize, Operation)> {
    let mut rng = StdRng::seed_from_u64(seed ^ (number as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut history = Vec::new();
    // What this client last read per key, for its compare-and-sets.
    let mut last_read: BTreeMap<usize, (Option<String>, u64)> = BTreeMap::new();
    let now = || origin.elapsed().as_nanos() as u64;
    let mut sequence = 0u64;
    while !stopped.load(std::sync::atomic::Ordering::Acquire) {
        let key_index = rng.random_range(0..KEYS.len());
        let key = KEYS[key_index];
        sequence += 1;
        let value = format!("c{number}-{sequence}");
        let choice = rng.random_range(0..10);
        let call = now();
        if choice < 4 {
            // A failed read has no effect: it is left out of the history.
            if let Ok(kv) = client.get(key).await {
                let seen = kv
                    .as_ref()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                let version = kv.as_ref().map_or(0, |kv| kv.version);
                last_read.insert(key_index, (seen.clone(), version));
                history.push((key_index, op(call, now(), Op::Get(seen))));
            }
        } else if choice < 7 {
            match client.put(key, value.clone()).await {
                Ok(_) => history.push((key_index, op(call, now(), Op::Put(value)))),
                Err(error) if indefinite(&error) => {
                    history.push((key_index, op(call, u64::MAX, Op::Put(value))))
                }
                Err(_) => {}
            }
        } else {
            let (expected, version) = last_read.get(&key_index).cloned().unwrap_or((None, 0));
            let result = client.put_if_version(key, value.clone(), version).await;
            let cas = |succeeded| Op::Cas {
                expected: expected.clone(),
                new: value.clone(),
                succeeded,
            };
            match result {
                Ok(_) => history.push((key_index, op(call, now(), cas(Some(true))))),
                Err(MetaError::VersionConflict { .. }) => {
                    history.push((key_index, op(call, now(), cas(Some(false)))))
                }
                Err(error) if indefinite(&error) => {
                    history.push((key_index, op(call, u64::MAX, cas(None))))
                }
                Err(_) => {}
            }
        }
    }
    history
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn histories_under_leader_crashes_are_linearizable() -> TestResult {
    let seed = std::env::var("MAGNETAR_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    println!("linearizability seed: {seed} (replay with MAGNETAR_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);

    let mut group = MetaGroup::start(3)?;
    group.leader(Duration::from_secs(20)).await?;
    let origin = Instant::now();
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for number in 0..CLIENTS {
        let client = group.client()?.with_timeout(Duration::from_secs(3));
        clients.push(tokio::spawn(run_client(
            client,
            number,
            seed,
            origin,
            stopped.clone(),
        )));
    }

    for round in 0..LEADER_KILLS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..1500))).await;
        let leader = group.leader(Duration::from_secs(20)).await?;
        println!("round {round}: SIGKILL leader {leader}");
        group.kill(leader);
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
        group.restart(leader)?;
    }
    group.leader(Duration::from_secs(20)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stopped.store(true, std::sync::atomic::Ordering::Release);

    let mut per_key: Vec<Vec<Operation>> = vec![Vec::new(); KEYS.len()];
    for client in clients {
        for (key, operation) in client.await? {
            per_key[key].push(operation);
        }
    }
    let total: usize = per_key.iter().map(Vec::len).sum();
    let unknown: usize = per_key
        .iter()
        .flatten()
        .filter(|o| o.ret == u64::MAX)
        .count();
    println!("{total} operations recorded, {unknown} of unknown outcome");
    assert!(total > 100, "too few operations to mean anything: {total}");
    for (key, history) in per_key.into_iter().enumerate() {
        // Deep histories recurse deeply: check on a thread with a roomy stack.
        let checked = std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || is_linearizable(&history))?
            .join()
            .map_err(|_| "the checker panicked")?;
        assert!(
            checked,
            "history of {} is not linearizable (seed {seed})",
            KEYS[key]
        );
    }
    assert!(
        group.terminate_all(),
        "SIGTERM must shut every node down cleanly"
    );
    Ok(())
}
