//! Write Magnetar stream functions in Rust and run them, sandboxed, in a Magnetar worker.
//!
//! A function is a type implementing [`Function`] (plus `Default`, which builds it when an
//! instance starts); [`export_function!`] exports it. Build the crate as a `cdylib` for
//! `wasm32-unknown-unknown`:
//!
//! ```ignore
//! use magnetar_function_sdk::{export_function, Context, Function, Message};
//!
//! #[derive(Default)]
//! struct Shout;
//!
//! impl Function for Shout {
//!     fn process(&mut self, ctx: &mut Context, msg: &Message<'_>) -> Result<(), String> {
//!         ctx.output(msg.key, &msg.payload.to_ascii_uppercase())
//!             .map_err(|error| error.to_string())
//!     }
//! }
//!
//! export_function!(Shout);
//! ```
//!
//! The instance keeps `self` between messages, but that memory is lost when the instance is
//! restarted (after a trap, or on another worker): anything that must last goes through the
//! host state (`state_*`, counters, sketches), which the worker stores and checkpoints.
//!
//! # The host ABI, version 1
//!
//! Any language that compiles to WebAssembly can target it; this crate is one implementation.
//! All integers are little-endian; pointers and lengths are `i32` offsets into the guest's
//! exported `memory`.
//!
//! ## What the module exports
//! | export | signature | meaning |
//! |---|---|---|
//! | `memory` | memory | the guest's linear memory |
//! | `magnetar_abi_version` | `() -> i32` | must return `1` |
//! | `magnetar_alloc` | `(len: i32) -> i32` | a buffer of `len` bytes the host writes the next batch into |
//! | `magnetar_process` | `(ptr: i32, len: i32) -> i32` | process the batch at `ptr`; `0` when it ran to the end |
//!
//! The worker checks these at deploy time and refuses a module that lacks one of them.
//!
//! ## The batch
//! ```text
//! u32 message_count
//! message_count times:
//!   u32 topic_len,   topic (UTF-8)
//!   i32 key_len,     key            (key_len = -1: the message has no key)
//!   u32 payload_len, payload
//!   i64 event_time_ms
//!   u64 ledger_id, u64 entry_id, i32 batch_index, i32 partition   (the message id)
//!   u32 property_count, property_count times: u32 len, name, u32 len, value (UTF-8)
//! ```
//! Before processing message `i` of the batch the guest calls `begin(i)`, so that a trap, an
//! exhausted CPU budget or a `fail` is recorded against the right message.
//!
//! ## What the host imports (module `magnetar`)
//! | import | signature | meaning |
//! |---|---|---|
//! | `begin` | `(index: i32)` | message `index` of the batch starts |
//! | `fail` | `(ptr, len)` | the current message failed with this text; the batch goes on |
//! | `publish` | `(topic_ptr, topic_len, key_ptr, key_len, payload_ptr, payload_len, props_ptr, props_len) -> i32` | emit a message; `topic_len = 0`: the default output topic; `key_len = -1`: no key; properties as `u32 count` then pairs as in the batch (`props_len = 0`: none) |
//! | `state_get` | `(key_ptr, key_len) -> i64` | `-1` absent, else the value's length, to fetch with `result_read` |
//! | `state_put` | `(key_ptr, key_len, value_ptr, value_len) -> i32` | store bytes under a key |
//! | `state_delete` | `(key_ptr, key_len) -> i32` | remove a key |
//! | `state_list` | `(prefix_ptr, prefix_len, limit: i32) -> i64` | keys starting with the prefix, in order, at most `limit`; the result is `u32 count` then `u32 len, key, u32 len, value` |
//! | `counter_incr` | `(name_ptr, name_len, delta: i64) -> i64` | add to a 64-bit counter; returns the new value |
//! | `counter_get` | `(name_ptr, name_len) -> i64` | a counter's value (0 if never set) |
//! | `sketch_update` | `(name_ptr, name_len, spec_ptr, spec_len, item_ptr, item_len, event_time_ms: i64) -> i32` | add an item (UTF-8 text counts as text, other bytes as bytes) to a named sketch, created on first use from `spec`: a kind name, optionally `:` and `name=value;...` parameters (`count_min:width=2048;depth=4`, `window:inner=hll;bucket_width_ms=1000`) |
//! | `sketch_query` | `(name_ptr, name_len, query_ptr, query_len, args_ptr, args_len) -> i64` | query a named sketch (arguments as `name=value;...`); the result is the answer as JSON text |
//! | `config_get` | `(name_ptr, name_len) -> i64` | `-1` absent, else the length of the user-config value (text) |
//! | `result_read` | `(ptr: i32)` | copy the pending result of the last call that returned a length |
//! | `log` | `(level: i32, ptr, len)` | a log line; level 0 error, 1 warn, 2 info, 3 debug |
//! | `metric` | `(name_ptr, name_len, value: f64)` | record a user metric (last value wins) |
//!
//! Calls returning `i32`/`i64` report failures as negative codes (see [`HostError`]), except
//! the counters, whose values may be negative: a state failure there traps the message. A
//! pointer outside the guest's memory traps the instance.
//!
//! ## Limits
//! Each function runs with a memory ceiling (growing past it traps) and a CPU budget in fuel
//! per message (running out traps). A trap fails the message being processed, the worker
//! starts a fresh instance, and the rest of the batch goes on; messages output by the failed
//! message are dropped, state it wrote before the trap stays.

