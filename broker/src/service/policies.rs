//! Namespace policies applied to the topics a broker serves:
//! - retention: how long, and how much, consumed data stays in the log;
//! - message TTL: unconsumed entries older than this are acknowledged for every subscription;
//! - backlog quota: when a subscription is this many entries behind, producers are held
//!   (`producer_request_hold`) or refused with `BACKLOG_QUOTA_EXCEEDED`
//!   (`producer_exception`), as in Pulsar.
//!
//! A topic gets its namespace's policies when it loads; then one task per broker re-reads each
//! namespace's policies every `policy_check_interval_ms` and applies them to its loaded topics
//! (retention trim, TTL expiry, quota check), so a changed policy takes effect within one
//! interval.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tracing::warn;

use super::namespaces::{self, NamespacePolicies};
use super::topic::Topic;
use super::BrokerService;
use crate::managed_ledger::RetentionPolicy;

/// What happens to producers while a subscription is over the backlog quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BacklogPolicy {
    /// Sends wait until the backlog is under the quota again.
    Hold,
    /// Sends fail with `BACKLOG_QUOTA_EXCEEDED`.
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogQuota {
    pub limit_entries: u64,
    pub policy: BacklogPolicy,
}

/// A namespace's policies in the form a topic applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicPolicies {
    pub retention: RetentionPolicy,
    pub message_ttl: Option<Duration>,
    pub backlog_quota: Option<BacklogQuota>,
}

impl Default for TopicPolicies {
    fn default() -> Self {
        Self::from_namespace(&NamespacePolicies::default())
    }
}

impl TopicPolicies {
    pub fn from_namespace(policies: &NamespacePolicies) -> Self {
        let retention = RetentionPolicy {
            time: Some(Duration::from_secs(
                policies.retention_minutes.saturating_mul(60),
            )),
            size_bytes: Some(policies.retention_size_mb.saturating_mul(1 << 20)),
        };
        let message_ttl = (policies.message_ttl_seconds > 0)
            .then(|| Duration::from_secs(policies.message_ttl_seconds));
        let backlog_quota = (policies.backlog_quota_entries > 0).then(|| BacklogQuota {
            limit_entries: policies.backlog_quota_entries,
            policy: parse_backlog_policy(&policies.backlog_quota_policy)
                .unwrap_or(BacklogPolicy::Reject),
        });
        Self {
            retention,
            message_ttl,
            backlog_quota,
        }
    }
}

/// Pulsar's names for the backlog policies; `None` for anything else.
pub fn parse_backlog_policy(name: &str) -> Option<BacklogPolicy> {
    match name {
        "producer_request_hold" => Some(BacklogPolicy::Hold),
        "producer_exception" => Some(BacklogPolicy::Reject),
        _ => None,
    }
}

/// Whether a quota is exceeded by the largest subscription backlog.
pub fn quota_exceeded(quota: Option<BacklogQuota>, max_backlog_entries: u64) -> bool {
    quota.is_some_and(|quota| max_backlog_entries > quota.limit_entries)
}

/// Entries published before this instant are expired by a TTL.
pub fn ttl_cutoff_ms(ttl: Duration, now_ms: u64) -> u64 {
    now_ms.saturating_sub(ttl.as_millis() as u64)
}

/// Applies the policies of each namespace to its loaded topics, every `interval`, until the
/// broker is gone.
pub async fn maintain(service: Weak<BrokerService>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(service) = service.upgrade() else {
            return;
        };
        if service.check_serving().is_err() {
            continue;
        }
        let mut by_namespace: HashMap<(String, String), Vec<Arc<Topic>>> = HashMap::new();
        for topic in service.loaded_topics() {
            if topic.is_fenced() {
                continue;
            }
            let namespace = (topic.name.tenant.clone(), topic.name.namespace.clone());
            by_namespace.entry(namespace).or_default().push(topic);
        }
        for ((tenant, namespace), topics) in by_namespace {
            let policies = match namespaces::policies(service.meta(), &tenant, &namespace).await {
                Ok(policies) => TopicPolicies::from_namespace(&policies),
                Err(error) => {
                    warn!(%tenant, %namespace, %error, "reading policies failed; will retry");
                    continue;
                }
            };
            for topic in topics {
                topic.apply_policies(policies).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_nothing_consumed_and_limit_nothing() {
        let policies = TopicPolicies::default();
        assert_eq!(policies.retention, RetentionPolicy::default());
        assert_eq!(policies.message_ttl, None);
        assert_eq!(policies.backlog_quota, None);
    }

    #[test]
    fn namespace_fields_become_topic_policies() {
        let policies = TopicPolicies::from_namespace(&NamespacePolicies {
            retention_minutes: 10,
            retention_size_mb: 2,
            message_ttl_seconds: 30,
            backlog_quota_entries: 5,
            backlog_quota_policy: "producer_request_hold".into(),
            ..NamespacePolicies::default()
        });
        assert_eq!(policies.retention.time, Some(Duration::from_secs(600)));
        assert_eq!(policies.retention.size_bytes, Some(2 << 20));
        assert_eq!(policies.message_ttl, Some(Duration::from_secs(30)));
        assert_eq!(
            policies.backlog_quota,
            Some(BacklogQuota {
                limit_entries: 5,
                policy: BacklogPolicy::Hold
            })
        );
    }

    #[test]
    fn quota_is_exceeded_only_above_its_limit() {
        let quota = Some(BacklogQuota {
            limit_entries: 10,
            policy: BacklogPolicy::Reject,
        });
        assert!(!quota_exceeded(quota, 10));
        assert!(quota_exceeded(quota, 11));
        assert!(!quota_exceeded(None, u64::MAX));
    }

    #[test]
    fn ttl_cutoff_never_underflows() {
        assert_eq!(ttl_cutoff_ms(Duration::from_secs(1), 5_000), 4_000);
        assert_eq!(ttl_cutoff_ms(Duration::from_secs(10), 5_000), 0);
    }

    #[test]
    fn unknown_backlog_policy_names_are_refused() {
        assert_eq!(parse_backlog_policy("hold"), None);
        assert_eq!(
            parse_backlog_policy("producer_exception"),
            Some(BacklogPolicy::Reject)
        );
    }
}
