//! The KLL compactor hierarchy over `f64`, as DataSketches defines it (same level capacities,
//! same compaction rule, same byte layout), written for update speed. No I/O.
//!
//! Why ours: an update is a push onto level 0; the cost that matters is compaction, which
//! happens every few updates once the sketch is deep (level 0 then holds only `m = 8` items).
//! Here every level keeps its buffer across compactions, capacities are computed once per
//! change of depth rather than on every compaction, and level 0 is sorted with a plain `f64`
//! comparison. Queries and merges are rare and go through the `datasketches` crate on the same
//! bytes (see [`crate::Kll`]).

/// Smallest capacity of any level (DataSketches' default `m`).
pub(crate) const MIN_LEVEL_CAPACITY: u8 = 8;
/// DataSketches' family id for KLL.
const FAMILY_KLL: u8 = 15;
const PREAMBLE_INTS_SHORT: u8 = 2;
const PREAMBLE_INTS_FULL: u8 = 5;
const SERIAL_VERSION_FULL: u8 = 1;
const SERIAL_VERSION_SINGLE: u8 = 2;
const FLAG_EMPTY: u8 = 1;
const FLAG_LEVEL_ZERO_SORTED: u8 = 2;
const FLAG_SINGLE_ITEM: u8 = 4;
/// Deepest hierarchy the format allows.
const MAX_LEVELS: usize = 61;

/// `round(k * (2/3)^depth)` in integers, as DataSketches computes it: exact for depths up to
/// 30 through powers of three, and in two steps beyond.
fn capacity_at_depth(k: u16, depth: usize) -> u32 {
    fn shallow(k: u64, depth: usize) -> u64 {
        let scaled = (k << (depth + 1)) / 3u64.pow(depth as u32);
        (scaled + 1) >> 1
    }
    let k = u64::from(k);
    let capacity = if depth <= 30 {
        shallow(k, depth)
    } else {
        let first = depth / 2;
        shallow(shallow(k, first), depth - first)
    };
    capacity as u32
}

/// The capacity of every level of a hierarchy `levels` deep, level 0 first.
fn level_capacities(k: u16, levels: usize) -> Vec<u32> {
    (0..levels)
        .map(|level| capacity_at_depth(k, levels - level - 1).max(u32::from(MIN_LEVEL_CAPACITY)))
        .collect()
}

/// The compactor hierarchy of one KLL sketch.
#[derive(Debug, Clone)]
pub(crate) struct KllLevels {
    k: u16,
    min_k: u16,
    n: u64,
    /// Level 0 first; level `h` items each stand for `2^h` values.
    levels: Vec<Vec<f64>>,
    capacities: Vec<u32>,
    total_capacity: usize,
    retained: usize,
    level_zero_sorted: bool,
    min: f64,
    max: f64,
    /// Merge scratch space, kept to avoid allocating on every compaction.
    scratch: Vec<f64>,
    /// xorshift state for the compaction coin.
    coin: u64,
}

fn fresh_coin() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0x006b_6c6c_u64) | 1
}

impl KllLevels {
    pub(crate) fn new(k: u16) -> Self {
        let capacities = level_capacities(k, 1);
        Self {
            k,
            min_k: k,
            n: 0,
            levels: vec![Vec::with_capacity(capacities[0] as usize)],
            total_capacity: capacities.iter().sum::<u32>() as usize,
            capacities,
            retained: 0,
            level_zero_sorted: false,
            min: f64::NAN,
            max: f64::NAN,
            scratch: Vec::new(),
            coin: fresh_coin(),
        }
    }

    pub(crate) fn k(&self) -> u16 {
        self.k
    }

    pub(crate) fn n(&self) -> u64 {
        self.n
    }

    /// Adds a value; the caller has refused NaN and turned -0.0 into 0.0.
    #[inline]
    pub(crate) fn update(&mut self, value: f64) {
        if self.retained >= self.total_capacity {
            self.compact_once();
        }
        if self.n == 0 {
            self.min = value;
            self.max = value;
        } else {
            self.min = self.min.min(value);
            self.max = self.max.max(value);
        }
        self.n += 1;
        self.retained += 1;
        self.level_zero_sorted = false;
        self.levels[0].push(value);
    }

    fn flip_coin(&mut self) -> bool {
        let mut x = self.coin;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.coin = x;
        x & 1 == 1
    }

