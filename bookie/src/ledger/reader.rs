//! Reading a ledger: entries from the bookies of their write quorum in order of preference,
//! failing over to the next; LAC from the current ensemble, with long polls for tailing.
//!
//! A reader never fences: on an open ledger it reads only up to the LAC the bookies report
//! (entries past it may still be rewritten by a recovery), on a closed one up to the last
//! entry in the metadata.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use parking_lot::RwLock;

use super::error::{LedgerError, LedgerResult};
use super::framing::unframe;
use super::metadata::{LedgerMetadata, LedgerState};
use super::{with_timeout, LedgerClient};

/// One entry as the ledger's writer added it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub entry_id: u64,
    /// The caller's payload (without the ledger-length header).
    pub payload: Bytes,
    /// Ledger length in payload bytes through this entry.
    pub length_through: u64,
}

/// A reader of one ledger. Shareable (`&self` everywhere); no lock is held across a call.
pub struct LedgerReader {
    client: LedgerClient,
    ledger_id: u64,
    metadata: RwLock<LedgerMetadata>,
    last_add_confirmed: AtomicI64,
}

impl LedgerReader {
    pub(crate) async fn open(client: LedgerClient, metadata: LedgerMetadata) -> LedgerResult<Self> {
        let reader = Self {
            client,
            ledger_id: metadata.ledger_id,
            last_add_confirmed: AtomicI64::new(metadata.last_entry_id),
            metadata: RwLock::new(metadata),
        };
        if !reader.is_closed() {
            reader.refresh_last_add_confirmed().await?;
        }
        Ok(reader)
    }

    pub fn ledger_id(&self) -> u64 {
        self.ledger_id
    }

    /// The metadata as last read.
    pub fn metadata(&self) -> LedgerMetadata {
        self.metadata.read().clone()
    }

    pub fn is_closed(&self) -> bool {
        self.metadata.read().state == LedgerState::Closed
    }

    /// The highest entry readable now: the last entry of a closed ledger, else the LAC.
    pub fn last_add_confirmed(&self) -> i64 {
        self.last_add_confirmed.load(Ordering::Acquire)
    }

    /// Entries through `entry_id` are confirmed, as the ledger's own writer (or its closed
    /// metadata) knows: reads up to there need no LAC from the bookies. They may never hear
    /// it otherwise, since the LAC travels on later entries and the last ones have none.
    pub fn confirmed_through(&self, entry_id: i64) {
        self.raise_lac(entry_id);
    }

    fn raise_lac(&self, lac: i64) -> i64 {
        self.last_add_confirmed
            .fetch_max(lac, Ordering::AcqRel)
            .max(lac)
    }

    /// Re-reads the metadata (to see a close or an ensemble change).
    pub async fn refresh_metadata(&self) -> LedgerResult<()> {
        let (metadata, _) = self.client.read_metadata(self.ledger_id).await?;
        if metadata.state == LedgerState::Closed {
            self.raise_lac(metadata.last_entry_id);
        }
        *self.metadata.write() = metadata;
        Ok(())
    }

    /// Asks the current ensemble's bookies for their LAC; the highest answer is safe (a
    /// bookie only learns a LAC from the writer). Needs at least one answer.
    pub async fn refresh_last_add_confirmed(&self) -> LedgerResult<i64> {
        self.poll_lac(None, Duration::ZERO).await
    }

