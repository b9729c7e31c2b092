//! RocksDB: the durable home of the Raft log, the hard state and the state machine.
//!
//! One key space, one byte of prefix per kind of record; every value is sealed (format
//! version + CRC32C, see [`crate::codec`]). Each Ready of the node becomes one atomic
//! `WriteBatch`: new log entries, hard state, applied state changes and the applied index
//! land together or not at all.
//!
//! | key | value |
//! |---|---|
//! | `L` + index (u64 BE) | Raft entry (rust-protobuf) |
//! | `H` | Raft hard state (rust-protobuf) |
//! | `S` | `LogStart`: index and term just before the first entry held |
//! | `M` | `StateMeta`: applied index and term, revision, next session id, membership |
//! | `K` + key | `KeyValue` |
//! | `E` + session id (u64 BE) | `SessionRecord` |

use std::path::Path;

use magnetar_proto::meta::{KeyValue, LogStart, SessionRecord, StateMeta};
use protobuf::Message as _;
use raft::prelude::{Entry, HardState};
use rocksdb::{WriteBatch, WriteOptions, DB};

use crate::codec::{open, open_prost, seal, seal_prost};
use crate::errors::{MetaError, Result};
use crate::state_machine::{Changes, StateMachine};

const ENTRY: u8 = b'L';
const HARD_STATE: &[u8] = b"H";
const LOG_START: &[u8] = b"S";
const STATE_META: &[u8] = b"M";
const KEY: u8 = b'K';
const SESSION: u8 = b'E';

fn entry_key(index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(ENTRY);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn kv_key(key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(KEY);
    out.extend_from_slice(key.as_bytes());
    out
}

fn session_key(session_id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(SESSION);
    key.extend_from_slice(&session_id.to_be_bytes());
    key
}

fn disk(error: rocksdb::Error) -> MetaError {
    MetaError::Internal(format!("rocksdb: {error}"))
}

fn undecodable(error: protobuf::ProtobufError) -> MetaError {
    MetaError::Internal(format!("undecodable raft record: {error}"))
}

/// What a data directory held at startup.
pub struct Loaded {
    pub hard_state: HardState,
    pub log_start: (u64, u64),
    pub entries: Vec<Entry>,
    pub machine: StateMachine,
}

/// The node's RocksDB.
pub struct Store {
    db: DB,
    sync: bool,
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path, sync: bool) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| MetaError::Internal(format!("creating {}: {e}", dir.display())))?;
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        // Every Ready that carries log entries waits for a WAL fsync. Writing over an old WAL
        // file instead of extending a new one lets that fsync skip the file-size and extent
        // metadata, which on this kind of disk is most of its cost.
        options.set_recycle_log_file_num(4);
        let db = DB::open(&options, dir).map_err(disk)?;
        Ok(Self { db, sync })
    }

    /// Everything persisted, or None for a new directory.
    pub fn load(&self) -> Result<Option<Loaded>> {
        let Some(meta) = self.db.get(STATE_META).map_err(disk)? else {
            return Ok(None);
        };
        let meta: StateMeta = open_prost(&meta)?;
        let hard_state = match self.db.get(HARD_STATE).map_err(disk)? {
            Some(bytes) => HardState::parse_from_bytes(open(&bytes)?).map_err(undecodable)?,
            None => HardState::default(),
        };
        let log_start = match self.db.get(LOG_START).map_err(disk)? {
            Some(bytes) => {
                let start: LogStart = open_prost(&bytes)?;
                (start.index, start.term)
            }
            None => (0, 0),
        };
        let mut entries = Vec::new();
        for item in self.db.prefix_iterator([ENTRY]) {
            let (key, value) = item.map_err(disk)?;
            if key.first() != Some(&ENTRY) {
                break;
            }
            let entry = Entry::parse_from_bytes(open(&value)?).map_err(undecodable)?;
            if entry.index <= log_start.0 {
                continue;
            }
            if let Some(last) = entries.last().map(|e: &Entry| e.index) {
                if entry.index != last + 1 {
                    return Err(MetaError::Internal(format!(
                        "raft log gap: entry {} follows {last}",
                        entry.index
                    )));
                }
            }
            entries.push(entry);
        }
        let mut kvs = Vec::new();
        for item in self.db.prefix_iterator([KEY]) {
            let (key, value) = item.map_err(disk)?;
            if key.first() != Some(&KEY) {
                break;
            }
            kvs.push(open_prost::<KeyValue>(&value)?);
        }
        let mut sessions = Vec::new();
        for item in self.db.prefix_iterator([SESSION]) {
            let (key, value) = item.map_err(disk)?;
            if key.first() != Some(&SESSION) {
                break;
            }
            sessions.push(open_prost::<SessionRecord>(&value)?);
        }
        Ok(Some(Loaded {
            hard_state,
            log_start,
            entries,
            machine: StateMachine::from_parts(meta, kvs, sessions),
        }))
    }

    /// Writes a batch; `durable` asks for an fsync (when the store syncs at all).
    pub fn write(&self, batch: WriteBatch, durable: bool) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(durable && self.sync);
        self.db.write_opt(batch, &options).map_err(disk)
    }
}

