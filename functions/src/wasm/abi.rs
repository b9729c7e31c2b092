//! The host side of the function ABI (documented in the SDK crate): the batch encoding and
//! the host functions a module imports from `magnetar`.

use std::collections::HashMap;
use std::sync::Arc;

use magnetar_sketches::{Answer, Item, Params};
use wasmtime::{Caller, Linker, Memory, ResourceLimiter};

use crate::error::FunctionError;
use crate::message::{Message, Output};
use crate::state::FunctionState;

/// The ABI version this host implements.
pub const ABI_VERSION: i32 = 1;

/// The module every host function is imported from.
pub const IMPORT_MODULE: &str = "magnetar";

// Stable codes returned to the guest (the SDK's `HostError`).
const ABSENT: i64 = -1;
const INVALID_ARGUMENT: i64 = -2;
const STATE_ERROR: i64 = -3;
const SKETCH_ERROR: i64 = -4;
const LIMIT: i64 = -5;

/// The longest failure text kept per message; the rest is cut.
const MAX_FAILURE_TEXT: usize = 1024;
/// Log lines accepted per batch; more are counted and dropped so a chatty function cannot
/// flood the worker's log.
const MAX_LOG_LINES_PER_BATCH: u32 = 100;
/// User metrics one instance may name.
const MAX_USER_METRICS: usize = 1000;

/// Appends the batch encoding of `messages` to `out`.
pub fn encode_batch(messages: &[Message], out: &mut Vec<u8>) {
    fn bytes(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out.extend_from_slice(&(messages.len() as u32).to_le_bytes());
    for message in messages {
        bytes(out, message.topic.as_bytes());
        match &message.key {
            None => out.extend_from_slice(&(-1i32).to_le_bytes()),
            Some(key) => bytes(out, key),
        }
        bytes(out, &message.payload);
        out.extend_from_slice(&message.event_time_ms.to_le_bytes());
        out.extend_from_slice(&message.id.ledger_id.to_le_bytes());
        out.extend_from_slice(&message.id.entry_id.to_le_bytes());
        out.extend_from_slice(&message.id.batch_index.to_le_bytes());
        out.extend_from_slice(&message.id.partition.to_le_bytes());
        out.extend_from_slice(&(message.properties.len() as u32).to_le_bytes());
        for (name, value) in &message.properties {
            bytes(out, name.as_bytes());
            bytes(out, value.as_bytes());
        }
    }
}

/// The memory limit of one instance, with the peak it reached.
pub(crate) struct MemoryLimiter {
    pub limit_bytes: usize,
    pub peak_bytes: usize,
    /// The size of the last growth refused, to name it in the error.
    pub refused_bytes: Option<usize>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit_bytes {
            self.refused_bytes = Some(desired);
            // An error (not `false`) traps at once: a guest allocator would otherwise see a
            // failed grow and abort with a less useful message, or keep retrying.
            return Err(wasmtime::Error::msg(format!(
                "memory limit of {} bytes exceeded (wanted {desired})",
                self.limit_bytes
            )));
        }
        self.peak_bytes = self.peak_bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; 64 Ki entries is far beyond any real function.
        Ok(desired <= 65_536)
    }
}

/// Everything a host call can reach: the data of one instance's store.
pub(crate) struct HostState {
    pub function_name: Arc<str>,
    pub memory: Option<Memory>,
    pub limiter: MemoryLimiter,
    pub state: Option<FunctionState>,
    pub config: Arc<HashMap<String, String>>,
    /// Fuel given to each message.
    pub fuel_per_message: u64,
    /// Fuel consumed, summed at every `begin` and at the end of each call.
    pub fuel_used: u64,
    /// Outputs of the batch so far, with the batch index of the message that emitted them.
    pub outputs: Vec<(usize, Output)>,
    pub max_outputs_per_message: usize,
    outputs_of_current: usize,
    /// The batch index of the first message of the current call.
    pub batch_offset: usize,
    /// The batch index of the message being processed.
    pub current: usize,
    /// Failures the guest reported with `fail`.
    pub failures: Vec<(usize, String)>,
    /// The pending result for `result_read`.
    result: Vec<u8>,
    log_lines: u32,
    pub logs_dropped: u64,
    pub user_metrics: HashMap<String, f64>,
}

