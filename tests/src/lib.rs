//! The cluster harness shared by Magnetar's end-to-end tests.
//!
//! Tests start every role as a real OS process of the `magnetar` binary on loopback ports,
//! kill them with SIGKILL when a test calls for a crash, and wait for conditions by polling
//! with a deadline (never by sleeping a fixed time).
//!
//! # Layout
//! - [`cluster`]: an in-process cluster (metadata nodes, bookies, brokers) on loopback.
//! - [`process`]: the `magnetar` binary, child processes that die with the test, free ports.
//! - [`wait`]: polling with a deadline.
//! - [`payload`]: deterministic entry payloads writers and checkers agree on.
//! - [`seed`]: the printed, replayable seed of randomised crash tests.
//!
//! The `ledger_writer` binary (`src/bin/`) is a ledger writer to kill mid-stream.

pub mod cluster;
pub mod payload;
pub mod process;
pub mod seed;
pub mod wait;

pub use payload::entry_payload;
pub use process::{free_port, magnetar_binary, MagnetarProcess};
pub use seed::crash_seed;
pub use wait::{wait_until, wait_until_async};
