//! Tenants, namespaces (with their policies) and partitioned topics, as kept in the metadata
//! store. `public/default` is created when a broker starts and finds it missing.

use magnetar_meta::{MetaClient, MetaError};
use serde::{Deserialize, Serialize};

use super::error::{BrokerError, BrokerResult};
use crate::bundles::DEFAULT_BUNDLES;
use crate::topic_name::{TopicName, DEFAULT_NAMESPACE, DEFAULT_TENANT};

pub const TENANTS_PREFIX: &str = "/admin/tenants/";
pub const NAMESPACES_PREFIX: &str = "/admin/namespaces/";
pub const PARTITIONED_PREFIX: &str = "/admin/partitioned-topics/";

/// A namespace's policies; every field has a working default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NamespacePolicies {
    /// Hash ranges the namespace is split into: the unit of ownership.
    pub bundles: u32,
    /// Keep acknowledged data this long (minutes; 0: delete once every subscription has it).
    pub retention_minutes: u64,
    /// Keep at most this much acknowledged data (MiB; 0: none beyond what is unacknowledged).
    pub retention_size_mb: u64,
    /// Messages older than this are acknowledged for every subscription (seconds; 0: never).
    pub message_ttl_seconds: u64,
    /// Backlog per subscription above which the backlog policy applies (entries; 0: none).
    pub backlog_quota_entries: u64,
    /// `producer_request_hold` or `producer_exception` (Pulsar's names).
    pub backlog_quota_policy: String,
}

impl Default for NamespacePolicies {
    fn default() -> Self {
        Self {
            bundles: DEFAULT_BUNDLES,
            retention_minutes: 0,
            retention_size_mb: 0,
            message_ttl_seconds: 0,
            backlog_quota_entries: 0,
            backlog_quota_policy: "producer_exception".into(),
        }
    }
}

/// Checks a tenant or namespace name: the characters a topic name allows.
pub fn validate_segment(what: &str, name: &str) -> BrokerResult<()> {
    TopicName::parse(&format!("persistent://{name}/x/y"))
        .and_then(|_| TopicName::parse(&format!("persistent://x/{name}/y")))
        .map(|_| ())
        .map_err(|_| {
            BrokerError::InvalidName(format!(
                "{what} {name:?}: use letters, digits and - _ . = : % only"
            ))
        })
}

fn tenant_key(tenant: &str) -> String {
    format!("{TENANTS_PREFIX}{tenant}")
}

fn namespace_key(tenant: &str, namespace: &str) -> String {
    format!("{NAMESPACES_PREFIX}{tenant}/{namespace}")
}

fn partitioned_key(topic: &TopicName) -> String {
    format!(
        "{PARTITIONED_PREFIX}{}/{}/{}",
        topic.tenant, topic.namespace, topic.local
    )
}

