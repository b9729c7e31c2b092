//! One running instance of a WebAssembly function: batches in, outputs and per-message
//! failures out, with a memory ceiling, a CPU budget per message, and a fresh instance after
//! every trap so that the next message runs normally.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::{Engine, Store, Trap, TypedFunc};

use super::abi::{encode_batch, HostState};
use super::{FunctionModule, InstanceSettings};
use crate::error::{FunctionError, Result};
use crate::message::{BatchOutcome, FunctionInstance, Message, MessageFailure};
use crate::metering::InstanceMetrics;
use crate::state::FunctionState;

/// What one function instance may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The ceiling of the instance's linear memory, in bytes; growing past it traps.
    pub memory_bytes: usize,
    /// Fuel (about one unit per WebAssembly instruction) each message may burn; running out
    /// traps the message.
    pub fuel_per_message: u64,
    /// Messages one input message may emit; `publish` past it returns the limit code.
    pub max_outputs_per_message: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 16 << 20,
            // Tens of milliseconds of compiled code: generous for per-message work, short
            // enough that a loop forever costs a batch little.
            fuel_per_message: 50_000_000,
            max_outputs_per_message: 1024,
        }
    }
}

struct Live {
    store: Store<HostState>,
    alloc: TypedFunc<i32, i32>,
    process: TypedFunc<(i32, i32), i32>,
}

/// A running WebAssembly function.
pub struct WasmInstance {
    engine: Engine,
    module: Arc<FunctionModule>,
    live: Option<Live>,
    /// The host side kept between a trap and the next instantiation (it owns the state).
    parked: Option<HostState>,
    metrics: InstanceMetrics,
    batch: Vec<u8>,
}

fn build_live(
    engine: &Engine,
    module: &FunctionModule,
    host: HostState,
) -> std::result::Result<Live, Box<(FunctionError, HostState)>> {
    let mut store = Store::new(engine, host);
    store.limiter(|host| &mut host.limiter);
    let fuel = store.data().fuel_per_message;
    let instance = store
        .set_fuel(fuel)
        .and_then(|()| module.pre.instantiate(&mut store));
    let instance = match instance {
        Ok(instance) => instance,
        Err(error) => {
            let error = FunctionError::Runtime(format!("instantiating: {error:#}"));
            return Err(Box::new((error, store.into_data())));
        }
    };
    let memory = instance.get_memory(&mut store, "memory");
    store.data_mut().memory = memory;
    let alloc = instance.get_typed_func::<i32, i32>(&mut store, "magnetar_alloc");
    let process = instance.get_typed_func::<(i32, i32), i32>(&mut store, "magnetar_process");
    match (memory, alloc, process) {
        (Some(_), Ok(alloc), Ok(process)) => Ok(Live {
            store,
            alloc,
            process,
        }),
        // Checked at deploy, so only a broken module cache could get here.
        _ => Err(Box::new((
            FunctionError::AbiMismatch("exports changed after deploy".into()),
            store.into_data(),
        ))),
    }
}

