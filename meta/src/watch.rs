//! The watch log: the most recent change events of this node, in revision order, from which
//! every watcher reads at its own pace. Bounded: when full, the oldest revisions are dropped
//! and a watcher still needing them gets "compacted, re-list".
//!
//! [`EventLog`] is pure; [`WatchHub`] shares it between the node (writer) and the watch
//! streams (readers) and wakes readers when the revision moves.

use std::collections::VecDeque;

use magnetar_proto::meta::Event;
use parking_lot::Mutex;

use crate::errors::{MetaError, Result};

/// Recent events of one node.
#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<Event>,
    /// The oldest revision a reader may still ask for.
    first_revision: u64,
    /// The latest revision applied on this node.
    head_revision: u64,
    capacity_events: usize,
}

impl EventLog {
    /// A log that starts after `head_revision` (what the node has already applied).
    pub fn new(head_revision: u64, capacity_events: usize) -> Self {
        Self {
            events: VecDeque::new(),
            first_revision: head_revision + 1,
            head_revision,
            capacity_events: capacity_events.max(1),
        }
    }

    /// Forgets everything: after a snapshot install the events in between are unknown.
    pub fn reset(&mut self, head_revision: u64) {
        self.events.clear();
        self.first_revision = head_revision + 1;
        self.head_revision = head_revision;
    }

    pub fn head_revision(&self) -> u64 {
        self.head_revision
    }

    /// Appends the events of applied commands; `head_revision` is the revision after them.
    pub fn append(&mut self, events: impl IntoIterator<Item = Event>, head_revision: u64) {
        self.events.extend(events);
        self.head_revision = self.head_revision.max(head_revision);
        while self.events.len() > self.capacity_events {
            // Drop whole revisions so a reader never sees half of one.
            let Some(oldest) = self.events.front().map(|event| event.revision) else {
                break;
            };
            while self.events.front().is_some_and(|e| e.revision == oldest) {
                self.events.pop_front();
            }
            self.first_revision = oldest + 1;
        }
    }

    /// Events under `prefix` from `from_revision` on, at most about `max_events` (a revision
    /// is never split), and the revision to read from next time.
    pub fn read(
        &self,
        from_revision: u64,
        prefix: &str,
        max_events: usize,
    ) -> Result<(Vec<Event>, u64)> {
        if from_revision < self.first_revision {
            return Err(MetaError::Compacted {
                requested: from_revision,
                oldest: self.first_revision,
            });
        }
        let start = self.events.partition_point(|e| e.revision < from_revision);
        let mut found = Vec::new();
        let mut next = from_revision.max(self.head_revision + 1);
        for event in self.events.range(start..) {
            if found.len() >= max_events
                && found
                    .last()
                    .is_some_and(|last: &Event| last.revision != event.revision)
            {
                next = event.revision;
                break;
            }
            let key = event.kv.as_ref().map_or("", |kv| kv.key.as_str());
            if key.starts_with(prefix) {
                found.push(event.clone());
            }
        }
        Ok((found, next))
    }
}

/// The event log shared by the node and the watch streams.
pub struct WatchHub {
    log: Mutex<EventLog>,
    revision: tokio::sync::watch::Sender<u64>,
}

impl WatchHub {
    pub fn new(head_revision: u64, capacity_events: usize) -> Self {
        let (revision, _) = tokio::sync::watch::channel(head_revision);
        Self {
            log: Mutex::new(EventLog::new(head_revision, capacity_events)),
            revision,
        }
    }

    /// Publishes applied events and wakes the watchers.
    pub fn publish(&self, events: Vec<Event>, head_revision: u64) {
        self.log.lock().append(events, head_revision);
        self.revision.send_replace(head_revision);
    }

    pub fn reset(&self, head_revision: u64) {
        self.log.lock().reset(head_revision);
        self.revision.send_replace(head_revision);
    }

    pub fn read(
        &self,
        from_revision: u64,
        prefix: &str,
        max_events: usize,
    ) -> Result<(Vec<Event>, u64)> {
        self.log.lock().read(from_revision, prefix, max_events)
    }

    pub fn head_revision(&self) -> u64 {
        self.log.lock().head_revision()
    }

    /// A receiver that changes whenever the head revision moves.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revision.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use magnetar_proto::meta::KeyValue;

    fn event(revision: u64, key: &str) -> Event {
        Event {
            kind: 0,
            kv: Some(KeyValue {
                key: key.into(),
                version: revision,
                ..KeyValue::default()
            }),
            revision,
        }
    }

    fn revisions(events: &[Event]) -> Vec<u64> {
        events.iter().map(|e| e.revision).collect()
    }

    #[test]
    fn readers_get_every_event_in_order_or_a_compacted_error() {
        let mut log = EventLog::new(10, 4);
        log.append(vec![event(11, "/a/1"), event(11, "/b/1")], 11);
        log.append(vec![event(12, "/a/2")], 12);
        log.append(vec![event(13, "/b/2")], 13);

        // (from, prefix, max, expected revisions, next)
        let cases: &[(u64, &str, usize, &[u64], u64)] = &[
            (11, "/", 100, &[11, 11, 12, 13], 14),
            (11, "/a/", 100, &[11, 12], 14),
            (12, "/b/", 100, &[13], 14),
            (14, "/", 100, &[], 14),
            (20, "/", 100, &[], 20),
            // A revision is never split, even past max.
            (11, "/", 1, &[11, 11], 12),
            (12, "/", 1, &[12], 13),
        ];
        for (from, prefix, max, expected, next) in cases {
            let (events, got_next) = log.read(*from, prefix, *max).expect("held");
            assert_eq!(&revisions(&events), expected, "from {from} under {prefix}");
            assert_eq!(got_next, *next, "next after reading from {from}");
        }
        assert!(matches!(
            log.read(10, "/", 10),
            Err(MetaError::Compacted { .. })
        ));

        // Over capacity: revision 11 (two events) goes as a whole.
        log.append(vec![event(14, "/a/3")], 14);
        assert!(matches!(
            log.read(11, "/", 10),
            Err(MetaError::Compacted { oldest: 12, .. })
        ));
        let (events, _) = log.read(12, "/", 10).expect("held");
        assert_eq!(revisions(&events), vec![12, 13, 14]);

        log.reset(30);
        assert!(log.read(30, "/", 10).is_err());
        assert_eq!(log.read(31, "/", 10).map(|(e, _)| e.len()).ok(), Some(0));
    }
}
