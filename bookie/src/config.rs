//! The bookie's configuration: one struct, every field documented, with defaults that suit a
//! laptop and a `validate` that names what is wrong.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::BookieError;

/// Everything a bookie needs to start. Maps onto `magnetar bookie` flags and its TOML file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BookieConfig {
    /// Root of the bookie's files: `journal/`, `ledgers/` (entry logs) and `index/` (RocksDB).
    pub data_dir: PathBuf,
    /// Address the gRPC service listens on.
    pub listen: SocketAddr,
    /// Largest payload accepted in one entry.
    pub max_entry_size_bytes: usize,
    /// Size each journal file is preallocated to; a full file is closed and the next begins. A
    /// group larger than what is left starts the next file, and one larger than a whole file
    /// grows it.
    pub journal_file_size_bytes: u64,
    /// A group commit stops gathering adds once it holds this many bytes.
    pub journal_max_group_bytes: usize,
    /// How long a group commit may wait for more adds after the queue runs dry. Zero flushes as
    /// soon as the queue is empty: adds that arrive during an fdatasync form the next group, so
    /// batching grows with load without adding latency when the bookie is quiet.
    #[serde(with = "duration_us")]
    pub journal_max_group_wait: Duration,
    /// Bound on adds (in bytes) queued for the journal; callers wait when it is reached.
    pub journal_queue_bytes: usize,
    /// The write cache is flushed to the entry log when it holds this many bytes; when a flush
    /// is still running and the cache reaches twice this, adds wait for the flush.
    pub write_cache_flush_bytes: usize,
    /// The write cache is also flushed at least this often, so journal files can be removed.
    #[serde(with = "duration_ms")]
    pub flush_interval: Duration,
    /// An entry log is closed and a new one started past this size.
    pub entry_log_size_bytes: u64,
    /// Entry logs whose live bytes fall under this fraction of their size are compacted.
    pub compaction_threshold: f64,
    /// How often the compactor looks for entry logs to compact.
    #[serde(with = "duration_ms")]
    pub compaction_interval: Duration,
    /// Bytes per second the compactor may rewrite, so it never starves adds.
    pub compaction_max_bytes_per_sec: u64,
    /// Below this much free space the bookie turns read-only; it turns writable again once free
    /// space is back above it by a margin of 10%.
    pub min_free_space_bytes: u64,
    /// How often free space is checked.
    #[serde(with = "duration_ms")]
    pub disk_check_interval: Duration,
    /// Bound on add requests in flight on one AddEntries stream; the stream stops reading
    /// requests while the bound is reached.
    pub max_in_flight_requests_per_stream: usize,
    /// Threads of the async runtime serving gRPC when the bookie runs as its own process. Zero
    /// picks one fewer than the CPUs, and at least one: the journal writer waits on every add's
    /// fdatasync and the kernel's loopback and disk work needs a CPU too, so they keep one.
    pub network_threads: usize,
    /// Longest wait a ReadLastAddConfirmed long poll may ask for.
    #[serde(with = "duration_ms")]
    pub max_long_poll: Duration,
    /// Default cap on the payload bytes of one ReadEntry response.
    pub max_read_bytes: u64,
    /// Metadata store endpoints (`host:port`). When set, the bookie registers itself under
    /// `/bookies/available/<address>` so ledger clients can place ensembles on it.
    pub meta_endpoints: Vec<String>,
    /// Address published in the registration; empty = the bound listen address.
    pub advertise_address: String,
    /// Rack (failure domain) label published in the registration.
    pub rack: String,
    /// TTL of the registration's session: how long a dead bookie stays listed.
    #[serde(with = "duration_ms")]
    pub registration_ttl: Duration,
}

impl Default for BookieConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data/bookie"),
            listen: SocketAddr::from(([127, 0, 0, 1], 3181)),
            max_entry_size_bytes: 5 * 1024 * 1024,
            journal_file_size_bytes: 64 * 1024 * 1024,
            journal_max_group_bytes: 4 * 1024 * 1024,
            journal_max_group_wait: Duration::ZERO,
            journal_queue_bytes: 64 * 1024 * 1024,
            write_cache_flush_bytes: 64 * 1024 * 1024,
            flush_interval: Duration::from_secs(1),
            entry_log_size_bytes: 512 * 1024 * 1024,
            compaction_threshold: 0.5,
            compaction_interval: Duration::from_secs(60),
            compaction_max_bytes_per_sec: 32 * 1024 * 1024,
            min_free_space_bytes: 256 * 1024 * 1024,
            disk_check_interval: Duration::from_secs(1),
            max_in_flight_requests_per_stream: 1024,
            network_threads: 0,
            max_long_poll: Duration::from_secs(30),
            max_read_bytes: 4 * 1024 * 1024,
            meta_endpoints: Vec::new(),
            advertise_address: String::new(),
            rack: String::new(),
            registration_ttl: Duration::from_secs(6),
        }
    }
}

