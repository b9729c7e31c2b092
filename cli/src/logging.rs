//! Logs go to stderr (stdout is kept for command output and perf's JSON line); `RUST_LOG`
//! overrides the default level.

use tracing_subscriber::EnvFilter;

/// Servers log at `info`; benchmarks at `warn`, so their figures stay readable.
pub fn init(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
