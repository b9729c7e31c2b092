//! The Raft node: one dedicated thread per node owns the raft-rs `RawNode`, the state machine
//! and RocksDB, and does everything in one loop: take requests and peer messages from a
//! bounded queue, batch client writes into one proposal, tick, and handle each `Ready`
//! (one atomic RocksDB batch, fsynced when it holds log entries or hard state).
//!
//! A thread rather than a task: RocksDB writes and fsyncs block, and keeping them off the
//! async workers is the point. The async side talks to it through [`NodeHandle`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use magnetar_proto::meta::{
    command, Command, CommandBatch, ConfChangeContext, ExpireSessions, Member, SnapshotData,
    StateMeta,
};
use parking_lot::RwLock;
use prost::Message as _;
use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState, Message, Snapshot,
};
use raft::{RawNode, SnapshotStatus, StateRole, Storage as _};
use rocksdb::WriteBatch;

use crate::config::MetaConfig;
use crate::errors::{MetaError, Result};
use crate::raft_log::RaftLog;
use crate::session::SessionTracker;
use crate::state_machine::{Changes, CommandOutcome, StateMachine};
use crate::store::{self, Store};
use crate::transport::Transport;
use crate::watch::WatchHub;

pub use crate::handle::{
    MemberChange, NodeHandle, NodeStatus, ReadOp, ReadOutcome, Request, Shared,
};
use crate::handle::{MemberReply, Reply};

/// Most queued requests handled before the node turns to its Ready.
const MAX_REQUESTS_PER_ROUND: usize = 8192;

struct PendingWrite {
    reply: Reply<CommandOutcome>,
    deadline: Instant,
}

struct PendingRead {
    read: ReadOp,
    reply: Reply<ReadOutcome>,
    deadline: Instant,
}

struct ReadBatch {
    reads: Vec<PendingRead>,
    issued_at: Instant,
}

/// Replies and events released once a batch is durable.
#[derive(Default)]
struct Released {
    writes: Vec<(Reply<CommandOutcome>, Result<CommandOutcome>)>,
    members: Vec<MemberReply>,
    events: Vec<magnetar_proto::meta::Event>,
}

/// Starts a node thread; returns its handle and the thread to join.
pub fn spawn(
    config: MetaConfig,
    advertise: String,
    runtime: tokio::runtime::Handle,
) -> Result<(NodeHandle, std::thread::JoinHandle<()>)> {
    let store = Store::open(&config.data_dir, config.sync_writes)?;
    let (machine, raft_log) = match store.load()? {
        Some(mut loaded) => {
            let conf_state = decode_conf_state(&loaded.machine.meta().conf_state)?;
            // Applied state is written without waiting for the hard state that carries the
            // commit index; whatever was applied was committed.
            let applied = loaded.machine.applied_index();
            if loaded.hard_state.commit < applied {
                loaded.hard_state.commit = applied;
            }
            let log = RaftLog::new(
                loaded.hard_state,
                conf_state,
                loaded.log_start,
                loaded.entries,
            );
            (loaded.machine, log)
        }
        None => initialise(&config, &advertise, &store)?,
    };

    let (requests, inbox) = std::sync::mpsc::sync_channel(config.request_queue);
    let (leader_changes, _) = tokio::sync::watch::channel(0);
    let shared = Arc::new(Shared {
        id: config.id,
        leader_id: AtomicU64::new(0),
        leader_changes,
        members: RwLock::new(BTreeMap::new()),
        watch: WatchHub::new(machine.revision(), config.watch_log_events),
        stopping: AtomicBool::new(false),
    });
    shared.set_members(machine.members());
    let handle = NodeHandle {
        requests,
        shared: shared.clone(),
        request_timeout: config.request_timeout,
    };
    let transport = Transport::new(config.id, runtime, handle.clone());
    let mut node = Node::new(config, store, machine, raft_log, transport, shared)?;
    node.transport.update(node.machine.members());
    let thread = std::thread::Builder::new()
        .name(format!("meta-node-{}", node.id))
        .spawn(move || node.run(inbox))
        .map_err(|e| MetaError::Internal(format!("starting the node thread: {e}")))?;
    Ok((handle, thread))
}

