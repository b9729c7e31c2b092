//! The RocksDB index: where each entry lives, each ledger's metadata, how many bytes each
//! ledger has in each entry log, and the journal checkpoint.
//!
//! Column families (keys big-endian so RocksDB's order is numeric order):
//! - `entries`: ledger id | entry id -> [`EntryLocation`]
//! - `ledgers`: ledger id -> [`LedgerMeta`]
//! - `log_usage`: log id | ledger id -> bytes of that ledger in that log (u64 LE)
//! - `default`: `checkpoint` -> journal file id | offset (u64 LE each)
//!
//! Every write that must survive a crash is a synced write batch.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bytes::{Buf, Bytes};
use rocksdb::{
    ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB,
};

use crate::entry_log::EntryLocation;
use crate::error::{BookieError, Result};
use crate::journal::JournalPosition;

const ENTRIES: &str = "entries";
const LEDGERS: &str = "ledgers";
const LOG_USAGE: &str = "log_usage";
const CHECKPOINT_KEY: &[u8] = b"checkpoint";
const LEDGER_META_VERSION: u8 = 1;

/// What the bookie keeps about a ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerMeta {
    pub writer_token: Bytes,
    pub fenced: bool,
    pub last_add_confirmed: i64,
    pub last_entry_id: i64,
}

impl LedgerMeta {
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1 + 1 + 16 + 4 + self.writer_token.len());
        bytes.push(LEDGER_META_VERSION);
        bytes.push(u8::from(self.fenced));
        bytes.extend_from_slice(&self.last_add_confirmed.to_le_bytes());
        bytes.extend_from_slice(&self.last_entry_id.to_le_bytes());
        bytes.extend_from_slice(&(self.writer_token.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&self.writer_token);
        bytes
    }

    pub fn decode(mut bytes: &[u8]) -> Option<Self> {
        if bytes.len() < 1 + 1 + 16 + 4 || bytes[0] != LEDGER_META_VERSION {
            return None;
        }
        bytes.advance(1);
        let fenced = bytes.get_u8() != 0;
        let last_add_confirmed = bytes.get_i64_le();
        let last_entry_id = bytes.get_i64_le();
        let token_len = bytes.get_u32_le() as usize;
        if bytes.len() != token_len {
            return None;
        }
        Some(Self {
            writer_token: Bytes::copy_from_slice(bytes),
            fenced,
            last_add_confirmed,
            last_entry_id,
        })
    }
}

fn entry_key(ledger_id: u64, entry_id: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&ledger_id.to_be_bytes());
    key[8..].copy_from_slice(&entry_id.to_be_bytes());
    key
}

fn pair_from_key(key: &[u8]) -> Option<(u64, u64)> {
    if key.len() != 16 {
        return None;
    }
    let mut key = key;
    Some((key.get_u64(), key.get_u64()))
}

/// Everything one flush (or compaction step) commits at once.
#[derive(Default)]
pub struct IndexBatch {
    batch: WriteBatch,
    usage_increments: HashMap<(u64, u64), u64>,
}

/// How often RocksDB starts writing back a file it is writing, in bytes.
const BACKGROUND_SYNC_BYTES: u64 = 1024 * 1024;
/// Bound on RocksDB's flush and compaction writes.
const BACKGROUND_BYTES_PER_SEC: i64 = 64 * 1024 * 1024;
/// The rate limiter hands out bytes this often: a short period keeps each grant small.
const RATE_REFILL_PERIOD_US: i64 = 10_000;

/// The index database.
pub struct Index {
    db: DB,
}

