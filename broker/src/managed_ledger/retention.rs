//! Which ledgers of a topic may be deleted, and when the current ledger should roll over.
//! No I/O: the managed ledger feeds in its ledger list, the slowest cursor and the clock.
//!
//! Retention follows Pulsar: a ledger is a candidate only once every cursor has consumed all
//! of it (its last entry is at or before the slowest mark-delete position) and it is not the
//! ledger being written. Consumed ledgers are then kept, oldest deleted first, while both the
//! retention time and the retention size allow: a consumed ledger goes as soon as it is older
//! than the time limit or the consumed ledgers kept add up to more than the size limit.
//! Limits of zero keep nothing that is consumed; `None` keeps without limit.

use std::time::Duration;

use super::position::Position;

/// A ledger of the topic as retention sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerInfo {
    pub ledger_id: u64,
    /// Entries in the ledger (for a closed ledger, last entry id + 1).
    pub entries: u64,
    pub size_bytes: u64,
    /// When the ledger was closed, in milliseconds since the Unix epoch; `None` while open.
    pub closed_at_ms: Option<u64>,
}

/// How long consumed data is kept. The default, as in Pulsar, keeps nothing once consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Consumed ledgers older than this are deleted; `None` means no time limit.
    pub time: Option<Duration>,
    /// Consumed ledgers beyond this total size are deleted, oldest first; `None` means no
    /// size limit.
    pub size_bytes: Option<u64>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self {
            time: Some(Duration::ZERO),
            size_bytes: Some(0),
        }
    }
}

/// The ledgers to delete, oldest first. `ledgers` is the topic's list, oldest first, the last
/// one being the ledger currently written; `slowest_mark_delete` is the smallest mark-delete
/// position over every cursor (`None` when the topic has no cursor, in which case everything
/// closed counts as consumed, as in Pulsar).
pub fn ledgers_to_delete(
    ledgers: &[LedgerInfo],
    slowest_mark_delete: Option<Position>,
    policy: RetentionPolicy,
    now_ms: u64,
) -> Vec<u64> {
    let Some((_current, closed)) = ledgers.split_last() else {
        return Vec::new();
    };
    let consumed: Vec<&LedgerInfo> = closed
        .iter()
        .take_while(|ledger| match slowest_mark_delete {
            None => true,
            Some(mark_delete) => {
                ledger.entries == 0
                    || Position::new(ledger.ledger_id, ledger.entries as i64 - 1) <= mark_delete
            }
        })
        .collect();
    let mut kept_bytes: u64 = consumed.iter().map(|ledger| ledger.size_bytes).sum();
    let mut doomed = Vec::new();
    for ledger in consumed {
        let too_old = match (policy.time, ledger.closed_at_ms) {
            (Some(limit), Some(closed_at)) => {
                now_ms.saturating_sub(closed_at) >= limit.as_millis() as u64
            }
            (Some(_), None) => false,
            (None, _) => false,
        };
        let too_big = policy.size_bytes.is_some_and(|limit| kept_bytes > limit);
        let zero_limits = policy.time == Some(Duration::ZERO) || policy.size_bytes == Some(0);
        if too_old || too_big || zero_limits {
            doomed.push(ledger.ledger_id);
            kept_bytes -= ledger.size_bytes;
        } else {
            // Deleting stops at the first ledger that may stay: the log keeps no holes.
            break;
        }
    }
    doomed
}

/// When the ledger being written is closed and a new one opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloverPolicy {
    pub max_entries: u64,
    pub max_size_bytes: u64,
    pub max_age: Duration,
    /// A ledger younger than this is not rolled for size or entries, so a burst does not
    /// create a storm of tiny ledgers.
    pub min_age: Duration,
}

impl Default for RolloverPolicy {
    fn default() -> Self {
        Self {
            max_entries: 50_000,
            max_size_bytes: 256 << 20,
            max_age: Duration::from_secs(4 * 3600),
            min_age: Duration::from_secs(0),
        }
    }
}

impl RolloverPolicy {
    /// Whether a ledger holding `entries` entries and `size_bytes` bytes, opened `age` ago,
    /// should be rolled over now. An empty ledger never rolls for age.
    pub fn should_roll(&self, entries: u64, size_bytes: u64, age: Duration) -> bool {
        if entries == 0 {
            return false;
        }
        if age >= self.max_age {
            return true;
        }
        age >= self.min_age && (entries >= self.max_entries || size_bytes >= self.max_size_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(ledger_id: u64, entries: u64, size_bytes: u64, closed_at_ms: u64) -> LedgerInfo {
        LedgerInfo {
            ledger_id,
            entries,
            size_bytes,
            closed_at_ms: Some(closed_at_ms),
        }
    }

    fn topic() -> Vec<LedgerInfo> {
        vec![
            ledger(1, 10, 1000, 1_000),
            ledger(2, 10, 1000, 2_000),
            ledger(3, 10, 1000, 3_000),
            LedgerInfo {
                ledger_id: 4,
                entries: 5,
                size_bytes: 500,
                closed_at_ms: None,
            },
        ]
    }

    #[test]
    fn only_ledgers_every_cursor_consumed_are_candidates() {
        let none = RetentionPolicy::default();
        assert_eq!(
            ledgers_to_delete(&topic(), Some(Position::new(2, 8)), none, 10_000),
            vec![1]
        );
        assert_eq!(
            ledgers_to_delete(&topic(), Some(Position::new(2, 9)), none, 10_000),
            vec![1, 2]
        );
        // The ledger being written is never deleted, even when consumed.
        assert_eq!(
            ledgers_to_delete(&topic(), Some(Position::new(4, 4)), none, 10_000),
            vec![1, 2, 3]
        );
        assert!(ledgers_to_delete(&topic(), Some(Position::before_ledger(1)), none, 0).is_empty());
    }

    #[test]
    fn time_and_size_limits_keep_recent_consumed_ledgers() {
        let everything = Some(Position::new(3, 9));
        let by_time = RetentionPolicy {
            time: Some(Duration::from_millis(1_500)),
            size_bytes: None,
        };
        // At t = 3.6 s, ledger 1 closed 2.6 s ago and ledger 2 1.6 s ago; ledger 3 stays.
        assert_eq!(
            ledgers_to_delete(&topic(), everything, by_time, 3_600),
            vec![1, 2]
        );
        let by_size = RetentionPolicy {
            time: None,
            size_bytes: Some(2_000),
        };
        assert_eq!(ledgers_to_delete(&topic(), everything, by_size, 0), vec![1]);
        let unlimited = RetentionPolicy {
            time: None,
            size_bytes: None,
        };
        assert!(ledgers_to_delete(&topic(), everything, unlimited, u64::MAX).is_empty());
    }

    #[test]
    fn rollover_by_entries_size_and_age() {
        let policy = RolloverPolicy {
            max_entries: 100,
            max_size_bytes: 1_000,
            max_age: Duration::from_secs(60),
            min_age: Duration::from_secs(1),
        };
        assert!(!policy.should_roll(0, 0, Duration::from_secs(3600)));
        assert!(policy.should_roll(1, 10, Duration::from_secs(60)));
        assert!(policy.should_roll(100, 10, Duration::from_secs(2)));
        assert!(policy.should_roll(5, 1_000, Duration::from_secs(2)));
        assert!(!policy.should_roll(100, 10, Duration::from_millis(500)));
        assert!(!policy.should_roll(99, 999, Duration::from_secs(59)));
    }
}
