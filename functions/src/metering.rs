//! Per-instance metering: the basis for pay-per-use accounting.

/// What one instance has used since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InstanceMetrics {
    /// Messages handed to the instance.
    pub messages_in: u64,
    /// Messages it emitted.
    pub messages_out: u64,
    /// Messages that failed (trap, budget, limit, function error, malformed input).
    pub messages_failed: u64,
    /// Wall time spent processing batches, in nanoseconds.
    pub wall_time_ns: u64,
    /// WebAssembly fuel consumed (about one unit per instruction); 0 for built-ins.
    pub fuel_used: u64,
    /// The largest linear memory the instance had (WebAssembly), or the largest in-memory
    /// size of its sketches (built-ins), in bytes.
    pub peak_memory_bytes: u64,
    /// Times the WebAssembly instance was recreated after a trap.
    pub restarts: u64,
}
