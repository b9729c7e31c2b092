//! Entry logs: append-only files holding flushed entries, located through the index.
//!
//! ```text
//! file:   magic "MGNELOG\0" (8) | format version u32 LE | reserved u32 | records...
//! record: body length u32 LE | CRC32C(body) u32 LE
//!         | ledger id u64 LE | entry id u64 LE | LAC i64 LE | entry CRC32C u32 LE | payload
//! ```
//!
//! The index stores (log id, offset of the record, record length) per entry; a read checks the
//! record's checksum and that it holds the entry asked for.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use magnetar_proto::bookie::Entry;
use parking_lot::Mutex;

use crate::directory::{list_file_ids, sync_directory};
use crate::error::{BookieError, Result};
use crate::write_back::{write_back, WriteBack};

const MAGIC: [u8; 8] = *b"MGNELOG\0";
const FORMAT_VERSION: u32 = 1;
pub const ENTRY_LOG_HEADER_BYTES: u64 = 16;
const RECORD_HEADER_BYTES: usize = 8;
const BODY_FIXED_BYTES: usize = 8 + 8 + 8 + 4;
/// Writes are gathered into buffers of this size.
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;
/// A flush's unit of writeback: each chunk's writeback starts as it is written and the one
/// before is waited for, so at most two chunks of a flush are queued at the disk at a time and
/// the flush's final fdatasync finds little left to write (see [`crate::write_back`]).
const WRITEBACK_CHUNK_BYTES: usize = 256 * 1024;

/// Bytes an entry with `payload_bytes` of payload takes in an entry log.
pub fn record_bytes(payload_bytes: usize) -> u64 {
    (RECORD_HEADER_BYTES + BODY_FIXED_BYTES + payload_bytes) as u64
}

/// Where an entry lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryLocation {
    pub log_id: u64,
    pub offset: u64,
    pub length: u32,
}

impl EntryLocation {
    pub const ENCODED_BYTES: usize = 1 + 8 + 8 + 4;

    /// Index value: format version, then the three fields little-endian.
    pub fn encode(&self) -> [u8; Self::ENCODED_BYTES] {
        let mut bytes = [0u8; Self::ENCODED_BYTES];
        bytes[0] = 1;
        bytes[1..9].copy_from_slice(&self.log_id.to_le_bytes());
        bytes[9..17].copy_from_slice(&self.offset.to_le_bytes());
        bytes[17..21].copy_from_slice(&self.length.to_le_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != Self::ENCODED_BYTES || bytes[0] != 1 {
            return None;
        }
        let mut fields = &bytes[1..];
        Some(Self {
            log_id: fields.get_u64_le(),
            offset: fields.get_u64_le(),
            length: fields.get_u32_le(),
        })
    }
}

pub fn entry_log_file_name(id: u64) -> String {
    format!("{id:016x}.log")
}

/// Ids of the entry logs in `dir`, in order.
pub fn list_entry_logs(dir: &Path) -> Result<Vec<u64>> {
    list_file_ids(dir, ".log")
}

/// Appends entries to the current entry log, starting a new one past the size limit.
pub struct EntryLogWriter {
    dir: PathBuf,
    size_limit_bytes: u64,
    next_id: u64,
    current: Option<OpenLog>,
    buffer: Vec<u8>,
    /// Logs closed since the last sync; synced before the index may point into them.
    unsynced_closed: Vec<File>,
}

struct OpenLog {
    id: u64,
    file: File,
    /// Offset where `buffer` begins in the file.
    flushed_offset: u64,
    /// The chunk whose writeback was started last and not yet waited for.
    writing_back: Option<(u64, u64)>,
}

impl EntryLogWriter {
    pub fn new(dir: PathBuf, size_limit_bytes: u64, next_id: u64) -> Self {
        Self {
            dir,
            size_limit_bytes,
            next_id,
            current: None,
            buffer: Vec::with_capacity(WRITE_BUFFER_BYTES),
            unsynced_closed: Vec::new(),
        }
    }

    /// The id of the log being appended to, if one is open.
    pub fn current_log_id(&self) -> Option<u64> {
        self.current.as_ref().map(|log| log.id)
    }

