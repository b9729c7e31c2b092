//! `magnetar perf function`: one function instance in process over generated messages.
//! Prints msgs/s, the per-message cost of a WebAssembly call in batches, instance start time
//! with the module cached, first compile time, and memory of one instance and of 1000.
//!
//! Memory is resident set size (RSS) measured from before the runtime exists: "one instance"
//! is the engine, the compiled module and one instance that has run a batch; "1000 instances"
//! is the same with 1000 of them, so their ratio is the effect of sharing one compiled module.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use magnetar_functions::examples::example_wasm;
use magnetar_functions::{
    BuiltinConfig, BuiltinInstance, FunctionInstance, FunctionModule, InstanceSettings, Message,
    Runtime, RuntimeConfig, StateStore,
};
use magnetar_sketches::Params;

use super::report::Figures;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// The identity example: the runtime's own cost per message.
    WasmIdentity,
    /// The word count example: host counters from WebAssembly.
    WasmWordcount,
    /// The built-in Count-Min over the message key.
    CountMin,
    /// The built-in top-k (frequent items) over the message key.
    TopK,
}

#[derive(Args)]
pub struct FunctionPerfArgs {
    /// Which function to run.
    #[arg(long, value_enum, default_value = "wasm-identity")]
    kind: Kind,
    /// Messages to process in the timed run.
    #[arg(long, default_value_t = 2_000_000)]
    messages: usize,
    /// Messages per call.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Payload size of the identity and built-in runs (word count uses short sentences).
    #[arg(long, default_value_t = 100)]
    payload_bytes: usize,
    /// Instances started to measure memory.
    #[arg(long, default_value_t = 1000)]
    instances: usize,
    /// Print only the closing JSON line.
    #[arg(long)]
    json: bool,
}

/// Distinct generated messages; batches cycle over them.
const POOL: usize = 20_000;

const WORDS: [&str; 16] = [
    "stream", "function", "sketch", "ledger", "bookie", "broker", "topic", "cursor", "the", "a",
    "of", "message", "state", "count", "window", "quantile",
];

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page_size).unwrap_or(4096)
}

fn generate(kind: Kind, payload_bytes: usize) -> Vec<Message> {
    let mut random = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        random
    };
    (0..POOL)
        .map(|_| {
            let key = format!("key-{}", next() % 10_000);
            let payload = if kind == Kind::WasmWordcount {
                (0..8)
                    .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                    .collect::<Vec<_>>()
                    .join(" ")
                    .into_bytes()
            } else {
                vec![b'x'; payload_bytes]
            };
            Message::new("perf", Some(key.as_bytes()), &payload)
        })
        .collect()
}