/// Names what stopped a call.
fn classify(error: &wasmtime::Error, host: &HostState) -> FunctionError {
    if let Some(requested_bytes) = host.limiter.refused_bytes {
        return FunctionError::MemoryLimitExceeded {
            requested_bytes,
            limit_bytes: host.limiter.limit_bytes,
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => FunctionError::CpuBudgetExceeded {
            fuel: host.fuel_per_message,
        },
        Some(trap) => FunctionError::Trap(trap.to_string()),
        None => FunctionError::Trap(format!("{error:#}")),
    }
}

/// Copies the batch into the guest and runs it.
fn call(live: &mut Live, batch: &[u8]) -> wasmtime::Result<i32> {
    let len = i32::try_from(batch.len())
        .map_err(|_| wasmtime::Error::msg("a batch of more than 2 GiB"))?;
    let ptr = live.alloc.call(&mut live.store, len)?;
    let memory = live
        .store
        .data()
        .memory
        .ok_or_else(|| wasmtime::Error::msg("no memory"))?;
    let offset = usize::try_from(ptr).map_err(|_| wasmtime::Error::msg("negative pointer"))?;
    memory
        .write(&mut live.store, offset, batch)
        .map_err(|_| wasmtime::Error::msg("magnetar_alloc returned a buffer outside memory"))?;
    live.process.call(&mut live.store, (ptr, len))
}

impl WasmInstance {
    pub(super) fn start(
        engine: &Engine,
        module: Arc<FunctionModule>,
        settings: InstanceSettings,
        state: FunctionState,
    ) -> Result<Self> {
        let host = HostState::new(
            Arc::from(settings.name.as_str()),
            settings.limits.memory_bytes,
            settings.limits.fuel_per_message,
            settings.limits.max_outputs_per_message,
            Some(state),
            Arc::new(settings.user_config),
        );
        let live = build_live(engine, &module, host).map_err(|failed| failed.0)?;
        Ok(WasmInstance {
            engine: engine.clone(),
            module,
            live: Some(live),
            parked: None,
            metrics: InstanceMetrics::default(),
            batch: Vec::new(),
        })
    }

    fn host(&self) -> Option<&HostState> {
        match &self.live {
            Some(live) => Some(live.store.data()),
            None => self.parked.as_ref(),
        }
    }

    fn host_mut(&mut self) -> Option<&mut HostState> {
        match &mut self.live {
            Some(live) => Some(live.store.data_mut()),
            None => self.parked.as_mut(),
        }
    }

    /// The live instance, instantiating a fresh one after a trap.
    fn ensure_live(&mut self) -> Result<&mut Live> {
        if self.live.is_none() {
            let host = self
                .parked
                .take()
                .ok_or_else(|| FunctionError::Runtime("the instance lost its state".into()))?;
            match build_live(&self.engine, &self.module, host) {
                Ok(live) => self.live = Some(live),
                Err(failed) => {
                    let (error, host) = *failed;
                    self.parked = Some(host);
                    return Err(error);
                }
            }
        }
        self.live
            .as_mut()
            .ok_or_else(|| FunctionError::Runtime("no live instance".into()))
    }

    /// Drops the trapped instance, keeping its host side for the next one.
    fn discard_live(&mut self) {
        if let Some(live) = self.live.take() {
            let mut host = live.store.into_data();
            host.memory = None;
            self.parked = Some(host);
            self.metrics.restarts += 1;
        }
    }

    /// This instance's state (to snapshot, restore or query it).
    pub fn state_mut(&mut self) -> Option<&mut FunctionState> {
        self.host_mut().and_then(|host| host.state.as_mut())
    }

    /// The user metrics the function recorded, by name.
    pub fn user_metric(&self, name: &str) -> Option<f64> {
        self.host()
            .and_then(|host| host.user_metrics.get(name).copied())
    }

    /// The module this instance runs.
    pub fn module(&self) -> &Arc<FunctionModule> {
        &self.module
    }
}

impl FunctionInstance for WasmInstance {
    fn process_batch(&mut self, messages: &[Message]) -> Result<BatchOutcome> {
        let started = Instant::now();
        let mut trapped: Vec<MessageFailure> = Vec::new();
        if let Some(host) = self.host_mut() {
            host.outputs.clear();
            host.failures.clear();
        }
        let mut start = 0;
        while start < messages.len() {
            self.batch.clear();
            encode_batch(&messages[start..], &mut self.batch);
            let batch = std::mem::take(&mut self.batch);
            let (result, current) = {
                let live = self.ensure_live()?;
                let budget = live.store.data().fuel_per_message;
                live.store.data_mut().start_call(start);
                let result = live
                    .store
                    .set_fuel(budget)
                    .and_then(|()| call(live, &batch));
                let remaining = live.store.get_fuel().unwrap_or(0);
                let memory = live.store.data().memory;
                let size = memory.map_or(0, |memory| memory.data_size(&live.store));
                let host = live.store.data_mut();
                host.fuel_used += budget.saturating_sub(remaining);
                host.limiter.peak_bytes = host.limiter.peak_bytes.max(size);
                (result, host.current)
            };
            self.batch = batch;
            match result {
                Ok(0) => break,
                Ok(code) => {
                    trapped.push(MessageFailure {
                        index: current,
                        error: FunctionError::Failed(format!("magnetar_process returned {code}")),
                    });
                    break;
                }
                Err(error) => {
                    let host = self.host().ok_or_else(|| {
                        FunctionError::Runtime("the instance lost its state".into())
                    })?;
                    let failure = classify(&error, host);
                    tracing::warn!(
                        function = %host.function_name,
                        index = current,
                        error = %failure,
                        "function instance stopped; starting a fresh one"
                    );
                    trapped.push(MessageFailure {
                        index: current,
                        error: failure,
                    });
                    self.discard_live();
                    start = current + 1;
                }
            }
        }
        let host = self
            .host_mut()
            .ok_or_else(|| FunctionError::Runtime("the instance lost its state".into()))?;
        let mut failures = trapped;
        failures.extend(host.failures.drain(..).map(|(index, text)| MessageFailure {
            index,
            error: FunctionError::Failed(text),
        }));
        failures.sort_by_key(|failure| failure.index);
        // A failed message emits nothing: its partial outputs are dropped.
        let outputs = host
            .outputs
            .drain(..)
            .filter(|(index, _)| {
                failures
                    .binary_search_by_key(index, |failure| failure.index)
                    .is_err()
            })
            .map(|(_, output)| output)
            .collect::<Vec<_>>();
        self.metrics.messages_in += messages.len() as u64;
        self.metrics.messages_out += outputs.len() as u64;
        self.metrics.messages_failed += failures.len() as u64;
        self.metrics.wall_time_ns += started.elapsed().as_nanos() as u64;
        Ok(BatchOutcome { outputs, failures })
    }

    fn flush(&mut self) -> Result<()> {
        match self.state_mut() {
            Some(state) => state.flush(),
            None => Ok(()),
        }
    }

    fn metrics(&self) -> InstanceMetrics {
        let mut metrics = self.metrics;
        if let Some(host) = self.host() {
            metrics.fuel_used = host.fuel_used;
            metrics.peak_memory_bytes = host.limiter.peak_bytes as u64;
        }
        metrics
    }
}
