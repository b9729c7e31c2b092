//! The broker as a service: which topics it serves (bundle ownership in the metadata store),
//! loading a topic on first use, and the client-facing gRPC protocol.
//!
//! - [`BrokerService`]: topic registry, lookup and ownership.
//! - [`topic`]: one served topic: managed ledger, producers with deduplication, subscriptions.
//! - [`subscription`]: the task that dispatches a subscription's messages.
//! - [`pending`]: what a subscription has out at consumers (no I/O).
//! - [`stored_batch`]: what dispatch reads of a stored batch without decoding it.
//! - [`policies`]: namespace policies applied to topics: retention, message TTL, backlog quota.
//! - [`grpc`]: the `Broker` gRPC service over these.
//! - [`server`]: a running broker (listener, session, registration).

pub mod config;
pub mod error;
pub mod grpc;
pub mod namespaces;
pub mod ownership;
pub mod pending;
pub mod policies;
pub mod server;
pub mod stored_batch;
pub mod subscription;
pub mod topic;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use magnetar_bookie::LedgerClient;
use magnetar_meta::{MetaClient, Session};
use parking_lot::Mutex;
use tokio::sync::OnceCell;
use tracing::{info, warn};

pub use config::BrokerConfig;
pub use error::{BrokerError, BrokerResult};
pub use server::RunningBroker;
pub use topic::Topic;

use crate::managed_ledger::stored::log_key;
use crate::TopicName;

type TopicCell = Arc<OnceCell<Arc<Topic>>>;

/// The state of one broker: what it owns and serves.
pub struct BrokerService {
    config: BrokerConfig,
    /// The gRPC address clients are sent to.
    address: String,
    meta: MetaClient,
    ledgers: LedgerClient,
    session: Mutex<Option<Session>>,
    topics: Mutex<HashMap<TopicName, TopicCell>>,
    /// Owner keys this broker holds.
    owned: Mutex<HashSet<String>>,
    next_id: AtomicU64,
    /// Set when the broker stops abruptly: every stream closes, every request is refused.
    halted: AtomicBool,
}

impl BrokerService {
    pub fn new(
        config: BrokerConfig,
        address: String,
        meta: MetaClient,
        ledgers: LedgerClient,
        session: Session,
    ) -> Arc<Self> {
        Arc::new(Self {
            config,
            address,
            meta,
            ledgers,
            session: Mutex::new(Some(session)),
            topics: Mutex::new(HashMap::new()),
            owned: Mutex::new(HashSet::new()),
            next_id: AtomicU64::new(1),
            halted: AtomicBool::new(false),
        })
    }

    /// Stops serving at once, closing nothing (as a crash would leave the logs).
    pub fn halt(&self) {
        self.halted.store(true, Ordering::Release);
        self.topics.lock().clear();
        self.owned.lock().clear();
    }

    /// Refuses requests once halted.
    pub fn check_serving(&self) -> BrokerResult<()> {
        if self.halted.load(Ordering::Acquire) {
            return Err(BrokerError::Unavailable("this broker is stopping".into()));
        }
        Ok(())
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn meta(&self) -> &MetaClient {
        &self.meta
    }

    pub fn ledgers(&self) -> &LedgerClient {
        &self.ledgers
    }

    /// A fresh id for a consumer or an unnamed producer.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn session_id(&self) -> BrokerResult<u64> {
        match self.session.lock().as_ref() {
            Some(session) if !session.is_lost() => Ok(session.id()),
            _ => Err(BrokerError::Unavailable(
                "this broker lost its metadata session and is re-registering".into(),
            )),
        }
    }

    /// Whether the session expired (the store deleted this broker's keys).
    pub fn session_lost(&self) -> bool {
        self.session
            .lock()
            .as_ref()
            .is_none_or(|session| session.is_lost())
    }

    /// After a lost session: forgets every owned bundle and topic, and starts over with
    /// `session`.
    pub fn replace_session(&self, session: Session) {
        warn!("metadata session lost: giving up every topic");
        self.owned.lock().clear();
        self.topics.lock().clear();
        *self.session.lock() = Some(session);
    }

    pub fn current_session_id(&self) -> BrokerResult<u64> {
        self.session_id()
    }

    /// The address of the broker serving `topic`, assigning it to the least-loaded live broker
    /// when no one does.
    pub async fn lookup(&self, topic: &TopicName) -> BrokerResult<String> {
        self.check_serving()?;
        let policies = namespaces::policies(&self.meta, &topic.tenant, &topic.namespace).await?;
        let key = ownership::owner_key(topic, ownership::bundle_for(topic, policies.bundles));
        if let Some(owner) = ownership::owner_of(&self.meta, &key).await? {
            return Ok(owner);
        }
        let chosen = ownership::least_loaded(&self.meta)
            .await?
            .unwrap_or_else(|| self.address.clone());
        if chosen != self.address {
            // That broker takes the bundle when the client reaches it.
            return Ok(chosen);
        }
        self.acquire(&key).await
    }

