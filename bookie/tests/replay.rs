//! Journal replay on start: entries after the checkpoint come back; a torn or corrupt tail is
//! dropped (and reported) without losing the records before it.

mod common;

use bytes::Bytes;
use magnetar_bookie::index::{Index, LedgerMeta};
use magnetar_bookie::journal_file::journal_file_name;
use magnetar_bookie::journal_record::{
    checksum_seed, encode_entry, encoded_entry_len, file_header,
};
use magnetar_bookie::storage::LedgerStorage;

use common::{entry, small_config};

/// Writes a journal file by hand, as a bookie killed mid-write would have left it.
fn write_journal(
    dir: &std::path::Path,
    id: u64,
    entries: &[magnetar_proto::bookie::Entry],
    damage: impl FnOnce(&mut Vec<u8>),
) {
    let mut bytes = file_header(false).to_vec();
    for item in entries {
        encode_entry(item, checksum_seed(id), &mut bytes);
    }
    damage(&mut bytes);
    bytes.resize(bytes.len() + 4096, 0);
    std::fs::create_dir_all(dir).expect("journal dir");
    std::fs::write(dir.join(journal_file_name(id)), bytes).expect("journal file");
}

fn prepare(dir: &std::path::Path, ledger_id: u64) -> magnetar_bookie::BookieConfig {
    let config = small_config(dir);
    std::fs::create_dir_all(config.index_dir()).expect("index dir");
    let index = Index::open(&config.index_dir()).expect("index");
    let meta = LedgerMeta {
        writer_token: Bytes::new(),
        fenced: false,
        last_add_confirmed: -1,
        last_entry_id: -1,
    };
    index.put_ledger_now(ledger_id, &meta).expect("ledger meta");
    config
}

#[test]
fn torn_tail_is_dropped_and_everything_before_it_replays() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = prepare(dir.path(), 4);
    let entries: Vec<_> = (0..50).map(|id| entry(4, id, 200)).collect();
    let last_len = encoded_entry_len(&entries[49]);
    write_journal(&config.journal_dir(), 1, &entries, |bytes| {
        bytes.truncate(bytes.len() - last_len / 3)
    });

    let (storage, report) = LedgerStorage::open(config).expect("open replays");
    assert_eq!(report.entries, 49);
    assert_eq!(report.dropped_tails.len(), 1, "{:?}", report.dropped_tails);
    let read = storage.read_entries(4, 0, 100, u64::MAX).expect("read");
    assert_eq!(read, entries[..49]);
}

#[test]
fn flipped_byte_stops_replay_at_the_damaged_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = prepare(dir.path(), 6);
    let entries: Vec<_> = (0..20).map(|id| entry(6, id, 100)).collect();
    let damaged_offset =
        file_header(false).len() + entries[..12].iter().map(encoded_entry_len).sum::<usize>() + 30;
    write_journal(&config.journal_dir(), 1, &entries, |bytes| {
        bytes[damaged_offset] ^= 0x08
    });

    let (storage, report) = LedgerStorage::open(config).expect("open replays");
    assert_eq!(report.entries, 12);
    assert!(
        report.dropped_tails[0].contains("checksum"),
        "{:?}",
        report.dropped_tails
    );
    assert_eq!(
        storage.read_entries(6, 0, 100, u64::MAX).expect("read"),
        entries[..12]
    );
    // The replayed entries were flushed and checkpointed: a second open replays nothing new.
    drop(storage);
}

#[test]
fn a_journal_longer_than_the_write_cache_is_flushed_as_it_replays() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = prepare(dir.path(), 8);
    // Three files of 1.5 MiB of payload each, against a 1 MiB flush size: the write cache
    // passes twice the flush size during replay, before any flusher thread runs.
    let per_file = 1536;
    let entries: Vec<_> = (0..3 * per_file).map(|id| entry(8, id, 1024)).collect();
    for (file, chunk) in entries.chunks(per_file as usize).enumerate() {
        write_journal(&config.journal_dir(), file as u64 + 1, chunk, |_| {});
    }
    let journal_dir = config.journal_dir();

    let (storage, report) = LedgerStorage::open(config).expect("open replays");
    assert_eq!(report.entries, entries.len() as u64);
    // One flush per file as replay passed the flush size, and the one after replay.
    let flushes = storage
        .stats
        .flushes
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(flushes, 4, "flushes during and after replay");
    // Files wholly before the checkpoint were retired as replay went.
    assert!(!journal_dir.join(journal_file_name(1)).exists());
    assert!(!journal_dir.join(journal_file_name(2)).exists());
    let read = storage
        .read_entries(8, 0, entries.len() as u64, u64::MAX)
        .expect("read");
    assert_eq!(read, entries);
}