    /// Compacts the lowest level at capacity, adding a level on top when it is the highest:
    /// half of its items (every other one, from a random start) move up a level, where each
    /// stands for twice the weight.
    #[cold]
    fn compact_once(&mut self) {
        let Some(level) = (0..self.levels.len())
            .find(|&level| self.levels[level].len() as u32 >= self.capacities[level])
        else {
            // Cannot happen while `retained >= total_capacity`; growing is always safe.
            self.add_level();
            return;
        };
        if level + 1 == self.levels.len() {
            self.add_level();
        }
        let offset = usize::from(self.flip_coin());
        let sort_first = level == 0 && !self.level_zero_sorted;
        let (lower, upper) = self.levels.split_at_mut(level + 1);
        let current = &mut lower[level];
        let above = &mut upper[0];
        let use_up = above.is_empty();
        let odd = current.len() % 2 == 1;
        // An odd level keeps one item behind: the last arrival when level 0 is unsorted,
        // else the smallest.
        let leftover = if odd && sort_first {
            current.pop()
        } else {
            None
        };
        if sort_first {
            current.sort_unstable_by(f64::total_cmp);
        }
        let (leftover, items) = match leftover {
            Some(item) => (Some(item), &current[..]),
            None if odd => (Some(current[0]), &current[1..]),
            None => (None, &current[..]),
        };
        let parity = if use_up {
            (items.len() - 1 - offset) % 2
        } else {
            offset
        };
        let promoted = items.iter().skip(parity).step_by(2).copied();
        let promoted_count = items.len() / 2;
        let removed = items.len();
        if use_up {
            above.extend(promoted);
        } else {
            self.scratch.clear();
            self.scratch.reserve(above.len() + promoted_count);
            let mut promoted = promoted.peekable();
            let mut resident = above.iter().copied().peekable();
            while let (Some(&left), Some(&right)) = (promoted.peek(), resident.peek()) {
                if left < right {
                    self.scratch.push(left);
                    promoted.next();
                } else {
                    self.scratch.push(right);
                    resident.next();
                }
            }
            self.scratch.extend(promoted);
            self.scratch.extend(resident);
            std::mem::swap(above, &mut self.scratch);
        }
        current.clear();
        current.extend(leftover);
        self.retained = self.retained - removed + promoted_count;
    }

    fn add_level(&mut self) {
        if self.levels.len() >= MAX_LEVELS {
            return;
        }
        self.levels.push(Vec::new());
        self.capacities = level_capacities(self.k, self.levels.len());
        self.total_capacity = self.capacities.iter().sum::<u32>() as usize;
    }

    /// The DataSketches KLL doubles bytes (compact form).
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let empty = self.n == 0;
        let single = self.n == 1;
        let mut bytes = Vec::with_capacity(20 + 4 * self.levels.len() + 16 + 8 * self.retained);
        bytes.push(if empty || single {
            PREAMBLE_INTS_SHORT
        } else {
            PREAMBLE_INTS_FULL
        });
        bytes.push(if single {
            SERIAL_VERSION_SINGLE
        } else {
            SERIAL_VERSION_FULL
        });
        bytes.push(FAMILY_KLL);
        let mut flags = 0;
        if empty {
            flags |= FLAG_EMPTY;
        }
        if self.level_zero_sorted {
            flags |= FLAG_LEVEL_ZERO_SORTED;
        }
        if single {
            flags |= FLAG_SINGLE_ITEM;
        }
        bytes.push(flags);
        bytes.extend_from_slice(&self.k.to_le_bytes());
        bytes.push(MIN_LEVEL_CAPACITY);
        bytes.push(0);
        if empty {
            return bytes;
        }
        if !single {
            bytes.extend_from_slice(&self.n.to_le_bytes());
            bytes.extend_from_slice(&self.min_k.to_le_bytes());
            bytes.push(self.levels.len() as u8);
            bytes.push(0);
            // Offsets of each level in a buffer of `total_capacity` items filled from the top.
            let mut offset = (self.total_capacity - self.retained) as u32;
            for level in &self.levels {
                bytes.extend_from_slice(&offset.to_le_bytes());
                offset += level.len() as u32;
            }
            bytes.extend_from_slice(&self.min.to_le_bytes());
            bytes.extend_from_slice(&self.max.to_le_bytes());
        }
        for (index, level) in self.levels.iter().enumerate() {
            // An unsorted level 0 is written newest first, as the other libraries lay it out.
            if index == 0 && !self.level_zero_sorted {
                for value in level.iter().rev() {
                    bytes.extend_from_slice(&value.to_le_bytes());
                }
            } else {
                for value in level {
                    bytes.extend_from_slice(&value.to_le_bytes());
                }
            }
        }
        bytes
    }

    /// Reads DataSketches KLL doubles bytes. The caller has already had them accepted by the
    /// `datasketches` crate's decoder; this still checks every length it relies on.
    pub(crate) fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let byte = |at: usize| bytes.get(at).copied().ok_or("truncated preamble");
        let word = |at: usize, width: usize| -> Result<u64, String> {
            let slice = bytes.get(at..at + width).ok_or("truncated")?;
            let mut padded = [0u8; 8];
            padded[..width].copy_from_slice(slice);
            Ok(u64::from_le_bytes(padded))
        };
        if byte(2)? != FAMILY_KLL {
            return Err("not a KLL sketch".into());
        }
        let flags = byte(3)?;
        let k = word(4, 2)? as u16;
        if k < u16::from(MIN_LEVEL_CAPACITY) {
            return Err(format!("k {k} is below {MIN_LEVEL_CAPACITY}"));
        }
        if byte(6)? != MIN_LEVEL_CAPACITY {
            return Err(format!(
                "m {} is not supported (only {MIN_LEVEL_CAPACITY})",
                byte(6)?
            ));
        }
        let mut levels = Self::new(k);
        if flags & FLAG_EMPTY != 0 {
            return Ok(levels);
        }
        if flags & FLAG_SINGLE_ITEM != 0 {
            let value = f64::from_bits(word(8, 8)?);
            levels.update(canonical(value).ok_or("NaN item")?);
            return Ok(levels);
        }
        let n = word(8, 8)?;
        let min_k = word(16, 2)? as u16;
        let depth = byte(18)? as usize;
        if depth == 0 || depth > MAX_LEVELS {
            return Err(format!("{depth} levels"));
        }
        let capacities = level_capacities(k, depth);
        let total_capacity = capacities.iter().sum::<u32>() as usize;
        let mut offsets = Vec::with_capacity(depth + 1);
        for level in 0..depth {
            offsets.push(word(20 + 4 * level, 4)? as usize);
        }
        offsets.push(total_capacity);
        if offsets.windows(2).any(|pair| pair[0] > pair[1]) {
            return Err("level offsets out of order".into());
        }
        let mut at = 20 + 4 * depth;
        let min = f64::from_bits(word(at, 8)?);
        let max = f64::from_bits(word(at + 8, 8)?);
        at += 16;
        let retained = total_capacity - offsets[0];
        if bytes.len() != at + 8 * retained {
            return Err(format!(
                "{} bytes of items for {retained} retained items",
                bytes.len().saturating_sub(at)
            ));
        }
        let mut parsed = Vec::with_capacity(depth);
        for level in 0..depth {
            let count = offsets[level + 1] - offsets[level];
            let mut values = Vec::with_capacity(count.max(capacities[level] as usize));
            for index in 0..count {
                let value = f64::from_bits(word(at + 8 * index, 8)?);
                values.push(canonical(value).ok_or("NaN item")?);
            }
            at += 8 * count;
            if level == 0 && flags & FLAG_LEVEL_ZERO_SORTED == 0 {
                // Written newest first; keep arrival order in memory.
                values.reverse();
            }
            parsed.push(values);
        }
        levels.min_k = min_k;
        levels.n = n;
        levels.levels = parsed;
        levels.capacities = capacities;
        levels.total_capacity = total_capacity;
        levels.retained = retained;
        levels.level_zero_sorted = flags & FLAG_LEVEL_ZERO_SORTED != 0;
        levels.min = canonical(min).ok_or("NaN minimum")?;
        levels.max = canonical(max).ok_or("NaN maximum")?;
        Ok(levels)
    }
}

