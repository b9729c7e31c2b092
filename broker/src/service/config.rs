//! A broker's configuration: flags or a TOML file. Every field has a working default.

use std::net::SocketAddr;
use std::time::Duration;

use magnetar_bookie::LedgerOptions;
use serde::{Deserialize, Serialize};

use crate::managed_ledger::{ManagedLedgerConfig, RolloverPolicy};

/// Pulsar's broker gRPC port in Magnetar's port plan.
pub const DEFAULT_PORT: u16 = 6660;
/// Pulsar's HTTP port: admin, lookup and metrics.
pub const DEFAULT_HTTP_PORT: u16 = 8080;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BrokerConfig {
    /// Address to serve the client protocol (gRPC) on.
    pub listen: SocketAddr,
    /// Address to serve HTTP (admin, metrics) on.
    pub http_listen: SocketAddr,
    /// Address clients are told to reach this broker at; empty: the bound listen address.
    pub advertise_address: String,
    /// Address other brokers redirect admin requests to (`host:port`); empty: the bound HTTP
    /// address.
    pub advertise_http_address: String,
    /// Metadata store endpoints.
    pub meta_endpoints: Vec<String>,
    /// Ensemble size, write quorum and ack quorum of the topics' ledgers.
    pub ensemble_size: usize,
    pub write_quorum: usize,
    pub ack_quorum: usize,
    /// Create a topic on its first producer or consumer.
    pub auto_create_topics: bool,
    /// Largest stored batch, in bytes.
    pub max_message_size_bytes: usize,
    /// A dead broker's topics move after this long without keepalives, in milliseconds.
    pub session_ttl_ms: u64,
    /// Roll a topic's ledger after this many entries.
    pub ledger_rollover_entries: u64,
    /// Bytes of recent entries kept in memory per topic for tailing consumers.
    pub entry_cache_bytes: usize,
    /// How often namespace policies are re-read and applied (retention, message TTL, backlog
    /// quota), in milliseconds.
    pub policy_check_interval_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT)),
            advertise_address: String::new(),
            advertise_http_address: String::new(),
            meta_endpoints: vec!["127.0.0.1:2181".into()],
            ensemble_size: 3,
            write_quorum: 3,
            ack_quorum: 2,
            auto_create_topics: true,
            max_message_size_bytes: 5 << 20,
            session_ttl_ms: 10_000,
            ledger_rollover_entries: 50_000,
            entry_cache_bytes: 64 << 20,
            policy_check_interval_ms: 1_000,
        }
    }
}

impl BrokerConfig {
    /// Refuses configurations that could not work, saying which field to fix.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.ensemble_size >= self.write_quorum
            && self.write_quorum >= self.ack_quorum
            && self.ack_quorum >= 1)
        {
            return Err(format!(
                "ensemble_size {} >= write_quorum {} >= ack_quorum {} >= 1 must hold",
                self.ensemble_size, self.write_quorum, self.ack_quorum
            ));
        }
        if self.meta_endpoints.is_empty() {
            return Err("meta_endpoints is empty: name at least one metadata store node".into());
        }
        if self.max_message_size_bytes < 1024 {
            return Err("max_message_size_bytes must be at least 1024".into());
        }
        if self.policy_check_interval_ms < 10 {
            return Err("policy_check_interval_ms must be at least 10".into());
        }
        if self.session_ttl_ms < 100 {
            return Err("session_ttl_ms must be at least 100".into());
        }
        Ok(())
    }

    pub fn session_ttl(&self) -> Duration {
        Duration::from_millis(self.session_ttl_ms)
    }

    /// The managed ledger configuration of every topic.
    pub fn managed_ledger_config(&self) -> ManagedLedgerConfig {
        ManagedLedgerConfig {
            ledger_options: LedgerOptions {
                ensemble_size: self.ensemble_size,
                write_quorum: self.write_quorum,
                ack_quorum: self.ack_quorum,
                ..LedgerOptions::default()
            },
            rollover: RolloverPolicy {
                max_entries: self.ledger_rollover_entries,
                ..RolloverPolicy::default()
            },
            cache_capacity_bytes: self.entry_cache_bytes,
            ..ManagedLedgerConfig::default()
        }
    }
}
