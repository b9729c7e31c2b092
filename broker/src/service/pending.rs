//! What a subscription has read but not yet seen acknowledged: each entry's messages are
//! waiting (to be sent, or sent again), out at a consumer, or acknowledged. No I/O; the
//! subscription task feeds in what it reads and what consumers say, and asks which messages go
//! to which consumer next.
//!
//! Entries are kept until every message of their batch is acknowledged, so a redelivery needs
//! no read. Messages are dispatched in position order, which keeps the order per consumer (and
//! per key under Key_Shared) for everything sent for the first time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use magnetar_proto::broker::StoredBatch;

use crate::dispatch::{key_hash, Dispatcher, SubscriptionType};
use crate::managed_ledger::Position;

/// One message of a topic: its entry and its index in the entry's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageRef {
    pub position: Position,
    pub index: u32,
}

/// A message handed to a consumer by [`Pending::dispatch`].
#[derive(Debug, Clone)]
pub struct Assigned {
    pub consumer: u64,
    pub message: MessageRef,
    pub batch: Arc<StoredBatch>,
    pub redelivery_count: u32,
}

/// State of one message: waiting, acknowledged, or the id of the consumer holding it.
const WAITING: u64 = 0;
const ACKED: u64 = u64::MAX;

struct Entry {
    batch: Arc<StoredBatch>,
    states: Vec<u64>,
    unacked: u32,
}

/// The unacknowledged messages of one subscription.
#[derive(Default)]
pub struct Pending {
    entries: BTreeMap<Position, Entry>,
    /// Entries with at least one waiting message.
    waiting: BTreeSet<Position>,
    redeliveries: HashMap<MessageRef, u32>,
    /// Messages out at consumers.
    outstanding: usize,
    /// Messages waiting.
    waiting_messages: usize,
    /// Key_Shared consumers that joined others, with the last entry read when they joined:
    /// nothing after it goes to them while an entry up to it is unacknowledged.
    holds: HashMap<u64, Position>,
}

impl Pending {
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages held: waiting or out at a consumer.
    pub fn unacked_messages(&self) -> usize {
        self.outstanding + self.waiting_messages
    }

    pub fn waiting_messages(&self) -> usize {
        self.waiting_messages
    }

    pub fn contains(&self, position: Position) -> bool {
        self.entries.contains_key(&position)
    }

    /// Adds an entry just read; all its messages wait for dispatch. An empty batch has nothing
    /// to deliver and is reported as acknowledged at once (returns `false`).
    pub fn add(&mut self, position: Position, batch: Arc<StoredBatch>) -> bool {
        let count = batch.messages.len();
        if count == 0 || self.entries.contains_key(&position) {
            return count != 0;
        }
        self.entries.insert(
            position,
            Entry {
                batch,
                states: vec![WAITING; count],
                unacked: count as u32,
            },
        );
        self.waiting.insert(position);
        self.waiting_messages += count;
        true
    }

    /// Key_Shared, a consumer joining others: the keys it takes over may still have earlier
    /// messages out at their previous consumers, so messages after `mark` (the last entry read
    /// when it joined) wait for it until every entry up to `mark` is acknowledged. Messages up
    /// to `mark` (redeliveries) may go to it at once.
    pub fn hold_after(&mut self, consumer: u64, mark: Position) {
        self.holds.insert(consumer, mark);
    }

    /// Forgets a departed consumer's hold.
    pub fn release(&mut self, consumer: u64) {
        self.holds.remove(&consumer);
    }

