//! Opening a ledger with recovery, as BookKeeper does:
//!
//! 1. Mark the metadata InRecovery (CAS), so the writer can no longer change the ensemble.
//! 2. Fence the ledger on the current ensemble's bookies until every write set has at least
//!    Qw - Qa + 1 fenced bookies: from then on no add of the old writer can reach Qa.
//! 3. Start at the highest LAC the fenced bookies report and read forward entry by entry: an
//!    entry some bookie holds is kept (it may have been acknowledged); the first entry that
//!    Qw - Qa + 1 bookies of its write set lack ends the ledger (it cannot have been).
//! 4. Write the kept tail again to its whole write set with recovery adds (accepted while
//!    fenced), to replacements in place of bookies that did not answer the fence.
//! 5. Close (CAS) at the last kept entry, with the replacements in the same write.
//!
//! Concurrent recoveries race only at CAS: the one whose close lands decides; the others see
//! a version change, read the metadata again and return the closed ledger.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use magnetar_proto::bookie::{AddRequest, Entry, ErrorCode};
use tracing::{info, warn};

use super::error::{LedgerError, LedgerResult};
use super::framing::unframe;
use super::metadata::{LedgerMetadata, LedgerState};
use super::quorum::{recovered_last_entry, EntryVerdict, Quorums};
use super::reader::read_range;
use super::registration::available_bookies;
use super::{is_absent, with_timeout, LedgerClient};

/// Rounds of "read metadata, recover, CAS" before giving up on a ledger whose metadata keeps
/// changing under us.
const MAX_ROUNDS: usize = 20;
/// Entries probed concurrently past the LAC.
const PROBE_WINDOW: u64 = 64;
/// Entries per recovery-add request.
const RECOVERY_BATCH: usize = 256;

/// Recovers and closes a ledger (or returns it if already closed).
pub(crate) async fn recover(client: &LedgerClient, ledger_id: u64) -> LedgerResult<LedgerMetadata> {
    for _ in 0..MAX_ROUNDS {
        let (mut metadata, mut version) = client.read_metadata(ledger_id).await?;
        match metadata.state {
            LedgerState::Closed => return Ok(metadata),
            LedgerState::Open => {
                metadata.state = LedgerState::InRecovery;
                match client.write_metadata(&metadata, version).await? {
                    Some(next) => version = next,
                    None => continue,
                }
            }
            // Another recovery is running or died half-way: recovering again is safe.
            LedgerState::InRecovery => {}
        }
        if let Some(closed) = recover_once(client, metadata, version).await? {
            return Ok(closed);
        }
    }
    Err(LedgerError::RecoveryIncomplete {
        ledger_id,
        reason: format!("the metadata changed under {MAX_ROUNDS} attempts"),
    })
}

