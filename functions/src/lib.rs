//! The functions worker: it will run users' stream functions (WebAssembly, sandboxed) and
//! built-in sketch functions over topics, with durable state checkpointed with input positions,
//! and serve the sketch query API.
