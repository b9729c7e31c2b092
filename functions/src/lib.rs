//! The functions worker's engine: it runs one function instance over the messages handed to
//! it, a sandboxed WebAssembly function or a built-in sketch function, with state kept on the
//! host. Connecting instances to topics, scheduling them and checkpointing their state with
//! input positions build on this.
//!
//! A WebAssembly function's module is compiled once per worker (and cached on disk by the
//! SHA-256 of its bytes), checked against the host ABI at deploy, and shared by all its
//! instances, each a pooled instantiation costing microseconds. Each instance runs under a
//! memory ceiling and a CPU budget in fuel per message; a trap, an exhausted budget or a
//! memory bomb fails that message with a clear error, a fresh instance takes over, and the
//! batch goes on. The ABI is documented in the guest SDK (`functions/sdk`) and in
//! ARCHITECTURE.md.
//!
//! # Layout
//! - [`message`]: [`Message`] in, [`Output`] and [`MessageFailure`] out, and the
//!   [`FunctionInstance`] trait both kinds of function implement.
//! - [`wasm`]: the WebAssembly runtime: engine and instance pool ([`Runtime`]), the
//!   compiled-module cache, the host side of the ABI, and [`WasmInstance`] with its [`Limits`].
//! - [`builtin`]: built-in functions (`count-min`, `distinct`, `quantiles`, `top-k`, `bloom`,
//!   `sample`) configured by name and parameters.
//! - [`extract`]: the value a built-in function feeds its sketch: the message key, the
//!   payload, or a JSON field path.
//! - [`predicate`]: the optional filter on a JSON field a built-in applies first.
//! - [`state`]: per-function key-value store, counters and named sketches in RocksDB; listing
//!   by prefix; snapshot to bytes and restore.
//! - [`metering`]: what each instance used (messages, wall time, fuel, peak memory).
//! - [`error`]: [`FunctionError`], with stable codes.
//! - [`examples`](mod@examples): builds the example functions to WebAssembly for the tests and
//!   the benchmark.

pub mod builtin;
pub mod error;
pub mod examples;
pub mod extract;
pub mod message;
pub mod metering;
pub mod predicate;
pub mod state;
pub mod wasm;

pub use builtin::{BuiltinConfig, BuiltinInstance, BuiltinKind};
pub use error::{FunctionError, Result};
pub use extract::{ExtractError, Extracted, Extractor, FieldPath, InvalidPath};
pub use message::{BatchOutcome, FunctionInstance, Message, MessageFailure, MessageId, Output};
pub use metering::InstanceMetrics;
pub use predicate::{Comparison, Predicate};
pub use state::{FunctionState, StateStore};
pub use wasm::{FunctionModule, InstanceSettings, Limits, Runtime, RuntimeConfig, WasmInstance};
