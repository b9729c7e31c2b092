//! Session expiry decisions, made by the leader alone. Pure logic over explicit instants.
//!
//! Sessions themselves (id, TTL, owned keys) are replicated state; liveness is not: keepalives
//! reach only the leader, which keeps a deadline per session here and proposes the expiry of
//! those past their deadline. A new leader knows nothing of the keepalives its predecessor
//! saw, so it grants every session a full TTL from the moment it takes over: a session never
//! expires early because of a leader change, at worst one TTL late.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an expiry proposal may stay unapplied before the leader proposes it again.
const REPROPOSE_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Liveness {
    ttl: Duration,
    deadline: Instant,
    /// When an expiry was last proposed for this session.
    proposed_at: Option<Instant>,
}

/// The leader's view of session liveness.
#[derive(Debug, Default)]
pub struct SessionTracker {
    sessions: HashMap<u64, Liveness>,
}

impl SessionTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// On becoming leader: every known session gets a full TTL from now.
    pub fn reset(&mut self, sessions: impl Iterator<Item = (u64, u64)>, now: Instant) {
        self.sessions.clear();
        for (session_id, ttl_ms) in sessions {
            self.opened(session_id, ttl_ms, now);
        }
    }

    /// A session was opened (applied).
    pub fn opened(&mut self, session_id: u64, ttl_ms: u64, now: Instant) {
        let ttl = Duration::from_millis(ttl_ms);
        self.sessions.insert(
            session_id,
            Liveness {
                ttl,
                deadline: now + ttl,
                proposed_at: None,
            },
        );
    }

    /// A session was closed or expired (applied).
    pub fn removed(&mut self, session_id: u64) {
        self.sessions.remove(&session_id);
    }

    /// A keepalive arrived; false when the session is unknown.
    pub fn keep_alive(&mut self, session_id: u64, now: Instant) -> bool {
        match self.sessions.get_mut(&session_id) {
            Some(liveness) => {
                liveness.deadline = now + liveness.ttl;
                true
            }
            None => false,
        }
    }

    /// Sessions past their deadline whose expiry should be proposed now.
    pub fn due(&mut self, now: Instant) -> Vec<u64> {
        let mut due = Vec::new();
        for (session_id, liveness) in &mut self.sessions {
            if now < liveness.deadline {
                continue;
            }
            let recently_proposed = liveness
                .proposed_at
                .is_some_and(|at| now.duration_since(at) < REPROPOSE_AFTER);
            if !recently_proposed {
                liveness.proposed_at = Some(now);
                due.push(*session_id);
            }
        }
        due.sort_unstable();
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Action {
        Open(u64, u64),
        KeepAlive(u64, bool),
        Remove(u64),
        Reset,
        Due(&'static [u64]),
    }

    #[test]
    fn sessions_expire_after_their_ttl_without_keepalives() {
        use Action::*;
        let start = Instant::now();
        // (ms after start, action)
        let script: &[(u64, Action)] = &[
            (0, Open(1, 100)),
            (0, Open(2, 300)),
            (50, Due(&[])),
            (90, KeepAlive(1, true)),
            (150, Due(&[])),
            (189, Due(&[])),
            (190, Due(&[1])),
            // Proposed once; not again until the re-proposal delay passes.
            (250, Due(&[])),
            (300, Due(&[2])),
            (1189, Due(&[])),
            (1190, Due(&[1])),
            (1200, Remove(1)),
            (1200, KeepAlive(1, false)),
            (1300, Due(&[2])),
            // A new leader grants a full TTL from its takeover.
            (1400, Reset),
            (1600, Due(&[])),
            (1700, Due(&[2])),
        ];
        let mut tracker = SessionTracker::new();
        let mut known: Vec<(u64, u64)> = Vec::new();
        for (at_ms, action) in script {
            let now = start + Duration::from_millis(*at_ms);
            match action {
                Open(id, ttl) => {
                    tracker.opened(*id, *ttl, now);
                    known.push((*id, *ttl));
                }
                KeepAlive(id, expected) => {
                    assert_eq!(tracker.keep_alive(*id, now), *expected, "at {at_ms} ms")
                }
                Remove(id) => {
                    tracker.removed(*id);
                    known.retain(|(known_id, _)| known_id != id);
                }
                Reset => tracker.reset(known.iter().copied(), now),
                Due(expected) => assert_eq!(&tracker.due(now), expected, "at {at_ms} ms"),
            }
        }
    }
}
