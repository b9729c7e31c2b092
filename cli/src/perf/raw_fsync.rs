//! The disk's own cost of durability, measured in the same run as a benchmark so the two can be
//! compared: 4 KiB written in place into a zero-filled file, then fdatasync, many times; and,
//! for a paced run, the floor of group commit at that rate on this disk.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::report::LatencyHistogram;

const BLOCK_BYTES: usize = 4096;
/// Most the group-commit probe writes.
const FLOOR_PROBE_MAX_BYTES: usize = 64 * 1024 * 1024;

/// p50 and p99 in microseconds of `iterations` write+fdatasync rounds in `dir`.
pub fn measure_raw_fsync(dir: &Path, iterations: usize) -> anyhow::Result<(u64, u64)> {
    let path = dir.join("raw-fsync-probe");
    let file = zero_filled_probe(&path, BLOCK_BYTES * iterations)?;
    let block = vec![0x5au8; BLOCK_BYTES];
    let mut histogram = LatencyHistogram::new();
    for round in 0..iterations {
        let started = Instant::now();
        file.write_all_at(&block, (round * BLOCK_BYTES) as u64)
            .context("writing the probe block")?;
        file.sync_data().context("fdatasync of the probe file")?;
        histogram.record_us(started.elapsed().as_micros() as u64);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok((histogram.percentile_us(50.0), histogram.percentile_us(99.0)))
}

/// p50 and p99 in microseconds of the journal's floor at `rate_per_sec`: entries of
/// `record_bytes` fall due on schedule for `duration`, and one thread commits them in groups,
/// each everything due so far in one write and one fdatasync, as the journal does. Latency
/// counts from when each entry fell due. There is no network, no queue and no other thread,
/// and the thread spins rather than sleeps between groups: an add committed this way at this
/// rate cannot do better on this disk. An entry that falls due during a flush waits for it and
/// then for its own, so at rates that keep the disk busy this floor is about one and a half
/// flushes. The probe stops early past `FLOOR_PROBE_MAX_BYTES` (high rates, large entries).
pub fn measure_group_commit_floor(
    dir: &Path,
    rate_per_sec: u64,
    record_bytes: usize,
    duration: Duration,
) -> anyhow::Result<(u64, u64)> {
    let scheduled = (rate_per_sec as f64 * duration.as_secs_f64()) as usize;
    let total = scheduled
        .min(FLOOR_PROBE_MAX_BYTES / record_bytes.max(1))
        .max(1);
    let path = dir.join("group-commit-probe");
    let file = zero_filled_probe(&path, total * record_bytes)?;
    let records = vec![0x5au8; total * record_bytes];
    let interval = Duration::from_secs_f64(1.0 / rate_per_sec.max(1) as f64);
    let mut histogram = LatencyHistogram::new();
    let started = Instant::now();
    let mut committed = 0usize;
    while committed < total {
        let due =
            ((started.elapsed().as_secs_f64() / interval.as_secs_f64()) as usize + 1).min(total);
        if due == committed {
            std::hint::spin_loop();
            continue;
        }
        let range = committed * record_bytes..due * record_bytes;
        file.write_all_at(&records[range.clone()], range.start as u64)
            .context("writing the group-commit probe")?;
        file.sync_data()
            .context("fdatasync of the group-commit probe")?;
        let now = Instant::now();
        for entry in committed..due {
            let due_at = started + interval.mul_f64(entry as f64);
            histogram.record_us(now.duration_since(due_at).as_micros() as u64);
        }
        committed = due;
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok((histogram.percentile_us(50.0), histogram.percentile_us(99.0)))
}

/// A new file of `bytes` zeros, synced: each later round syncs data and no size change, as in
/// the journal's preallocated files.
pub(super) fn zero_filled_probe(path: &Path, bytes: usize) -> anyhow::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all_at(&vec![0u8; bytes], 0)
        .context("zero-filling the probe file")?;
    file.sync_all().context("syncing the probe file")?;
    Ok(file)
}
