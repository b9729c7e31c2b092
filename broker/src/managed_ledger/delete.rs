//! Deleting a whole managed ledger: what topic deletion leaves behind is nothing.
//!
//! The ledger list goes first, by compare-and-set on the version just read: from then on the
//! log does not exist for anyone (an owner still writing loses its next CAS and stops), and a
//! failure later leaves only unreachable data. Cursors follow, then the ledgers themselves;
//! a ledger that cannot be deleted now is reported and left orphaned rather than blocking
//! the deletion.

use magnetar_bookie::{LedgerClient, LedgerError};
use magnetar_meta::MetaError;
use tracing::warn;

use super::error::{ManagedLedgerError, ManagedLedgerResult};
use super::stored::{cursor_prefix, log_key, validate_name, StoredLog};

/// Deletes the managed ledger `name`; returns whether it existed. Its owner must have closed
/// it first, or be about to find itself fenced.
pub async fn delete_log(client: &LedgerClient, name: &str) -> ManagedLedgerResult<bool> {
    validate_name(name, false)?;
    let meta = client.meta();
    let key = log_key(name);
    let Some(kv) = meta.get(&key).await? else {
        return Ok(false);
    };
    let log = StoredLog::decode(&key, &kv.value)?;
    match meta.delete(&key, Some(kv.version)).await {
        Ok(true) => {}
        Ok(false) => return Ok(false),
        Err(MetaError::VersionConflict { .. }) => {
            return Err(ManagedLedgerError::Fenced {
                name: name.to_string(),
            })
        }
        Err(error) => return Err(error.into()),
    }
    for cursor in meta.list_all(&cursor_prefix(name)).await? {
        meta.delete(&cursor.key, None).await?;
    }
    for ledger in log.ledgers {
        match client.delete(ledger.ledger_id).await {
            Ok(()) | Err(LedgerError::NoSuchLedger { .. }) => {}
            Err(error) => {
                warn!(name, ledger_id = ledger.ledger_id, %error,
                    "could not delete a ledger of a deleted log; it is orphaned");
            }
        }
    }
    Ok(true)
}