    /// Appends an entry; it is durable only after [`EntryLogWriter::sync`].
    pub fn append(&mut self, entry: &Entry) -> Result<EntryLocation> {
        let record_len = record_bytes(entry.payload.len()) as usize;
        let needs_new_log = match &self.current {
            None => true,
            Some(log) => {
                let end = log.flushed_offset + self.buffer.len() as u64;
                end > ENTRY_LOG_HEADER_BYTES && end + record_len as u64 > self.size_limit_bytes
            }
        };
        if needs_new_log {
            self.open_next()?;
        }
        let Some(log) = self.current.as_ref() else {
            return Err(BookieError::io(
                "appending to the entry log",
                std::io::Error::other("no entry log is open"),
            ));
        };
        let offset = log.flushed_offset + self.buffer.len() as u64;
        let log_id = log.id;
        let start = self.buffer.len();
        let body_len = (BODY_FIXED_BYTES + entry.payload.len()) as u32;
        self.buffer.extend_from_slice(&body_len.to_le_bytes());
        self.buffer.extend_from_slice(&[0u8; 4]);
        self.buffer
            .extend_from_slice(&entry.ledger_id.to_le_bytes());
        self.buffer.extend_from_slice(&entry.entry_id.to_le_bytes());
        self.buffer
            .extend_from_slice(&entry.last_add_confirmed.to_le_bytes());
        self.buffer.extend_from_slice(&entry.crc32c.to_le_bytes());
        self.buffer.extend_from_slice(&entry.payload);
        let crc = crc32c::crc32c(&self.buffer[start + RECORD_HEADER_BYTES..]);
        self.buffer[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        if self.buffer.len() >= WRITE_BUFFER_BYTES {
            self.write_buffer()?;
        }
        Ok(EntryLocation {
            log_id,
            offset,
            length: record_len as u32,
        })
    }

    /// Bytes appended and not yet written to the file.
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Writes what is buffered to the file and starts its writeback, without syncing; returns
    /// how many bytes that was. A paced flush calls this a step at a time.
    pub fn write_buffered(&mut self) -> Result<u64> {
        let bytes = self.buffer.len() as u64;
        self.write_buffer()?;
        Ok(bytes)
    }

    /// Writes what is buffered and makes every appended entry durable.
    pub fn sync(&mut self) -> Result<()> {
        self.write_buffer()?;
        for file in self.unsynced_closed.drain(..) {
            file.sync_data()
                .map_err(|source| BookieError::io("syncing a closed entry log", source))?;
        }
        if let Some(log) = &self.current {
            log.file
                .sync_data()
                .map_err(|source| BookieError::io("syncing the entry log", source))?;
        }
        Ok(())
    }

    /// After a failed write the file's state is unknown: forget it, so the next append starts
    /// a new log. Entries already indexed in it were synced before and stay readable.
    pub fn abandon_current(&mut self) {
        self.buffer.clear();
        self.current = None;
        self.unsynced_closed.clear();
    }

    fn write_buffer(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let Some(log) = self.current.as_mut() else {
            return Ok(());
        };
        for chunk in self.buffer.chunks(WRITEBACK_CHUNK_BYTES) {
            log.file
                .write_all_at(chunk, log.flushed_offset)
                .map_err(|source| BookieError::io("writing the entry log", source))?;
            let range = (log.flushed_offset, chunk.len() as u64);
            write_back(&log.file, range.0, range.1, WriteBack::Start)
                .map_err(|source| BookieError::io("writing back the entry log", source))?;
            if let Some(previous) = log.writing_back.replace(range) {
                write_back(&log.file, previous.0, previous.1, WriteBack::Finish)
                    .map_err(|source| BookieError::io("writing back the entry log", source))?;
            }
            log.flushed_offset += chunk.len() as u64;
        }
        self.buffer.clear();
        Ok(())
    }

    fn open_next(&mut self) -> Result<()> {
        self.write_buffer()?;
        if let Some(previous) = self.current.take() {
            self.unsynced_closed.push(previous.file);
        }
        let id = self.next_id;
        let path = self.dir.join(entry_log_file_name(id));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| BookieError::io(format!("creating {}", path.display()), source))?;
        let mut header = [0u8; ENTRY_LOG_HEADER_BYTES as usize];
        header[0..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        file.write_all_at(&header, 0)
            .map_err(|source| BookieError::io(format!("writing {}", path.display()), source))?;
        sync_directory(&self.dir)?;
        self.next_id += 1;
        self.current = Some(OpenLog {
            id,
            file,
            flushed_offset: ENTRY_LOG_HEADER_BYTES,
            writing_back: None,
        });
        Ok(())
    }
}

/// Reads entries by location, keeping files open.
pub struct EntryLogReader {
    dir: PathBuf,
    open_files: Mutex<HashMap<u64, Arc<File>>>,
}

impl EntryLogReader {
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            open_files: Mutex::new(HashMap::new()),
        }
    }

