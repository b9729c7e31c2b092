//! Bookies announce themselves in the metadata store: one ephemeral key per bookie under
//! `/bookies/available/<address>`, owned by a session, so a bookie that dies leaves the list
//! within the session TTL and one that stops leaves it at once.

use std::path::PathBuf;
use std::time::Duration;

use magnetar_meta::{MetaClient, MetaError};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::error::{LedgerError, LedgerResult};
use crate::disk::disk_space;

/// Metadata store folder of live bookies.
pub const AVAILABLE_PREFIX: &str = "/bookies/available/";

/// What a bookie publishes about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookieRecord {
    /// `host:port` clients connect to.
    pub address: String,
    pub free_space_bytes: u64,
    pub total_space_bytes: u64,
    /// Failure domain; placement spreads an ensemble across distinct racks when it can.
    pub rack: String,
    /// Whether the bookie refuses adds at the moment (placement skips it).
    pub read_only: bool,
}

/// How a bookie registers.
#[derive(Clone, Debug)]
pub struct RegistrationConfig {
    pub meta_endpoints: Vec<String>,
    /// The address published (the one clients can reach).
    pub address: String,
    pub rack: String,
    /// Directory whose file system's free space is published.
    pub data_dir: PathBuf,
    /// Session TTL: how long a dead bookie stays listed.
    pub session_ttl: Duration,
    /// How often free space is republished.
    pub refresh_interval: Duration,
}

/// A bookie's registration, kept alive (and refreshed) by a background task.
pub struct Registration {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The key a bookie registers under.
pub fn available_key(address: &str) -> String {
    format!("{AVAILABLE_PREFIX}{address}")
}

impl Registration {
    /// Registers now (so the bookie is listed when this returns) and keeps the registration
    /// fresh, re-registering with a new session if the store expired the old one.
    /// `read_only` is polled at each refresh.
    pub async fn start(
        config: RegistrationConfig,
        read_only: impl Fn() -> bool + Send + Sync + 'static,
    ) -> LedgerResult<Self> {
        let meta = MetaClient::new(&config.meta_endpoints)?;
        let key = available_key(&config.address);
        let mut session = meta.open_session(config.session_ttl).await?;
        let value = serde_json::to_vec(&record(&config, read_only())).unwrap_or_default();
        meta.put_ephemeral(&key, value, session.id(), None).await?;
        info!(%key, "bookie registered in the metadata store");
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(config.refresh_interval) => {}
                    _ = stopped.wait_for(|stop| *stop) => break,
                }
                if session.is_lost() {
                    warn!(%key, "registration session expired; registering again");
                    match meta.open_session(config.session_ttl).await {
                        Ok(fresh) => session = fresh,
                        Err(error) => {
                            warn!(%error, "cannot open a registration session");
                            continue;
                        }
                    }
                }
                let value = serde_json::to_vec(&record(&config, read_only())).unwrap_or_default();
                match meta.put_ephemeral(&key, value, session.id(), None).await {
                    Ok(_) => debug!(%key, "registration refreshed"),
                    Err(MetaError::UnknownSession(_)) => {
                        if let Ok(fresh) = meta.open_session(config.session_ttl).await {
                            session = fresh;
                        }
                    }
                    Err(error) => warn!(%error, "cannot refresh the registration"),
                }
            }
            // Closing the session deletes the key now rather than after the TTL.
            if let Err(error) = session.close().await {
                warn!(%error, "closing the registration session failed; the key expires");
            }
            info!(%key, "bookie unregistered");
        });
        Ok(Self { stop, task })
    }

    /// Removes the registration and waits until the store has deleted it (or gave up).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// What the bookie publishes now.
fn record(config: &RegistrationConfig, read_only: bool) -> BookieRecord {
    let (free, total) = disk_space(&config.data_dir).unwrap_or((0, 0));
    BookieRecord {
        address: config.address.clone(),
        free_space_bytes: free,
        total_space_bytes: total,
        rack: config.rack.clone(),
        read_only,
    }
}

/// Every registered bookie; records that cannot be decoded are skipped with a warning.
pub async fn available_bookies(meta: &MetaClient) -> LedgerResult<Vec<BookieRecord>> {
    let mut bookies = Vec::new();
    for kv in meta.list_all(AVAILABLE_PREFIX).await? {
        match serde_json::from_slice::<BookieRecord>(&kv.value) {
            Ok(record) => bookies.push(record),
            Err(error) => warn!(
                "{}",
                LedgerError::CorruptMetadata {
                    key: kv.key.clone(),
                    reason: error.to_string()
                }
            ),
        }
    }
    Ok(bookies)
}