    async fn acquire(&self, key: &str) -> BrokerResult<String> {
        let session_id = self.session_id()?;
        let owner = ownership::acquire(&self.meta, key, &self.address, session_id).await?;
        if owner == self.address {
            self.owned.lock().insert(key.to_string());
            info!(bundle = key, "bundle acquired");
        }
        Ok(owner)
    }

    /// Fails with `NotOwner` unless this broker owns (or now takes) the topic's bundle.
    async fn ensure_owner(&self, topic: &TopicName) -> BrokerResult<()> {
        let policies = namespaces::policies(&self.meta, &topic.tenant, &topic.namespace).await?;
        let key = ownership::owner_key(topic, ownership::bundle_for(topic, policies.bundles));
        self.session_id()?;
        if self.owned.lock().contains(&key) {
            return Ok(());
        }
        let owner = match ownership::owner_of(&self.meta, &key).await? {
            Some(owner) => owner,
            None => self.acquire(&key).await?,
        };
        if owner == self.address {
            self.owned.lock().insert(key);
            return Ok(());
        }
        Err(BrokerError::NotOwner {
            topic: topic.to_string(),
        })
    }

    /// The topic, loaded (and taken over from any previous owner) on first use.
    pub async fn topic(&self, name: &TopicName) -> BrokerResult<Arc<Topic>> {
        self.open_topic(name, self.config.auto_create_topics).await
    }

    /// The topic, loaded on first use; created when it does not exist only if `create` (the
    /// admin API creates topics explicitly and never by looking at one).
    pub async fn open_topic(&self, name: &TopicName, create: bool) -> BrokerResult<Arc<Topic>> {
        self.check_serving()?;
        self.ensure_owner(name).await?;
        let cell = {
            let mut topics = self.topics.lock();
            if let Some(cell) = topics.get(name) {
                if cell.get().is_some_and(|topic| topic.is_fenced()) {
                    topics.remove(name);
                }
            }
            topics.entry(name.clone()).or_default().clone()
        };
        let result = cell
            .get_or_try_init(|| async {
                let ledger_name = name.managed_ledger_name();
                if !create && self.meta.get(&log_key(&ledger_name)).await?.is_none() {
                    return Err(BrokerError::TopicNotFound(name.to_string()));
                }
                let ledger = crate::managed_ledger::ManagedLedger::open(
                    self.ledgers.clone(),
                    &ledger_name,
                    self.config.managed_ledger_config(),
                )
                .await?;
                let topic = Topic::load(
                    name.clone(),
                    ledger,
                    self.meta.clone(),
                    self.config.max_message_size_bytes,
                )
                .await?;
                let policies =
                    namespaces::policies(&self.meta, &name.tenant, &name.namespace).await?;
                topic
                    .apply_policies(policies::TopicPolicies::from_namespace(&policies))
                    .await;
                Ok(topic)
            })
            .await;
        match result {
            Ok(topic) => Ok(topic.clone()),
            Err(error) => {
                self.topics.lock().remove(name);
                Err(error)
            }
        }
    }

    /// The topic if this broker has it loaded.
    pub fn loaded_topic(&self, name: &TopicName) -> Option<Arc<Topic>> {
        self.topics
            .lock()
            .get(name)
            .and_then(|cell| cell.get().cloned())
    }

    /// Topics loaded here.
    pub fn loaded_topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .lock()
            .values()
            .filter_map(|cell| cell.get().cloned())
            .collect()
    }

    /// Forgets a topic whose log another broker took over.
    pub fn forget_topic(&self, name: &TopicName) {
        self.topics.lock().remove(name);
    }

    pub async fn partitions(&self, topic: &TopicName) -> BrokerResult<u32> {
        namespaces::partitions(&self.meta, topic).await
    }

    /// Closes every topic (cursors and dedup state persisted, ledgers closed) and the session.
    pub async fn shutdown(&self) {
        let topics = self.loaded_topics();
        for topic in topics {
            if let Err(error) = topic.close().await {
                warn!(topic = %topic.name, %error, "closing the topic failed");
            }
        }
        self.topics.lock().clear();
        let session = self.session.lock().take();
        if let Some(session) = session {
            let _ = session.close().await;
        }
    }
}
