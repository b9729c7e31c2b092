//! What a subscription has read but not yet seen acknowledged: each entry's messages are
//! waiting (to be sent, or sent again), out at a consumer, or acknowledged. No I/O; the
//! subscription task feeds in what it reads and what consumers say, and asks which messages go
//! to which consumer next.
//!
//! Entries are kept until every message of their batch is acknowledged, so a redelivery needs
//! no read. Messages are dispatched in position order, which keeps the order per consumer (and
//! per key under Key_Shared) for everything sent for the first time.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use super::stored_batch::ReadBatch;
use crate::dispatch::{Dispatcher, SubscriptionType};
use crate::managed_ledger::Position;

/// One message of a topic: its entry and its index in the entry's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageRef {
    pub position: Position,
    pub index: u32,
}

/// Consecutive messages `first..=last` of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRange {
    pub position: Position,
    pub first: u32,
    pub last: u32,
}

impl From<MessageRef> for IndexRange {
    fn from(message: MessageRef) -> Self {
        Self {
            position: message.position,
            first: message.index,
            last: message.index,
        }
    }
}

/// Messages of one entry handed to one consumer by [`Pending::dispatch`].
#[derive(Debug, Clone)]
pub struct Assigned {
    pub consumer: u64,
    pub position: Position,
    /// The entry's stored bytes.
    pub batch: Bytes,
    /// The batch indexes handed out, ascending; `None` when it is the whole batch.
    pub indexes: Option<Vec<u32>>,
    /// Each handed-out message's earlier deliveries, in index order; empty when all are zero.
    pub redelivery_counts: Vec<u32>,
    /// Messages handed out.
    pub message_count: u32,
}

/// State of one message: waiting, acknowledged, or the id of the consumer holding it.
const WAITING: u64 = 0;
const ACKED: u64 = u64::MAX;

struct Entry {
    batch: Bytes,
    /// Key_Shared: each message's key hash.
    key_hashes: Vec<u32>,
    states: Vec<u64>,
    unacked: u32,
}

/// What one dispatch pass hands one consumer of one entry.
#[derive(Default)]
struct Handout {
    indexes: Vec<u32>,
    redelivery_counts: Vec<u32>,
}

impl Handout {
    fn push(&mut self, index: u32, redelivery_count: u32) {
        self.indexes.push(index);
        self.redelivery_counts.push(redelivery_count);
    }

    fn into_assigned(self, consumer: u64, position: Position, entry: &Entry) -> Assigned {
        let message_count = self.indexes.len() as u32;
        let whole = self.indexes.len() == entry.states.len();
        Assigned {
            consumer,
            position,
            batch: entry.batch.clone(),
            indexes: (!whole).then_some(self.indexes),
            redelivery_counts: if self.redelivery_counts.iter().any(|&count| count > 0) {
                self.redelivery_counts
            } else {
                Vec::new()
            },
            message_count,
        }
    }
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
    pub fn add(&mut self, position: Position, batch: ReadBatch) -> bool {
        let count = batch.message_count as usize;
        if count == 0 || self.entries.contains_key(&position) {
            return count != 0;
        }
        self.entries.insert(
            position,
            Entry {
                batch: batch.bytes,
                key_hashes: batch.key_hashes,
                states: vec![WAITING; count],
                unacked: count as u32,
            },
        );
        self.waiting.insert(position);
        self.waiting_messages += count;
        true
    }

    /// Key_Shared: `consumer` joined others after `mark` was read. Until every entry up to
    /// `mark` is acknowledged, it is given nothing after `mark`: a key that moved to it may
    /// still have earlier messages out at its previous consumer.
    pub fn hold_after(&mut self, consumer: u64, mark: Position) {
        self.holds.insert(consumer, mark);
    }

    /// Forgets a departed consumer's hold.
    pub fn release(&mut self, consumer: u64) {
        self.holds.remove(&consumer);
    }

    /// Hands waiting messages to consumers with permits, in position order. Outside
    /// Key_Shared an entry's waiting messages go together to one consumer; under Key_Shared
    /// each message goes to its key's consumer, and waits while that consumer has no permits
    /// or is held.
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
            let waiting = entry
                .states
                .iter()
                .enumerate()
                .filter(|(_, &state)| state == WAITING)
                .map(|(index, _)| index as u32);
            let mut handouts: Vec<(u64, Handout)> = Vec::new();
            let mut still_waiting = false;
            if key_shared {
                for index in waiting {
                    let hash = entry.key_hashes.get(index as usize).copied().unwrap_or(0);
                    let consumer = match dispatcher.pick(Some(hash)) {
                        Some(consumer)
                            if self
                                .holds
                                .get(&consumer)
                                .is_none_or(|mark| position <= *mark) =>
                        {
                            consumer
                        }
                        _ => {
                            still_waiting = true;
                            continue;
                        }
                    };
                    dispatcher.sent(consumer);
                    let count = redelivery_count(&self.redeliveries, position, index);
                    match handouts.iter_mut().find(|(holder, _)| *holder == consumer) {
                        Some((_, handout)) => handout.push(index, count),
                        None => {
                            let mut handout = Handout::default();
                            handout.push(index, count);
                            handouts.push((consumer, handout));
                        }
                    }
                }
            } else {
                // An entry's waiting messages go together to one consumer.
                let Some(consumer) = dispatcher.pick(None) else {
                    break;
                };
                let mut handout = Handout::default();
                for index in waiting {
                    handout.push(index, redelivery_count(&self.redeliveries, position, index));
                }
                dispatcher.sent_many(consumer, handout.indexes.len() as u32);
                handouts.push((consumer, handout));
            }
            for (consumer, handout) in handouts {
                for &index in &handout.indexes {
                    entry.states[index as usize] = consumer;
                }
                self.outstanding += handout.indexes.len();
                self.waiting_messages -= handout.indexes.len();
                assigned.push(handout.into_assigned(consumer, position, entry));
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
        self.ack_range(message.into())
    }

