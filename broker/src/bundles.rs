//! Namespace bundles: a namespace's topics split by hash into ranges, the unit of ownership a
//! broker takes. No I/O.

use std::fmt;

use crate::dispatch::key_hash;
use crate::topic_name::TopicName;

/// Bundles a namespace starts with (Pulsar's default).
pub const DEFAULT_BUNDLES: u32 = 4;

/// The half-open hash range `[start, end)` of one bundle; the last bundle ends at 2^32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundleRange {
    pub start: u32,
    /// Exclusive end, as a u64 so the last range can end at 2^32.
    pub end: u64,
}

impl BundleRange {
    pub fn contains(&self, hash: u32) -> bool {
        hash >= self.start && u64::from(hash) < self.end
    }
}

impl fmt::Display for BundleRange {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "0x{:08x}_0x{:08x}", self.start, self.end - 1)
    }
}

/// `count` equal ranges covering every hash (`count` at least 1).
pub fn split_evenly(count: u32) -> Vec<BundleRange> {
    let count = u64::from(count.max(1));
    let span = (1u64 << 32) / count;
    (0..count)
        .map(|index| BundleRange {
            start: (index * span) as u32,
            end: if index + 1 == count {
                1 << 32
            } else {
                (index + 1) * span
            },
        })
        .collect()
}

/// The hash that places a topic in a bundle. Every partition of a partitioned topic hashes on
/// its own full name, so partitions spread over bundles (and brokers).
pub fn topic_hash(topic: &TopicName) -> u32 {
    key_hash(topic.to_string().as_bytes())
}

/// The bundle of `ranges` holding `topic`.
pub fn bundle_of(ranges: &[BundleRange], topic: &TopicName) -> Option<BundleRange> {
    let hash = topic_hash(topic);
    ranges.iter().copied().find(|range| range.contains(hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_hash_once() {
        let ranges = split_evenly(DEFAULT_BUNDLES);
        assert_eq!(ranges.len(), 4);
        assert_eq!(ranges[0].start, 0);
        assert_eq!(ranges[3].end, 1 << 32);
        for pair in ranges.windows(2) {
            assert_eq!(u64::from(pair[1].start), pair[0].end);
        }
        for hash in [0, 1, 0x3fff_ffff, 0x4000_0000, u32::MAX] {
            assert_eq!(ranges.iter().filter(|r| r.contains(hash)).count(), 1);
        }
        assert_eq!(ranges[0].to_string(), "0x00000000_0x3fffffff");
    }

    #[test]
    fn every_topic_has_exactly_one_bundle_and_partitions_spread() {
        let ranges = split_evenly(DEFAULT_BUNDLES);
        let topic = TopicName::parse("clicks").unwrap();
        let mut used = std::collections::HashSet::new();
        for index in 0..64 {
            used.insert(bundle_of(&ranges, &topic.partition(index)).unwrap());
        }
        assert_eq!(used.len(), 4, "64 partitions reach every bundle");
    }
}