    /// Hands waiting messages to consumers with permits, in position order, and takes the
    /// permits they use. Under Key_Shared each message goes to its key's consumer, and stays
    /// waiting while that consumer has no permits; under the other types an entry's waiting
    /// messages go together to the consumer the dispatcher picks.
    pub fn dispatch(&mut self, dispatcher: &mut Dispatcher) -> Vec<Assigned> {
        let mut assigned = Vec::new();
        let key_shared = dispatcher.kind() == SubscriptionType::KeyShared;
        let entries = &self.entries;
        self.holds
            .retain(|_, mark| entries.range(..=*mark).next().is_some());
        let positions: Vec<Position> = self.waiting.iter().copied().collect();
        for position in positions {
            if !dispatcher.any_permits() {
                break;
            }
            let Some(entry) = self.entries.get_mut(&position) else {
                self.waiting.remove(&position);
                continue;
            };
            let mut still_waiting = false;
            if key_shared {
                for (index, state) in entry.states.iter_mut().enumerate() {
                    if *state != WAITING {
                        continue;
                    }
                    let key = entry.batch.messages[index].key.as_deref().unwrap_or("");
                    match dispatcher.pick(Some(key_hash(key.as_bytes()))) {
                        Some(consumer)
                            if self
                                .holds
                                .get(&consumer)
                                .is_some_and(|mark| position > *mark) =>
                        {
                            still_waiting = true
                        }
                        Some(consumer) => {
                            dispatcher.sent(consumer);
                            *state = consumer;
                            let message = MessageRef {
                                position,
                                index: index as u32,
                            };
                            assigned.push(Assigned {
                                consumer,
                                message,
                                batch: entry.batch.clone(),
                                redelivery_count: self
                                    .redeliveries
                                    .get(&message)
                                    .copied()
                                    .unwrap_or(0),
                            });
                            self.outstanding += 1;
                            self.waiting_messages -= 1;
                        }
                        None => still_waiting = true,
                    }
                }
            } else {
                let Some(consumer) = dispatcher.pick(None) else {
                    break;
                };
                let mut sent = 0;
                for (index, state) in entry.states.iter_mut().enumerate() {
                    if *state != WAITING {
                        continue;
                    }
                    *state = consumer;
                    sent += 1;
                    let message = MessageRef {
                        position,
                        index: index as u32,
                    };
                    assigned.push(Assigned {
                        consumer,
                        message,
                        batch: entry.batch.clone(),
                        redelivery_count: self.redeliveries.get(&message).copied().unwrap_or(0),
                    });
                }
                dispatcher.sent_many(consumer, sent);
                self.outstanding += sent as usize;
                self.waiting_messages -= sent as usize;
            }
            if !still_waiting {
                self.waiting.remove(&position);
            }
        }
        assigned
    }

    /// Marks a message acknowledged. Returns the entry's position when that was its last
    /// unacknowledged message (the cursor may now acknowledge the entry).
    pub fn ack(&mut self, message: MessageRef) -> Option<Position> {
        let entry = self.entries.get_mut(&message.position)?;
        let state = entry.states.get_mut(message.index as usize)?;
        match *state {
            ACKED => return None,
            WAITING => self.waiting_messages -= 1,
            _ => self.outstanding -= 1,
        }
        *state = ACKED;
        entry.unacked -= 1;
        self.redeliveries.remove(&message);
        if entry.unacked > 0 {
            return None;
        }
        self.entries.remove(&message.position);
        self.waiting.remove(&message.position);
        Some(message.position)
    }

    /// Acknowledges every message up to and including `through`. Returns the positions of
    /// the entries now fully acknowledged, in order.
    pub fn ack_through(&mut self, through: MessageRef) -> Vec<Position> {
        let mut done = Vec::new();
        let positions: Vec<Position> = self
            .entries
            .range(..=through.position)
            .map(|(&position, _)| position)
            .collect();
        for position in positions {
            let last_index = if position == through.position {
                through.index as usize
            } else {
                usize::MAX
            };
            let count = self.entries[&position].states.len();
            for index in 0..count.min(last_index.saturating_add(1)) {
                if let Some(entry_done) = self.ack(MessageRef {
                    position,
                    index: index as u32,
                }) {
                    done.push(entry_done);
                }
            }
        }
        done
    }

    /// Puts messages out at `consumer` back to waiting, counting a redelivery for each:
    /// those named, or all of them when `messages` is `None`. Returns how many moved.
    pub fn redeliver(&mut self, consumer: u64, messages: Option<&[MessageRef]>) -> usize {
        let mut moved = Vec::new();
        match messages {
            Some(messages) => {
                for message in messages {
                    let held = self
                        .entries
                        .get(&message.position)
                        .and_then(|entry| entry.states.get(message.index as usize))
                        .is_some_and(|&state| state == consumer);
                    if held {
                        moved.push(*message);
                    }
                }
            }
            None => {
                for (&position, entry) in &self.entries {
                    for (index, &state) in entry.states.iter().enumerate() {
                        if state == consumer {
                            moved.push(MessageRef {
                                position,
                                index: index as u32,
                            });
                        }
                    }
                }
            }
        }
        for message in &moved {
            if let Some(entry) = self.entries.get_mut(&message.position) {
                entry.states[message.index as usize] = WAITING;
                self.waiting.insert(message.position);
                *self.redeliveries.entry(*message).or_insert(0) += 1;
            }
        }
        self.outstanding -= moved.len();
        self.waiting_messages += moved.len();
        moved.len()
    }

