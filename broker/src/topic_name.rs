//! Topic names as Pulsar writes them: `persistent://tenant/namespace/topic`, a bare `topic`
//! meaning `persistent://public/default/topic`, and partition `i` of a partitioned topic named
//! `<topic>-partition-i`. No I/O.

use std::fmt;

use thiserror::Error;

/// The tenant and namespace a bare topic name belongs to.
pub const DEFAULT_TENANT: &str = "public";
pub const DEFAULT_NAMESPACE: &str = "default";
const PARTITION_SUFFIX: &str = "-partition-";
/// Longest accepted topic name, in bytes of its full form.
pub const MAX_TOPIC_NAME_BYTES: usize = 512;

/// Why a topic name was refused.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("invalid topic name {name:?}: {reason}")]
pub struct InvalidTopicName {
    pub name: String,
    pub reason: String,
}

/// Whether messages are stored (the only domain Magnetar serves).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Domain {
    Persistent,
}

/// A parsed, validated topic name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName {
    pub domain: Domain,
    pub tenant: String,
    pub namespace: String,
    /// The local name, including any `-partition-i` suffix.
    pub local: String,
}

fn check_segment(name: &str, what: &str, segment: &str) -> Result<(), InvalidTopicName> {
    let refuse = |reason: String| InvalidTopicName {
        name: name.to_string(),
        reason,
    };
    if segment.is_empty() {
        return Err(refuse(format!("the {what} is empty")));
    }
    if let Some(bad) = segment
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "-_.=:%".contains(c)))
    {
        return Err(refuse(format!(
            "the {what} holds {bad:?}; use letters, digits and - _ . = : % only"
        )));
    }
    Ok(())
}

impl TopicName {
    /// Parses `persistent://tenant/namespace/topic`, `tenant/namespace/topic` or a bare
    /// `topic`.
    pub fn parse(name: &str) -> Result<Self, InvalidTopicName> {
        let refuse = |reason: &str| InvalidTopicName {
            name: name.to_string(),
            reason: reason.to_string(),
        };
        let rest = match name.split_once("://") {
            Some(("persistent", rest)) => rest,
            Some(("non-persistent", _)) => {
                return Err(refuse(
                    "non-persistent topics are not supported; use persistent://",
                ))
            }
            Some((other, _)) => {
                return Err(InvalidTopicName {
                    name: name.to_string(),
                    reason: format!("unknown domain {other:?}; use persistent://"),
                })
            }
            None => name,
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let (tenant, namespace, local) = match parts.as_slice() {
            [local] if !name.contains("://") => (DEFAULT_TENANT, DEFAULT_NAMESPACE, *local),
            [tenant, namespace, local] => (*tenant, *namespace, *local),
            _ => {
                return Err(refuse(
                    "expected persistent://tenant/namespace/topic or a bare topic name",
                ))
            }
        };
        check_segment(name, "tenant", tenant)?;
        check_segment(name, "namespace", namespace)?;
        check_segment(name, "topic", local)?;
        let topic = TopicName {
            domain: Domain::Persistent,
            tenant: tenant.to_string(),
            namespace: namespace.to_string(),
            local: local.to_string(),
        };
        if topic.to_string().len() > MAX_TOPIC_NAME_BYTES {
            return Err(refuse("longer than 512 bytes"));
        }
        Ok(topic)
    }

    /// `tenant/namespace`.
    pub fn namespace_path(&self) -> String {
        format!("{}/{}", self.tenant, self.namespace)
    }

    /// The partition index when this names a partition.
    pub fn partition_index(&self) -> Option<u32> {
        let (_, index) = self.local.rsplit_once(PARTITION_SUFFIX)?;
        if index.is_empty() || (index.len() > 1 && index.starts_with('0')) {
            return None;
        }
        index.parse().ok()
    }

    /// The partitioned topic this partition belongs to (itself when it is not a partition).
    pub fn partitioned_parent(&self) -> TopicName {
        match (
            self.partition_index(),
            self.local.rsplit_once(PARTITION_SUFFIX),
        ) {
            (Some(_), Some((base, _))) => TopicName {
                local: base.to_string(),
                ..self.clone()
            },
            _ => self.clone(),
        }
    }

    /// Partition `index` of this topic.
    pub fn partition(&self, index: u32) -> TopicName {
        TopicName {
            local: format!("{}{PARTITION_SUFFIX}{index}", self.local),
            ..self.clone()
        }
    }

    /// The managed ledger name: a path with no scheme, safe as a metadata key.
    pub fn managed_ledger_name(&self) -> String {
        format!(
            "{}/{}/persistent/{}",
            self.tenant, self.namespace, self.local
        )
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "persistent://{}/{}/{}",
            self.tenant, self.namespace, self.local
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_full_names_normalise_alike() {
        let bare = TopicName::parse("orders").unwrap();
        assert_eq!(bare.to_string(), "persistent://public/default/orders");
        assert_eq!(
            TopicName::parse("persistent://public/default/orders").unwrap(),
            bare
        );
        assert_eq!(TopicName::parse("public/default/orders").unwrap(), bare);
        assert_eq!(bare.namespace_path(), "public/default");
        assert_eq!(
            bare.managed_ledger_name(),
            "public/default/persistent/orders"
        );
    }

    #[test]
    fn partitions_name_their_parent() {
        let topic = TopicName::parse("persistent://acme/eu/clicks").unwrap();
        let third = topic.partition(2);
        assert_eq!(third.to_string(), "persistent://acme/eu/clicks-partition-2");
        assert_eq!(third.partition_index(), Some(2));
        assert_eq!(third.partitioned_parent(), topic);
        assert_eq!(topic.partition_index(), None);
        let odd = TopicName::parse("a-partition-x").unwrap();
        assert_eq!(odd.partition_index(), None);
        assert_eq!(
            TopicName::parse("a-partition-01")
                .unwrap()
                .partition_index(),
            None
        );
    }

    #[test]
    fn bad_names_say_what_is_wrong() {
        for (name, fragment) in [
            ("", "empty"),
            ("persistent://a/b", "expected"),
            ("persistent://a//c", "namespace is empty"),
            ("non-persistent://a/b/c", "not supported"),
            ("kafka://a/b/c", "unknown domain"),
            ("a b", "holds ' '"),
            ("a/b", "expected"),
        ] {
            let error = TopicName::parse(name).unwrap_err();
            assert!(error.to_string().contains(fragment), "{name}: {error}");
        }
        assert!(TopicName::parse(&"x".repeat(600)).is_err());
    }
}
