//! Which consumer of a subscription gets the next message: the decisions of Pulsar's four
//! subscription types, without I/O. The subscription owns a [`Dispatcher`] and asks it for a
//! consumer per message; it keeps permits (flow control) up to date as consumers ask for more
//! and as messages are sent.

use std::collections::BTreeMap;

/// How a subscription shares its messages among consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionType {
    /// One consumer; a second is refused.
    Exclusive,
    /// One active consumer; on its departure the next by priority, then name, takes over.
    Failover,
    /// Round robin among the consumers that have permits.
    Shared,
    /// Each key always to the same consumer while the set of consumers is stable.
    KeyShared,
}

/// A consumer as dispatch sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSlot {
    pub id: u64,
    pub name: String,
    /// Lower is preferred (Pulsar's priority level).
    pub priority: i32,
    /// Messages it may still be sent.
    pub permits: u32,
}

/// Why a consumer could not join.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinRefused {
    #[error("the exclusive subscription already has a consumer")]
    ExclusiveTaken,
    #[error("consumer id {0} is already connected")]
    DuplicateId(u64),
}

/// Points on the Key_Shared hash ring per consumer; more points spread keys more evenly.
const RING_POINTS_PER_CONSUMER: u32 = 100;

/// The dispatch state of one subscription.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    kind: SubscriptionType,
    consumers: BTreeMap<u64, ConsumerSlot>,
    /// Shared: the id served last, so the next pick starts after it.
    last_served: Option<u64>,
    /// Key_Shared: hash point -> consumer id.
    ring: BTreeMap<u32, u64>,
}

impl Dispatcher {
    pub fn new(kind: SubscriptionType) -> Self {
        Self {
            kind,
            consumers: BTreeMap::new(),
            last_served: None,
            ring: BTreeMap::new(),
        }
    }

    pub fn kind(&self) -> SubscriptionType {
        self.kind
    }

    pub fn consumers(&self) -> impl Iterator<Item = &ConsumerSlot> {
        self.consumers.values()
    }

    pub fn add_consumer(&mut self, consumer: ConsumerSlot) -> Result<(), JoinRefused> {
        if self.consumers.contains_key(&consumer.id) {
            return Err(JoinRefused::DuplicateId(consumer.id));
        }
        if self.kind == SubscriptionType::Exclusive && !self.consumers.is_empty() {
            return Err(JoinRefused::ExclusiveTaken);
        }
        self.consumers.insert(consumer.id, consumer);
        self.rebuild_ring();
        Ok(())
    }

    pub fn remove_consumer(&mut self, id: u64) -> Option<ConsumerSlot> {
        let removed = self.consumers.remove(&id);
        self.rebuild_ring();
        removed
    }

    pub fn add_permits(&mut self, id: u64, permits: u32) {
        if let Some(consumer) = self.consumers.get_mut(&id) {
            consumer.permits = consumer.permits.saturating_add(permits);
        }
    }

    /// Records that a message was sent to `id`.
    pub fn sent(&mut self, id: u64) {
        self.sent_many(id, 1);
    }

    /// Records that `count` messages (one entry's batch) were sent to `id`. A batch may take
    /// a consumer's permits below what it holds, as in Pulsar; they stop at zero.
    pub fn sent_many(&mut self, id: u64, count: u32) {
        if let Some(consumer) = self.consumers.get_mut(&id) {
            consumer.permits = consumer.permits.saturating_sub(count);
        }
        self.last_served = Some(id);
    }

    /// Whether any consumer may be sent a message now.
    pub fn any_permits(&self) -> bool {
        self.consumers.values().any(|consumer| consumer.permits > 0)
    }

    /// The consumer that receives every message in Exclusive and Failover subscriptions.
    pub fn active_consumer(&self) -> Option<&ConsumerSlot> {
        self.consumers.values().min_by(|left, right| {
            (left.priority, &left.name, left.id).cmp(&(right.priority, &right.name, right.id))
        })
    }

    /// The consumer for the next message (with `key_hash` for Key_Shared), or `None` when the
    /// consumer it must go to has no permits or there is none: the message waits.
    pub fn pick(&self, key_hash: Option<u32>) -> Option<u64> {
        match self.kind {
            SubscriptionType::Exclusive | SubscriptionType::Failover => self
                .active_consumer()
                .filter(|consumer| consumer.permits > 0)
                .map(|consumer| consumer.id),
            SubscriptionType::Shared => {
                let after = self.last_served.unwrap_or(0);
                let later = self
                    .consumers
                    .range(after.saturating_add(1)..)
                    .map(|(_, consumer)| consumer);
                let earlier = self.consumers.range(..=after).map(|(_, consumer)| consumer);
                later
                    .chain(earlier)
                    .find(|consumer| consumer.permits > 0)
                    .map(|consumer| consumer.id)
            }
            SubscriptionType::KeyShared => {
                let id = self.owner_of_key(key_hash.unwrap_or(0))?;
                (self.consumers.get(&id)?.permits > 0).then_some(id)
            }
        }
    }