    fn file(&self, log_id: u64) -> Result<Arc<File>> {
        if let Some(file) = self.open_files.lock().get(&log_id) {
            return Ok(file.clone());
        }
        let path = self.dir.join(entry_log_file_name(log_id));
        let file =
            Arc::new(File::open(&path).map_err(|source| {
                BookieError::io(format!("opening {}", path.display()), source)
            })?);
        self.open_files.lock().insert(log_id, file.clone());
        Ok(file)
    }

    /// Reads and checks the entry at `location`, which must be `ledger_id:entry_id`.
    pub fn read(&self, location: EntryLocation, ledger_id: u64, entry_id: u64) -> Result<Entry> {
        let file = self.file(location.log_id)?;
        let mut record = vec![0u8; location.length as usize];
        file.read_exact_at(&mut record, location.offset)
            .map_err(|source| {
                BookieError::io(format!("reading entry log {}", location.log_id), source)
            })?;
        let corrupt = |reason: &str| BookieError::Corrupt {
            location: format!(
                "entry log {} at offset {} ({ledger_id}:{entry_id})",
                location.log_id, location.offset
            ),
            reason: reason.to_string(),
        };
        decode_record(Bytes::from(record))
            .ok_or_else(|| corrupt("record checksum or length mismatch"))
            .and_then(|entry| {
                if entry.ledger_id == ledger_id && entry.entry_id == entry_id {
                    Ok(entry)
                } else {
                    Err(corrupt("record holds a different entry"))
                }
            })
    }

    /// Closes and deletes a log (after compaction moved everything live out of it).
    pub fn remove(&self, log_id: u64) -> Result<()> {
        self.open_files.lock().remove(&log_id);
        let path = self.dir.join(entry_log_file_name(log_id));
        match std::fs::remove_file(&path) {
            Ok(()) => sync_directory(&self.dir),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(BookieError::io(
                format!("removing {}", path.display()),
                source,
            )),
        }
    }
}

/// Decodes one whole record (header included); `None` if its length or checksum is wrong.
fn decode_record(record: Bytes) -> Option<Entry> {
    if record.len() < RECORD_HEADER_BYTES + BODY_FIXED_BYTES {
        return None;
    }
    let mut header = &record[..RECORD_HEADER_BYTES];
    let body_len = header.get_u32_le() as usize;
    let crc = header.get_u32_le();
    if body_len != record.len() - RECORD_HEADER_BYTES {
        return None;
    }
    let body = record.slice(RECORD_HEADER_BYTES..);
    if crc32c::crc32c(&body) != crc {
        return None;
    }
    let mut fields = &body[..BODY_FIXED_BYTES];
    Some(Entry {
        ledger_id: fields.get_u64_le(),
        entry_id: fields.get_u64_le(),
        last_add_confirmed: fields.get_i64_le(),
        crc32c: fields.get_u32_le(),
        payload: body.slice(BODY_FIXED_BYTES..),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::new_entry;

    #[test]
    fn entries_round_trip_across_log_rollover() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut writer = EntryLogWriter::new(dir.path().to_path_buf(), 4096, 1);
        let entries: Vec<Entry> = (0..100)
            .map(|id| new_entry(9, id, id as i64 - 1, Bytes::from(vec![id as u8; 100])))
            .collect();
        let locations: Vec<EntryLocation> = entries
            .iter()
            .map(|entry| writer.append(entry).expect("append"))
            .collect();
        writer.sync().expect("sync");
        let logs = list_entry_logs(dir.path()).expect("list");
        assert!(
            logs.len() > 1,
            "100 entries of 100 bytes span several 4 KiB logs: {logs:?}"
        );

        let reader = EntryLogReader::new(dir.path().to_path_buf());
        for (entry, location) in entries.iter().zip(&locations) {
            let decoded = EntryLocation::decode(&location.encode()).expect("location decodes");
            assert_eq!(decoded, *location);
            let read = reader.read(decoded, 9, entry.entry_id).expect("read");
            assert_eq!(&read, entry);
        }
    }

    #[test]
    fn damaged_record_is_reported_not_returned() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut writer = EntryLogWriter::new(dir.path().to_path_buf(), 1 << 20, 1);
        let location = writer
            .append(&new_entry(1, 1, 0, Bytes::from_static(b"precious")))
            .expect("append");
        writer.sync().expect("sync");
        let path = dir.path().join(entry_log_file_name(location.log_id));
        let mut bytes = std::fs::read(&path).expect("read file");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).expect("write file");

        let reader = EntryLogReader::new(dir.path().to_path_buf());
        let error = reader
            .read(location, 1, 1)
            .expect_err("corruption is detected");
        assert!(matches!(error, BookieError::Corrupt { .. }), "{error}");
        assert!(
            reader.read(location, 1, 2).is_err(),
            "wrong entry id is refused"
        );
    }
}
