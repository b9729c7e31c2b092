//! The ledger client: BookKeeper's client semantics over Magnetar's bookies and metadata store.
//!
//! A ledger is written by one writer to an ensemble of E bookies, each entry to Qw of them and
//! acknowledged once Qa did; its metadata (ensembles, quorums, state, end) lives in the
//! metadata store and changes only by compare-and-set. Recovery fences the bookies, finds the
//! last entry that may have been acknowledged, and closes the ledger there.
//!
//! # Layout
//! - [`error`]: [`LedgerError`], stable variants callers match on.
//! - [`metadata`]: [`LedgerMetadata`] and its stored encoding (`/ledgers/<id>`).
//! - [`quorum`]: pure quorum logic: write sets, in-order completion, recovery's rules.
//! - [`registration`]: bookies' ephemeral registrations under `/bookies/available/`.
//! - [`placement`]: [`PlacementPolicy`] and the rack-aware default.
//! - [`framing`]: the ledger-length header every entry payload carries.
//! - [`writer`]: [`LedgerWriter`]: pipelined adds, ensemble changes, close.
//! - [`reader`]: [`LedgerReader`]: reads with fail-over, LAC and long polls.
//! - [`recovery`]: fencing, the recovery scan, re-replication and close.
//!
//! [`LedgerClient`] ties them together: create, open, recover and delete ledgers.

pub mod error;
pub mod framing;
pub mod metadata;
pub mod placement;
pub mod quorum;
pub mod reader;
pub mod recovery;
pub mod registration;
pub mod writer;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use magnetar_meta::{MetaClient, MetaError};
use magnetar_proto::bookie::ErrorCode;
use parking_lot::Mutex;
use tracing::{info, warn};

use crate::client::BookieClient;
use crate::error::BookieError;
use crate::shared_add_stream::{SharedAddStream, WeakSharedAddStream};

pub use error::{LedgerError, LedgerResult};
pub use metadata::{ledger_key, LedgerMetadata, LedgerState, Segment};
pub use placement::{PlacementPolicy, RackAwarePlacement};
pub use quorum::{AckTracker, EntryVerdict, Quorums};
pub use reader::{LedgerEntry, LedgerReader};
pub use registration::{available_bookies, BookieRecord, Registration, RegistrationConfig};
pub use writer::{LedgerWriter, PendingAdd};

/// Knobs of the ledger client; every one has a working default.
#[derive(Clone, Debug)]
pub struct LedgerClientConfig {
    /// An add not acknowledged by its write quorum within this time makes the writer replace
    /// the bookies that did not answer.
    pub add_timeout: Duration,
    /// Bound on entries a writer has in flight; `add` waits once it is reached.
    pub max_in_flight_entries: usize,
    /// Most entries a writer sends to one bookie in one request.
    pub max_batch_entries: usize,
    /// Bound on requests queued for one bookie; a bookie that falls this far behind is
    /// treated as failed and replaced.
    pub max_queued_requests_per_bookie: usize,
    /// Deadline of one read, fence, LAC or delete call to a bookie.
    pub rpc_timeout: Duration,
    /// Bookies with less free space are not chosen for new ensembles.
    pub min_free_space_bytes: u64,
}

impl Default for LedgerClientConfig {
    fn default() -> Self {
        Self {
            add_timeout: Duration::from_secs(5),
            max_in_flight_entries: 16_384,
            max_batch_entries: 512,
            max_queued_requests_per_bookie: 16_384,
            rpc_timeout: Duration::from_secs(5),
            min_free_space_bytes: 0,
        }
    }
}

/// What a new ledger looks like.
#[derive(Clone, Debug)]
pub struct LedgerOptions {
    pub ensemble_size: usize,
    pub write_quorum: usize,
    pub ack_quorum: usize,
    pub custom: BTreeMap<String, String>,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        Self {
            ensemble_size: 3,
            write_quorum: 3,
            ack_quorum: 2,
            custom: BTreeMap::new(),
        }
    }
}

