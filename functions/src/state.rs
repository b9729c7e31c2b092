//! Function state on the worker: per function a key-value store (bytes), 64-bit counters and
//! named sketches, all in one RocksDB per worker, listable by prefix, and snapshotted to bytes
//! and restored whole (the checkpoints of the next layer are built on this).
//!
//! Keys on disk are `u16 BE name length, function name, tag, user key`: the length prefix
//! means no function's key space is a prefix of another's, so two functions in one process
//! never see each other's entries. Tags: `k` key-value, `c` counter (8 bytes LE), `s` sketch
//! (the sketches crate's checksummed envelope).
//!
//! Writes skip the RocksDB write-ahead log: the durable point of function state is the
//! snapshot taken with the input positions, so a crash restores the last snapshot and replays
//! input, and per-write logging would only cost throughput. Counters and sketches live in
//! memory and are written (when changed) by [`FunctionState::flush`], which
//! [`FunctionState::snapshot`] calls first: a Count-Min of 80 KB is not rewritten per message.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use magnetar_sketches::{registry, Answer, Item, Params, Stored};
use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use crate::error::{FunctionError, Result};

const TAG_KV: u8 = b'k';
const TAG_COUNTER: u8 = b'c';
const TAG_SKETCH: u8 = b's';

const SNAPSHOT_MAGIC: &[u8; 4] = b"MGFS";
const SNAPSHOT_VERSION: u8 = 1;

/// The state of every function on a worker: one RocksDB database.
#[derive(Clone)]
pub struct StateStore {
    db: Arc<DB>,
}