use std::cell::RefCell;
use std::fmt;

/// The ABI version this crate implements.
pub const ABI_VERSION: i32 = 1;

/// A failure reported by the host, by its stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError(pub i64);

impl HostError {
    /// An argument was malformed (not UTF-8, a bad spec or query).
    pub const INVALID_ARGUMENT: HostError = HostError(-2);
    /// The state store failed.
    pub const STATE: HostError = HostError(-3);
    /// The sketch refused the update or query.
    pub const SKETCH: HostError = HostError(-4);
    /// A per-batch bound was reached (outputs, log lines).
    pub const LIMIT: HostError = HostError(-5);
}

impl fmt::Display for HostError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match *self {
            HostError::INVALID_ARGUMENT => "invalid argument",
            HostError::STATE => "state store error",
            HostError::SKETCH => "sketch error",
            HostError::LIMIT => "limit reached",
            _ => "host error",
        };
        write!(formatter, "{what} (code {})", self.0)
    }
}

impl std::error::Error for HostError {}

/// Log levels of [`Context::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error = 0,
    Warn = 1,
    Info = 2,
    Debug = 3,
}

/// Where a message sits in its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MessageId {
    pub ledger_id: u64,
    pub entry_id: u64,
    pub batch_index: i32,
    pub partition: i32,
}

/// One input message, borrowed from the batch.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub event_time_ms: i64,
    pub id: MessageId,
    pub properties: Properties<'a>,
}

/// The properties of a message, read in place.
#[derive(Debug, Clone, Copy)]
pub struct Properties<'a> {
    count: u32,
    bytes: &'a [u8],
}

impl<'a> Properties<'a> {
    /// How many properties there are.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Every `(name, value)` pair in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let mut reader = Reader {
            bytes: self.bytes,
            position: 0,
        };
        (0..self.count).map_while(move |_| Some((reader.text()?, reader.text()?)))
    }

    /// The value of property `name`.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.iter()
            .find(|(candidate, _)| *candidate == name)
            .map(|(_, value)| value)
    }
}

/// Bounds-checked little-endian reads of the batch.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.position.checked_add(len)?;
        let slice = self.bytes.get(self.position..end)?;
        self.position = end;
        Some(slice)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn text(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    fn message(&mut self) -> Option<Message<'a>> {
        let topic = self.text()?;
        let key = match self.i32()? {
            -1 => None,
            len => Some(self.take(usize::try_from(len).ok()?)?),
        };
        let payload = self.bytes()?;
        let event_time_ms = self.i64()?;
        let id = MessageId {
            ledger_id: self.u64()?,
            entry_id: self.u64()?,
            batch_index: self.i32()?,
            partition: self.i32()?,
        };
        let count = self.u32()?;
        let start = self.position;
        for _ in 0..count {
            self.bytes()?;
            self.bytes()?;
        }
        let properties = Properties {
            count,
            bytes: &self.bytes[start..self.position],
        };
        Some(Message {
            topic,
            key,
            payload,
            event_time_ms,
            id,
            properties,
        })
    }
}

