//! The replicated state machine: keys with versions, sessions and their ephemeral keys, the
//! global revision. Pure logic, no I/O: every node applies the same committed commands in the
//! same order and reaches the same state; what changed is reported in [`Changes`] so the
//! storage layer can persist exactly that, and the watch log can publish the events.
//!
//! The whole state is held in memory (as ZooKeeper does) and written through to RocksDB; a
//! metadata store holds small records, and memory keeps reads and snapshots simple and fast.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use bytes::Bytes;
use magnetar_proto::meta::{
    command, event, txn_op, Command, Event, KeyValue, Member, SessionRecord, SnapshotData,
    StateMeta, TxnRequest,
};

use crate::errors::{MetaError, Result};

/// What one applied command produced for its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// A transaction (also every single put and delete).
    Txn {
        /// The revision after the command (its own revision when it changed something).
        revision: u64,
        succeeded: bool,
        failed_compares: Vec<u32>,
        /// How many delete ops found their key.
        deleted: u32,
    },
    SessionOpened {
        session_id: u64,
        ttl_ms: u64,
    },
    SessionClosed {
        revision: u64,
    },
    SessionsExpired {
        revision: u64,
    },
}

/// What applying changed, for the storage layer and the watch log.
#[derive(Debug, Default)]
pub struct Changes {
    /// Keys written or deleted (persist the current state of each).
    pub keys: BTreeSet<String>,
    /// Sessions opened or removed.
    pub sessions: BTreeSet<u64>,
    /// Watch events in revision order.
    pub events: Vec<Event>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.sessions.is_empty() && self.events.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Session {
    ttl_ms: u64,
    keys: BTreeSet<String>,
}

/// The replicated state.
#[derive(Debug, Default)]
pub struct StateMachine {
    keys: BTreeMap<String, KeyValue>,
    sessions: BTreeMap<u64, Session>,
    meta: StateMeta,
}

impl StateMachine {
    /// An empty store at revision 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the state from persisted or snapshotted parts.
    pub fn from_parts(meta: StateMeta, kvs: Vec<KeyValue>, sessions: Vec<SessionRecord>) -> Self {
        let mut machine = StateMachine {
            keys: BTreeMap::new(),
            sessions: sessions
                .into_iter()
                .map(|record| {
                    let session = Session {
                        ttl_ms: record.ttl_ms,
                        keys: BTreeSet::new(),
                    };
                    (record.id, session)
                })
                .collect(),
            meta,
        };
        for kv in kvs {
            if kv.session_id != 0 {
                if let Some(session) = machine.sessions.get_mut(&kv.session_id) {
                    session.keys.insert(kv.key.clone());
                }
            }
            machine.keys.insert(kv.key.clone(), kv);
        }
        machine
    }

    pub fn from_snapshot(data: SnapshotData) -> Self {
        Self::from_parts(data.meta.unwrap_or_default(), data.kvs, data.sessions)
    }

    /// The whole state, for a Raft snapshot.
    pub fn to_snapshot(&self) -> SnapshotData {
        SnapshotData {
            meta: Some(self.meta.clone()),
            kvs: self.keys.values().cloned().collect(),
            sessions: self
                .sessions
                .iter()
                .map(|(id, session)| SessionRecord {
                    id: *id,
                    ttl_ms: session.ttl_ms,
                })
                .collect(),
        }
    }

    pub fn meta(&self) -> &StateMeta {
        &self.meta
    }

    pub fn revision(&self) -> u64 {
        self.meta.revision
    }

    pub fn applied_index(&self) -> u64 {
        self.meta.applied_index
    }

    /// Records that every entry up to `index` (of `term`) is applied.
    pub fn set_applied(&mut self, index: u64, term: u64) {
        self.meta.applied_index = index;
        self.meta.applied_term = term;
    }

    /// Records the Raft configuration and member endpoints after a membership change.
    pub fn set_membership(&mut self, conf_state: Vec<u8>, members: Vec<Member>) {
        self.meta.conf_state = conf_state.into();
        self.meta.members = members;
    }

    pub fn members(&self) -> &[Member] {
        &self.meta.members
    }

    pub fn get(&self, key: &str) -> Option<&KeyValue> {
        self.keys.get(key)
    }