/// Adds new log entries to a batch, first removing any suffix they replace.
pub fn put_entries(batch: &mut WriteBatch, entries: &[Entry], old_last_index: u64) -> Result<()> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    if first.index <= old_last_index {
        batch.delete_range(entry_key(first.index), entry_key(old_last_index + 1));
    }
    for entry in entries {
        let bytes = entry.write_to_bytes().map_err(undecodable)?;
        batch.put(entry_key(entry.index), seal(&bytes));
    }
    Ok(())
}

pub fn put_hard_state(batch: &mut WriteBatch, hard_state: &HardState) -> Result<()> {
    let bytes = hard_state.write_to_bytes().map_err(undecodable)?;
    batch.put(HARD_STATE, seal(&bytes));
    Ok(())
}

/// Drops log entries up to `index` and records where the log now starts.
pub fn put_log_start(batch: &mut WriteBatch, index: u64, term: u64) {
    batch.delete_range(entry_key(0), entry_key(index + 1));
    batch.put(LOG_START, seal_prost(&LogStart { index, term }));
}

/// Drops every log entry (a snapshot replaces the log).
pub fn delete_all_entries(batch: &mut WriteBatch) {
    batch.delete_range([ENTRY].as_slice(), [ENTRY + 1].as_slice());
}

/// Persists what applying changed, and the state meta (applied index, revision...).
pub fn put_changes(batch: &mut WriteBatch, machine: &StateMachine, changes: &Changes) {
    for key in &changes.keys {
        match machine.get(key) {
            Some(kv) => batch.put(kv_key(key), seal_prost(kv)),
            None => batch.delete(kv_key(key)),
        }
    }
    for session_id in &changes.sessions {
        match machine.session_record(*session_id) {
            Some(record) => batch.put(session_key(*session_id), seal_prost(&record)),
            None => batch.delete(session_key(*session_id)),
        }
    }
    batch.put(STATE_META, seal_prost(machine.meta()));
}

/// Replaces the whole persisted state machine (a snapshot was installed) and the log.
pub fn put_whole_state(batch: &mut WriteBatch, machine: &StateMachine) {
    batch.delete_range([KEY].as_slice(), [KEY + 1].as_slice());
    batch.delete_range([SESSION].as_slice(), [SESSION + 1].as_slice());
    let snapshot = machine.to_snapshot();
    for kv in &snapshot.kvs {
        batch.put(kv_key(&kv.key), seal_prost(kv));
    }
    for session in &snapshot.sessions {
        batch.put(session_key(session.id), seal_prost(session));
    }
    batch.put(STATE_META, seal_prost(machine.meta()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use magnetar_proto::meta::{command, txn_op, Command, TxnOp, TxnRequest};

    fn put_command(key: &str) -> Command {
        Command {
            op: Some(command::Op::Txn(TxnRequest {
                compares: vec![],
                ops: vec![TxnOp {
                    kind: txn_op::Kind::Put as i32,
                    key: key.into(),
                    value: Bytes::from_static(b"v"),
                    session_id: 0,
                }],
            })),
            ..Command::default()
        }
    }

    #[test]
    fn a_written_state_loads_back() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| MetaError::Internal(e.to_string()))?;
        {
            let store = Store::open(dir.path(), false)?;
            assert!(store.load()?.is_none());
            let mut machine = StateMachine::new();
            let mut changes = Changes::default();
            machine.apply(&put_command("/a"), &mut changes)?;
            machine.apply(&put_command("/b"), &mut changes)?;
            machine.set_applied(3, 1);
            let entries: Vec<Entry> = (1..=5)
                .map(|index| Entry {
                    index,
                    term: 1,
                    ..Entry::default()
                })
                .collect();
            let mut batch = WriteBatch::default();
            put_entries(&mut batch, &entries, 0)?;
            put_changes(&mut batch, &machine, &changes);
            let hard_state = HardState {
                term: 1,
                vote: 1,
                commit: 3,
                ..HardState::default()
            };
            put_hard_state(&mut batch, &hard_state)?;
            store.write(batch, true)?;

            // Replace the suffix from 4 and compact up to 2.
            let mut batch = WriteBatch::default();
            let replacement = [Entry {
                index: 4,
                term: 2,
                ..Entry::default()
            }];
            put_entries(&mut batch, &replacement, 5)?;
            put_log_start(&mut batch, 2, 1);
            store.write(batch, true)?;
        }
        let store = Store::open(dir.path(), false)?;
        let loaded = store.load()?.ok_or(MetaError::Internal("nothing".into()))?;
        assert_eq!(loaded.hard_state.commit, 3);
        assert_eq!(loaded.log_start, (2, 1));
        let got: Vec<(u64, u64)> = loaded.entries.iter().map(|e| (e.index, e.term)).collect();
        assert_eq!(got, vec![(3, 1), (4, 2)]);
        assert_eq!(loaded.machine.revision(), 2);
        assert_eq!(loaded.machine.applied_index(), 3);
        assert!(loaded.machine.get("/b").is_some());
        Ok(())
    }
}