/// The value the sketch stores for `value`: `None` for NaN, 0.0 for -0.0 (so every library
/// orders the items the same way).
#[inline]
pub(crate) fn canonical(value: f64) -> Option<f64> {
    if value.is_nan() {
        None
    } else {
        Some(value + 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_follow_two_thirds_per_level_with_a_floor() {
        assert_eq!(capacity_at_depth(200, 0), 200);
        assert_eq!(capacity_at_depth(200, 1), 133);
        assert_eq!(capacity_at_depth(200, 2), 89);
        assert_eq!(level_capacities(200, 3), vec![89, 133, 200]);
        let deep = level_capacities(200, 20);
        assert_eq!(deep[0], u32::from(MIN_LEVEL_CAPACITY));
        assert_eq!(deep[19], 200);
    }

    #[test]
    fn weight_is_conserved_through_compactions() {
        let mut levels = KllLevels::new(20);
        for value in 0..100_000 {
            levels.update(f64::from(value % 977));
        }
        let weight: u64 = levels
            .levels
            .iter()
            .enumerate()
            .map(|(height, items)| (items.len() as u64) << height)
            .sum();
        // Each compaction turns an even number of items into half as many of twice the
        // weight, so the retained weight is exactly the number of values.
        assert_eq!(levels.n(), 100_000);
        assert_eq!(weight, 100_000);
        assert!(levels.retained <= levels.total_capacity);
        for level in &levels.levels[1..] {
            assert!(level.windows(2).all(|pair| pair[0] <= pair[1]));
        }
        assert_eq!((levels.min, levels.max), (0.0, 976.0));
    }

    #[test]
    fn bytes_round_trip() {
        for count in [0u32, 1, 2, 7, 5_000] {
            let mut levels = KllLevels::new(50);
            for value in 0..count {
                levels.update(f64::from(value).sqrt());
            }
            let bytes = levels.to_bytes();
            let parsed = KllLevels::from_bytes(&bytes).unwrap();
            assert_eq!(parsed.to_bytes(), bytes, "{count} values");
        }
    }
}