    /// The redelivery count of a message.
    pub fn redelivery_count(&self, message: MessageRef) -> u32 {
        self.redeliveries.get(&message).copied().unwrap_or(0)
    }

    /// Forgets everything (after a seek).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The last position held, if any.
    pub fn last_position(&self) -> Option<Position> {
        self.entries.keys().next_back().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::ConsumerSlot;
    use magnetar_proto::broker::Message;

    fn batch(keys: &[&str]) -> Arc<StoredBatch> {
        Arc::new(StoredBatch {
            producer_name: "p".into(),
            first_sequence_id: 0,
            publish_time_ms: 0,
            messages: keys
                .iter()
                .map(|key| Message {
                    key: Some(key.to_string()),
                    ..Message::default()
                })
                .collect(),
        })
    }

    fn dispatcher(kind: SubscriptionType, consumers: &[(u64, u32)]) -> Dispatcher {
        let mut dispatcher = Dispatcher::new(kind);
        for &(id, permits) in consumers {
            dispatcher
                .add_consumer(ConsumerSlot {
                    id,
                    name: format!("c{id}"),
                    priority: 0,
                    permits,
                })
                .expect("joins");
        }
        dispatcher
    }

    fn at(entry: i64, index: u32) -> MessageRef {
        MessageRef {
            position: Position::new(1, entry),
            index,
        }
    }

    #[test]
    fn a_batch_goes_whole_to_one_consumer_and_is_done_when_every_message_is_acked() {
        let mut pending = Pending::new();
        let mut dispatcher = dispatcher(SubscriptionType::Exclusive, &[(1, 1)]);
        pending.add(Position::new(1, 0), batch(&["a", "b", "c"]));
        let assigned = pending.dispatch(&mut dispatcher);
        assert_eq!(assigned.len(), 3);
        assert!(assigned.iter().all(|a| a.consumer == 1));
        assert_eq!(pending.unacked_messages(), 3);
        assert_eq!(pending.ack(at(0, 0)), None);
        assert_eq!(pending.ack(at(0, 0)), None, "a second ack changes nothing");
        assert_eq!(pending.ack(at(0, 2)), None);
        assert_eq!(pending.ack(at(0, 1)), Some(Position::new(1, 0)));
        assert_eq!(pending.unacked_messages(), 0);
    }

    #[test]
    fn nothing_is_sent_without_permits_and_order_is_kept_when_they_come() {
        let mut pending = Pending::new();
        let mut dispatcher = dispatcher(SubscriptionType::Failover, &[(1, 0)]);
        for entry in 0..3 {
            pending.add(Position::new(1, entry), batch(&["k"]));
        }
        assert!(pending.dispatch(&mut dispatcher).is_empty());
        dispatcher.add_permits(1, 2);
        let assigned = pending.dispatch(&mut dispatcher);
        let entries: Vec<i64> = assigned
            .iter()
            .map(|a| a.message.position.entry_id)
            .collect();
        assert_eq!(entries, vec![0, 1]);
        dispatcher.add_permits(1, 5);
        let assigned = pending.dispatch(&mut dispatcher);
        assert_eq!(assigned.len(), 1);
        assert_eq!(assigned[0].message, at(2, 0));
    }

    #[test]
    fn redelivered_messages_come_back_first_with_their_count() {
        let mut pending = Pending::new();
        let mut dispatcher = dispatcher(SubscriptionType::Shared, &[(1, 10), (2, 10)]);
        pending.add(Position::new(1, 0), batch(&["a", "b"]));
        pending.add(Position::new(1, 1), batch(&["c"]));
        let first = pending.dispatch(&mut dispatcher);
        let holder = first[0].consumer;
        assert_eq!(pending.redeliver(holder, Some(&[at(0, 1)])), 1);
        assert_eq!(
            pending.redeliver(holder, Some(&[at(0, 1)])),
            0,
            "a waiting message is not held by anyone"
        );
        pending.add(Position::new(1, 2), batch(&["d"]));
        let again = pending.dispatch(&mut dispatcher);
        assert_eq!(again[0].message, at(0, 1));
        assert_eq!(again[0].redelivery_count, 1);
        assert_eq!(again[1].message, at(2, 0));
        assert_eq!(again[1].redelivery_count, 0);
    }

    #[test]
    fn a_departed_consumers_messages_go_to_the_others() {
        let mut pending = Pending::new();
        let mut dispatcher = dispatcher(SubscriptionType::Shared, &[(1, 10), (2, 10)]);
        for entry in 0..4 {
            pending.add(Position::new(1, entry), batch(&["x"]));
        }
        let assigned = pending.dispatch(&mut dispatcher);
        let held_by_one = assigned.iter().filter(|a| a.consumer == 1).count();
        assert!(held_by_one > 0);
        dispatcher.remove_consumer(1);
        assert_eq!(pending.redeliver(1, None), held_by_one);
        let again = pending.dispatch(&mut dispatcher);
        assert_eq!(again.len(), held_by_one);
        assert!(again
            .iter()
            .all(|a| a.consumer == 2 && a.redelivery_count == 1));
    }

    #[test]
    fn key_shared_keeps_a_key_waiting_while_its_consumer_has_no_permits() {
        let mut pending = Pending::new();
        let mut dispatcher = dispatcher(SubscriptionType::KeyShared, &[(1, 100), (2, 100)]);
        let keys: Vec<String> = (0..50).map(|i| format!("key-{i}")).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        pending.add(Position::new(1, 0), batch(&key_refs));
        let assigned = pending.dispatch(&mut dispatcher);
        assert_eq!(assigned.len(), 50);
        for message in &assigned {
            let key = keys[message.message.index as usize].as_bytes();
            assert_eq!(
                Some(message.consumer),
                dispatcher.owner_of_key(key_hash(key))
            );
        }
        // Starve consumer 1, then send a batch with keys of both.
        let permits = dispatcher
            .consumers()
            .find(|c| c.id == 1)
            .map_or(0, |c| c.permits);
        dispatcher.sent_many(1, permits);
        pending.add(Position::new(1, 1), batch(&key_refs));
        let assigned = pending.dispatch(&mut dispatcher);
        assert!(assigned.iter().all(|a| a.consumer == 2));
        let stuck = 50 - assigned.len();
        assert!(stuck > 0);
        assert_eq!(pending.waiting_messages(), stuck);
        dispatcher.add_permits(1, 100);
        let assigned = pending.dispatch(&mut dispatcher);
        assert_eq!(assigned.len(), stuck);
        assert!(assigned.iter().all(|a| a.consumer == 1));
    }

    #[test]
    fn a_key_shared_consumer_joining_others_gets_new_messages_once_earlier_ones_are_acked() {
        let mut pending = Pending::new();
        let mut dispatcher = dispatcher(SubscriptionType::KeyShared, &[(1, 1000)]);
        let keys: Vec<String> = (0..50).map(|i| format!("key-{i}")).collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        pending.add(Position::new(1, 0), batch(&key_refs));
        let before_join = pending.dispatch(&mut dispatcher);
        assert!(before_join.len() == 50 && before_join.iter().all(|a| a.consumer == 1));

        dispatcher
            .add_consumer(ConsumerSlot {
                id: 2,
                name: "c2".into(),
                priority: 0,
                permits: 1000,
            })
            .expect("joins");
        pending.hold_after(2, Position::new(1, 0));
        pending.add(Position::new(1, 1), batch(&key_refs));
        let while_held = pending.dispatch(&mut dispatcher);
        assert!(while_held.iter().all(|a| a.consumer == 1));
        let held = 50 - while_held.len();
        assert!(held > 0, "some keys moved to the new consumer");
        assert_eq!(pending.waiting_messages(), held);

        // Consumer 1 acknowledges what it had before the join: the hold ends.
        for index in 0..49 {
            pending.ack(at(0, index));
        }
        assert!(pending.dispatch(&mut dispatcher).is_empty(), "one left");
        pending.ack(at(0, 49));
        let released = pending.dispatch(&mut dispatcher);
        assert_eq!(released.len(), held);
        assert!(released.iter().all(|a| a.consumer == 2));
    }

    #[test]
    fn a_cumulative_ack_completes_every_entry_up_to_the_message() {
        let mut pending = Pending::new();
        let mut dispatcher = dispatcher(SubscriptionType::Exclusive, &[(1, 100)]);
        for entry in 0..3 {
            pending.add(Position::new(1, entry), batch(&["a", "b"]));
        }
        pending.dispatch(&mut dispatcher);
        let done = pending.ack_through(at(2, 0));
        assert_eq!(done, vec![Position::new(1, 0), Position::new(1, 1)]);
        assert_eq!(pending.unacked_messages(), 1);
        assert_eq!(pending.ack_through(at(2, 1)), vec![Position::new(1, 2)]);
    }
}