/// A user function: called once per message, in order.
pub trait Function: Default {
    /// Handles one message. An `Err` is recorded against this message by the worker; the
    /// batch goes on with the next message.
    fn process(&mut self, ctx: &mut Context, msg: &Message<'_>) -> Result<(), String>;
}

/// What a function can do besides reading its message: publish, state, counters, sketches,
/// config, logs and metrics, all served by the host.
pub struct Context {
    _private: (),
}

fn check(code: i32) -> Result<(), HostError> {
    if code < 0 {
        Err(HostError(i64::from(code)))
    } else {
        Ok(())
    }
}

fn encode_properties(properties: &[(&str, &str)]) -> Vec<u8> {
    if properties.is_empty() {
        return Vec::new();
    }
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&(properties.len() as u32).to_le_bytes());
    for (name, value) in properties {
        bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
        bytes.extend_from_slice(value.as_bytes());
    }
    bytes
}

/// Fetches a result whose length a host call returned.
fn read_result(len: i64) -> Result<Option<Vec<u8>>, HostError> {
    match len {
        -1 => Ok(None),
        len if len < 0 => Err(HostError(len)),
        len => {
            let mut buffer = vec![0u8; len as usize];
            // SAFETY: the buffer is `len` bytes long, the length the host just reported.
            unsafe { sys::result_read(buffer.as_mut_ptr() as i32) };
            Ok(Some(buffer))
        }
    }
}

fn read_text(len: i64) -> Result<Option<String>, HostError> {
    read_result(len)?
        .map(|bytes| String::from_utf8(bytes).map_err(|_| HostError::INVALID_ARGUMENT))
        .transpose()
}

fn parts(bytes: &[u8]) -> (i32, i32) {
    (bytes.as_ptr() as i32, bytes.len() as i32)
}

impl Context {
    /// Emits a message to the function's default output topic.
    pub fn output(&mut self, key: Option<&[u8]>, payload: &[u8]) -> Result<(), HostError> {
        self.publish_to("", key, payload, &[])
    }

    /// Emits a message with properties to the default output topic.
    pub fn output_with(
        &mut self,
        key: Option<&[u8]>,
        payload: &[u8],
        properties: &[(&str, &str)],
    ) -> Result<(), HostError> {
        self.publish_to("", key, payload, properties)
    }

    /// Emits a message to `topic` (the empty name means the default output topic).
    pub fn publish_to(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        properties: &[(&str, &str)],
    ) -> Result<(), HostError> {
        let properties = encode_properties(properties);
        let (topic_ptr, topic_len) = parts(topic.as_bytes());
        let (key_ptr, key_len) = key.map_or((0, -1), parts);
        let (payload_ptr, payload_len) = parts(payload);
        let (props_ptr, props_len) = parts(&properties);
        // SAFETY: every pointer and length describes a live slice of this memory.
        check(unsafe {
            sys::publish(
                topic_ptr,
                topic_len,
                key_ptr,
                key_len,
                payload_ptr,
                payload_len,
                props_ptr,
                props_len,
            )
        })
    }

    /// The value stored under `key`.
    pub fn state_get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, HostError> {
        let (ptr, len) = parts(key);
        read_result(unsafe { sys::state_get(ptr, len) })
    }

    /// Stores `value` under `key`.
    pub fn state_put(&mut self, key: &[u8], value: &[u8]) -> Result<(), HostError> {
        let (key_ptr, key_len) = parts(key);
        let (value_ptr, value_len) = parts(value);
        check(unsafe { sys::state_put(key_ptr, key_len, value_ptr, value_len) })
    }

    /// Removes `key`.
    pub fn state_delete(&mut self, key: &[u8]) -> Result<(), HostError> {
        let (ptr, len) = parts(key);
        check(unsafe { sys::state_delete(ptr, len) })
    }