/// One attempt; `Ok(None)` when a CAS was lost (start again from the metadata).
async fn recover_once(
    client: &LedgerClient,
    mut metadata: LedgerMetadata,
    version: u64,
) -> LedgerResult<Option<LedgerMetadata>> {
    let ledger_id = metadata.ledger_id;
    let quorums = metadata.quorums()?;
    let token = metadata.writer_token();
    let segment = metadata.last_segment().clone();
    let timeout = client.config.rpc_timeout;

    let fences = join_all(segment.bookies.iter().map(|address| {
        let token = token.clone();
        async move {
            let bookie = client.bookies.get(address, timeout).await?;
            with_timeout(address, timeout, bookie.fence(ledger_id, token)).await
        }
    }))
    .await;
    let answered: Vec<bool> = fences.iter().map(Result::is_ok).collect();
    if !quorums.fence_covers(&answered) {
        let errors: Vec<String> = fences
            .iter()
            .filter_map(|fence| fence.as_ref().err().map(ToString::to_string))
            .collect();
        return Err(LedgerError::RecoveryIncomplete {
            ledger_id,
            reason: format!("too few bookies fenced: {}", errors.join("; ")),
        });
    }
    // Entries before the current ensemble were complete when it was installed.
    let lac = fences
        .iter()
        .filter_map(|fence| fence.as_ref().ok().map(|(lac, _)| *lac))
        .max()
        .unwrap_or(-1)
        .max(segment.first_entry_id as i64 - 1);

    // The scan: kept entries in order, until the first absent one.
    let mut kept: Vec<Entry> = Vec::new();
    let mut next = (lac + 1) as u64;
    let last_entry_id = 'scan: loop {
        let window: Vec<u64> = (next..next + PROBE_WINDOW).collect();
        let probes = join_all(window.iter().map(|&entry_id| {
            probe(
                client,
                quorums,
                &segment.bookies,
                &answered,
                ledger_id,
                entry_id,
            )
        }))
        .await;
        let mut verdicts = Vec::with_capacity(probes.len());
        for (verdict, entry) in probes {
            if let Some(entry) = entry {
                kept.push(entry);
            }
            verdicts.push(verdict);
            if verdict != EntryVerdict::Present {
                break;
            }
        }
        let more = verdicts.last() == Some(&EntryVerdict::Present);
        match recovered_last_entry(next as i64 - 1, verdicts) {
            Ok(_) if more => next += PROBE_WINDOW,
            Ok(last) => break 'scan last,
            Err(entry_id) => {
                return Err(LedgerError::RecoveryIncomplete {
                    ledger_id,
                    reason: format!("too few bookies answered for entry {entry_id}"),
                })
            }
        }
    };

    let length = match kept.last() {
        Some(entry) => unframe(entry)?.0,
        None if last_entry_id >= 0 => {
            let entry = last_entry_id as u64;
            read_range(client, &metadata, entry, entry)
                .await?
                .first()
                .map_or(0, |entry| entry.length_through)
        }
        None => 0,
    };

    if !kept.is_empty() {
        // Bookies that missed the fence may be gone: give their place to others so the tail
        // reaches a full write quorum. The new ensemble is committed only together with the
        // close, after the tail is on it: metadata never names a bookie as holding entries
        // it may lack (a later recovery would count it as "absent" and could end too early).
        // The old writer cannot reach a replacement: it is named only in metadata the writer
        // can no longer change.
        let mut reachable = answered.clone();
        let dead: Vec<usize> = (0..answered.len()).filter(|&i| !answered[i]).collect();
        let mut ensemble = segment.bookies.clone();
        if !dead.is_empty() {
            let excluded: HashSet<String> =
                dead.iter().map(|&i| segment.bookies[i].clone()).collect();
            let candidates = available_bookies(&client.meta).await?;
            for &index in &dead {
                match client
                    .placement
                    .replacement(&ensemble, index, &excluded, &candidates)
                {
                    Ok(replacement) => {
                        ensemble[index] = replacement;
                        reachable[index] = true;
                    }
                    Err(error) => {
                        warn!(ledger_id, %error, "no replacement for an unfenced bookie")
                    }
                }
            }
        }
        rewrite_tail(client, quorums, &ensemble, &reachable, &token, &kept).await?;
        if ensemble != segment.bookies {
            metadata.set_ensemble_from((lac + 1) as u64, ensemble);
        }
    }

    metadata.state = LedgerState::Closed;
    metadata.last_entry_id = last_entry_id;
    metadata.length = length;
    match client.write_metadata(&metadata, version).await? {
        Some(_) => {
            info!(
                ledger_id,
                last_entry_id, length, "ledger recovered and closed"
            );
            Ok(Some(metadata))
        }
        None => Ok(None),
    }
}

