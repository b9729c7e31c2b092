//! [`FunctionError`], the crate's error type, with stable codes for errors that cross the wire.

use thiserror::Error;

/// Everything that can go wrong deploying or running a function. Each variant has a stable
/// [`code`](FunctionError::code) so that a status API and its clients can match on it.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum FunctionError {
    /// The WebAssembly module did not compile (not WebAssembly, invalid, or unsupported).
    #[error("the module does not compile: {0}")]
    InvalidModule(String),
    /// The module compiled but does not follow the host ABI (a missing or mistyped export,
    /// an unknown import, another ABI version).
    #[error("the module does not implement the function ABI: {0}")]
    AbiMismatch(String),
    /// A function or runtime setting was refused at deploy time.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// The instance used up its CPU budget (fuel) for one message.
    #[error("the function used up its CPU budget of {fuel} fuel for one message")]
    CpuBudgetExceeded { fuel: u64 },
    /// The instance tried to grow its memory past its limit.
    #[error("the function tried to grow its memory to {requested_bytes} bytes; the limit is {limit_bytes}")]
    MemoryLimitExceeded {
        requested_bytes: usize,
        limit_bytes: usize,
    },
    /// The instance trapped (unreachable, out-of-bounds access, a guest panic, ...).
    #[error("the function trapped: {0}")]
    Trap(String),
    /// The function reported a failure for the message itself.
    #[error("the function failed: {0}")]
    Failed(String),
    /// A built-in could not take its value from the message (missing field, not JSON, not a
    /// number); the message was counted and skipped or sent to the dead-letter topic.
    #[error("malformed input: {0}")]
    MalformedInput(String),
    /// The state store failed (I/O, corruption).
    #[error("state store: {0}")]
    State(String),
    /// A state snapshot could not be read (truncated, corrupted, another version).
    #[error("corrupt state snapshot: {0}")]
    CorruptSnapshot(String),
    /// A sketch refused an update, a query or its bytes.
    #[error("sketch: {0}")]
    Sketch(String),
    /// The compiled-module cache could not be used; compilation still proceeds.
    #[error("module cache: {0}")]
    Cache(String),
    /// The runtime itself failed (engine set-up, instantiation).
    #[error("runtime: {0}")]
    Runtime(String),
}

impl FunctionError {
    /// The stable code of this kind of error.
    pub fn code(&self) -> &'static str {
        match self {
            FunctionError::InvalidModule(_) => "FN_INVALID_MODULE",
            FunctionError::AbiMismatch(_) => "FN_ABI_MISMATCH",
            FunctionError::InvalidConfig(_) => "FN_INVALID_CONFIG",
            FunctionError::CpuBudgetExceeded { .. } => "FN_CPU_BUDGET_EXCEEDED",
            FunctionError::MemoryLimitExceeded { .. } => "FN_MEMORY_LIMIT_EXCEEDED",
            FunctionError::Trap(_) => "FN_TRAP",
            FunctionError::Failed(_) => "FN_FAILED",
            FunctionError::MalformedInput(_) => "FN_MALFORMED_INPUT",
            FunctionError::State(_) => "FN_STATE",
            FunctionError::CorruptSnapshot(_) => "FN_CORRUPT_SNAPSHOT",
            FunctionError::Sketch(_) => "FN_SKETCH",
            FunctionError::Cache(_) => "FN_CACHE",
            FunctionError::Runtime(_) => "FN_RUNTIME",
        }
    }
}

impl From<rocksdb::Error> for FunctionError {
    fn from(error: rocksdb::Error) -> Self {
        FunctionError::State(error.to_string())
    }
}

impl From<magnetar_sketches::SketchError> for FunctionError {
    fn from(error: magnetar_sketches::SketchError) -> Self {
        FunctionError::Sketch(error.to_string())
    }
}

/// The crate's result type.
pub type Result<T, E = FunctionError> = std::result::Result<T, E>;