    /// Up to `limit` `(key, value)` pairs whose key starts with `prefix`, in key order.
    #[allow(clippy::type_complexity)]
    pub fn state_list(
        &mut self,
        prefix: &[u8],
        limit: u32,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, HostError> {
        let (ptr, len) = parts(prefix);
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let bytes = read_result(unsafe { sys::state_list(ptr, len, limit) })?.unwrap_or_default();
        let mut reader = Reader {
            bytes: &bytes,
            position: 0,
        };
        let count = reader.u32().ok_or(HostError::STATE)?;
        (0..count)
            .map(|_| {
                let key = reader.bytes().ok_or(HostError::STATE)?.to_vec();
                let value = reader.bytes().ok_or(HostError::STATE)?.to_vec();
                Ok((key, value))
            })
            .collect()
    }

    /// Adds `delta` to counter `name`; returns the new value.
    pub fn counter_incr(&mut self, name: &str, delta: i64) -> Result<i64, HostError> {
        let (ptr, len) = parts(name.as_bytes());
        // A counter may be negative, so the host traps on failure instead of returning a code.
        Ok(unsafe { sys::counter_incr(ptr, len, delta) })
    }

    /// The value of counter `name` (0 if never set).
    pub fn counter_get(&mut self, name: &str) -> Result<i64, HostError> {
        let (ptr, len) = parts(name.as_bytes());
        Ok(unsafe { sys::counter_get(ptr, len) })
    }

    /// Adds `item` to sketch `name`, created from `spec` on first use (see the ABI above).
    pub fn sketch_update(
        &mut self,
        name: &str,
        spec: &str,
        item: &[u8],
        event_time_ms: i64,
    ) -> Result<(), HostError> {
        let (name_ptr, name_len) = parts(name.as_bytes());
        let (spec_ptr, spec_len) = parts(spec.as_bytes());
        let (item_ptr, item_len) = parts(item);
        check(unsafe {
            sys::sketch_update(
                name_ptr,
                name_len,
                spec_ptr,
                spec_len,
                item_ptr,
                item_len,
                event_time_ms,
            )
        })
    }

    /// Answers `query` on sketch `name` (arguments as `name=value;...`), as JSON text; `None`
    /// when no such sketch exists yet.
    pub fn sketch_query(
        &mut self,
        name: &str,
        query: &str,
        args: &str,
    ) -> Result<Option<String>, HostError> {
        let (name_ptr, name_len) = parts(name.as_bytes());
        let (query_ptr, query_len) = parts(query.as_bytes());
        let (args_ptr, args_len) = parts(args.as_bytes());
        read_text(unsafe {
            sys::sketch_query(name_ptr, name_len, query_ptr, query_len, args_ptr, args_len)
        })
    }

    /// A value of the function's user configuration.
    pub fn config(&mut self, name: &str) -> Option<String> {
        let (ptr, len) = parts(name.as_bytes());
        read_text(unsafe { sys::config_get(ptr, len) })
            .ok()
            .flatten()
    }

    /// Writes a log line through the worker's logger.
    pub fn log(&mut self, level: Level, text: &str) {
        let (ptr, len) = parts(text.as_bytes());
        unsafe { sys::log(level as i32, ptr, len) }
    }

    /// Records a user metric.
    pub fn metric(&mut self, name: &str, value: f64) {
        let (ptr, len) = parts(name.as_bytes());
        unsafe { sys::metric(ptr, len, value) }
    }
}

#[cfg(target_arch = "wasm32")]
mod sys {
    #[link(wasm_import_module = "magnetar")]
    extern "C" {
        pub fn begin(index: i32);
        pub fn fail(ptr: i32, len: i32);
        #[allow(clippy::too_many_arguments)]
        pub fn publish(
            topic_ptr: i32,
            topic_len: i32,
            key_ptr: i32,
            key_len: i32,
            payload_ptr: i32,
            payload_len: i32,
            props_ptr: i32,
            props_len: i32,
        ) -> i32;
        pub fn state_get(key_ptr: i32, key_len: i32) -> i64;
        pub fn state_put(key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32) -> i32;
        pub fn state_delete(key_ptr: i32, key_len: i32) -> i32;
        pub fn state_list(prefix_ptr: i32, prefix_len: i32, limit: i32) -> i64;
        pub fn counter_incr(name_ptr: i32, name_len: i32, delta: i64) -> i64;
        pub fn counter_get(name_ptr: i32, name_len: i32) -> i64;
        pub fn sketch_update(
            name_ptr: i32,
            name_len: i32,
            spec_ptr: i32,
            spec_len: i32,
            item_ptr: i32,
            item_len: i32,
            event_time_ms: i64,
        ) -> i32;
        pub fn sketch_query(
            name_ptr: i32,
            name_len: i32,
            query_ptr: i32,
            query_len: i32,
            args_ptr: i32,
            args_len: i32,
        ) -> i64;
        pub fn config_get(name_ptr: i32, name_len: i32) -> i64;
        pub fn result_read(ptr: i32);
        pub fn log(level: i32, ptr: i32, len: i32);
        pub fn metric(name_ptr: i32, name_len: i32, value: f64);
    }
}

/// Stand-ins so the crate compiles (and its docs build) on the host; a function only runs as
/// WebAssembly inside a worker.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::too_many_arguments, clippy::missing_safety_doc)]
mod sys {
    fn unavailable() -> ! {
        panic!("magnetar functions run only as WebAssembly inside a worker")
    }
    pub unsafe fn begin(_: i32) {
        unavailable()
    }
    pub unsafe fn fail(_: i32, _: i32) {
        unavailable()
    }
    pub unsafe fn publish(_: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32) -> i32 {
        unavailable()
    }
    pub unsafe fn state_get(_: i32, _: i32) -> i64 {
        unavailable()
    }
    pub unsafe fn state_put(_: i32, _: i32, _: i32, _: i32) -> i32 {
        unavailable()
    }
    pub unsafe fn state_delete(_: i32, _: i32) -> i32 {
        unavailable()
    }
    pub unsafe fn state_list(_: i32, _: i32, _: i32) -> i64 {
        unavailable()
    }
    pub unsafe fn counter_incr(_: i32, _: i32, _: i64) -> i64 {
        unavailable()
    }
    pub unsafe fn counter_get(_: i32, _: i32) -> i64 {
        unavailable()
    }
    pub unsafe fn sketch_update(_: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i64) -> i32 {
        unavailable()
    }
    pub unsafe fn sketch_query(_: i32, _: i32, _: i32, _: i32, _: i32, _: i32) -> i64 {
        unavailable()
    }
    pub unsafe fn config_get(_: i32, _: i32) -> i64 {
        unavailable()
    }
    pub unsafe fn result_read(_: i32) {
        unavailable()
    }
    pub unsafe fn log(_: i32, _: i32, _: i32) {
        unavailable()
    }
    pub unsafe fn metric(_: i32, _: i32, _: f64) {
        unavailable()
    }
}

/// What [`export_function!`] expands to; not a stable API.
#[doc(hidden)]
pub mod __private {
    use super::*;

