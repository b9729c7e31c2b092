//! The configuration of one metadata node.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::errors::{MetaError, Result};

/// Default client and peer port, as ZooKeeper's.
pub const DEFAULT_PORT: u16 = 2181;

/// Everything a metadata node needs; every field has a working default.
#[derive(Debug, Clone)]
pub struct MetaConfig {
    /// This node's Raft id (non-zero, unique in the group).
    pub id: u64,
    /// Where RocksDB keeps the Raft log, hard state and the state machine.
    pub data_dir: PathBuf,
    /// Address to listen on for clients and peers ("127.0.0.1:0" picks a free port).
    pub listen: String,
    /// Endpoint advertised to others; empty = the bound listen address.
    pub advertise: String,
    /// The initial voters and their endpoints, this node included. Used only when the data
    /// directory is new; afterwards the membership lives in the store itself. Empty = a
    /// single-node group of this node alone.
    pub peers: BTreeMap<u64, String>,
    /// Start as a node being added to an existing group: no initial voters, wait for the
    /// leader to send a snapshot.
    pub join: bool,
    /// One Raft tick.
    pub tick_interval: Duration,
    /// Ticks without a leader's heartbeat before a follower campaigns (randomised up to 2x).
    /// The default election timeout is `election_ticks * tick_interval` = 500 ms.
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// fsync the Raft log before acknowledging (off only for throwaway benchmarks).
    pub sync_writes: bool,
    /// Largest key, in bytes.
    pub max_key_bytes: usize,
    /// Largest value, in bytes.
    pub max_value_bytes: usize,
    /// Most client commands proposed in one Raft entry.
    pub max_commands_per_entry: usize,
    /// Bound of the node's request queue; a full queue answers BUSY.
    pub request_queue: usize,
    /// How long a request may wait for a leader and a quorum before NO_QUORUM.
    pub request_timeout: Duration,
    /// Applied entries kept in the log before it is compacted behind a snapshot.
    pub compact_after_entries: u64,
    /// Recent events held for watchers; older ones answer COMPACTED.
    pub watch_log_events: usize,
    /// Shortest and longest session TTL accepted.
    pub min_session_ttl: Duration,
    pub max_session_ttl: Duration,
}

impl Default for MetaConfig {
    fn default() -> Self {
        Self {
            id: 1,
            data_dir: PathBuf::from("data/meta"),
            listen: format!("127.0.0.1:{DEFAULT_PORT}"),
            advertise: String::new(),
            peers: BTreeMap::new(),
            join: false,
            tick_interval: Duration::from_millis(50),
            election_ticks: 10,
            heartbeat_ticks: 2,
            sync_writes: true,
            max_key_bytes: 4096,
            max_value_bytes: 1 << 20,
            max_commands_per_entry: 512,
            request_queue: 8192,
            request_timeout: Duration::from_secs(3),
            compact_after_entries: 10_000,
            watch_log_events: 100_000,
            min_session_ttl: Duration::from_millis(100),
            max_session_ttl: Duration::from_secs(3600),
        }
    }
}

impl MetaConfig {
    /// The election timeout this configuration gives (before randomisation).
    pub fn election_timeout(&self) -> Duration {
        self.tick_interval * self.election_ticks as u32
    }

    /// Refuses configurations that could not work.
    pub fn validate(&self) -> Result<()> {
        let invalid = |what: &str| Err(MetaError::InvalidArgument(what.to_string()));
        if self.id == 0 {
            return invalid("id must be non-zero");
        }
        if !self.peers.is_empty() && !self.join && !self.peers.contains_key(&self.id) {
            return invalid("peers must include this node's own id");
        }
        if self.peers.contains_key(&0) {
            return invalid("peer ids must be non-zero");
        }
        if self.tick_interval.is_zero() {
            return invalid("tick_interval must be positive");
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return invalid("election_ticks must exceed heartbeat_ticks, which must be positive");
        }
        if self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return invalid("key and value limits must be positive");
        }
        if self.max_value_bytes > 16 << 20 {
            return invalid("max_value_bytes above 16 MiB is not supported");
        }
        if self.max_commands_per_entry == 0 || self.request_queue == 0 {
            return invalid("batch and queue bounds must be positive");
        }
        if self.request_timeout < self.election_timeout() {
            return invalid("request_timeout must be at least one election timeout");
        }
        if self.compact_after_entries == 0 || self.watch_log_events == 0 {
            return invalid("compaction and watch log bounds must be positive");
        }
        if self.min_session_ttl.is_zero() || self.min_session_ttl > self.max_session_ttl {
            return invalid("session TTL bounds must be positive and ordered");
        }
        Ok(())
    }
}

/// Parses `1=host:port,2=host:port` into a peer map.
pub fn parse_peers(text: &str) -> Result<BTreeMap<u64, String>> {
    let mut peers = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((id, endpoint)) = part.split_once('=') else {
            return Err(MetaError::InvalidArgument(format!(
                "peer {part:?} is not ID=HOST:PORT"
            )));
        };
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| MetaError::InvalidArgument(format!("peer id {id:?} is not a number")))?;
        if peers.insert(id, endpoint.trim().to_string()).is_some() {
            return Err(MetaError::InvalidArgument(format!("peer {id} given twice")));
        }
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_fields_are_refused() {
        assert!(MetaConfig::default().validate().is_ok());
        type Breaker = Box<dyn Fn(&mut MetaConfig)>;
        let broken: Vec<(&str, Breaker)> = vec![
            ("zero id", Box::new(|c| c.id = 0)),
            (
                "peers without self",
                Box::new(|c| {
                    c.peers.insert(2, "x:1".into());
                }),
            ),
            ("no ticks", Box::new(|c| c.tick_interval = Duration::ZERO)),
            ("election <= heartbeat", Box::new(|c| c.election_ticks = 2)),
            (
                "short timeout",
                Box::new(|c| c.request_timeout = Duration::from_millis(1)),
            ),
            ("huge values", Box::new(|c| c.max_value_bytes = 1 << 30)),
            (
                "ttl bounds",
                Box::new(|c| c.min_session_ttl = Duration::from_secs(7200)),
            ),
        ];
        for (what, breaker) in broken {
            let mut config = MetaConfig::default();
            breaker(&mut config);
            assert!(config.validate().is_err(), "{what}");
        }
    }

    #[test]
    fn peers_parse() {
        let peers = parse_peers("1=a:1, 2=b:2").expect("valid");
        assert_eq!(peers.get(&2).map(String::as_str), Some("b:2"));
        for bad in ["1", "x=a:1", "1=a:1,1=b:2"] {
            assert!(parse_peers(bad).is_err(), "{bad}");
        }
    }
}
