//! An in-process Magnetar cluster on loopback ports: a Raft group of metadata nodes, bookies
//! registered with it, and brokers, each role over its own temporary directory and talking to
//! the others over real gRPC.

use std::collections::BTreeMap;
use std::time::Duration;

use magnetar_bookie::{BookieConfig, RunningBookie};
use magnetar_broker::{BrokerConfig, RunningBroker};
use magnetar_meta::{MetaClient, MetaConfig, MetaServer};

use crate::process::free_port;

/// The shape of a cluster.
#[derive(Clone, Debug)]
pub struct ClusterShape {
    pub meta_nodes: u64,
    pub bookies: usize,
    pub brokers: usize,
    /// E/Qw/Qa of topic ledgers.
    pub quorum: (usize, usize, usize),
    /// Broker session TTL: how long a dead broker keeps its topics.
    pub broker_session_ttl: Duration,
    /// A topic's ledger rolls over after this many entries.
    pub ledger_rollover_entries: u64,
    /// How often brokers apply namespace policies.
    pub policy_check_interval: Duration,
}

impl Default for ClusterShape {
    fn default() -> Self {
        Self {
            meta_nodes: 3,
            bookies: 3,
            brokers: 2,
            quorum: (3, 3, 2),
            broker_session_ttl: Duration::from_millis(1500),
            ledger_rollover_entries: BrokerConfig::default().ledger_rollover_entries,
            policy_check_interval: Duration::from_millis(100),
        }
    }
}

pub struct Cluster {
    _dirs: Vec<tempfile::TempDir>,
    pub meta: Vec<MetaServer>,
    pub bookies: Vec<Option<RunningBookie>>,
    pub brokers: Vec<Option<RunningBroker>>,
    meta_endpoints: Vec<String>,
}

impl Cluster {
    pub async fn start(shape: ClusterShape) -> Result<Cluster, Box<dyn std::error::Error>> {
        let mut dirs = Vec::new();
        let peers: BTreeMap<u64, String> = (1..=shape.meta_nodes)
            .map(|id| (id, format!("127.0.0.1:{}", free_port())))
            .collect();
        let mut meta = Vec::new();
        for (id, endpoint) in &peers {
            let dir = tempfile::tempdir()?;
            meta.push(
                MetaServer::start(MetaConfig {
                    id: *id,
                    data_dir: dir.path().to_path_buf(),
                    listen: endpoint.clone(),
                    peers: if shape.meta_nodes > 1 {
                        peers.clone()
                    } else {
                        BTreeMap::new()
                    },
                    ..MetaConfig::default()
                })
                .await?,
            );
            dirs.push(dir);
        }
        let meta_endpoints: Vec<String> = peers.values().cloned().collect();
        let mut bookies = Vec::new();
        for _ in 0..shape.bookies {
            let dir = tempfile::tempdir()?;
            bookies.push(Some(
                RunningBookie::start(BookieConfig {
                    data_dir: dir.path().to_path_buf(),
                    listen: "127.0.0.1:0".parse()?,
                    journal_file_size_bytes: 8 << 20,
                    meta_endpoints: meta_endpoints.clone(),
                    registration_ttl: Duration::from_secs(2),
                    min_free_space_bytes: 1 << 20,
                    ..BookieConfig::default()
                })
                .await?,
            ));
            dirs.push(dir);
        }
        let mut cluster = Cluster {
            _dirs: dirs,
            meta,
            bookies,
            brokers: Vec::new(),
            meta_endpoints,
        };
        for _ in 0..shape.brokers {
            let broker = cluster.start_broker(&shape).await?;
            cluster.brokers.push(Some(broker));
        }
        Ok(cluster)
    }

    pub async fn start_broker(
        &self,
        shape: &ClusterShape,
    ) -> Result<RunningBroker, Box<dyn std::error::Error>> {
        let (ensemble_size, write_quorum, ack_quorum) = shape.quorum;
        Ok(RunningBroker::start(BrokerConfig {
            listen: "127.0.0.1:0".parse()?,
            http_listen: "127.0.0.1:0".parse()?,
            meta_endpoints: self.meta_endpoints.clone(),
            ensemble_size,
            write_quorum,
            ack_quorum,
            session_ttl_ms: shape.broker_session_ttl.as_millis() as u64,
            ledger_rollover_entries: shape.ledger_rollover_entries,
            policy_check_interval_ms: shape.policy_check_interval.as_millis() as u64,
            ..BrokerConfig::default()
        })
        .await?)
    }

    pub fn meta_endpoints(&self) -> &[String] {
        &self.meta_endpoints
    }

    pub fn meta_client(&self) -> MetaClient {
        MetaClient::new(&self.meta_endpoints).expect("the endpoints are valid")
    }

    /// The admin API URL (`http://host:port`) of a live broker.
    pub fn admin_url(&self, index: usize) -> String {
        self.brokers[index]
            .as_ref()
            .map(RunningBroker::admin_url)
            .expect("the broker is running")
    }

    /// The client URL of a live broker.
    pub fn service_url(&self, index: usize) -> String {
        self.brokers[index]
            .as_ref()
            .map(|broker| broker.address().to_string())
            .expect("the broker is running")
    }
}
