//! The functions worker: it will run users' stream functions (WebAssembly, sandboxed) and
//! built-in sketch functions over topics, with durable state checkpointed with input positions,
//! and serve the sketch query API.
//!
//! # Layout
//! - [`extract`]: the value a built-in function feeds its sketch: the message key, the
//!   payload, or a JSON field path.
//! - [`predicate`]: the optional filter on a JSON field a built-in applies first.

pub mod extract;
pub mod predicate;

pub use extract::{ExtractError, Extracted, Extractor, FieldPath, InvalidPath};
pub use predicate::{Comparison, Predicate};