impl HostState {
    pub fn new(
        function_name: Arc<str>,
        memory_limit_bytes: usize,
        fuel_per_message: u64,
        max_outputs_per_message: usize,
        state: Option<FunctionState>,
        config: Arc<HashMap<String, String>>,
    ) -> Self {
        HostState {
            function_name,
            memory: None,
            limiter: MemoryLimiter {
                limit_bytes: memory_limit_bytes,
                peak_bytes: 0,
                refused_bytes: None,
            },
            state,
            config,
            fuel_per_message,
            fuel_used: 0,
            outputs: Vec::new(),
            max_outputs_per_message,
            outputs_of_current: 0,
            batch_offset: 0,
            current: 0,
            failures: Vec::new(),
            result: Vec::new(),
            log_lines: 0,
            logs_dropped: 0,
            user_metrics: HashMap::new(),
        }
    }

    /// Resets what is per call before a call starts at batch index `offset`.
    pub fn start_call(&mut self, offset: usize) {
        self.batch_offset = offset;
        self.current = offset;
        self.outputs_of_current = 0;
        self.log_lines = 0;
        self.limiter.refused_bytes = None;
    }

    fn set_result(&mut self, bytes: Vec<u8>) -> i64 {
        let len = bytes.len() as i64;
        self.result = bytes;
        len
    }
}

fn out_of_bounds() -> wasmtime::Error {
    wasmtime::Error::msg("a host call was given a pointer outside the function's memory")
}

/// The guest bytes at `ptr..ptr + len`; a bad range traps the guest (it is a guest bug).
fn guest_slice(memory: &[u8], ptr: i32, len: i32) -> wasmtime::Result<&[u8]> {
    let start = usize::try_from(ptr).map_err(|_| out_of_bounds())?;
    let len = usize::try_from(len).map_err(|_| out_of_bounds())?;
    let end = start.checked_add(len).ok_or_else(out_of_bounds)?;
    memory.get(start..end).ok_or_else(out_of_bounds)
}

fn guest_text(memory: &[u8], ptr: i32, len: i32) -> wasmtime::Result<Option<&str>> {
    Ok(std::str::from_utf8(guest_slice(memory, ptr, len)?).ok())
}

fn memory_of(caller: &Caller<'_, HostState>) -> wasmtime::Result<Memory> {
    caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::Error::msg("the function exports no memory"))
}

/// Reads the properties encoding of `publish`: `u32 count`, then `u32 len, name, u32 len,
/// value` pairs.
fn decode_properties(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let mut position = 0usize;
    let mut take = |len: usize| -> Option<&[u8]> {
        let end = position.checked_add(len)?;
        let slice = bytes.get(position..end)?;
        position = end;
        Some(slice)
    };
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let mut properties = Vec::with_capacity((count as usize).min(64));
    for _ in 0..count {
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let name = String::from_utf8(take(len)?.to_vec()).ok()?;
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let value = String::from_utf8(take(len)?.to_vec()).ok()?;
        properties.push((name, value));
    }
    Some(properties)
}

/// The answer of a sketch query as JSON text (what `sketch_query` hands the guest).
pub fn answer_json(answer: &Answer) -> String {
    use serde_json::{json, Value};
    let value: Value = match answer {
        Answer::Number(number) => json!(number),
        Answer::Estimate {
            estimate,
            lower,
            upper,
        } => json!({ "estimate": estimate, "lower": lower, "upper": upper }),
        Answer::Numbers(numbers) => json!(numbers),
        Answer::Rows(rows) => Value::Array(
            rows.iter()
                .map(|row| {
                    json!({
                        "item": row.item,
                        "estimate": row.estimate,
                        "lower_bound": row.lower_bound,
                        "upper_bound": row.upper_bound,
                    })
                })
                .collect(),
        ),
        Answer::Flag(flag) => json!(flag),
        Answer::Items(items) => json!(items),
    };
    value.to_string()
}