impl BookieConfig {
    /// How many threads serve gRPC: `network_threads`, or when that is zero, one fewer than the
    /// CPUs this process may use, and at least one.
    pub fn network_thread_count(&self) -> usize {
        if self.network_threads > 0 {
            return self.network_threads;
        }
        let cpus = std::thread::available_parallelism().map_or(1, |cpus| cpus.get());
        cpus.saturating_sub(1).max(1)
    }

    /// Checks every field against its valid range.
    pub fn validate(&self) -> Result<(), BookieError> {
        let invalid = |field: &str, why: String| {
            Err(BookieError::InvalidConfig {
                field: field.to_string(),
                reason: why,
            })
        };
        if self.max_entry_size_bytes == 0 || self.max_entry_size_bytes > 64 * 1024 * 1024 {
            return invalid(
                "max_entry_size_bytes",
                "must be between 1 and 67108864 (64 MiB)".into(),
            );
        }
        if self.journal_file_size_bytes < 1024 * 1024 {
            return invalid("journal_file_size_bytes", "must be at least 1 MiB".into());
        }
        if self.journal_max_group_bytes == 0 {
            return invalid("journal_max_group_bytes", "must be at least 1".into());
        }
        if self.journal_queue_bytes < self.max_entry_size_bytes {
            return invalid(
                "journal_queue_bytes",
                format!(
                    "must be at least max_entry_size_bytes ({})",
                    self.max_entry_size_bytes
                ),
            );
        }
        if self.write_cache_flush_bytes < 1024 * 1024 {
            return invalid("write_cache_flush_bytes", "must be at least 1 MiB".into());
        }
        if self.entry_log_size_bytes < 1024 * 1024 {
            return invalid("entry_log_size_bytes", "must be at least 1 MiB".into());
        }
        if !(0.0..=1.0).contains(&self.compaction_threshold) {
            return invalid("compaction_threshold", "must be between 0.0 and 1.0".into());
        }
        if self.compaction_max_bytes_per_sec == 0 {
            return invalid("compaction_max_bytes_per_sec", "must be at least 1".into());
        }
        if self.max_in_flight_requests_per_stream == 0 {
            return invalid(
                "max_in_flight_requests_per_stream",
                "must be at least 1".into(),
            );
        }
        if self.flush_interval.is_zero() || self.disk_check_interval.is_zero() {
            return invalid(
                "flush_interval/disk_check_interval",
                "must be greater than zero".into(),
            );
        }
        if !self.meta_endpoints.is_empty() && self.registration_ttl < Duration::from_millis(100) {
            return invalid("registration_ttl", "must be at least 100 ms".into());
        }
        Ok(())
    }

    pub fn journal_dir(&self) -> PathBuf {
        self.data_dir.join("journal")
    }

    pub fn entry_log_dir(&self) -> PathBuf {
        self.data_dir.join("ledgers")
    }

    pub fn index_dir(&self) -> PathBuf {
        self.data_dir.join("index")
    }
}

mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(deserializer)?))
    }
}

mod duration_us {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_micros() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        BookieConfig::default()
            .validate()
            .expect("defaults validate");
    }

    #[test]
    fn network_threads_leave_a_cpu_unless_set() {
        let cpus = std::thread::available_parallelism().unwrap().get();
        assert_eq!(
            BookieConfig::default().network_thread_count(),
            (cpus - 1).max(1)
        );
        let set = BookieConfig {
            network_threads: 3,
            ..BookieConfig::default()
        };
        assert_eq!(set.network_thread_count(), 3);
    }

    #[test]
    fn out_of_range_fields_are_named() {
        let config = BookieConfig {
            compaction_threshold: 1.5,
            ..BookieConfig::default()
        };
        let error = config
            .validate()
            .expect_err("threshold above 1 is rejected");
        assert!(
            error.to_string().contains("compaction_threshold"),
            "{error}"
        );

        let config = BookieConfig {
            max_entry_size_bytes: 0,
            ..BookieConfig::default()
        };
        let error = config.validate().expect_err("zero entry size is rejected");
        assert!(
            error.to_string().contains("max_entry_size_bytes"),
            "{error}"
        );
    }
}