fn decode_conf_state(bytes: &[u8]) -> Result<ConfState> {
    ConfState::parse_from_bytes(bytes)
        .map_err(|e| MetaError::Internal(format!("undecodable conf state: {e}")))
}

fn encode<M: protobuf::Message>(message: &M) -> Result<Vec<u8>> {
    message
        .write_to_bytes()
        .map_err(|e| MetaError::Internal(format!("encoding a raft record: {e}")))
}

/// A new data directory: the initial voters come from the configuration.
fn initialise(
    config: &MetaConfig,
    advertise: &str,
    store: &Store,
) -> Result<(StateMachine, RaftLog)> {
    let mut peers = config.peers.clone();
    if peers.is_empty() && !config.join {
        peers.insert(config.id, advertise.to_string());
    }
    // A joining node knows the members' endpoints (to answer the leader) but votes for
    // nobody until the leader's log or snapshot makes it a member.
    let voters: Vec<u64> = if config.join {
        Vec::new()
    } else {
        peers.keys().copied().collect()
    };
    let conf_state = ConfState::from((voters, Vec::<u64>::new()));
    let members: Vec<Member> = peers
        .iter()
        .map(|(id, endpoint)| Member {
            id: *id,
            endpoint: endpoint.clone(),
        })
        .collect();
    let mut machine = StateMachine::from_parts(StateMeta::default(), Vec::new(), Vec::new());
    machine.set_membership(encode(&conf_state)?, members);
    let mut batch = WriteBatch::default();
    store::put_changes(&mut batch, &machine, &Changes::default());
    store.write(batch, true)?;
    let log = RaftLog::new(HardState::default(), conf_state, (0, 0), Vec::new());
    Ok((machine, log))
}

struct Node {
    id: u64,
    config: MetaConfig,
    raw: RawNode<RaftLog>,
    store: Store,
    machine: StateMachine,
    transport: Transport,
    shared: Arc<Shared>,
    /// Random per start, so results of entries proposed before a restart match no caller.
    proposer_tag: u64,
    next_command_id: u64,
    queued_writes: Vec<(Command, Reply<CommandOutcome>)>,
    pending_writes: HashMap<u64, PendingWrite>,
    queued_reads: Vec<PendingRead>,
    next_read_context: u64,
    read_batches: HashMap<Vec<u8>, ReadBatch>,
    /// Reads whose read index is known, waiting for the node to apply up to it.
    confirmed_reads: Vec<(u64, Vec<PendingRead>)>,
    pending_members: HashMap<u64, (Reply<Vec<Member>>, Instant)>,
    sessions: SessionTracker,
    role: StateRole,
    /// The membership changed since the last snapshot was built: a node being added would
    /// refuse a snapshot whose configuration does not name it.
    snapshot_stale: bool,
}

impl Node {
    fn new(
        config: MetaConfig,
        store: Store,
        machine: StateMachine,
        mut raft_log: RaftLog,
        transport: Transport,
        shared: Arc<Shared>,
    ) -> Result<Self> {
        if raft_log.start().0 > 0 {
            raft_log.set_snapshot(build_snapshot(&machine, raft_log.conf_state())?);
        }
        let raft_config = raft::Config {
            id: config.id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied: machine.applied_index(),
            max_size_per_msg: 4 << 20,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..raft::Config::default()
        };
        raft_config
            .validate()
            .map_err(|e| MetaError::InvalidArgument(format!("raft configuration: {e}")))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let alone = raft_log.conf_state().voters == [config.id];
        let mut raw = RawNode::new(&raft_config, raft_log, &logger)
            .map_err(|e| MetaError::Internal(format!("starting raft: {e}")))?;
        if alone {
            // A single-node group need not wait an election timeout to lead.
            raw.campaign()
                .map_err(|e| MetaError::Internal(format!("campaigning: {e}")))?;
        }
        Ok(Self {
            id: config.id,
            config,
            raw,
            store,
            machine,
            transport,
            shared,
            proposer_tag: rand::random::<u64>() & !0xffff_ffff,
            next_command_id: 1,
            queued_writes: Vec::new(),
            pending_writes: HashMap::new(),
            queued_reads: Vec::new(),
            next_read_context: 1,
            read_batches: HashMap::new(),
            confirmed_reads: Vec::new(),
            pending_members: HashMap::new(),
            sessions: SessionTracker::new(),
            role: StateRole::Follower,
            snapshot_stale: false,
        })
    }

