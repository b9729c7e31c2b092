//! The managed ledger: a topic's log as an ordered list of ledgers, with named cursors, an
//! entry cache and retention, over the ledger client and the metadata store.
//!
//! - [`ledger`]: [`ManagedLedger`]: ownership, appends, rollover, reads, cursors, retention.
//! - [`stored`]: what is kept in the metadata store, and under which keys.
//! - [`error`]: [`ManagedLedgerError`], the stable failures.
//! - [`delete`]: removing a whole log (ledgers, cursors, the list), for topic deletion.
//!
//! The parts without I/O:
//! - [`position`]: positions in the log and the ledger layout that orders them.
//! - [`cursor_state`]: a cursor's mark-delete position and individually acknowledged ranges,
//!   and their persisted form (with its documented bound).
//! - [`retention`]: which consumed ledgers may be deleted; when to roll to a new ledger.
//! - [`entry_cache`]: recent entries for tailing readers, bounded in bytes.

pub mod cursor_state;
pub mod delete;
pub mod entry_cache;
pub mod error;
pub mod ledger;
pub mod position;
pub mod retention;
pub mod stored;

pub use cursor_state::{CursorState, CursorStateError};
pub use delete::delete_log;
pub use entry_cache::EntryCache;
pub use error::{ManagedLedgerError, ManagedLedgerResult};
pub use ledger::{InitialPosition, LogEntry, ManagedLedger, ManagedLedgerConfig, SubmittedAppend};
pub use position::{Layout, LedgerSpan, Position};
pub use retention::{ledgers_to_delete, LedgerInfo, RetentionPolicy, RolloverPolicy};
