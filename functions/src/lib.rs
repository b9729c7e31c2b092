//! The functions worker: it will run users' stream functions (WebAssembly, sandboxed) and
//! built-in sketch functions over topics, with durable state checkpointed with input positions,
//! and serve the sketch query API.
//!
//! # Layout
//! - [`extract`]: the value a built-in function feeds its sketch: the message key, the
//!   payload, or a JSON field path.

pub mod extract;

pub use extract::{ExtractError, Extracted, Extractor, FieldPath, InvalidPath};