impl StateStore {
    /// Opens (creating if needed) the store in `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let mut options = Options::default();
        options.create_if_missing(true);
        let db = DB::open(&options, path.as_ref())?;
        Ok(StateStore { db: Arc::new(db) })
    }

    /// The state of function `name`. One handle per function instance: counters and sketches
    /// are cached in the handle, so two live handles of one name would overwrite each other.
    pub fn function(&self, name: &str) -> Result<FunctionState> {
        let length = u16::try_from(name.len()).map_err(|_| {
            FunctionError::InvalidConfig(format!(
                "function name of {} bytes; at most 65535",
                name.len()
            ))
        })?;
        let mut prefix = length.to_be_bytes().to_vec();
        prefix.extend_from_slice(name.as_bytes());
        let mut write_options = WriteOptions::default();
        write_options.disable_wal(true);
        Ok(FunctionState {
            db: Arc::clone(&self.db),
            prefix,
            write_options,
            counters: HashMap::new(),
            sketches: HashMap::new(),
        })
    }

    /// Flushes RocksDB's memtables to disk: everything written so far survives a crash.
    pub fn persist(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

struct CachedCounter {
    value: i64,
    dirty: bool,
}

struct CachedSketch {
    sketch: Stored,
    dirty: bool,
}

/// One function's state.
pub struct FunctionState {
    db: Arc<DB>,
    prefix: Vec<u8>,
    write_options: WriteOptions,
    counters: HashMap<Vec<u8>, CachedCounter>,
    sketches: HashMap<String, CachedSketch>,
}

/// Parses a sketch spec: a kind name, optionally `:` and `name=value;...` parameters.
pub fn build_sketch(spec: &str) -> Result<Stored> {
    let (kind, params) = spec.split_once(':').unwrap_or((spec, ""));
    let params = Params::parse(params)?;
    Ok(registry::build(kind.trim(), &params)?)
}

impl FunctionState {
    fn key(&self, tag: u8, user_key: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.prefix.len() + 1 + user_key.len());
        key.extend_from_slice(&self.prefix);
        key.push(tag);
        key.extend_from_slice(user_key);
        key
    }

    /// The value under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(self.key(TAG_KV, key))?)
    }

    /// Stores `value` under `key`.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.db
            .put_opt(self.key(TAG_KV, key), value, &self.write_options)?;
        Ok(())
    }

    /// Removes `key`.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.db
            .delete_opt(self.key(TAG_KV, key), &self.write_options)?;
        Ok(())
    }

    /// Up to `limit` `(key, value)` pairs whose key starts with `prefix`, in key order.
    pub fn list(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = self.key(TAG_KV, prefix);
        let strip = self.prefix.len() + 1;
        let mut pairs = Vec::new();
        for entry in self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward))
        {
            if pairs.len() >= limit {
                break;
            }
            let (key, value) = entry?;
            if !key.starts_with(&start) {
                break;
            }
            pairs.push((key[strip..].to_vec(), value.to_vec()));
        }
        Ok(pairs)
    }

    fn counter_slot(&mut self, name: &[u8]) -> Result<&mut CachedCounter> {
        if !self.counters.contains_key(name) {
            let stored = self.db.get(self.key(TAG_COUNTER, name))?;
            let value = match stored {
                None => 0,
                Some(bytes) => i64::from_le_bytes(bytes.as_slice().try_into().map_err(|_| {
                    FunctionError::State(format!("counter of {} bytes, not 8", bytes.len()))
                })?),
            };
            self.counters.insert(
                name.to_vec(),
                CachedCounter {
                    value,
                    dirty: false,
                },
            );
        }
        self.counters
            .get_mut(name)
            .ok_or_else(|| FunctionError::State("counter vanished from the cache".into()))
    }

    /// Adds `delta` to counter `name` (wrapping); returns the new value.
    pub fn counter_incr(&mut self, name: &[u8], delta: i64) -> Result<i64> {
        let slot = self.counter_slot(name)?;
        slot.value = slot.value.wrapping_add(delta);
        slot.dirty = true;
        Ok(slot.value)
    }

    /// The value of counter `name` (0 if never set).
    pub fn counter_get(&mut self, name: &[u8]) -> Result<i64> {
        Ok(self.counter_slot(name)?.value)
    }

    fn load_sketch(&mut self, name: &str) -> Result<bool> {
        if self.sketches.contains_key(name) {
            return Ok(true);
        }
        match self.db.get(self.key(TAG_SKETCH, name.as_bytes()))? {
            None => Ok(false),
            Some(bytes) => {
                let sketch = registry::decode(&bytes)?;
                self.sketches.insert(
                    name.to_owned(),
                    CachedSketch {
                        sketch,
                        dirty: false,
                    },
                );
                Ok(true)
            }
        }
    }

    /// Adds `item` to sketch `name`, building it from `spec` (see [`build_sketch`]) if it
    /// does not exist yet. `event_time_ms` places the item in a windowed sketch.
    pub fn sketch_update(
        &mut self,
        name: &str,
        spec: &str,
        event_time_ms: i64,
        item: Item<'_>,
    ) -> Result<()> {
        if !self.load_sketch(name)? {
            self.insert_sketch(name, build_sketch(spec)?);
        }
        let slot = self
            .sketches
            .get_mut(name)
            .ok_or_else(|| FunctionError::State("sketch vanished from the cache".into()))?;
        slot.dirty = true;
        slot.sketch.update(event_time_ms, item)?;
        Ok(())
    }

    /// Replaces (or creates) sketch `name`.
    pub fn insert_sketch(&mut self, name: &str, sketch: Stored) {
        self.sketches.insert(
            name.to_owned(),
            CachedSketch {
                sketch,
                dirty: true,
            },
        );
    }

    /// Sketch `name`, if it exists.
    pub fn sketch(&mut self, name: &str) -> Result<Option<&mut Stored>> {
        if !self.load_sketch(name)? {
            return Ok(None);
        }
        Ok(self.sketches.get_mut(name).map(|slot| {
            slot.dirty = true;
            &mut slot.sketch
        }))
    }

    /// Answers `query` on sketch `name`; `None` when the sketch does not exist.
    pub fn sketch_query(
        &mut self,
        name: &str,
        query: &str,
        args: &Params,
    ) -> Result<Option<Answer>> {
        if !self.load_sketch(name)? {
            return Ok(None);
        }
        match self.sketches.get(name) {
            Some(slot) => Ok(Some(slot.sketch.query(query, args)?)),
            None => Ok(None),
        }
    }

    /// Names of the sketches of this function (written or in memory), in order.
    pub fn sketch_names(&self) -> Result<Vec<String>> {
        let start = self.key(TAG_SKETCH, b"");
        let mut names: Vec<String> = self.sketches.keys().cloned().collect();
        for entry in self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward))
        {
            let (key, _) = entry?;
            if !key.starts_with(&start) {
                break;
            }
            names.push(String::from_utf8_lossy(&key[start.len()..]).into_owned());
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Writes the changed counters and sketches to the store.
    pub fn flush(&mut self) -> Result<()> {
        let mut batch = WriteBatch::default();
        let mut any = false;
        for (name, slot) in self.counters.iter_mut().filter(|(_, slot)| slot.dirty) {
            let mut key = self.prefix.clone();
            key.push(TAG_COUNTER);
            key.extend_from_slice(name);
            batch.put(key, slot.value.to_le_bytes());
            slot.dirty = false;
            any = true;
        }
        for (name, slot) in self.sketches.iter_mut().filter(|(_, slot)| slot.dirty) {
            let mut key = self.prefix.clone();
            key.push(TAG_SKETCH);
            key.extend_from_slice(name.as_bytes());
            batch.put(key, slot.sketch.to_bytes());
            slot.dirty = false;
            any = true;
        }
        if any {
            self.db.write_opt(batch, &self.write_options)?;
        }
        Ok(())
    }

    /// The whole state of this function as bytes: `MGFS`, version, entry count, entries
    /// (`tag, u32 key length, key, u32 value length, value`), CRC-32C of all before it.
    pub fn snapshot(&mut self) -> Result<Vec<u8>> {
        self.flush()?;
        let mut entries = Vec::new();
        let mut count: u64 = 0;
        for entry in self
            .db
            .iterator(IteratorMode::From(&self.prefix, Direction::Forward))
        {
            let (key, value) = entry?;
            if !key.starts_with(&self.prefix) {
                break;
            }
            let rest = &key[self.prefix.len()..];
            let Some((&tag, user_key)) = rest.split_first() else {
                continue;
            };
            entries.push(tag);
            write_bytes(&mut entries, user_key);
            write_bytes(&mut entries, &value);
            count += 1;
        }
        let mut snapshot = Vec::with_capacity(entries.len() + 17);
        snapshot.extend_from_slice(SNAPSHOT_MAGIC);
        snapshot.push(SNAPSHOT_VERSION);
        snapshot.extend_from_slice(&count.to_le_bytes());
        snapshot.extend_from_slice(&entries);
        let checksum = crc32c::crc32c(&snapshot);
        snapshot.extend_from_slice(&checksum.to_le_bytes());
        Ok(snapshot)
    }

    /// Replaces this function's whole state with a snapshot. A snapshot that fails its
    /// checks changes nothing.
    pub fn restore(&mut self, snapshot: &[u8]) -> Result<()> {
        let entries = decode_snapshot(snapshot)?;
        let mut batch = WriteBatch::default();
        let mut end = self.prefix.clone();
        // Every key of this function is below prefix + 0xFF.. since tags are ASCII letters.
        end.push(0xFF);
        batch.delete_range(&self.prefix, &end);
        for (tag, key, value) in entries {
            if ![TAG_KV, TAG_COUNTER, TAG_SKETCH].contains(&tag) {
                return Err(FunctionError::CorruptSnapshot(format!("unknown tag {tag}")));
            }
            let mut full = self.prefix.clone();
            full.push(tag);
            full.extend_from_slice(key);
            batch.put(full, value);
        }
        self.db.write_opt(batch, &self.write_options)?;
        self.counters.clear();
        self.sketches.clear();
        Ok(())
    }
}