/// Runs `instance` over `total` messages in batches; returns messages per second.
fn throughput(
    instance: &mut dyn FunctionInstance,
    pool: &[Message],
    batch: usize,
    total: usize,
) -> anyhow::Result<f64> {
    let batches: Vec<&[Message]> = pool.chunks(batch).collect();
    // One pass first: the instance's memory and caches are warm before the clock starts.
    for chunk in &batches {
        instance.process_batch(chunk)?;
    }
    let started = Instant::now();
    let mut done = 0;
    let mut failures = 0;
    while done < total {
        for chunk in &batches {
            failures += instance.process_batch(chunk)?.failures.len();
            done += chunk.len();
            if done >= total {
                break;
            }
        }
    }
    anyhow::ensure!(failures == 0, "{failures} messages failed during the run");
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

struct MemoryFigures {
    one_bytes: u64,
    many_bytes: u64,
}

fn wasm_settings(name: &str) -> InstanceSettings {
    InstanceSettings {
        name: name.to_owned(),
        ..InstanceSettings::default()
    }
}

pub fn run(args: FunctionPerfArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    anyhow::ensure!(args.instances >= 1, "--instances must be at least 1");
    let pool = generate(args.kind, args.payload_bytes);
    let directory = tempfile::tempdir().context("creating a scratch directory")?;
    let store = StateStore::open(directory.path().join("state")).context("opening state")?;
    let baseline_bytes = resident_bytes();
    let mut figures = Figures::default();

    let (msgs_per_sec, call_overhead_ns, instance_start_us, compile_ms, memory, linear_memory) =
        match args.kind {
            Kind::WasmIdentity | Kind::WasmWordcount => {
                let example = if args.kind == Kind::WasmIdentity {
                    "identity"
                } else {
                    "wordcount"
                };
                let config = RuntimeConfig {
                    cache_directory: Some(directory.path().join("modules")),
                    pooled_instances: u32::try_from(args.instances + 8)
                        .context("--instances is too large")?,
                    ..RuntimeConfig::default()
                };
                // First-ever compile: an empty cache.
                let compile_runtime = Runtime::new(config.clone())?;
                let wasm = example_wasm(example)?;
                let compiled = compile_runtime.deploy(&wasm)?;
                let compile_ms = compiled.compile_time().as_secs_f64() * 1e3;
                drop(compiled);
                drop(compile_runtime);

                // A restarted worker: the module comes from the disk cache.
                let runtime = Runtime::new(config)?;
                let module = runtime.deploy(&wasm)?;
                anyhow::ensure!(module.from_cache(), "the module was not found in the cache");
                let memory = wasm_memory(&runtime, &module, &store, &pool, &args, baseline_bytes)?;
                let instance_start_us = wasm_start_us(&runtime, &module, &store)?;

                let mut instance = runtime.instantiate(
                    &module,
                    wasm_settings("timed"),
                    store.function("timed")?,
                )?;
                let msgs_per_sec = throughput(&mut instance, &pool, args.batch, args.messages)?;
                let linear_memory = instance.metrics().peak_memory_bytes;

                // The call overhead is the identity function's whole cost per message: copying
                // the batch in, the guest's decode, one host call per output, and the outputs.
                let identity = runtime.deploy(&example_wasm("identity")?)?;
                let mut instance = runtime.instantiate(
                    &identity,
                    wasm_settings("overhead"),
                    store.function("overhead")?,
                )?;
                let identity_pool = generate(Kind::WasmIdentity, args.payload_bytes);
                let overhead_messages = args.messages.min(1_000_000);
                let identity_rate =
                    throughput(&mut instance, &identity_pool, args.batch, overhead_messages)?;
                (
                    msgs_per_sec,
                    1e9 / identity_rate,
                    instance_start_us,
                    compile_ms,
                    memory,
                    linear_memory,
                )
            }
            Kind::CountMin | Kind::TopK => {
                let name = if args.kind == Kind::CountMin {
                    "count-min"
                } else {
                    "top-k"
                };
                let config =
                    BuiltinConfig::from_params(name, &Params::new().with("extract", "key"))?;
                let mut instances = Vec::with_capacity(args.instances);
                let mut one_bytes = 0;
                let mut start_total_us = 0.0;
                for index in 0..args.instances {
                    let state = store.function(&format!("{name}-{index}"))?;
                    let started = Instant::now();
                    let mut instance = BuiltinInstance::new(config.clone(), state)?;
                    start_total_us += started.elapsed().as_secs_f64() * 1e6;
                    instance.process_batch(&pool[..args.batch.min(pool.len())])?;
                    instances.push(instance);
                    if index == 0 {
                        one_bytes = resident_bytes().saturating_sub(baseline_bytes);
                    }
                }
                let many_bytes = resident_bytes().saturating_sub(baseline_bytes);
                drop(instances);
                let mut instance =
                    BuiltinInstance::new(config, store.function(&format!("{name}-timed"))?)?;
                let msgs_per_sec = throughput(&mut instance, &pool, args.batch, args.messages)?;
                instance.flush()?;
                let sketch_bytes = instance.metrics().peak_memory_bytes;
                (
                    msgs_per_sec,
                    1e9 / msgs_per_sec,
                    start_total_us / args.instances as f64,
                    0.0,
                    MemoryFigures {
                        one_bytes,
                        many_bytes,
                    },
                    sketch_bytes,
                )
            }
        };

    let ratio = memory.many_bytes as f64 / memory.one_bytes.max(1) as f64;
    if !args.json {
        println!("kind                      {}", kind_name(args.kind));
        println!(
            "throughput                {msgs_per_sec:.0} msgs/s (batches of {})",
            args.batch
        );
        println!("call overhead             {call_overhead_ns:.1} ns/message");
        println!("instance start            {instance_start_us:.1} us (module cached)");
        println!("first compile             {compile_ms:.1} ms");
        println!(
            "one instance              {} bytes RSS ({} bytes of linear memory or sketch)",
            memory.one_bytes, linear_memory
        );
        println!(
            "{} instances            {} bytes RSS ({ratio:.1}x one)",
            args.instances, memory.many_bytes
        );
    }
    figures
        .set("kind", kind_name(args.kind))
        .set("messages", args.messages as u64)
        .set("batch", args.batch as u64)
        .set_f64("msgs_per_sec", msgs_per_sec)
        .set_f64("call_overhead_ns", call_overhead_ns)
        .set_f64("instance_start_us", instance_start_us)
        .set_f64("compile_ms", compile_ms)
        .set("instance_memory_bytes", memory.one_bytes)
        .set("instance_linear_memory_bytes", linear_memory)
        .set("instances", args.instances as u64)
        .set("memory_1000_instances_bytes", memory.many_bytes)
        .set_f64("memory_ratio", ratio);
    figures.print_json_line();
    Ok(())
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::WasmIdentity => "wasm-identity",
        Kind::WasmWordcount => "wasm-wordcount",
        Kind::CountMin => "count-min",
        Kind::TopK => "top-k",
    }
}

/// RSS with one running instance, then with `args.instances`, each having run one batch.
fn wasm_memory(
    runtime: &Runtime,
    module: &Arc<FunctionModule>,
    store: &StateStore,
    pool: &[Message],
    args: &FunctionPerfArgs,
    baseline_bytes: u64,
) -> anyhow::Result<MemoryFigures> {
    let batch = &pool[..args.batch.min(10)];
    let mut instances = Vec::with_capacity(args.instances);
    let mut one_bytes = 0;
    for index in 0..args.instances {
        let name = format!("memory-{index}");
        let mut instance =
            runtime.instantiate(module, wasm_settings(&name), store.function(&name)?)?;
        instance.process_batch(batch)?;
        instances.push(instance);
        if index == 0 {
            one_bytes = resident_bytes().saturating_sub(baseline_bytes);
        }
    }
    let many_bytes = resident_bytes().saturating_sub(baseline_bytes);
    Ok(MemoryFigures {
        one_bytes,
        many_bytes,
    })
}

/// Mean instantiation time over a few hundred instances of a cached module.
fn wasm_start_us(
    runtime: &Runtime,
    module: &Arc<FunctionModule>,
    store: &StateStore,
) -> anyhow::Result<f64> {
    const STARTS: usize = 500;
    let states = (0..STARTS)
        .map(|index| store.function(&format!("start-{index}")))
        .collect::<Result<Vec<_>, _>>()?;
    let settings = wasm_settings("start");
    let mut total_us = 0.0;
    for state in states {
        let started = Instant::now();
        let instance = runtime.instantiate(module, settings.clone(), state)?;
        total_us += started.elapsed().as_secs_f64() * 1e6;
        drop(instance);
    }
    Ok(total_us / STARTS as f64)
}
