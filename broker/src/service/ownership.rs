//! Which broker serves which bundle: live brokers register an ephemeral key, and the owner of
//! a bundle holds an ephemeral key naming it, both under the broker's session, so a broker
//! that dies gives its bundles up when its session expires.

use std::collections::BTreeMap;

use magnetar_meta::{MetaClient, MetaError};

use super::error::{BrokerError, BrokerResult};
use crate::bundles::{bundle_of, split_evenly, BundleRange};
use crate::TopicName;

pub const BROKERS_PREFIX: &str = "/brokers/";
pub const OWNERS_PREFIX: &str = "/bundle-owners/";

pub fn broker_key(address: &str) -> String {
    format!("{BROKERS_PREFIX}{address}")
}

/// What a live broker's registration key holds: where to reach it besides its gRPC address.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct BrokerRegistration {
    /// `host:port` of its HTTP admin API and metrics.
    pub http_address: String,
}

/// The HTTP address of the live broker registered under gRPC `address`, if it registered one.
pub async fn http_address_of(meta: &MetaClient, address: &str) -> BrokerResult<Option<String>> {
    Ok(meta
        .get(&broker_key(address))
        .await?
        .and_then(|kv| serde_json::from_slice::<BrokerRegistration>(&kv.value).ok())
        .map(|registration| registration.http_address)
        .filter(|http_address| !http_address.is_empty()))
}

/// The key naming the owner of a namespace's bundle.
pub fn owner_key(topic: &TopicName, bundle: BundleRange) -> String {
    format!(
        "{OWNERS_PREFIX}{}/{}/{bundle}",
        topic.tenant, topic.namespace
    )
}

/// The bundle of `topic` in a namespace split into `bundles` ranges.
pub fn bundle_for(topic: &TopicName, bundles: u32) -> BundleRange {
    let ranges = split_evenly(bundles);
    // Every hash falls in one of the evenly split ranges.
    bundle_of(&ranges, topic).unwrap_or(ranges[0])
}

/// The live brokers' addresses, in order.
pub async fn live_brokers(meta: &MetaClient) -> BrokerResult<Vec<String>> {
    Ok(meta
        .list_all(BROKERS_PREFIX)
        .await?
        .into_iter()
        .map(|kv| kv.key[BROKERS_PREFIX.len()..].to_string())
        .collect())
}

/// The current owner of a bundle, if any.
pub async fn owner_of(meta: &MetaClient, key: &str) -> BrokerResult<Option<String>> {
    Ok(meta
        .get(key)
        .await?
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// The live broker owning the fewest bundles (ties by address), to give an unowned bundle to.
pub async fn least_loaded(meta: &MetaClient) -> BrokerResult<Option<String>> {
    let mut load: BTreeMap<String, usize> = live_brokers(meta)
        .await?
        .into_iter()
        .map(|address| (address, 0))
        .collect();
    for kv in meta.list_all(OWNERS_PREFIX).await? {
        let owner = String::from_utf8_lossy(&kv.value).into_owned();
        if let Some(count) = load.get_mut(&owner) {
            *count += 1;
        }
    }
    Ok(load
        .into_iter()
        .min_by(|left, right| left.1.cmp(&right.1).then(left.0.cmp(&right.0)))
        .map(|(address, _)| address))
}

/// Tries to take an unowned bundle for `address` under `session_id`; returns the owner after
/// the attempt (this broker, or whoever won).
pub async fn acquire(
    meta: &MetaClient,
    key: &str,
    address: &str,
    session_id: u64,
) -> BrokerResult<String> {
    match meta
        .put_ephemeral(key, address.as_bytes().to_vec(), session_id, Some(0))
        .await
    {
        Ok(_) => Ok(address.to_string()),
        Err(MetaError::VersionConflict { .. }) => owner_of(meta, key)
            .await?
            .ok_or_else(|| BrokerError::Unavailable("bundle ownership is changing".into())),
        Err(error) => Err(error.into()),
    }
}