fn write_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

type SnapshotEntry<'a> = (u8, &'a [u8], &'a [u8]);

fn decode_snapshot(snapshot: &[u8]) -> Result<Vec<SnapshotEntry<'_>>> {
    let corrupt = |why: &str| FunctionError::CorruptSnapshot(why.to_owned());
    if snapshot.len() < 17 {
        return Err(corrupt("shorter than its header and checksum"));
    }
    let (body, checksum) = snapshot.split_at(snapshot.len() - 4);
    let expected = u32::from_le_bytes(checksum.try_into().map_err(|_| corrupt("checksum"))?);
    if crc32c::crc32c(body) != expected {
        return Err(corrupt("checksum mismatch"));
    }
    if &body[..4] != SNAPSHOT_MAGIC {
        return Err(corrupt("not a function state snapshot"));
    }
    if body[4] != SNAPSHOT_VERSION {
        return Err(FunctionError::CorruptSnapshot(format!(
            "format version {}, this worker reads {SNAPSHOT_VERSION}",
            body[4]
        )));
    }
    let count = u64::from_le_bytes(body[5..13].try_into().map_err(|_| corrupt("count"))?);
    let mut position: usize = 13;
    let mut take = |len: usize| -> Result<&[u8]> {
        let end = position
            .checked_add(len)
            .filter(|end| *end <= body.len())
            .ok_or_else(|| corrupt("truncated entry"))?;
        let slice = &body[position..end];
        position = end;
        Ok(slice)
    };
    let mut entries = Vec::new();
    for _ in 0..count {
        let tag = take(1)?[0];
        let key_len = u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt("length"))?);
        let key = take(key_len as usize)?;
        let value_len = u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt("length"))?);
        let value = take(value_len as usize)?;
        entries.push((tag, key, value));
    }
    if position != body.len() {
        return Err(corrupt("bytes after the last entry"));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, StateStore) {
        let directory = tempfile::tempdir().unwrap();
        let store = StateStore::open(directory.path()).unwrap();
        (directory, store)
    }

    #[test]
    fn functions_do_not_see_each_other() {
        let (_directory, store) = store();
        // "a" is a prefix of "ab": the length prefix keeps their key spaces apart.
        let mut a = store.function("a").unwrap();
        let mut ab = store.function("ab").unwrap();
        a.put(b"bkey", b"from a").unwrap();
        ab.put(b"key", b"from ab").unwrap();
        a.counter_incr(b"n", 5).unwrap();
        a.flush().unwrap();
        assert_eq!(ab.get(b"bkey").unwrap(), None);
        assert_eq!(a.get(b"key").unwrap(), None);
        assert_eq!(
            ab.list(b"", 100).unwrap(),
            vec![(b"key".to_vec(), b"from ab".to_vec())]
        );
        assert_eq!(ab.counter_get(b"n").unwrap(), 0);
        let snapshot = ab.snapshot().unwrap();
        a.restore(&snapshot).unwrap();
        assert_eq!(a.get(b"bkey").unwrap(), None);
        assert_eq!(a.get(b"key").unwrap(), Some(b"from ab".to_vec()));
        assert_eq!(ab.get(b"key").unwrap(), Some(b"from ab".to_vec()));
    }

    #[test]
    fn list_by_prefix_is_ordered_and_bounded() {
        let (_directory, store) = store();
        let state = store.function("f").unwrap();
        for key in ["user:3", "user:1", "order:1", "user:2", "users"] {
            state.put(key.as_bytes(), b"v").unwrap();
        }
        let keys: Vec<Vec<u8>> = state
            .list(b"user:", 2)
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(keys, vec![b"user:1".to_vec(), b"user:2".to_vec()]);
        assert_eq!(state.list(b"user:", 10).unwrap().len(), 3);
    }

    #[test]
    fn snapshot_restore_gives_identical_answers() {
        let (_directory, store) = store();
        let mut state = store.function("f").unwrap();
        state.put(b"k", b"v").unwrap();
        state.counter_incr(b"c", 41).unwrap();
        for page in ["/a", "/a", "/b"] {
            state
                .sketch_update("pages", "count_min", 0, Item::Str(page))
                .unwrap();
        }
        let snapshot = state.snapshot().unwrap();
        let query = Params::new().with("item", "/a");
        let before = state.sketch_query("pages", "estimate", &query).unwrap();

        state.put(b"k", b"changed").unwrap();
        state.put(b"extra", b"x").unwrap();
        state.counter_incr(b"c", 1).unwrap();
        state
            .sketch_update("pages", "count_min", 0, Item::Str("/a"))
            .unwrap();
        state.restore(&snapshot).unwrap();

        assert_eq!(state.get(b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(state.get(b"extra").unwrap(), None);
        assert_eq!(state.counter_get(b"c").unwrap(), 41);
        assert_eq!(
            state.sketch_query("pages", "estimate", &query).unwrap(),
            before
        );
        assert_eq!(state.snapshot().unwrap(), snapshot);
    }

    #[test]
    fn corrupt_snapshots_are_refused_and_change_nothing() {
        let (_directory, store) = store();
        let mut state = store.function("f").unwrap();
        state.put(b"k", b"v").unwrap();
        let snapshot = state.snapshot().unwrap();
        let mut flipped = snapshot.clone();
        flipped[14] ^= 1;
        for bad in [
            &snapshot[..10],
            &snapshot[..snapshot.len() - 1],
            &flipped[..],
        ] {
            let error = state.restore(bad).unwrap_err();
            assert_eq!(error.code(), "FN_CORRUPT_SNAPSHOT", "{error}");
        }
        assert_eq!(state.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn counters_and_sketches_survive_a_reopen_after_flush() {
        let directory = tempfile::tempdir().unwrap();
        {
            let store = StateStore::open(directory.path()).unwrap();
            let mut state = store.function("f").unwrap();
            state.counter_incr(b"n", 7).unwrap();
            state.sketch_update("d", "hll", 0, Item::Int(1)).unwrap();
            state.flush().unwrap();
            store.persist().unwrap();
        }
        let store = StateStore::open(directory.path()).unwrap();
        let mut state = store.function("f").unwrap();
        assert_eq!(state.counter_get(b"n").unwrap(), 7);
        assert_eq!(state.sketch_names().unwrap(), vec!["d".to_owned()]);
    }
}