    /// One page of keys starting with `prefix`, after `start_after`, and whether more remain.
    pub fn list(
        &self,
        prefix: &str,
        start_after: &str,
        limit: usize,
        keys_only: bool,
    ) -> (Vec<KeyValue>, bool) {
        let lower = if start_after.is_empty() || start_after < prefix {
            Bound::Included(prefix.to_string())
        } else {
            Bound::Excluded(start_after.to_string())
        };
        let mut page = Vec::new();
        let mut more = false;
        for (key, kv) in self.keys.range((lower, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            let mut kv = kv.clone();
            if keys_only {
                kv.value = Bytes::new();
            }
            page.push(kv);
        }
        (page, more)
    }

    pub fn session_exists(&self, session_id: u64) -> bool {
        self.sessions.contains_key(&session_id)
    }

    /// Every open session and its TTL.
    pub fn sessions(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.sessions.iter().map(|(id, s)| (*id, s.ttl_ms))
    }

    /// The persisted form of a session, if it exists.
    pub fn session_record(&self, session_id: u64) -> Option<SessionRecord> {
        self.sessions.get(&session_id).map(|s| SessionRecord {
            id: session_id,
            ttl_ms: s.ttl_ms,
        })
    }

    /// Applies one committed command.
    pub fn apply(&mut self, command: &Command, changes: &mut Changes) -> Result<CommandOutcome> {
        match &command.op {
            Some(command::Op::Txn(txn)) => self.apply_txn(txn, command.conflict_is_error, changes),
            Some(command::Op::OpenSession(open)) => {
                let session_id = self.meta.next_session_id.max(1);
                self.meta.next_session_id = session_id + 1;
                self.sessions.insert(
                    session_id,
                    Session {
                        ttl_ms: open.ttl_ms,
                        keys: BTreeSet::new(),
                    },
                );
                changes.sessions.insert(session_id);
                Ok(CommandOutcome::SessionOpened {
                    session_id,
                    ttl_ms: open.ttl_ms,
                })
            }
            Some(command::Op::CloseSession(close)) => {
                if !self.sessions.contains_key(&close.session_id) {
                    return Err(MetaError::UnknownSession(close.session_id));
                }
                let revision = self.remove_sessions(&[close.session_id], changes);
                Ok(CommandOutcome::SessionClosed { revision })
            }
            Some(command::Op::ExpireSessions(expire)) => {
                let revision = self.remove_sessions(&expire.session_ids, changes);
                Ok(CommandOutcome::SessionsExpired { revision })
            }
            None => Err(MetaError::Internal("a command without an operation".into())),
        }
    }

    fn version_of(&self, key: &str) -> u64 {
        self.keys.get(key).map_or(0, |kv| kv.version)
    }

    fn apply_txn(
        &mut self,
        txn: &TxnRequest,
        conflict_is_error: bool,
        changes: &mut Changes,
    ) -> Result<CommandOutcome> {
        let failed_compares: Vec<u32> = txn
            .compares
            .iter()
            .enumerate()
            .filter(|(_, compare)| self.version_of(&compare.key) != compare.version)
            .map(|(index, _)| index as u32)
            .collect();
        if let Some(first) = failed_compares.first() {
            if conflict_is_error {
                let compare = &txn.compares[*first as usize];
                return Err(MetaError::VersionConflict {
                    key: compare.key.clone(),
                    expected: compare.version,
                    actual: self.version_of(&compare.key),
                });
            }
            return Ok(CommandOutcome::Txn {
                revision: self.meta.revision,
                succeeded: false,
                failed_compares,
                deleted: 0,
            });
        }
        for op in &txn.ops {
            if op.kind() == txn_op::Kind::Put
                && op.session_id != 0
                && !self.sessions.contains_key(&op.session_id)
            {
                return Err(MetaError::UnknownSession(op.session_id));
            }
        }

        let revision = self.meta.revision + 1;
        let mut changed = false;
        let mut deleted = 0;
        for op in &txn.ops {
            match op.kind() {
                txn_op::Kind::Put => {
                    let create_revision = self
                        .keys
                        .get(&op.key)
                        .map_or(revision, |kv| kv.create_revision);
                    self.detach_from_session(&op.key);
                    if op.session_id != 0 {
                        if let Some(session) = self.sessions.get_mut(&op.session_id) {
                            session.keys.insert(op.key.clone());
                        }
                    }
                    let kv = KeyValue {
                        key: op.key.clone(),
                        value: op.value.clone(),
                        version: revision,
                        create_revision,
                        session_id: op.session_id,
                    };
                    changes.events.push(Event {
                        kind: event::Kind::Put as i32,
                        kv: Some(kv.clone()),
                        revision,
                    });
                    self.keys.insert(op.key.clone(), kv);
                    changes.keys.insert(op.key.clone());
                    changed = true;
                }
                txn_op::Kind::Delete => {
                    if self.delete_key(&op.key, revision, changes) {
                        deleted += 1;
                        changed = true;
                    }
                }
            }
        }
        if changed {
            self.meta.revision = revision;
        }
        Ok(CommandOutcome::Txn {
            revision: self.meta.revision,
            succeeded: true,
            failed_compares: Vec::new(),
            deleted,
        })
    }

    /// Removes the key from its session's set, if it was ephemeral.
    fn detach_from_session(&mut self, key: &str) {
        let owner = self.keys.get(key).map_or(0, |kv| kv.session_id);
        if owner != 0 {
            if let Some(session) = self.sessions.get_mut(&owner) {
                session.keys.remove(key);
            }
        }
    }

    fn delete_key(&mut self, key: &str, revision: u64, changes: &mut Changes) -> bool {
        if !self.keys.contains_key(key) {
            return false;
        }
        self.detach_from_session(key);
        self.keys.remove(key);
        changes.keys.insert(key.to_string());
        changes.events.push(Event {
            kind: event::Kind::Delete as i32,
            kv: Some(KeyValue {
                key: key.to_string(),
                version: revision,
                ..KeyValue::default()
            }),
            revision,
        });
        true
    }

    /// Removes sessions and their ephemeral keys, all deletions at one new revision.
    fn remove_sessions(&mut self, session_ids: &[u64], changes: &mut Changes) -> u64 {
        let revision = self.meta.revision + 1;
        let mut changed = false;
        for session_id in session_ids {
            let Some(session) = self.sessions.remove(session_id) else {
                continue;
            };
            changes.sessions.insert(*session_id);
            for key in session.keys {
                if self.delete_key(&key, revision, changes) {
                    changed = true;
                }
            }
        }
        if changed {
            self.meta.revision = revision;
        }
        self.meta.revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use magnetar_proto::meta::{
        CloseSessionRequest, Compare, ExpireSessions, OpenSessionRequest, TxnOp,
    };

    fn put(key: &str, value: &str, session_id: u64) -> TxnOp {
        TxnOp {
            kind: txn_op::Kind::Put as i32,
            key: key.into(),
            value: Bytes::from(value.to_string()),
            session_id,
        }
    }

    fn delete(key: &str) -> TxnOp {
        TxnOp {
            kind: txn_op::Kind::Delete as i32,
            key: key.into(),
            ..TxnOp::default()
        }
    }

    fn txn(compares: &[(&str, u64)], ops: Vec<TxnOp>, conflict_is_error: bool) -> Command {
        Command {
            id: 0,
            op: Some(command::Op::Txn(TxnRequest {
                compares: compares
                    .iter()
                    .map(|(key, version)| Compare {
                        key: key.to_string(),
                        version: *version,
                    })
                    .collect(),
                ops,
            })),
            conflict_is_error,
        }
    }

    fn open(ttl_ms: u64) -> Command {
        Command {
            op: Some(command::Op::OpenSession(OpenSessionRequest { ttl_ms })),
            ..Command::default()
        }
    }

    fn value_of(machine: &StateMachine, key: &str) -> Option<String> {
        machine
            .get(key)
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    }

    /// One step of a table: a command and what it must produce.
    struct Step {
        command: Command,
        expect: std::result::Result<(u64, bool), magnetar_proto::meta::ErrorCode>,
        events: usize,
    }

    #[test]
    fn transactions_follow_versions_and_revisions() {
        use magnetar_proto::meta::ErrorCode;
        let steps = vec![
            // Create if absent: revision 1.
            Step {
                command: txn(&[("/a", 0)], vec![put("/a", "1", 0)], true),
                expect: Ok((1, true)),
                events: 1,
            },
            // Same again: the key exists now, a conflict.
            Step {
                command: txn(&[("/a", 0)], vec![put("/a", "x", 0)], true),
                expect: Err(ErrorCode::VersionConflict),
                events: 0,
            },
            // CAS on the right version.
            Step {
                command: txn(&[("/a", 1)], vec![put("/a", "2", 0)], true),
                expect: Ok((2, true)),
                events: 1,
            },
            // A multi-key txn whose compare fails reports it, changes nothing.
            Step {
                command: txn(
                    &[("/a", 2), ("/b", 5)],
                    vec![put("/a", "3", 0), put("/b", "3", 0)],
                    false,
                ),
                expect: Ok((2, false)),
                events: 0,
            },
            // Two puts in one txn: one revision, two events.
            Step {
                command: txn(
                    &[("/a", 2)],
                    vec![put("/a", "4", 0), put("/b", "4", 0)],
                    false,
                ),
                expect: Ok((3, true)),
                events: 2,
            },
            // Deleting an absent key changes nothing.
            Step {
                command: txn(&[], vec![delete("/nothing")], false),
                expect: Ok((3, true)),
                events: 0,
            },
            Step {
                command: txn(&[], vec![delete("/b")], false),
                expect: Ok((4, true)),
                events: 1,
            },
            // Ephemeral put into a session that does not exist.
            Step {
                command: txn(&[], vec![put("/e", "x", 77)], false),
                expect: Err(ErrorCode::UnknownSession),
                events: 0,
            },
        ];
        let mut machine = StateMachine::new();
        for (number, step) in steps.into_iter().enumerate() {
            let mut changes = Changes::default();
            let got = machine.apply(&step.command, &mut changes);
            let got = match got {
                Ok(CommandOutcome::Txn {
                    revision,
                    succeeded,
                    ..
                }) => Ok((revision, succeeded)),
                Ok(other) => panic!("step {number}: unexpected outcome {other:?}"),
                Err(error) => Err(error.code()),
            };
            assert_eq!(got, step.expect, "step {number}");
            assert_eq!(changes.events.len(), step.events, "events of step {number}");
        }
        assert_eq!(value_of(&machine, "/a").as_deref(), Some("4"));
        assert_eq!(machine.get("/a").map(|kv| kv.create_revision), Some(1));
        assert_eq!(machine.get("/a").map(|kv| kv.version), Some(3));
        assert!(machine.get("/b").is_none());
    }

    #[test]
    fn sessions_own_ephemeral_keys_until_they_end() {
        let mut machine = StateMachine::new();
        let mut changes = Changes::default();
        let Ok(CommandOutcome::SessionOpened { session_id, .. }) =
            machine.apply(&open(1000), &mut changes)
        else {
            panic!("session not opened");
        };
        let Ok(CommandOutcome::SessionOpened {
            session_id: second, ..
        }) = machine.apply(&open(1000), &mut changes)
        else {
            panic!("session not opened");
        };
        assert_ne!(session_id, second);
        let ops = vec![
            put("/live/1", "a", session_id),
            put("/live/2", "b", session_id),
        ];
        assert!(machine.apply(&txn(&[], ops, false), &mut changes).is_ok());
        // Overwritten by a persistent put: no longer owned by the session.
        let ops = vec![put("/live/2", "persistent", 0)];
        assert!(machine.apply(&txn(&[], ops, false), &mut changes).is_ok());

        let mut changes = Changes::default();
        let expire = Command {
            op: Some(command::Op::ExpireSessions(ExpireSessions {
                session_ids: vec![session_id, 999],
            })),
            ..Command::default()
        };
        assert_eq!(
            machine.apply(&expire, &mut changes).ok(),
            Some(CommandOutcome::SessionsExpired { revision: 3 })
        );
        assert!(machine.get("/live/1").is_none());
        assert_eq!(value_of(&machine, "/live/2").as_deref(), Some("persistent"));
        assert_eq!(changes.events.len(), 1);
        assert!(!machine.session_exists(session_id));

        let close = |id| Command {
            op: Some(command::Op::CloseSession(CloseSessionRequest {
                session_id: id,
            })),
            ..Command::default()
        };
        let mut changes = Changes::default();
        assert!(machine.apply(&close(second), &mut changes).is_ok());
        assert_eq!(
            machine.apply(&close(second), &mut changes).err(),
            Some(MetaError::UnknownSession(second))
        );
    }

    #[test]
    fn list_pages_by_prefix_and_snapshots_round_trip() {
        let mut machine = StateMachine::new();
        let mut changes = Changes::default();
        let ops = ["/a", "/b/1", "/b/2", "/b/3", "/c"]
            .iter()
            .map(|key| put(key, "v", 0))
            .collect();
        assert!(machine.apply(&txn(&[], ops, false), &mut changes).is_ok());

        let cases: &[(&str, &str, usize, &[&str], bool)] = &[
            ("/b/", "", 10, &["/b/1", "/b/2", "/b/3"], false),
            ("/b/", "", 2, &["/b/1", "/b/2"], true),
            ("/b/", "/b/2", 2, &["/b/3"], false),
            ("/", "", 10, &["/a", "/b/1", "/b/2", "/b/3", "/c"], false),
            ("/d", "", 10, &[], false),
        ];
        for (prefix, start_after, limit, keys, more) in cases {
            let (page, got_more) = machine.list(prefix, start_after, *limit, true);
            let got: Vec<&str> = page.iter().map(|kv| kv.key.as_str()).collect();
            assert_eq!(&got, keys, "list {prefix} after {start_after:?}");
            assert_eq!(got_more, *more);
            assert!(page.iter().all(|kv| kv.value.is_empty()));
        }

        let copy = StateMachine::from_snapshot(machine.to_snapshot());
        assert_eq!(copy.revision(), machine.revision());
        assert_eq!(
            copy.list("/", "", 10, false),
            machine.list("/", "", 10, false)
        );
    }
}