/// Records a state failure in the worker's log and turns it into the guest's code.
fn state_failure(host: &HostState, error: FunctionError) -> i64 {
    tracing::warn!(function = %host.function_name, %error, "state call failed");
    match error {
        FunctionError::Sketch(_) => SKETCH_ERROR,
        _ => STATE_ERROR,
    }
}

/// Registers every host function of the ABI.
pub(crate) fn add_host_functions(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        IMPORT_MODULE,
        "begin",
        |mut caller: Caller<'_, HostState>, index: i32| -> wasmtime::Result<()> {
            // Each message gets the whole per-message budget: a loop in one message cannot
            // eat the budget of those after it.
            let remaining = caller.get_fuel()?;
            let budget = caller.data().fuel_per_message;
            let host = caller.data_mut();
            host.fuel_used += budget.saturating_sub(remaining);
            host.current = host.batch_offset + usize::try_from(index).unwrap_or(0);
            host.outputs_of_current = 0;
            caller.set_fuel(budget)?;
            Ok(())
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "fail",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let memory = memory_of(&caller)?;
            let (data, host) = memory.data_and_store_mut(&mut caller);
            let bytes = guest_slice(data, ptr, len)?;
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_FAILURE_TEXT)]);
            host.failures.push((host.current, text.into_owned()));
            Ok(())
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "publish",
        |mut caller: Caller<'_, HostState>,
         topic_ptr: i32,
         topic_len: i32,
         key_ptr: i32,
         key_len: i32,
         payload_ptr: i32,
         payload_len: i32,
         props_ptr: i32,
         props_len: i32|
         -> wasmtime::Result<i32> {
            let memory = memory_of(&caller)?;
            let (data, host) = memory.data_and_store_mut(&mut caller);
            if host.outputs_of_current >= host.max_outputs_per_message {
                return Ok(LIMIT as i32);
            }
            let Some(topic) = guest_text(data, topic_ptr, topic_len)? else {
                return Ok(INVALID_ARGUMENT as i32);
            };
            let key = if key_len == -1 {
                None
            } else {
                Some(guest_slice(data, key_ptr, key_len)?.to_vec())
            };
            let payload = guest_slice(data, payload_ptr, payload_len)?.to_vec();
            let Some(properties) = decode_properties(guest_slice(data, props_ptr, props_len)?)
            else {
                return Ok(INVALID_ARGUMENT as i32);
            };
            let output = Output {
                topic: (!topic.is_empty()).then(|| topic.to_owned()),
                key,
                payload,
                properties,
            };
            host.outputs.push((host.current, output));
            host.outputs_of_current += 1;
            Ok(0)
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "state_get",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<i64> {
            let memory = memory_of(&caller)?;
            let (data, host) = memory.data_and_store_mut(&mut caller);
            let key = guest_slice(data, ptr, len)?;
            let Some(state) = host.state.as_ref() else {
                return Ok(STATE_ERROR);
            };
            Ok(match state.get(key) {
                Ok(None) => ABSENT,
                Ok(Some(value)) => host.set_result(value),
                Err(error) => state_failure(host, error),
            })
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "state_put",
        |mut caller: Caller<'_, HostState>,
         key_ptr: i32,
         key_len: i32,
         value_ptr: i32,
         value_len: i32|
         -> wasmtime::Result<i32> {
            let memory = memory_of(&caller)?;
            let (data, host) = memory.data_and_store_mut(&mut caller);
            let key = guest_slice(data, key_ptr, key_len)?;
            let value = guest_slice(data, value_ptr, value_len)?;
            let Some(state) = host.state.as_ref() else {
                return Ok(STATE_ERROR as i32);
            };
            Ok(match state.put(key, value) {
                Ok(()) => 0,
                Err(error) => state_failure(host, error) as i32,
            })
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "state_delete",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let memory = memory_of(&caller)?;
            let (data, host) = memory.data_and_store_mut(&mut caller);
            let key = guest_slice(data, ptr, len)?;
            let Some(state) = host.state.as_ref() else {
                return Ok(STATE_ERROR as i32);
            };
            Ok(match state.delete(key) {
                Ok(()) => 0,
                Err(error) => state_failure(host, error) as i32,
            })
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "state_list",
        |mut caller: Caller<'_, HostState>,
         ptr: i32,
         len: i32,
         limit: i32|
         -> wasmtime::Result<i64> {
            let memory = memory_of(&caller)?;
            let (data, host) = memory.data_and_store_mut(&mut caller);
            let prefix = guest_slice(data, ptr, len)?;
            let Some(state) = host.state.as_ref() else {
                return Ok(STATE_ERROR);
            };
            let limit = usize::try_from(limit).unwrap_or(0);
            Ok(match state.list(prefix, limit) {
                Ok(pairs) => {
                    let mut bytes = (pairs.len() as u32).to_le_bytes().to_vec();
                    for (key, value) in pairs {
                        bytes.extend_from_slice(&(key.len() as u32).to_le_bytes());
                        bytes.extend_from_slice(&key);
                        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
                        bytes.extend_from_slice(&value);
                    }
                    host.set_result(bytes)
                }
                Err(error) => state_failure(host, error),
            })
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "result_read",
        |mut caller: Caller<'_, HostState>, ptr: i32| -> wasmtime::Result<()> {
            let memory = memory_of(&caller)?;
            let (data, host) = memory.data_and_store_mut(&mut caller);
            let start = usize::try_from(ptr).map_err(|_| out_of_bounds())?;
            let end = start
                .checked_add(host.result.len())
                .ok_or_else(out_of_bounds)?;
            data.get_mut(start..end)
                .ok_or_else(out_of_bounds)?
                .copy_from_slice(&host.result);
            host.result.clear();
            Ok(())
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "counter_incr",
        |mut caller: Caller<'_, HostState>,
         ptr: i32,
         len: i32,
         delta: i64|
         -> wasmtime::Result<i64> {
            let memory = memory_of(&caller)?;
            let (data, host) = memory.data_and_store_mut(&mut caller);
            let name = guest_slice(data, ptr, len)?;
            let Some(state) = host.state.as_mut() else {
                return Ok(STATE_ERROR);
            };
            match state.counter_incr(name, delta) {
                Ok(value) => Ok(value),
                // A counter's value can be any i64, so a failure cannot travel as a code:
                // it traps the message instead.
                Err(error) => Err(wasmtime::Error::msg(error.to_string())),
            }
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "counter_get",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<i64> {
            let memory = memory_of(&caller)?;
            let (data, host) = memory.data_and_store_mut(&mut caller);
            let name = guest_slice(data, ptr, len)?;
            let Some(state) = host.state.as_mut() else {
                return Ok(0);
            };
            state
                .counter_get(name)
                .map_err(|error| wasmtime::Error::msg(error.to_string()))
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "sketch_update",
        |mut caller: Caller<'_, HostState>,
         name_ptr: i32,
         name_len: i32,
         spec_ptr: i32,
         spec_len: i32,
         item_ptr: i32,
         item_len: i32,
         event_time_ms: i64|
         -> wasmtime::Result<i32> {
            let memory = memory_of(&caller)?;
            let (data, host) = memory.data_and_store_mut(&mut caller);
            let (Some(name), Some(spec)) = (
                guest_text(data, name_ptr, name_len)?,
                guest_text(data, spec_ptr, spec_len)?,
            ) else {
                return Ok(INVALID_ARGUMENT as i32);
            };
            let item_bytes = guest_slice(data, item_ptr, item_len)?;
            // Text hashes like its bytes in every kind, so this only matters for readability
            // of sampled items; text stays text.
            let item = match std::str::from_utf8(item_bytes) {
                Ok(text) => Item::Str(text),
                Err(_) => Item::Bytes(item_bytes),
            };
            let Some(state) = host.state.as_mut() else {
                return Ok(STATE_ERROR as i32);
            };
            let result = state.sketch_update(name, spec, event_time_ms, item);
            Ok(match result {
                Ok(()) => 0,
                Err(error) => state_failure(host, error) as i32,
            })
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "sketch_query",
        |mut caller: Caller<'_, HostState>,
         name_ptr: i32,
         name_len: i32,
         query_ptr: i32,
         query_len: i32,
         args_ptr: i32,
         args_len: i32|
         -> wasmtime::Result<i64> {
            let memory = memory_of(&caller)?;
            let (data, host) = memory.data_and_store_mut(&mut caller);
            let (Some(name), Some(query), Some(args)) = (
                guest_text(data, name_ptr, name_len)?,
                guest_text(data, query_ptr, query_len)?,
                guest_text(data, args_ptr, args_len)?,
            ) else {
                return Ok(INVALID_ARGUMENT);
            };
            let Ok(args) = Params::parse(args) else {
                return Ok(INVALID_ARGUMENT);
            };
            let Some(state) = host.state.as_mut() else {
                return Ok(STATE_ERROR);
            };
            let result = state.sketch_query(name, query, &args);
            Ok(match result {
                Ok(None) => ABSENT,
                Ok(Some(answer)) => host.set_result(answer_json(&answer).into_bytes()),
                Err(error) => state_failure(host, error),
            })
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "config_get",
        |mut caller: Caller<'_, HostState>, ptr: i32, len: i32| -> wasmtime::Result<i64> {
            let memory = memory_of(&caller)?;
            let (data, host) = memory.data_and_store_mut(&mut caller);
            let Some(name) = guest_text(data, ptr, len)? else {
                return Ok(INVALID_ARGUMENT);
            };
            let value = host.config.get(name).map(|value| value.as_bytes().to_vec());
            Ok(match value {
                None => ABSENT,
                Some(value) => host.set_result(value),
            })
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "log",
        |mut caller: Caller<'_, HostState>,
         level: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<()> {
            let memory = memory_of(&caller)?;
            let (data, host) = memory.data_and_store_mut(&mut caller);
            if host.log_lines >= MAX_LOG_LINES_PER_BATCH {
                host.logs_dropped += 1;
                return Ok(());
            }
            host.log_lines += 1;
            let text = String::from_utf8_lossy(guest_slice(data, ptr, len)?);
            let function = &*host.function_name;
            match level {
                0 => tracing::error!(function, "{text}"),
                1 => tracing::warn!(function, "{text}"),
                2 => tracing::info!(function, "{text}"),
                _ => tracing::debug!(function, "{text}"),
            }
            Ok(())
        },
    )?;
    linker.func_wrap(
        IMPORT_MODULE,
        "metric",
        |mut caller: Caller<'_, HostState>,
         ptr: i32,
         len: i32,
         value: f64|
         -> wasmtime::Result<()> {
            let memory = memory_of(&caller)?;
            let (data, host) = memory.data_and_store_mut(&mut caller);
            let Some(name) = guest_text(data, ptr, len)? else {
                return Ok(());
            };
            // Updating a known metric allocates nothing; new names stop at the bound.
            if let Some(slot) = host.user_metrics.get_mut(name) {
                *slot = value;
            } else if host.user_metrics.len() < MAX_USER_METRICS {
                host.user_metrics.insert(name.to_owned(), value);
            }
            Ok(())
        },
    )?;
    Ok(())
}