/// Asks the fenced bookies of an entry's write set for it: (verdict, the entry when
/// present). Bookies that missed the fence are not asked: they could only add "unknown" and
/// a hung one would cost a timeout per entry.
async fn probe(
    client: &LedgerClient,
    quorums: Quorums,
    bookies: &[String],
    fenced: &[bool],
    ledger_id: u64,
    entry_id: u64,
) -> (EntryVerdict, Option<Entry>) {
    let timeout = client.config.rpc_timeout;
    let asked = quorums.write_set(entry_id).filter(|&index| fenced[index]);
    let reads = join_all(asked.map(|index| {
        let address = &bookies[index];
        async move {
            let bookie = client.bookies.get(address, timeout).await?;
            with_timeout(address, timeout, bookie.read(ledger_id, entry_id, entry_id)).await
        }
    }))
    .await;
    let mut found = None;
    let mut present = 0;
    let mut absent = 0;
    for read in reads {
        match read {
            Ok(entries) => match entries.into_iter().next() {
                Some(entry) if entry.ledger_id == ledger_id && entry.entry_id == entry_id => {
                    present += 1;
                    found.get_or_insert(entry);
                }
                _ => absent += 1,
            },
            Err(error) if is_absent(&error) => absent += 1,
            Err(_) => {}
        }
    }
    (quorums.verdict(present, absent), found)
}

/// Writes the kept tail with recovery adds to every reachable bookie of each entry's write
/// set; each must accept, and each entry must land on at least Qa bookies.
async fn rewrite_tail(
    client: &LedgerClient,
    quorums: Quorums,
    bookies: &[String],
    reachable: &[bool],
    token: &Bytes,
    kept: &[Entry],
) -> LedgerResult<()> {
    let ledger_id = kept.first().map_or(0, |entry| entry.ledger_id);
    for entry in kept {
        let copies = quorums
            .write_set(entry.entry_id)
            .filter(|&index| reachable[index])
            .count();
        if copies < quorums.ack {
            return Err(LedgerError::RecoveryIncomplete {
                ledger_id,
                reason: format!("entry {} could reach only {copies} bookies", entry.entry_id),
            });
        }
    }
    let writes = (0..bookies.len())
        .filter(|&index| reachable[index])
        .map(|index| {
            let entries: Vec<Entry> = kept
                .iter()
                .filter(|entry| quorums.stores(entry.entry_id, index))
                .cloned()
                .collect();
            recovery_add(client, &bookies[index], token, entries)
        });
    for outcome in join_all(writes).await {
        outcome?;
    }
    Ok(())
}

/// Recovery adds of `entries` to one bookie; every one must be acknowledged.
async fn recovery_add(
    client: &LedgerClient,
    address: &str,
    token: &Bytes,
    entries: Vec<Entry>,
) -> LedgerResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let timeout = client.config.rpc_timeout;
    let bookie = client.bookies.get(address, timeout).await?;
    let mut stream = with_timeout(address, timeout, bookie.open_add_stream(16)).await?;
    let expected = entries.len();
    let requests = stream.requests.clone();
    let token = token.clone();
    // Requests are fed from a task so sending never waits on our reading of the answers.
    let feeder = tokio::spawn(async move {
        for chunk in entries.chunks(RECOVERY_BATCH) {
            let request = AddRequest {
                entries: chunk.to_vec(),
                writer_token: token.clone(),
                recovery: true,
                ledger_tokens: Vec::new(),
            };
            if requests.send(request).await.is_err() {
                return;
            }
        }
    });
    let deadline = timeout + Duration::from_millis(expected as u64);
    let outcome = tokio::time::timeout(deadline, async {
        let mut answered = 0;
        while answered < expected {
            let response = stream
                .responses
                .message()
                .await
                .map_err(|status| crate::error::BookieError::Transport(status.to_string()))?
                .ok_or_else(|| {
                    crate::error::BookieError::Transport("add stream closed early".into())
                })?;
            for result in response.results {
                if result.code != ErrorCode::Ok as i32 {
                    return Err(crate::error::BookieError::Remote {
                        code: ErrorCode::try_from(result.code).unwrap_or(ErrorCode::IoError),
                        message: result.message,
                    });
                }
                answered += 1;
            }
        }
        Ok(())
    })
    .await;
    feeder.abort();
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(LedgerError::bookie(address, error)),
        Err(_) => Err(LedgerError::bookie(
            address,
            crate::error::BookieError::Transport(format!(
                "recovery adds not answered within {deadline:?}"
            )),
        )),
    }
}