    /// Long poll: waits up to `timeout` for the LAC to pass `past`; returns the LAC then
    /// (which may still be `<= past` when the time ran out).
    pub async fn wait_for_lac_past(&self, past: i64, timeout: Duration) -> LedgerResult<i64> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.last_add_confirmed() > past || self.is_closed() {
                return Ok(self.last_add_confirmed());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(self.last_add_confirmed());
            }
            let lac = self.poll_lac(Some(past), left).await?;
            if lac > past {
                return Ok(lac);
            }
            // The ensemble may have changed or the ledger closed while we waited.
            self.refresh_metadata().await?;
        }
    }

    async fn poll_lac(&self, past: Option<i64>, wait: Duration) -> LedgerResult<i64> {
        let bookies = self.metadata.read().last_segment().bookies.clone();
        let deadline = self.client.config.rpc_timeout + wait;
        let calls = bookies.iter().map(|address| async move {
            let client = self
                .client
                .bookies
                .get(address, self.client.config.rpc_timeout)
                .await?;
            with_timeout(
                address,
                deadline,
                client.read_lac(self.ledger_id, past, wait),
            )
            .await
        });
        let mut best = None;
        let mut last_error = None;
        for outcome in join_all(calls).await {
            match outcome {
                Ok(reading) => best = best.max(Some(reading.last_add_confirmed)),
                Err(error) if super::is_absent(&error) => best = best.max(Some(-1)),
                Err(error) => last_error = Some(error),
            }
        }
        match (best, last_error) {
            (Some(lac), _) => Ok(self.raise_lac(lac)),
            (None, Some(error)) => Err(error),
            (None, None) => Ok(self.last_add_confirmed()),
        }
    }

    /// Entries `first..=last`. Past the LAC of an open ledger: `NotYet`; past the end of a
    /// closed one: `PastEnd`.
    pub async fn read(&self, first: u64, last: u64) -> LedgerResult<Vec<LedgerEntry>> {
        let readable = self.last_add_confirmed();
        if last as i64 > readable {
            if self.is_closed() {
                return Err(LedgerError::PastEnd {
                    ledger_id: self.ledger_id,
                    entry_id: last,
                    last_entry_id: readable,
                });
            }
            return Err(LedgerError::NotYet {
                ledger_id: self.ledger_id,
                entry_id: last,
                last_add_confirmed: readable,
            });
        }
        let metadata = self.metadata();
        read_range(&self.client, &metadata, first, last).await
    }

    /// One entry.
    pub async fn read_entry(&self, entry_id: u64) -> LedgerResult<LedgerEntry> {
        let mut entries = self.read(entry_id, entry_id).await?;
        entries.pop().ok_or(LedgerError::ReadFailed {
            ledger_id: self.ledger_id,
            entry_id,
            reason: "no entry returned".into(),
        })
    }
}

/// Reads `first..=last` with no LAC check (recovery reads past it). Each run of entries is
/// asked from the first bookie of its write set; a bookie that fails or holds nothing hands
/// over to the next one of the set.
pub(crate) async fn read_range(
    client: &LedgerClient,
    metadata: &LedgerMetadata,
    first: u64,
    last: u64,
) -> LedgerResult<Vec<LedgerEntry>> {
    let ledger_id = metadata.ledger_id;
    let quorums = metadata.quorums()?;
    let mut entries = Vec::with_capacity((last.saturating_sub(first) + 1).min(4096) as usize);
    let mut next = first;
    while next <= last {
        let segment = metadata.segment_for(next);
        let segment_end = metadata
            .segments
            .iter()
            .find(|later| later.first_entry_id > next)
            .map_or(u64::MAX, |later| later.first_entry_id - 1);
        let end = last.min(segment_end);
        let mut reasons = Vec::new();
        let mut progressed = false;
        for index in quorums.write_set(next) {
            let address = &segment.bookies[index];
            let outcome = async {
                let bookie = client
                    .bookies
                    .get(address, client.config.rpc_timeout)
                    .await?;
                with_timeout(
                    address,
                    client.config.rpc_timeout,
                    bookie.read(ledger_id, next, end),
                )
                .await
            }
            .await;
            match outcome {
                Ok(read) if !read.is_empty() => {
                    for entry in read {
                        if entry.ledger_id != ledger_id || entry.entry_id != next || next > end {
                            break;
                        }
                        let (length_through, payload) = unframe(&entry)?;
                        entries.push(LedgerEntry {
                            entry_id: next,
                            payload,
                            length_through,
                        });
                        next += 1;
                        progressed = true;
                    }
                    if progressed {
                        break;
                    }
                    reasons.push(format!("{address}: answered other entries"));
                }
                Ok(_) => reasons.push(format!("{address}: empty answer")),
                Err(error) => reasons.push(error.to_string()),
            }
        }
        if !progressed {
            return Err(LedgerError::ReadFailed {
                ledger_id,
                entry_id: next,
                reason: reasons.join("; "),
            });
        }
    }
    Ok(entries)
}
