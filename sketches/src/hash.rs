//! MurmurHash3 x64 128, the hash every DataSketches library uses, for the kinds written here.
//!
//! A one-shot version over a byte slice: the streaming hasher of the `datasketches` crate
//! buffers through the `Hasher` trait, which costs a few nanoseconds per update that Count-Min
//! cannot spare. Both give the same 128 bits for the same bytes and seed (tested below).

/// The seed all DataSketches libraries use unless told otherwise.
pub const DEFAULT_SEED: u64 = 9001;

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;

#[inline(always)]
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[inline(always)]
fn mix_k1(k1: u64) -> u64 {
    k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2)
}

#[inline(always)]
fn mix_k2(k2: u64) -> u64 {
    k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1)
}

#[inline(always)]
fn read_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(word)
}

/// MurmurHash3 x64 128 of the eight little-endian bytes of `value`, the hash the DataSketches
/// libraries give a 64-bit integer.
#[inline(always)]
pub fn murmur3_x64_128_i64(value: i64, seed: u64) -> (u64, u64) {
    finish(seed ^ mix_k1(value as u64), seed, 8)
}

/// The two 64-bit halves of MurmurHash3 x64 128 of `bytes` with `seed`.
#[inline]
pub fn murmur3_x64_128(bytes: &[u8], seed: u64) -> (u64, u64) {
    if bytes.len() == 8 {
        // Integers and floats are eight bytes: skip the block loop and the tail copy.
        return murmur3_x64_128_i64(read_u64(bytes) as i64, seed);
    }
    let mut h1 = seed;
    let mut h2 = seed;
    let mut blocks = bytes.chunks_exact(16);
    for block in &mut blocks {
        let k1 = read_u64(&block[..8]);
        let k2 = read_u64(&block[8..]);
        h1 ^= mix_k1(k1);
        h1 = h1
            .rotate_left(27)
            .wrapping_add(h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        h2 ^= mix_k2(k2);
        h2 = h2
            .rotate_left(31)
            .wrapping_add(h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        let mut padded = [0u8; 16];
        padded[..tail.len()].copy_from_slice(tail);
        if tail.len() > 8 {
            h2 ^= mix_k2(read_u64(&padded[8..]));
        }
        h1 ^= mix_k1(read_u64(&padded[..8]));
    }
    finish(h1, h2, bytes.len() as u64)
}

#[inline(always)]
fn finish(mut h1: u64, mut h2: u64, length: u64) -> (u64, u64) {
    h1 ^= length;
    h2 ^= length;
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 = h1.wrapping_add(h2);
    h2 = h2.wrapping_add(h1);
    (h1, h2)
}

/// A small, fast, seedable generator (SplitMix64) whose whole state is one `u64`, so samplers
/// can store it with their sample and resume the same random sequence after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub(crate) fn state(&self) -> u64 {
        self.state
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform float in `(0, 1]`: never zero, so its logarithm is finite.
    #[inline]
    pub(crate) fn next_unit_open_zero(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    /// A uniform integer in `0..bound` (`bound > 0`), by Lemire's multiply-shift.
    #[inline]
    pub(crate) fn next_below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_datasketches_hash_for_every_tail_length() {
        // The crate keeps its hasher private, but an HLL coupon exposes 26 bits of the low half
        // and the leading zeros of the high half, enough to catch any slip in the algorithm.
        use datasketches::hash::value::raw_bytes;
        use datasketches::hll::Coupon;
        let bytes: Vec<u8> = (0u8..=70).map(|byte| byte.wrapping_mul(37)).collect();
        for length in 0..bytes.len() {
            let (low, high) = murmur3_x64_128(&bytes[..length], DEFAULT_SEED);
            let register = high.leading_zeros().min(62) + 1;
            let expected = (register << 26) | (low as u32 & ((1 << 26) - 1));
            let coupon = Coupon::from_value(raw_bytes::from_slice(&bytes[..length]));
            assert_eq!(
                format!("{coupon:?}"),
                format!("Coupon({expected})"),
                "length {length}"
            );
        }
    }

    #[test]
    fn bounded_draws_stay_below_the_bound() {
        let mut generator = SplitMix64::new(7);
        for bound in [1u64, 2, 3, 1000, u64::MAX] {
            for _ in 0..1000 {
                assert!(generator.next_below(bound) < bound);
            }
        }
        for _ in 0..1000 {
            let unit = generator.next_unit_open_zero();
            assert!(unit > 0.0 && unit <= 1.0);
        }
    }
}