    /// Marks the messages `first..=last` of one entry acknowledged (indexes past the batch
    /// are ignored). Returns the entry's position when no message of it is left unacknowledged.
    pub fn ack_range(&mut self, range: IndexRange) -> Option<Position> {
        let entry = self.entries.get_mut(&range.position)?;
        let first = range.first as usize;
        let last = (range.last as usize).min(entry.states.len().checked_sub(1)?);
        for index in first..=last {
            let state = &mut entry.states[index];
            match *state {
                ACKED => continue,
                WAITING => self.waiting_messages -= 1,
                _ => self.outstanding -= 1,
            }
            *state = ACKED;
            entry.unacked -= 1;
            if !self.redeliveries.is_empty() {
                self.redeliveries.remove(&MessageRef {
                    position: range.position,
                    index: index as u32,
                });
            }
        }
        if entry.unacked > 0 {
            return None;
        }
        self.entries.remove(&range.position);
        self.waiting.remove(&range.position);
        Some(range.position)
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
            let last = if position == through.position {
                through.index
            } else {
                u32::MAX
            };
            if let Some(entry_done) = self.ack_range(IndexRange {
                position,
                first: 0,
                last,
            }) {
                done.push(entry_done);
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

    /// Forgets everything (after a seek).
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// The last position held, if any.
    pub fn last_position(&self) -> Option<Position> {
        self.entries.keys().next_back().copied()
    }
}

/// How many times a message was delivered before; most subscriptions have no redeliveries,
/// and then no lookup is made.
fn redelivery_count(
    redeliveries: &HashMap<MessageRef, u32>,
    position: Position,
    index: u32,
) -> u32 {
    if redeliveries.is_empty() {
        return 0;
    }
    redeliveries
        .get(&MessageRef { position, index })
        .copied()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::{key_hash, ConsumerSlot};

    fn batch(keys: &[&str]) -> ReadBatch {
        ReadBatch {
            bytes: Bytes::new(),
            message_count: keys.len() as u32,
            key_hashes: keys.iter().map(|key| key_hash(key.as_bytes())).collect(),
        }
    }

    /// One handed-out message.
    struct Sent {
        consumer: u64,
        message: MessageRef,
        redelivery_count: u32,
    }

    /// Dispatches, and lists what went out message by message.
    fn dispatch(pending: &mut Pending, dispatcher: &mut Dispatcher) -> Vec<Sent> {
        let mut sent = Vec::new();
        for assigned in pending.dispatch(dispatcher) {
            let indexes = assigned
                .indexes
                .clone()
                .unwrap_or_else(|| (0..assigned.message_count).collect());
            assert_eq!(indexes.len() as u32, assigned.message_count);
            for (at, index) in indexes.into_iter().enumerate() {
                sent.push(Sent {
                    consumer: assigned.consumer,
                    message: MessageRef {
                        position: assigned.position,
                        index,
                    },
                    redelivery_count: assigned.redelivery_counts.get(at).copied().unwrap_or(0),
                });
            }
        }
        sent
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
        let assigned = dispatch(&mut pending, &mut dispatcher);
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
    fn a_first_delivery_hands_out_the_whole_entry_and_a_redelivery_only_what_came_back() {
        let mut pending = Pending::new();
        let mut dispatcher = dispatcher(SubscriptionType::Shared, &[(1, 100)]);
        pending.add(Position::new(1, 0), batch(&["a", "b", "c"]));
        let first = pending.dispatch(&mut dispatcher);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].indexes, None, "every message of the batch");
        assert_eq!(first[0].message_count, 3);
        assert!(first[0].redelivery_counts.is_empty());

        pending.ack(at(0, 0));
        assert_eq!(pending.redeliver(1, None), 2);
        let again = pending.dispatch(&mut dispatcher);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].indexes, Some(vec![1, 2]));
        assert_eq!(again[0].redelivery_counts, vec![1, 1]);
        assert_eq!(again[0].message_count, 2);
    }

    #[test]
    fn nothing_is_sent_without_permits_and_order_is_kept_when_they_come() {
        let mut pending = Pending::new();
        let mut dispatcher = dispatcher(SubscriptionType::Failover, &[(1, 0)]);
        for entry in 0..3 {
            pending.add(Position::new(1, entry), batch(&["k"]));
        }
        assert!(dispatch(&mut pending, &mut dispatcher).is_empty());
        dispatcher.add_permits(1, 2);
        let assigned = dispatch(&mut pending, &mut dispatcher);
        let entries: Vec<i64> = assigned
            .iter()
            .map(|a| a.message.position.entry_id)
            .collect();
        assert_eq!(entries, vec![0, 1]);
        dispatcher.add_permits(1, 5);
        let assigned = dispatch(&mut pending, &mut dispatcher);
        assert_eq!(assigned.len(), 1);
        assert_eq!(assigned[0].message, at(2, 0));
    }

    #[test]
    fn redelivered_messages_come_back_first_with_their_count() {
        let mut pending = Pending::new();
        let mut dispatcher = dispatcher(SubscriptionType::Shared, &[(1, 10), (2, 10)]);
        pending.add(Position::new(1, 0), batch(&["a", "b"]));
        pending.add(Position::new(1, 1), batch(&["c"]));
        let first = dispatch(&mut pending, &mut dispatcher);
        let holder = first[0].consumer;
        assert_eq!(pending.redeliver(holder, Some(&[at(0, 1)])), 1);
        assert_eq!(
            pending.redeliver(holder, Some(&[at(0, 1)])),
            0,
            "a waiting message is not held by anyone"
        );
        pending.add(Position::new(1, 2), batch(&["d"]));
        let again = dispatch(&mut pending, &mut dispatcher);
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
        let assigned = dispatch(&mut pending, &mut dispatcher);
        let held_by_one = assigned.iter().filter(|a| a.consumer == 1).count();
        assert!(held_by_one > 0);
        dispatcher.remove_consumer(1);
        assert_eq!(pending.redeliver(1, None), held_by_one);
        let again = dispatch(&mut pending, &mut dispatcher);
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
        let assigned = dispatch(&mut pending, &mut dispatcher);
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
        let assigned = dispatch(&mut pending, &mut dispatcher);
        assert!(assigned.iter().all(|a| a.consumer == 2));
        let stuck = 50 - assigned.len();
        assert!(stuck > 0);
        assert_eq!(pending.waiting_messages(), stuck);
        dispatcher.add_permits(1, 100);
        let assigned = dispatch(&mut pending, &mut dispatcher);
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
        let before_join = dispatch(&mut pending, &mut dispatcher);
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
        let while_held = dispatch(&mut pending, &mut dispatcher);
        assert!(while_held.iter().all(|a| a.consumer == 1));
        let held = 50 - while_held.len();
        assert!(held > 0, "some keys moved to the new consumer");
        assert_eq!(pending.waiting_messages(), held);

        // Consumer 1 acknowledges what it had before the join: the hold ends.
        for index in 0..49 {
            pending.ack(at(0, index));
        }
        assert!(
            dispatch(&mut pending, &mut dispatcher).is_empty(),
            "one left"
        );
        pending.ack(at(0, 49));
        let released = dispatch(&mut pending, &mut dispatcher);
        assert_eq!(released.len(), held);
        assert!(released.iter().all(|a| a.consumer == 2));
    }

    #[test]
    fn a_range_acknowledges_its_messages_and_completes_the_entry_with_the_last() {
        let mut pending = Pending::new();
        let mut dispatcher = dispatcher(SubscriptionType::Shared, &[(1, 100)]);
        pending.add(Position::new(1, 0), batch(&["a", "b", "c", "d"]));
        dispatch(&mut pending, &mut dispatcher);
        let range = |first, last| IndexRange {
            position: Position::new(1, 0),
            first,
            last,
        };
        assert_eq!(pending.ack_range(range(1, 2)), None);
        assert_eq!(pending.unacked_messages(), 2);
        assert_eq!(pending.ack_range(range(2, 1)), None, "an empty range");
        assert_eq!(pending.ack_range(range(1, 3)), None, "index 0 is still out");
        assert_eq!(pending.unacked_messages(), 1);
        assert_eq!(pending.ack_range(range(0, 99)), Some(Position::new(1, 0)));
        assert_eq!(pending.unacked_messages(), 0);
    }

    #[test]
    fn a_cumulative_ack_completes_every_entry_up_to_the_message() {
        let mut pending = Pending::new();
        let mut dispatcher = dispatcher(SubscriptionType::Exclusive, &[(1, 100)]);
        for entry in 0..3 {
            pending.add(Position::new(1, entry), batch(&["a", "b"]));
        }
        dispatch(&mut pending, &mut dispatcher);
        let done = pending.ack_through(at(2, 0));
        assert_eq!(done, vec![Position::new(1, 0), Position::new(1, 1)]);
        assert_eq!(pending.unacked_messages(), 1);
        assert_eq!(pending.ack_through(at(2, 1)), vec![Position::new(1, 2)]);
    }
}
