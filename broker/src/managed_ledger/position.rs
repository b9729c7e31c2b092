//! Positions in a topic's log, and the layout of its ledgers that says which position follows
//! which. No I/O.

use std::fmt;

/// A place in a topic's log: an entry of one of its ledgers. Ledger ids grow over a topic's
/// life (they come from one sequence), so positions order as (ledger, entry).
///
/// Entry id -1 means "before the first entry of the ledger": a cursor whose mark-delete
/// position is `(L, -1)` has consumed nothing of `L`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub ledger_id: u64,
    pub entry_id: i64,
}

impl Position {
    pub const fn new(ledger_id: u64, entry_id: i64) -> Self {
        Self {
            ledger_id,
            entry_id,
        }
    }

    /// The position before the first entry of `ledger_id`.
    pub const fn before_ledger(ledger_id: u64) -> Self {
        Self::new(ledger_id, -1)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}", self.ledger_id, self.entry_id)
    }
}

/// One ledger of a topic as far as ordering is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerSpan {
    pub ledger_id: u64,
    /// The last entry of a closed ledger (-1 when it holds none); `None` while the ledger is
    /// open and still growing.
    pub last_entry_id: Option<i64>,
}

/// The topic's ledgers in order, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    spans: Vec<LedgerSpan>,
}

impl Layout {
    /// `spans` must be in increasing ledger id order; out-of-order spans are sorted.
    pub fn new(mut spans: Vec<LedgerSpan>) -> Self {
        spans.sort_by_key(|span| span.ledger_id);
        spans.dedup_by_key(|span| span.ledger_id);
        Self { spans }
    }

    pub fn spans(&self) -> &[LedgerSpan] {
        &self.spans
    }

    /// The position of the first entry after `position`, skipping empty ledgers; `None` when
    /// `position` is at or past the last entry of the last closed ledger. A position in a
    /// ledger the log no longer holds (deleted by retention) is followed by the first entry of
    /// the next ledger it does hold.
    pub fn next(&self, position: Position) -> Option<Position> {
        let later = match self
            .spans
            .binary_search_by_key(&position.ledger_id, |span| span.ledger_id)
        {
            Ok(index) => {
                let span = self.spans[index];
                let has_next_here = match span.last_entry_id {
                    None => true,
                    Some(last) => position.entry_id < last,
                };
                if has_next_here {
                    return Some(Position::new(span.ledger_id, position.entry_id + 1));
                }
                index + 1
            }
            Err(insertion) => insertion,
        };
        self.spans[later..]
            .iter()
            .find(|span| span.last_entry_id != Some(-1))
            .map(|span| Position::new(span.ledger_id, 0))
    }

    /// How many entries lie after `after` up to and including `up_to`; an open ledger counts
    /// as ending at `up_to` when `up_to` is in it.
    pub fn entries_between(&self, after: Position, up_to: Position) -> u64 {
        if up_to <= after {
            return 0;
        }
        self.spans
            .iter()
            .filter(|span| span.ledger_id >= after.ledger_id && span.ledger_id <= up_to.ledger_id)
            .map(|span| {
                let first = if span.ledger_id == after.ledger_id {
                    after.entry_id + 1
                } else {
                    0
                };
                let last = if span.ledger_id == up_to.ledger_id {
                    match span.last_entry_id {
                        Some(last) => last.min(up_to.entry_id),
                        None => up_to.entry_id,
                    }
                } else {
                    span.last_entry_id.unwrap_or(-1)
                };
                (last - first + 1).max(0) as u64
            })
            .sum()
    }

    /// The first entry of the log, if it has any.
    pub fn first(&self) -> Option<Position> {
        let first = self.spans.first()?;
        self.next(Position::before_ledger(first.ledger_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        Layout::new(vec![
            LedgerSpan {
                ledger_id: 3,
                last_entry_id: Some(1),
            },
            LedgerSpan {
                ledger_id: 5,
                last_entry_id: Some(-1),
            },
            LedgerSpan {
                ledger_id: 8,
                last_entry_id: None,
            },
        ])
    }

    #[test]
    fn next_walks_entries_then_skips_empty_ledgers() {
        let layout = layout();
        assert_eq!(layout.first(), Some(Position::new(3, 0)));
        assert_eq!(layout.next(Position::new(3, 0)), Some(Position::new(3, 1)));
        assert_eq!(layout.next(Position::new(3, 1)), Some(Position::new(8, 0)));
        assert_eq!(
            layout.next(Position::new(8, 41)),
            Some(Position::new(8, 42))
        );
        // Ledger 4 is not in the log (ledger 5 is empty): the next entry is in ledger 8.
        assert_eq!(layout.next(Position::new(4, 0)), Some(Position::new(8, 0)));
        assert_eq!(layout.next(Position::new(1, 7)), Some(Position::new(3, 0)));
    }

    #[test]
    fn entries_between_counts_across_ledgers() {
        let layout = layout();
        assert_eq!(
            layout.entries_between(Position::before_ledger(3), Position::new(3, 1)),
            2
        );
        assert_eq!(
            layout.entries_between(Position::new(3, 0), Position::new(8, 9)),
            11
        );
        assert_eq!(
            layout.entries_between(Position::new(8, 9), Position::new(8, 9)),
            0
        );
    }

    #[test]
    fn a_closed_log_ends() {
        let layout = Layout::new(vec![LedgerSpan {
            ledger_id: 1,
            last_entry_id: Some(0),
        }]);
        assert_eq!(layout.next(Position::new(1, 0)), None);
        assert_eq!(Layout::default().first(), None);
    }
}
