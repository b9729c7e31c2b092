//! The disk's own cost of durability, measured in the same run as a benchmark so the two can be
//! compared: 4 KiB written in place into a zero-filled file, then fdatasync, many times.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;

use super::report::LatencyHistogram;

const BLOCK_BYTES: usize = 4096;

/// p50 and p99 in microseconds of `iterations` write+fdatasync rounds in `dir`.
pub fn measure_raw_fsync(dir: &Path, iterations: usize) -> anyhow::Result<(u64, u64)> {
    let path = dir.join("raw-fsync-probe");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    // Zero-fill first, as the journal does, so each round syncs data and no size change.
    let zeros = vec![0u8; BLOCK_BYTES * iterations];
    file.write_all_at(&zeros, 0)
        .context("zero-filling the probe file")?;
    file.sync_all().context("syncing the probe file")?;
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