/// Connections to bookies by address, made on first use and shared by every ledger, each with
/// the one add stream every ledger written to that bookie shares. The ledgers' links hold a
/// stream open; the pool only finds it, so a bookie no ledger writes to has no stream open
/// (and a stopped bookie is not held on to).
#[derive(Clone, Default)]
pub struct BookiePool {
    clients: Arc<Mutex<HashMap<String, BookieClient>>>,
    add_streams: Arc<Mutex<HashMap<String, WeakSharedAddStream>>>,
}

impl BookiePool {
    /// The client of `address`, connecting if needed (within `timeout`).
    pub async fn get(&self, address: &str, timeout: Duration) -> LedgerResult<BookieClient> {
        if let Some(client) = self.clients.lock().get(address) {
            return Ok(client.clone());
        }
        let client = with_timeout(address, timeout, BookieClient::connect(address)).await?;
        self.clients
            .lock()
            .insert(address.to_string(), client.clone());
        Ok(client)
    }

    /// The add stream to `address`, opened (with room for `queue` requests) when there is
    /// none or the last one ended.
    pub async fn add_stream(
        &self,
        address: &str,
        timeout: Duration,
        queue: usize,
    ) -> LedgerResult<SharedAddStream> {
        if let Some(stream) = self.open_add_stream_of(address) {
            return Ok(stream);
        }
        let client = self.get(address, timeout).await?;
        let opened = with_timeout(address, timeout, SharedAddStream::open(&client, queue)).await?;
        // Two ledgers may have opened one each at once: keep the first, drop the other.
        let mut streams = self.add_streams.lock();
        if let Some(stream) = streams.get(address).and_then(WeakSharedAddStream::upgrade) {
            return Ok(stream);
        }
        streams.insert(address.to_string(), opened.downgrade());
        Ok(opened)
    }

    fn open_add_stream_of(&self, address: &str) -> Option<SharedAddStream> {
        self.add_streams
            .lock()
            .get(address)
            .and_then(WeakSharedAddStream::upgrade)
    }
}

/// Runs a bookie call with a deadline, naming the bookie in the error.
pub(crate) async fn with_timeout<T>(
    address: &str,
    timeout: Duration,
    call: impl Future<Output = crate::error::Result<T>>,
) -> LedgerResult<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(LedgerError::bookie(address, error)),
        Err(_) => Err(LedgerError::bookie(
            address,
            BookieError::Transport(format!("no answer within {timeout:?}")),
        )),
    }
}

/// Whether a bookie error means "this bookie does not hold it" (as opposed to "cannot tell").
pub(crate) fn is_absent(error: &LedgerError) -> bool {
    matches!(
        error,
        LedgerError::Bookie {
            source: BookieError::Remote {
                code: ErrorCode::NoSuchEntry | ErrorCode::NoSuchLedger,
                ..
            },
            ..
        }
    )
}

/// The entry point: creates, opens, recovers and deletes ledgers. Cheap to clone.
#[derive(Clone)]
pub struct LedgerClient {
    pub(crate) meta: MetaClient,
    pub(crate) bookies: BookiePool,
    pub(crate) placement: Arc<dyn PlacementPolicy>,
    pub(crate) config: Arc<LedgerClientConfig>,
}

impl LedgerClient {
    /// A client over a metadata store, with the default rack-aware placement.
    pub fn new(meta: MetaClient, config: LedgerClientConfig) -> Self {
        let placement = Arc::new(RackAwarePlacement {
            min_free_space_bytes: config.min_free_space_bytes,
        });
        Self {
            meta,
            bookies: BookiePool::default(),
            placement,
            config: Arc::new(config),
        }
    }

    /// Replaces the placement policy.
    pub fn with_placement(mut self, placement: Arc<dyn PlacementPolicy>) -> Self {
        self.placement = placement;
        self
    }