    fn run(mut self, inbox: Receiver<Request>) {
        let tick = self.config.tick_interval;
        let mut next_tick = Instant::now() + tick;
        let mut stopping = false;
        while !stopping && !self.shared.stopping.load(Ordering::Acquire) {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(wait) {
                Ok(Request::Shutdown) => stopping = true,
                Ok(request) => self.handle(request),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stopping = true,
            }
            for _ in 0..MAX_REQUESTS_PER_ROUND {
                match inbox.try_recv() {
                    Ok(Request::Shutdown) => stopping = true,
                    Ok(request) => self.handle(request),
                    Err(_) => break,
                }
            }
            self.flush_proposals();
            let now = Instant::now();
            if now >= next_tick {
                self.raw.tick();
                self.on_tick(now);
                next_tick = (next_tick + tick).max(now);
            }
            if let Err(error) = self.on_ready() {
                tracing::error!(node = self.id, %error, "the node stops: its storage failed");
                break;
            }
        }
        self.fail_everything();
    }

    fn leader_id(&self) -> u64 {
        self.raw.raft.leader_id
    }

    fn is_leader(&self) -> bool {
        self.role == StateRole::Leader
    }

    fn handle(&mut self, request: Request) {
        match request {
            Request::Write(command, reply) => {
                if self.is_leader() {
                    self.queued_writes.push((command, reply));
                } else {
                    let _ = reply.send(Err(MetaError::NotLeader {
                        leader_id: self.leader_id(),
                    }));
                }
            }
            Request::Read(read, reply) => {
                if self.is_leader() {
                    self.queued_reads.push(PendingRead {
                        read,
                        reply,
                        deadline: Instant::now() + self.config.request_timeout,
                    });
                } else {
                    let _ = reply.send(Err(MetaError::NotLeader {
                        leader_id: self.leader_id(),
                    }));
                }
            }
            Request::ReadLocal(read, reply) => {
                let _ = reply.send(Ok(self.execute_read(&read)));
            }
            Request::KeepAlive(session_id, reply) => {
                let result = if !self.is_leader() {
                    Err(MetaError::NotLeader {
                        leader_id: self.leader_id(),
                    })
                } else if self.sessions.keep_alive(session_id, Instant::now()) {
                    Ok(())
                } else {
                    Err(MetaError::UnknownSession(session_id))
                };
                let _ = reply.send(result);
            }
            Request::ChangeMember(change, reply) => self.propose_member_change(change, reply),
            Request::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Request::Raft(message) => {
                if let Err(error) = self.raw.step(*message) {
                    tracing::debug!(node = self.id, %error, "peer message refused");
                }
            }
            Request::Unreachable(peer) => self.raw.report_unreachable(peer),
            Request::SnapshotReport(peer, delivered) => {
                let status = if delivered {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(peer, status);
            }
            Request::Shutdown => {}
        }
    }

    fn status(&self) -> NodeStatus {
        NodeStatus {
            id: self.id,
            leader_id: self.leader_id(),
            term: self.raw.raft.term,
            commit_index: self.raw.raft.raft_log.committed,
            applied_index: self.machine.applied_index(),
            revision: self.machine.revision(),
            members: self.machine.members().to_vec(),
        }
    }

    fn next_id(&mut self) -> u64 {
        let id = self.proposer_tag | (self.next_command_id & 0xffff_ffff);
        self.next_command_id += 1;
        id
    }

    /// Proposes queued writes, many per entry, and issues one read index for queued reads.
    fn flush_proposals(&mut self) {
        if !self.queued_writes.is_empty() {
            let queued = std::mem::take(&mut self.queued_writes);
            let deadline = Instant::now() + self.config.request_timeout;
            let mut batch = CommandBatch {
                proposer: self.id,
                commands: Vec::new(),
            };
            for (mut command, reply) in queued {
                command.id = self.next_id();
                self.pending_writes
                    .insert(command.id, PendingWrite { reply, deadline });
                batch.commands.push(command);
                if batch.commands.len() >= self.config.max_commands_per_entry {
                    self.propose_batch(std::mem::take(&mut batch.commands));
                }
            }
            if !batch.commands.is_empty() {
                self.propose_batch(batch.commands);
            }
        }
        if !self.queued_reads.is_empty() {
            let reads = std::mem::take(&mut self.queued_reads);
            self.issue_read_index(reads);
        }
    }

    fn propose_batch(&mut self, commands: Vec<Command>) {
        let ids: Vec<u64> = commands.iter().map(|c| c.id).collect();
        let batch = CommandBatch {
            proposer: self.id,
            commands,
        };
        if let Err(error) = self.raw.propose(Vec::new(), batch.encode_to_vec()) {
            tracing::debug!(node = self.id, %error, "proposal dropped");
            for id in ids {
                if let Some(pending) = self.pending_writes.remove(&id) {
                    let _ = pending.reply.send(Err(MetaError::NotLeader {
                        leader_id: self.leader_id(),
                    }));
                }
            }
        }
    }

    fn issue_read_index(&mut self, reads: Vec<PendingRead>) {
        let context = self.next_read_context.to_be_bytes().to_vec();
        self.next_read_context += 1;
        self.raw.read_index(context.clone());
        self.read_batches.insert(
            context,
            ReadBatch {
                reads,
                issued_at: Instant::now(),
            },
        );
    }

    fn propose_member_change(&mut self, change: MemberChange, reply: Reply<Vec<Member>>) {
        if !self.is_leader() {
            let _ = reply.send(Err(MetaError::NotLeader {
                leader_id: self.leader_id(),
            }));
            return;
        }
        let command_id = self.next_id();
        let mut conf_change = ConfChange::default();
        let mut context = ConfChangeContext {
            proposer: self.id,
            command_id,
            endpoint: String::new(),
        };
        match change {
            MemberChange::Add { id, endpoint } => {
                conf_change.set_change_type(ConfChangeType::AddNode);
                conf_change.node_id = id;
                context.endpoint = endpoint;
            }
            MemberChange::Remove { id } => {
                if !self.machine.members().iter().any(|m| m.id == id) {
                    let _ = reply.send(Err(MetaError::InvalidArgument(format!(
                        "node {id} is not a member"
                    ))));
                    return;
                }
                conf_change.set_change_type(ConfChangeType::RemoveNode);
                conf_change.node_id = id;
            }
        }
        match self
            .raw
            .propose_conf_change(context.encode_to_vec(), conf_change)
        {
            Ok(()) => {
                let deadline = Instant::now() + self.config.request_timeout;
                self.pending_members.insert(command_id, (reply, deadline));
            }
            Err(error) => {
                // raft-rs refuses while an earlier change is still being applied.
                let _ = reply.send(Err(MetaError::InvalidArgument(format!(
                    "membership change refused: {error}"
                ))));
            }
        }
    }

    fn on_tick(&mut self, now: Instant) {
        if self.is_leader() {
            let due = self.sessions.due(now);
            if !due.is_empty() {
                let command = Command {
                    id: 0,
                    op: Some(command::Op::ExpireSessions(ExpireSessions {
                        session_ids: due,
                    })),
                    conflict_is_error: false,
                };
                let batch = CommandBatch {
                    proposer: 0,
                    commands: vec![command],
                };
                let _ = self.raw.propose(Vec::new(), batch.encode_to_vec());
            }
            // raft-rs drops a read index that arrives before the leader has committed an
            // entry of its term; ask again after a few heartbeats.
            let retry_after = self.config.tick_interval * (self.config.heartbeat_ticks as u32 * 3);
            let stale: Vec<Vec<u8>> = self
                .read_batches
                .iter()
                .filter(|(_, batch)| now.duration_since(batch.issued_at) >= retry_after)
                .map(|(context, _)| context.clone())
                .collect();
            for context in stale {
                if let Some(batch) = self.read_batches.remove(&context) {
                    let (expired, alive): (Vec<_>, Vec<_>) =
                        batch.reads.into_iter().partition(|r| now >= r.deadline);
                    for read in expired {
                        let _ = read.reply.send(Err(MetaError::NoQuorum(
                            "no quorum confirmed the read in time".into(),
                        )));
                    }
                    if !alive.is_empty() {
                        self.issue_read_index(alive);
                    }
                }
            }
        }
        let expired: Vec<u64> = self
            .pending_writes
            .iter()
            .filter(|(_, pending)| now >= pending.deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(pending) = self.pending_writes.remove(&id) {
                let _ = pending.reply.send(Err(MetaError::NoQuorum(
                    "the write was not committed in time; it may still be".into(),
                )));
            }
        }
        let expired: Vec<u64> = self
            .pending_members
            .iter()
            .filter(|(_, (_, deadline))| now >= *deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some((reply, _)) = self.pending_members.remove(&id) {
                let _ = reply.send(Err(MetaError::NoQuorum(
                    "the membership change was not committed in time".into(),
                )));
            }
        }
    }

    fn on_role_change(&mut self, leader_id: u64, role: StateRole) {
        let was_leader = self.is_leader();
        self.role = role;
        self.shared.set_leader(leader_id);
        if role == StateRole::Leader && !was_leader {
            self.sessions.reset(self.machine.sessions(), Instant::now());
        }
        if role != StateRole::Leader && was_leader {
            let not_leader = || MetaError::NotLeader { leader_id };
            for (_, reply) in self.queued_writes.drain(..) {
                let _ = reply.send(Err(not_leader()));
            }
            let unconfirmed = self
                .queued_reads
                .drain(..)
                .chain(self.read_batches.drain().flat_map(|(_, b)| b.reads));
            for read in unconfirmed {
                let _ = read.reply.send(Err(not_leader()));
            }
            // Pending writes stay: they may still commit under the next leader, and then
            // their callers get the real result; otherwise their deadline answers.
        }
    }

    fn send(&mut self, messages: Vec<Message>) {
        if !messages.is_empty() {
            self.transport.send(messages);
        }
    }

    fn on_ready(&mut self) -> Result<()> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if let Some(soft_state) = ready.ss() {
            let (leader_id, role) = (soft_state.leader_id, soft_state.raft_state);
            self.on_role_change(leader_id, role);
        }
        self.send(ready.take_messages());

        let mut batch = WriteBatch::default();
        let mut released = Released::default();
        let snapshot = ready.snapshot().clone();
        let installing = !snapshot.is_empty();
        if installing {
            self.install_snapshot(&snapshot, &mut batch)?;
        }
        let committed = ready.take_committed_entries();
        self.apply_entries(committed, &mut batch, &mut released)?;
        let old_last = self.raw.store().last_index().unwrap_or(0);
        store::put_entries(&mut batch, ready.entries(), old_last)?;
        if let Some(hard_state) = ready.hs() {
            store::put_hard_state(&mut batch, hard_state)?;
        }
        let durable = installing || !ready.entries().is_empty() || ready.hs().is_some();
        self.store.write(batch, durable)?;

        if installing {
            self.raw.mut_store().install_snapshot(snapshot);
            self.after_snapshot_install();
        }
        self.raw.mut_store().append(ready.entries());
        if let Some(hard_state) = ready.hs() {
            self.raw.mut_store().set_hard_state(hard_state.clone());
        }
        self.release(released);
        for read_state in ready.take_read_states() {
            if let Some(batch) = self.read_batches.remove(&read_state.request_ctx) {
                self.confirmed_reads.push((read_state.index, batch.reads));
            }
        }
        self.send(ready.take_persisted_messages());

        let mut light = self.raw.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.raw.mut_store().set_commit(commit);
        }
        self.send(light.take_messages());
        let committed = light.take_committed_entries();
        if !committed.is_empty() {
            let mut batch = WriteBatch::default();
            let mut released = Released::default();
            self.apply_entries(committed, &mut batch, &mut released)?;
            // The entries are durable in the log; the applied state can be replayed.
            self.store.write(batch, false)?;
            self.release(released);
        }
        self.raw.advance_apply();
        self.serve_confirmed_reads();
        self.maybe_compact()
    }

    fn release(&mut self, released: Released) {
        for (reply, result) in released.writes {
            let _ = reply.send(result);
        }
        for (reply, result) in released.members {
            let _ = reply.send(result);
        }
        if !released.events.is_empty()
            || self.shared.watch.head_revision() != self.machine.revision()
        {
            self.shared
                .watch
                .publish(released.events, self.machine.revision());
        }
    }

    fn serve_confirmed_reads(&mut self) {
        if self.confirmed_reads.is_empty() {
            return;
        }
        let applied = self.machine.applied_index();
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.confirmed_reads)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.confirmed_reads = waiting;
        for (_, reads) in ready {
            for read in reads {
                let outcome = self.execute_read(&read.read);
                let _ = read.reply.send(Ok(outcome));
            }
        }
    }

    fn execute_read(&self, read: &ReadOp) -> ReadOutcome {
        let revision = self.machine.revision();
        match read {
            ReadOp::Get { key } => ReadOutcome::Get(self.machine.get(key).cloned(), revision),
            ReadOp::List {
                prefix,
                start_after,
                limit,
                keys_only,
            } => {
                let (kvs, more) = self.machine.list(prefix, start_after, *limit, *keys_only);
                ReadOutcome::List(kvs, more, revision)
            }
        }
    }

    fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
        batch: &mut WriteBatch,
        released: &mut Released,
    ) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut changes = Changes::default();
        for entry in entries {
            match entry.get_entry_type() {
                EntryType::EntryNormal if !entry.get_data().is_empty() => {
                    self.apply_commands(&entry, &mut changes, released);
                }
                EntryType::EntryNormal => {}
                EntryType::EntryConfChange => self.apply_conf_change(&entry, released)?,
                EntryType::EntryConfChangeV2 => {
                    tracing::warn!(node = self.id, "ignoring a v2 conf change: never proposed");
                }
            }
            self.machine.set_applied(entry.index, entry.term);
        }
        store::put_changes(batch, &self.machine, &changes);
        released.events.extend(changes.events);
        Ok(())
    }

    fn apply_commands(&mut self, entry: &Entry, changes: &mut Changes, released: &mut Released) {
        let batch = match CommandBatch::decode(entry.get_data()) {
            Ok(batch) => batch,
            Err(error) => {
                // Only nodes write entries; an undecodable one is skipped the same way by
                // every node, so the replicas stay identical.
                tracing::error!(node = self.id, index = entry.index, %error, "undecodable entry");
                return;
            }
        };
        let now = Instant::now();
        for command in &batch.commands {
            let outcome = self.machine.apply(command, changes);
            match (&command.op, &outcome) {
                (_, Ok(CommandOutcome::SessionOpened { session_id, ttl_ms })) => {
                    self.sessions.opened(*session_id, *ttl_ms, now)
                }
                (Some(command::Op::CloseSession(close)), Ok(_)) => {
                    self.sessions.removed(close.session_id)
                }
                (Some(command::Op::ExpireSessions(expire)), _) => {
                    for session_id in &expire.session_ids {
                        self.sessions.removed(*session_id);
                    }
                }
                _ => {}
            }
            if batch.proposer == self.id {
                if let Some(pending) = self.pending_writes.remove(&command.id) {
                    released.writes.push((pending.reply, outcome));
                }
            }
        }
    }

    fn apply_conf_change(&mut self, entry: &Entry, released: &mut Released) -> Result<()> {
        let change = ConfChange::parse_from_bytes(entry.get_data())
            .map_err(|e| MetaError::Internal(format!("undecodable conf change: {e}")))?;
        let context = ConfChangeContext::decode(entry.get_context()).unwrap_or_default();
        let conf_state = self
            .raw
            .apply_conf_change(&change)
            .map_err(|e| MetaError::Internal(format!("applying a conf change: {e}")))?;
        let mut members: BTreeMap<u64, String> = self
            .machine
            .members()
            .iter()
            .map(|m| (m.id, m.endpoint.clone()))
            .collect();
        match change.get_change_type() {
            ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                members.insert(change.node_id, context.endpoint.clone());
            }
            ConfChangeType::RemoveNode => {
                members.remove(&change.node_id);
            }
        }
        let members: Vec<Member> = members
            .into_iter()
            .map(|(id, endpoint)| Member { id, endpoint })
            .collect();
        self.machine
            .set_membership(encode(&conf_state)?, members.clone());
        self.raw.mut_store().set_conf_state(conf_state);
        self.snapshot_stale = true;
        self.shared.set_members(&members);
        self.transport.update(&members);
        if context.proposer == self.id {
            if let Some((reply, _)) = self.pending_members.remove(&context.command_id) {
                released.members.push((reply, Ok(members)));
            }
        }
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot, batch: &mut WriteBatch) -> Result<()> {
        let metadata = snapshot.get_metadata();
        let data = SnapshotData::decode(snapshot.get_data())
            .map_err(|e| MetaError::Internal(format!("undecodable snapshot: {e}")))?;
        let mut machine = StateMachine::from_snapshot(data);
        machine.set_applied(metadata.index, metadata.term);
        machine.set_membership(
            encode(metadata.get_conf_state())?,
            machine.members().to_vec(),
        );
        store::put_whole_state(batch, &machine);
        store::delete_all_entries(batch);
        store::put_log_start(batch, metadata.index, metadata.term);
        self.machine = machine;
        Ok(())
    }

    fn after_snapshot_install(&mut self) {
        self.shared.watch.reset(self.machine.revision());
        self.shared.set_members(self.machine.members());
        let members = self.machine.members().to_vec();
        self.transport.update(&members);
        if self.is_leader() {
            self.sessions.reset(self.machine.sessions(), Instant::now());
        }
    }

    /// Snapshots the state and drops old log entries once enough have been applied.
    fn maybe_compact(&mut self) -> Result<()> {
        let applied = self.machine.applied_index();
        let (start, _) = self.raw.store().start();
        if self.snapshot_stale && start > 0 {
            let snapshot = build_snapshot(&self.machine, self.raw.store().conf_state())?;
            self.raw.mut_store().set_snapshot(snapshot);
        }
        self.snapshot_stale = false;
        if applied < start + self.config.compact_after_entries {
            return Ok(());
        }
        let snapshot = build_snapshot(&self.machine, self.raw.store().conf_state())?;
        // Keep half the window so followers slightly behind still catch up from the log.
        let compact_to = applied - self.config.compact_after_entries / 2;
        let Some(term) = self.raw.store().term_of(compact_to) else {
            return Ok(());
        };
        let mut batch = WriteBatch::default();
        store::put_log_start(&mut batch, compact_to, term);
        self.store.write(batch, false)?;
        self.raw.mut_store().set_snapshot(snapshot);
        self.raw.mut_store().compact(compact_to, term);
        Ok(())
    }

    fn fail_everything(&mut self) {
        for (_, reply) in self.queued_writes.drain(..) {
            let _ = reply.send(Err(MetaError::ShuttingDown));
        }
        for (_, pending) in self.pending_writes.drain() {
            let _ = pending.reply.send(Err(MetaError::NoQuorum(
                "the node stopped before the write was committed; it may still be".into(),
            )));
        }
        let reads = self
            .queued_reads
            .drain(..)
            .chain(self.read_batches.drain().flat_map(|(_, b)| b.reads))
            .chain(self.confirmed_reads.drain(..).flat_map(|(_, r)| r));
        for read in reads {
            let _ = read.reply.send(Err(MetaError::ShuttingDown));
        }
        for (_, (reply, _)) in self.pending_members.drain() {
            let _ = reply.send(Err(MetaError::ShuttingDown));
        }
        self.shared.set_leader(0);
    }
}

/// A snapshot of the whole state at its applied index.
fn build_snapshot(machine: &StateMachine, conf_state: &ConfState) -> Result<Snapshot> {
    let mut snapshot = Snapshot::default();
    snapshot.set_data(machine.to_snapshot().encode_to_vec().into());
    let metadata = snapshot.mut_metadata();
    metadata.index = machine.applied_index();
    metadata.term = machine.meta().applied_term;
    metadata.set_conf_state(conf_state.clone());
    Ok(snapshot)
}