    thread_local! {
        // The host writes each batch here; one buffer, grown as needed, reused by every batch.
        static BATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    pub fn alloc(len: i32) -> i32 {
        let len = usize::try_from(len).unwrap_or(0);
        BATCH.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            if buffer.len() < len {
                buffer.resize(len, 0);
            }
            buffer.as_mut_ptr() as i32
        })
    }

    /// Runs `function` over the batch of `len` bytes at `ptr`.
    pub fn process<F: Function>(function: &mut F, ptr: i32, len: i32) -> i32 {
        // SAFETY: the host wrote `len` bytes at `ptr`, a buffer `alloc` handed out.
        let bytes = unsafe { std::slice::from_raw_parts(ptr as usize as *const u8, len as usize) };
        let mut reader = Reader { bytes, position: 0 };
        let Some(count) = reader.u32() else {
            return -1;
        };
        let mut ctx = Context { _private: () };
        for index in 0..count {
            unsafe { sys::begin(index as i32) };
            let Some(message) = reader.message() else {
                fail("malformed batch");
                return -1;
            };
            if let Err(error) = function.process(&mut ctx, &message) {
                fail(&error);
            }
        }
        0
    }

    fn fail(text: &str) {
        let (ptr, len) = parts(text.as_bytes());
        unsafe { sys::fail(ptr, len) }
    }
}

/// Exports a [`Function`] type as a Magnetar WebAssembly function (ABI version 1).
#[macro_export]
macro_rules! export_function {
    ($function:ty) => {
        thread_local! {
            static MAGNETAR_FUNCTION: ::std::cell::RefCell<Option<$function>> =
                const { ::std::cell::RefCell::new(None) };
        }

        #[no_mangle]
        pub extern "C" fn magnetar_abi_version() -> i32 {
            $crate::ABI_VERSION
        }

        #[no_mangle]
        pub extern "C" fn magnetar_alloc(len: i32) -> i32 {
            $crate::__private::alloc(len)
        }

        #[no_mangle]
        pub extern "C" fn magnetar_process(ptr: i32, len: i32) -> i32 {
            MAGNETAR_FUNCTION.with(|cell| {
                let mut slot = cell.borrow_mut();
                let function = slot.get_or_insert_with(<$function as Default>::default);
                $crate::__private::process(function, ptr, len)
            })
        }
    };
}