impl Index {
    pub fn open(path: &Path) -> Result<Self> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        options.set_keep_log_file_num(4);
        // RocksDB's own writes (memtable flushes, compactions, the WAL) share the disk with
        // the journal's fdatasync, which every add waits for. Written in one burst, a memtable
        // flush queues tens of megabytes ahead of it; written back a megabyte at a time and
        // paced, only a little of it is ever queued ahead of a journal sync.
        options.set_bytes_per_sync(BACKGROUND_SYNC_BYTES);
        options.set_wal_bytes_per_sync(BACKGROUND_SYNC_BYTES);
        options.set_ratelimiter(BACKGROUND_BYTES_PER_SEC, RATE_REFILL_PERIOD_US, 10);
        let families = [ENTRIES, LEDGERS, LOG_USAGE]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&options, path, families)
            .map_err(|source| BookieError::index(format!("opening {}", path.display()), source))?;
        Ok(Self { db })
    }

    fn family(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db.cf_handle(name).ok_or_else(|| BookieError::Corrupt {
            location: "index".into(),
            reason: format!("column family {name} is missing"),
        })
    }

    fn synced() -> WriteOptions {
        let mut options = WriteOptions::default();
        options.set_sync(true);
        options
    }

    pub fn checkpoint(&self) -> Result<Option<JournalPosition>> {
        let value = self
            .db
            .get(CHECKPOINT_KEY)
            .map_err(|source| BookieError::index("reading the checkpoint", source))?;
        match value {
            None => Ok(None),
            Some(bytes) if bytes.len() == 16 => {
                let mut bytes = &bytes[..];
                Ok(Some(JournalPosition {
                    file_id: bytes.get_u64_le(),
                    offset: bytes.get_u64_le(),
                }))
            }
            Some(_) => Err(BookieError::Corrupt {
                location: "index checkpoint".into(),
                reason: "value is not 16 bytes".into(),
            }),
        }
    }

    pub fn load_ledgers(&self) -> Result<Vec<(u64, LedgerMeta)>> {
        let family = self.family(LEDGERS)?;
        let mut ledgers = Vec::new();
        for item in self.db.iterator_cf(family, IteratorMode::Start) {
            let (key, value) =
                item.map_err(|source| BookieError::index("loading ledgers", source))?;
            let ledger_id = (key.len() == 8)
                .then(|| u64::from_be_bytes(key[..8].try_into().unwrap_or_default()));
            let meta = LedgerMeta::decode(&value);
            match (ledger_id, meta) {
                (Some(ledger_id), Some(meta)) => ledgers.push((ledger_id, meta)),
                _ => {
                    return Err(BookieError::Corrupt {
                        location: "index ledgers".into(),
                        reason: "undecodable ledger metadata".into(),
                    })
                }
            }
        }
        Ok(ledgers)
    }

    /// Bytes per (log, ledger), grouped by log.
    pub fn load_log_usage(&self) -> Result<BTreeMap<u64, HashMap<u64, u64>>> {
        let family = self.family(LOG_USAGE)?;
        let mut usage: BTreeMap<u64, HashMap<u64, u64>> = BTreeMap::new();
        for item in self.db.iterator_cf(family, IteratorMode::Start) {
            let (key, value) =
                item.map_err(|source| BookieError::index("loading log usage", source))?;
            let (Some((log_id, ledger_id)), Ok(bytes)) =
                (pair_from_key(&key), <[u8; 8]>::try_from(&value[..]))
            else {
                return Err(BookieError::Corrupt {
                    location: "index log usage".into(),
                    reason: "undecodable usage row".into(),
                });
            };
            usage
                .entry(log_id)
                .or_default()
                .insert(ledger_id, u64::from_le_bytes(bytes));
        }
        Ok(usage)
    }

    pub fn location(&self, ledger_id: u64, entry_id: u64) -> Result<Option<EntryLocation>> {
        let family = self.family(ENTRIES)?;
        let value = self
            .db
            .get_pinned_cf(family, entry_key(ledger_id, entry_id))
            .map_err(|source| BookieError::index("looking up an entry", source))?;
        match value {
            None => Ok(None),
            Some(bytes) => {
                EntryLocation::decode(&bytes)
                    .map(Some)
                    .ok_or_else(|| BookieError::Corrupt {
                        location: format!("index entry {ledger_id}:{entry_id}"),
                        reason: "undecodable location".into(),
                    })
            }
        }
    }

    /// Every (entry id, location) of a ledger, in entry order.
    pub fn ledger_locations(&self, ledger_id: u64) -> Result<Vec<(u64, EntryLocation)>> {
        let family = self.family(ENTRIES)?;
        let start = entry_key(ledger_id, 0);
        let mut locations = Vec::new();
        for item in self
            .db
            .iterator_cf(family, IteratorMode::From(&start, Direction::Forward))
        {
            let (key, value) =
                item.map_err(|source| BookieError::index("scanning a ledger", source))?;
            let Some((ledger, entry_id)) = pair_from_key(&key) else {
                break;
            };
            if ledger != ledger_id {
                break;
            }
            let location = EntryLocation::decode(&value).ok_or_else(|| BookieError::Corrupt {
                location: format!("index entry {ledger_id}:{entry_id}"),
                reason: "undecodable location".into(),
            })?;
            locations.push((entry_id, location));
        }
        Ok(locations)
    }

    pub fn new_batch(&self) -> IndexBatch {
        IndexBatch::default()
    }

    pub fn put_location(
        &self,
        batch: &mut IndexBatch,
        ledger_id: u64,
        entry_id: u64,
        location: EntryLocation,
    ) -> Result<()> {
        batch.batch.put_cf(
            self.family(ENTRIES)?,
            entry_key(ledger_id, entry_id),
            location.encode(),
        );
        *batch
            .usage_increments
            .entry((location.log_id, ledger_id))
            .or_default() += u64::from(location.length);
        Ok(())
    }

    pub fn put_ledger(
        &self,
        batch: &mut IndexBatch,
        ledger_id: u64,
        meta: &LedgerMeta,
    ) -> Result<()> {
        batch.batch.put_cf(
            self.family(LEDGERS)?,
            ledger_id.to_be_bytes(),
            meta.encode(),
        );
        Ok(())
    }

    pub fn set_checkpoint(&self, batch: &mut IndexBatch, position: JournalPosition) {
        let mut value = [0u8; 16];
        value[..8].copy_from_slice(&position.file_id.to_le_bytes());
        value[8..].copy_from_slice(&position.offset.to_le_bytes());
        batch.batch.put(CHECKPOINT_KEY, value);
    }

    /// Removes a log's usage rows (the log itself is gone).
    pub fn forget_log(
        &self,
        batch: &mut IndexBatch,
        log_id: u64,
        ledger_ids: impl IntoIterator<Item = u64>,
    ) -> Result<()> {
        let family = self.family(LOG_USAGE)?;
        for ledger_id in ledger_ids {
            batch.batch.delete_cf(family, entry_key(log_id, ledger_id));
        }
        Ok(())
    }

    /// Writes the batch's puts so far without syncing and empties it, keeping its log usage
    /// for [`Index::commit`]. A flush writes its locations a step at a time this way, after
    /// the entry log they point into is synced; the final synced commit makes them durable.
    pub fn write_unsynced(&self, batch: &mut IndexBatch) -> Result<()> {
        let puts = std::mem::take(&mut batch.batch);
        self.db
            .write_opt(puts, &WriteOptions::default())
            .map_err(|source| BookieError::index("writing a flush step", source))
    }

    /// Commits a batch with a synced write. `usage` holds the bytes each (log, ledger) had
    /// before; the batch's increments are added to it and written, and the map is updated.
    pub fn commit(
        &self,
        mut batch: IndexBatch,
        usage: &mut BTreeMap<u64, HashMap<u64, u64>>,
    ) -> Result<()> {
        let family = self.family(LOG_USAGE)?;
        let mut updated = Vec::with_capacity(batch.usage_increments.len());
        for ((log_id, ledger_id), increment) in batch.usage_increments.drain() {
            let current = usage
                .get(&log_id)
                .and_then(|ledgers| ledgers.get(&ledger_id))
                .copied()
                .unwrap_or(0);
            let total = current + increment;
            batch
                .batch
                .put_cf(family, entry_key(log_id, ledger_id), total.to_le_bytes());
            updated.push((log_id, ledger_id, total));
        }
        self.db
            .write_opt(batch.batch, &Self::synced())
            .map_err(|source| BookieError::index("committing a flush", source))?;
        for (log_id, ledger_id, total) in updated {
            usage.entry(log_id).or_default().insert(ledger_id, total);
        }
        Ok(())
    }

    /// Writes one ledger's metadata with a synced write.
    pub fn put_ledger_now(&self, ledger_id: u64, meta: &LedgerMeta) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.family(LEDGERS)?,
            ledger_id.to_be_bytes(),
            meta.encode(),
        );
        self.db
            .write_opt(batch, &Self::synced())
            .map_err(|source| BookieError::index("writing ledger metadata", source))
    }

    /// Removes a ledger's metadata and every index entry of it, with a synced write.
    pub fn delete_ledger(&self, ledger_id: u64) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.family(LEDGERS)?, ledger_id.to_be_bytes());
        batch.delete_range_cf(
            self.family(ENTRIES)?,
            entry_key(ledger_id, 0),
            entry_key(ledger_id, u64::MAX),
        );
        batch.delete_cf(self.family(ENTRIES)?, entry_key(ledger_id, u64::MAX));
        self.db
            .write_opt(batch, &Self::synced())
            .map_err(|source| BookieError::index("deleting a ledger", source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_meta_round_trips_and_rejects_garbage() {
        let meta = LedgerMeta {
            writer_token: Bytes::from_static(b"secret"),
            fenced: true,
            last_add_confirmed: 41,
            last_entry_id: 42,
        };
        assert_eq!(LedgerMeta::decode(&meta.encode()), Some(meta.clone()));
        let mut encoded = meta.encode();
        encoded.push(0);
        assert_eq!(LedgerMeta::decode(&encoded), None);
        assert_eq!(LedgerMeta::decode(&[9, 9, 9]), None);
    }

    #[test]
    fn locations_usage_checkpoint_and_deletion_survive_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut usage = BTreeMap::new();
        {
            let index = Index::open(dir.path()).expect("open");
            let mut batch = index.new_batch();
            for entry_id in 0..10 {
                let location = EntryLocation {
                    log_id: 3,
                    offset: 16 + entry_id * 50,
                    length: 50,
                };
                index
                    .put_location(&mut batch, 7, entry_id, location)
                    .expect("put");
            }
            index
                .put_location(
                    &mut batch,
                    8,
                    0,
                    EntryLocation {
                        log_id: 3,
                        offset: 516,
                        length: 20,
                    },
                )
                .expect("put");
            index
                .put_ledger(&mut batch, 7, &LedgerMeta::default())
                .expect("meta");
            index
                .put_ledger(&mut batch, 8, &LedgerMeta::default())
                .expect("meta");
            index.set_checkpoint(
                &mut batch,
                JournalPosition {
                    file_id: 2,
                    offset: 99,
                },
            );
            index.commit(batch, &mut usage).expect("commit");
        }
        let index = Index::open(dir.path()).expect("reopen");
        assert_eq!(
            index.checkpoint().expect("checkpoint"),
            Some(JournalPosition {
                file_id: 2,
                offset: 99
            })
        );
        assert_eq!(
            index.location(7, 4).expect("lookup"),
            Some(EntryLocation {
                log_id: 3,
                offset: 216,
                length: 50
            })
        );
        assert_eq!(index.ledger_locations(7).expect("scan").len(), 10);
        let loaded = index.load_log_usage().expect("usage");
        assert_eq!(loaded[&3][&7], 500);
        assert_eq!(loaded[&3][&8], 20);
        assert_eq!(loaded, usage);

        index.delete_ledger(7).expect("delete");
        assert_eq!(index.location(7, 4).expect("lookup"), None);
        assert!(index.ledger_locations(7).expect("scan").is_empty());
        assert_eq!(index.ledger_locations(8).expect("scan").len(), 1);
        let ledgers: Vec<u64> = index
            .load_ledgers()
            .expect("ledgers")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(ledgers, vec![8]);
    }
}