    pub fn meta(&self) -> &MetaClient {
        &self.meta
    }

    pub fn config(&self) -> &LedgerClientConfig {
        &self.config
    }

    /// Creates a ledger and returns its writer.
    pub async fn create(&self, options: LedgerOptions) -> LedgerResult<LedgerWriter> {
        writer::create(self.clone(), options).await
    }

    /// Opens a ledger for reading, without fencing: an open ledger can be read up to its LAC
    /// while its writer goes on.
    pub async fn open(&self, ledger_id: u64) -> LedgerResult<LedgerReader> {
        let (metadata, _) = self.read_metadata(ledger_id).await?;
        LedgerReader::open(self.clone(), metadata).await
    }

    /// Opens a ledger with recovery: fences it, closes it at the last entry that may have been
    /// acknowledged (unless already closed), and returns a reader of the closed ledger.
    pub async fn recover(&self, ledger_id: u64) -> LedgerResult<LedgerReader> {
        let metadata = recovery::recover(self, ledger_id).await?;
        LedgerReader::open(self.clone(), metadata).await
    }

    /// Deletes a ledger on every bookie that ever held it, then its metadata.
    pub async fn delete(&self, ledger_id: u64) -> LedgerResult<()> {
        let (metadata, version) = self.read_metadata(ledger_id).await?;
        let mut failed = Vec::new();
        let mut reason = String::new();
        for address in metadata.all_bookies() {
            let outcome = async {
                let client = self.bookies.get(&address, self.config.rpc_timeout).await?;
                with_timeout(
                    &address,
                    self.config.rpc_timeout,
                    client.delete_ledger(ledger_id),
                )
                .await
            }
            .await;
            match outcome {
                Ok(()) => {}
                Err(error) if is_absent(&error) => {}
                Err(error) => {
                    reason = error.to_string();
                    failed.push(address);
                }
            }
        }
        if !failed.is_empty() {
            return Err(LedgerError::DeleteIncomplete {
                ledger_id,
                bookies: failed,
                reason,
            });
        }
        match self
            .meta
            .delete(&ledger_key(ledger_id), Some(version))
            .await
        {
            Ok(_) => {
                info!(ledger_id, "ledger deleted");
                Ok(())
            }
            Err(MetaError::VersionConflict { .. }) => Err(LedgerError::MetadataConflict {
                ledger_id,
                reason: "changed while being deleted".into(),
            }),
            Err(error) => Err(error.into()),
        }
    }

    /// The ledger's metadata and its version in the store.
    pub async fn read_metadata(&self, ledger_id: u64) -> LedgerResult<(LedgerMetadata, u64)> {
        let key = ledger_key(ledger_id);
        let kv = self
            .meta
            .get(&key)
            .await?
            .ok_or(LedgerError::NoSuchLedger { ledger_id })?;
        Ok((LedgerMetadata::decode(&key, &kv.value)?, kv.version))
    }

    /// Compare-and-set of a ledger's metadata. `Ok(None)` when the version moved (someone
    /// else changed it). An outcome the store could not confirm is settled by reading back.
    pub(crate) async fn write_metadata(
        &self,
        metadata: &LedgerMetadata,
        version: u64,
    ) -> LedgerResult<Option<u64>> {
        let key = ledger_key(metadata.ledger_id);
        let value = metadata.encode();
        match self.meta.put_if_version(&key, value.clone(), version).await {
            Ok(version) => Ok(Some(version)),
            Err(MetaError::VersionConflict { .. }) => Ok(None),
            Err(error) if !error.is_definite() => {
                warn!(%error, ledger_id = metadata.ledger_id, "metadata write outcome unknown; reading back");
                match self.meta.get(&key).await? {
                    Some(kv) if kv.value == value => Ok(Some(kv.version)),
                    _ => Ok(None),
                }
            }
            Err(error) => Err(error.into()),
        }
    }
}
