//! The floor of an add that crosses a socket: group commit as in
//! [`super::raw_fsync::measure_group_commit_floor`], but behind one loopback TCP round trip,
//! with the least machinery that can carry it. One client thread paces records and writes
//! whatever is due with one call; one server thread reads whatever has arrived, writes it with
//! one call and one fdatasync, and answers with the count committed so far; one thread on the
//! client reads the answers. No gRPC, no async runtime, no queue between threads on the server.
//! The pacing sleeps as `magnetar perf`'s pacer does, so the lateness of a sleeping thread is
//! charged here as it is to the bookie. What an add through the bookie costs above this figure
//! is the bookie's own doing; what this figure costs above the group-commit floor is the
//! socket's and the scheduler's.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::raw_fsync::zero_filled_probe;
use super::report::LatencyHistogram;

/// Most the probe writes.
const PROBE_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Most one read on the server takes in.
const READ_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// p50 and p99 in microseconds of records of `record_bytes` falling due at `rate_per_sec` for
/// `duration`, each counted from when it fell due until the client reads that it is durable.
pub fn measure_socket_floor(
    dir: &Path,
    rate_per_sec: u64,
    record_bytes: usize,
    duration: Duration,
) -> anyhow::Result<(u64, u64)> {
    let histogram = socket_floor_latencies(dir, rate_per_sec, record_bytes, duration)?;
    Ok((histogram.percentile_us(50.0), histogram.percentile_us(99.0)))
}

fn socket_floor_latencies(
    dir: &Path,
    rate_per_sec: u64,
    record_bytes: usize,
    duration: Duration,
) -> anyhow::Result<LatencyHistogram> {
    let record_bytes = record_bytes.max(8);
    let scheduled = (rate_per_sec as f64 * duration.as_secs_f64()) as usize;
    let total = scheduled.min(PROBE_MAX_BYTES / record_bytes).max(1);
    let path = dir.join("socket-floor-probe");
    let file = zero_filled_probe(&path, total * record_bytes)?;
    let listener = TcpListener::bind("127.0.0.1:0").context("listening on loopback")?;
    let address = listener.local_addr()?;
    let server = std::thread::Builder::new()
        .name("socket-floor-server".into())
        .spawn(move || serve(listener, file, record_bytes))
        .context("starting the probe's server thread")?;

    let client = TcpStream::connect(address).context("connecting to the probe's server")?;
    client.set_nodelay(true)?;
    let answers = client.try_clone()?;
    let interval = Duration::from_secs_f64(1.0 / rate_per_sec.max(1) as f64);
    let started = Instant::now();
    let receiver = std::thread::Builder::new()
        .name("socket-floor-client".into())
        .spawn(move || read_answers(answers, total, started, interval))
        .context("starting the probe's receiving thread")?;

    let outcome = send_on_schedule(&client, total, record_bytes, started, interval);
    // Ends the server's loop once it has answered everything sent.
    let _ = client.shutdown(Shutdown::Write);
    let histogram = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("the probe's receiving thread panicked"))??;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("the probe's server thread panicked"))??;
    outcome?;
    let _ = std::fs::remove_file(&path);
    Ok(histogram)
}

/// Writes each record once it falls due, every record already due in one write.
fn send_on_schedule(
    mut client: &TcpStream,
    total: usize,
    record_bytes: usize,
    started: Instant,
    interval: Duration,
) -> anyhow::Result<()> {
    let records = vec![0x5au8; record_bytes * total];
    let mut sent = 0usize;
    while sent < total {
        let due = started + interval.mul_f64(sent as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let due_now = ((elapsed / interval.as_secs_f64()) as usize + 1).clamp(sent + 1, total);
        client
            .write_all(&records[sent * record_bytes..due_now * record_bytes])
            .context("sending probe records")?;
        sent = due_now;
    }
    Ok(())
}

/// The server: reads what has arrived, commits the whole records with one write and one
/// fdatasync, and answers with how many records are durable so far.
fn serve(listener: TcpListener, file: File, record_bytes: usize) -> anyhow::Result<()> {
    let (mut connection, _) = listener.accept().context("accepting the probe's client")?;
    connection.set_nodelay(true)?;
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    let (mut held, mut committed, mut offset) = (0usize, 0u64, 0u64);
    loop {
        let read = connection
            .read(&mut buffer[held..])
            .context("reading probe records")?;
        if read == 0 {
            return Ok(());
        }
        held += read;
        let whole = held / record_bytes * record_bytes;
        if whole == 0 {
            continue;
        }
        file.write_all_at(&buffer[..whole], offset)
            .context("writing the socket-floor probe")?;
        file.sync_data()
            .context("fdatasync of the socket-floor probe")?;
        offset += whole as u64;
        committed += (whole / record_bytes) as u64;
        connection
            .write_all(&committed.to_le_bytes())
            .context("answering the probe's client")?;
        buffer.copy_within(whole..held, 0);
        held -= whole;
    }
}

/// Reads the server's counts and records, for each newly durable record, the time since it
/// fell due.
fn read_answers(
    mut answers: TcpStream,
    total: usize,
    started: Instant,
    interval: Duration,
) -> anyhow::Result<LatencyHistogram> {
    let mut histogram = LatencyHistogram::new();
    let mut acknowledged = 0usize;
    let mut count = [0u8; 8];
    while acknowledged < total {
        answers
            .read_exact(&mut count)
            .context("reading the probe's answers")?;
        let now = Instant::now();
        let durable = (u64::from_le_bytes(count) as usize).min(total);
        for record in acknowledged..durable {
            let due_at = started + interval.mul_f64(record as f64);
            histogram.record_us(now.duration_since(due_at).as_micros() as u64);
        }
        acknowledged = acknowledged.max(durable);
    }
    Ok(histogram)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_is_answered_and_timed_once() {
        let dir = tempfile::tempdir().unwrap();
        let latencies =
            socket_floor_latencies(dir.path(), 2_000, 120, Duration::from_millis(200)).unwrap();
        assert_eq!(latencies.count(), 400);
        assert!(!dir.path().join("socket-floor-probe").exists());
    }
}