    /// Key_Shared: the consumer that owns a key hash, permits or not.
    pub fn owner_of_key(&self, key_hash: u32) -> Option<u64> {
        self.ring
            .range(key_hash..)
            .next()
            .or_else(|| self.ring.iter().next())
            .map(|(_, &id)| id)
    }

    fn rebuild_ring(&mut self) {
        self.ring.clear();
        if self.kind != SubscriptionType::KeyShared {
            return;
        }
        for consumer in self.consumers.values() {
            for point in 0..RING_POINTS_PER_CONSUMER {
                // Points depend on the consumer's name, so a consumer that reconnects under
                // the same name gets its keys back.
                let hash = key_hash(format!("{}#{point}", consumer.name).as_bytes());
                self.ring.entry(hash).or_insert(consumer.id);
            }
        }
    }
}

/// The hash of a message key used by Key_Shared dispatch (and partition routing).
pub fn key_hash(key: &[u8]) -> u32 {
    // FNV-1a, then a murmur-style finaliser so nearby keys land far apart on the ring.
    let mut hash: u32 = 0x811c_9dc5;
    for &byte in key {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85eb_ca6b);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xc2b2_ae35);
    hash ^ (hash >> 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: u64, name: &str, priority: i32, permits: u32) -> ConsumerSlot {
        ConsumerSlot {
            id,
            name: name.to_string(),
            priority,
            permits,
        }
    }

    #[test]
    fn exclusive_refuses_a_second_consumer() {
        let mut dispatcher = Dispatcher::new(SubscriptionType::Exclusive);
        dispatcher.add_consumer(slot(1, "a", 0, 5)).unwrap();
        assert_eq!(
            dispatcher.add_consumer(slot(2, "b", 0, 5)),
            Err(JoinRefused::ExclusiveTaken)
        );
        assert_eq!(dispatcher.pick(None), Some(1));
    }

    #[test]
    fn failover_prefers_priority_then_name_and_moves_on_departure() {
        let mut dispatcher = Dispatcher::new(SubscriptionType::Failover);
        dispatcher.add_consumer(slot(1, "b", 1, 5)).unwrap();
        dispatcher.add_consumer(slot(2, "c", 0, 5)).unwrap();
        dispatcher.add_consumer(slot(3, "a", 0, 5)).unwrap();
        assert_eq!(dispatcher.pick(None), Some(3));
        dispatcher.remove_consumer(3);
        assert_eq!(dispatcher.pick(None), Some(2));
        dispatcher.remove_consumer(2);
        assert_eq!(dispatcher.pick(None), Some(1));
    }

    #[test]
    fn shared_round_robins_among_consumers_with_permits() {
        let mut dispatcher = Dispatcher::new(SubscriptionType::Shared);
        dispatcher.add_consumer(slot(1, "a", 0, 2)).unwrap();
        dispatcher.add_consumer(slot(2, "b", 0, 10)).unwrap();
        dispatcher.add_consumer(slot(3, "c", 0, 0)).unwrap();
        let mut order = Vec::new();
        while let Some(id) = dispatcher.pick(None) {
            order.push(id);
            dispatcher.sent(id);
            if order.len() == 6 {
                break;
            }
        }
        // Consumer 3 has no permits; consumer 1 runs out after two.
        assert_eq!(order, vec![1, 2, 1, 2, 2, 2]);
        dispatcher.add_permits(3, 1);
        assert_eq!(dispatcher.pick(None), Some(3));
    }

    #[test]
    fn key_shared_keeps_each_key_on_one_consumer_while_the_set_is_stable() {
        let mut dispatcher = Dispatcher::new(SubscriptionType::KeyShared);
        for (id, name) in [(1, "a"), (2, "b"), (3, "c")] {
            dispatcher
                .add_consumer(slot(id, name, 0, u32::MAX))
                .unwrap();
        }
        let owners: Vec<u64> = (0..1000)
            .map(|key| {
                dispatcher
                    .owner_of_key(key_hash(format!("key-{key}").as_bytes()))
                    .unwrap()
            })
            .collect();
        for id in 1..=3 {
            let share = owners.iter().filter(|&&owner| owner == id).count();
            assert!(
                (150..=550).contains(&share),
                "consumer {id} owns {share} of 1000 keys"
            );
        }
        // Stable: asking again gives the same owners.
        for (key, owner) in owners.iter().enumerate() {
            let hash = key_hash(format!("key-{key}").as_bytes());
            assert_eq!(dispatcher.pick(Some(hash)), Some(*owner));
        }
        // When one consumer leaves, only its keys move.
        dispatcher.remove_consumer(2);
        for (key, owner) in owners.iter().enumerate() {
            let now = dispatcher.owner_of_key(key_hash(format!("key-{key}").as_bytes()));
            if *owner != 2 {
                assert_eq!(now, Some(*owner));
            } else {
                assert_ne!(now, Some(2));
            }
        }
        // A key whose owner has no permits waits rather than going elsewhere.
        let hash = key_hash(b"key-7");
        let owner = dispatcher.owner_of_key(hash).unwrap();
        dispatcher.consumers.get_mut(&owner).unwrap().permits = 0;
        assert_eq!(dispatcher.pick(Some(hash)), None);
    }
}