/// Creates `public/default` if it is missing.
pub async fn ensure_default(meta: &MetaClient) -> BrokerResult<()> {
    for (key, value) in [
        (tenant_key(DEFAULT_TENANT), b"{}".to_vec()),
        (
            namespace_key(DEFAULT_TENANT, DEFAULT_NAMESPACE),
            serde_json::to_vec(&NamespacePolicies::default()).unwrap_or_default(),
        ),
    ] {
        match meta.put_if_version(&key, value, 0).await {
            Ok(_) | Err(MetaError::VersionConflict { .. }) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

pub async fn list_tenants(meta: &MetaClient) -> BrokerResult<Vec<String>> {
    Ok(meta
        .list_all(TENANTS_PREFIX)
        .await?
        .into_iter()
        .map(|kv| kv.key[TENANTS_PREFIX.len()..].to_string())
        .collect())
}

pub async fn create_tenant(meta: &MetaClient, tenant: &str) -> BrokerResult<bool> {
    validate_segment("tenant", tenant)?;
    match meta
        .put_if_version(&tenant_key(tenant), b"{}".to_vec(), 0)
        .await
    {
        Ok(_) => Ok(true),
        Err(MetaError::VersionConflict { .. }) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

pub async fn delete_tenant(meta: &MetaClient, tenant: &str) -> BrokerResult<bool> {
    if !list_namespaces(meta, tenant).await?.is_empty() {
        return Err(BrokerError::Protocol(format!(
            "tenant {tenant} still has namespaces; delete them first"
        )));
    }
    Ok(meta.delete(&tenant_key(tenant), None).await?)
}

pub async fn list_namespaces(meta: &MetaClient, tenant: &str) -> BrokerResult<Vec<String>> {
    let prefix = format!("{NAMESPACES_PREFIX}{tenant}/");
    Ok(meta
        .list_all(&prefix)
        .await?
        .into_iter()
        .map(|kv| format!("{tenant}/{}", &kv.key[prefix.len()..]))
        .collect())
}

pub async fn create_namespace(
    meta: &MetaClient,
    tenant: &str,
    namespace: &str,
    policies: &NamespacePolicies,
) -> BrokerResult<bool> {
    validate_segment("namespace", namespace)?;
    if meta.get(&tenant_key(tenant)).await?.is_none() {
        return Err(BrokerError::NamespaceNotFound(format!(
            "{tenant} (the tenant does not exist; create it first)"
        )));
    }
    let value = serde_json::to_vec(policies).unwrap_or_default();
    match meta
        .put_if_version(&namespace_key(tenant, namespace), value, 0)
        .await
    {
        Ok(_) => Ok(true),
        Err(MetaError::VersionConflict { .. }) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

pub async fn set_policies(
    meta: &MetaClient,
    tenant: &str,
    namespace: &str,
    policies: &NamespacePolicies,
) -> BrokerResult<()> {
    if super::policies::parse_backlog_policy(&policies.backlog_quota_policy).is_none() {
        return Err(BrokerError::Protocol(format!(
            "backlog quota policy {:?}: use producer_request_hold or producer_exception",
            policies.backlog_quota_policy
        )));
    }
    let key = namespace_key(tenant, namespace);
    let Some(current) = meta.get(&key).await? else {
        return Err(BrokerError::NamespaceNotFound(format!(
            "{tenant}/{namespace}"
        )));
    };
    let value = serde_json::to_vec(policies).unwrap_or_default();
    meta.put_if_version(&key, value, current.version).await?;
    Ok(())
}

pub async fn delete_namespace(
    meta: &MetaClient,
    tenant: &str,
    namespace: &str,
) -> BrokerResult<bool> {
    Ok(meta.delete(&namespace_key(tenant, namespace), None).await?)
}

/// The policies of the topic's namespace, or `NamespaceNotFound`.
pub async fn policies(
    meta: &MetaClient,
    tenant: &str,
    namespace: &str,
) -> BrokerResult<NamespacePolicies> {
    match meta.get(&namespace_key(tenant, namespace)).await? {
        Some(kv) => serde_json::from_slice(&kv.value).map_err(|error| {
            BrokerError::Unavailable(format!(
                "the policies of namespace {tenant}/{namespace} are unreadable: {error}"
            ))
        }),
        None => Err(BrokerError::NamespaceNotFound(format!(
            "{tenant}/{namespace}"
        ))),
    }
}

#[derive(Serialize, Deserialize)]
struct PartitionedTopic {
    partitions: u32,
}

/// The partition count of a topic (0: not partitioned).
pub async fn partitions(meta: &MetaClient, topic: &TopicName) -> BrokerResult<u32> {
    match meta.get(&partitioned_key(topic)).await? {
        Some(kv) => Ok(serde_json::from_slice::<PartitionedTopic>(&kv.value)
            .map(|stored| stored.partitions)
            .unwrap_or(0)),
        None => Ok(0),
    }
}

pub async fn create_partitioned(
    meta: &MetaClient,
    topic: &TopicName,
    partitions: u32,
) -> BrokerResult<bool> {
    if partitions == 0 || partitions > 10_000 {
        return Err(BrokerError::Protocol(format!(
            "a partitioned topic needs 1 to 10000 partitions, not {partitions}"
        )));
    }
    policies(meta, &topic.tenant, &topic.namespace).await?;
    let value = serde_json::to_vec(&PartitionedTopic { partitions }).unwrap_or_default();
    match meta.put_if_version(&partitioned_key(topic), value, 0).await {
        Ok(_) => Ok(true),
        Err(MetaError::VersionConflict { .. }) => Ok(false),
        Err(error) => Err(error.into()),
    }
}

pub async fn list_partitioned(
    meta: &MetaClient,
    tenant: &str,
    namespace: &str,
) -> BrokerResult<Vec<(String, u32)>> {
    let prefix = format!("{PARTITIONED_PREFIX}{tenant}/{namespace}/");
    Ok(meta
        .list_all(&prefix)
        .await?
        .into_iter()
        .map(|kv| {
            let partitions = serde_json::from_slice::<PartitionedTopic>(&kv.value)
                .map(|stored| stored.partitions)
                .unwrap_or(0);
            (
                format!(
                    "persistent://{tenant}/{namespace}/{}",
                    &kv.key[prefix.len()..]
                ),
                partitions,
            )
        })
        .collect())
}

/// Forgets that `topic` is partitioned (its partitions are deleted separately); returns
/// whether it was.
pub async fn delete_partitioned(meta: &MetaClient, topic: &TopicName) -> BrokerResult<bool> {
    Ok(meta.delete(&partitioned_key(topic), None).await?)
}

/// Whether the tenant exists.
pub async fn tenant_exists(meta: &MetaClient, tenant: &str) -> BrokerResult<bool> {
    Ok(meta.get(&tenant_key(tenant)).await?.is_some())
}
