//! Seeded synthetic streams for accuracy tests and benchmarks: uniform and Zipf-distributed
//! keys, and uniform values. The same seed always gives the same stream.

use crate::hash::SplitMix64;

/// `count` keys drawn uniformly from `0..universe`.
pub fn uniform_keys(seed: u64, count: usize, universe: u64) -> Vec<u64> {
    let mut random = SplitMix64::new(seed);
    (0..count).map(|_| random.next_below(universe)).collect()
}

/// `count` keys from `0..universe` where key `r` has probability proportional to
/// `1 / (r + 1)^exponent` (key 0 is the most frequent).
pub fn zipf_keys(seed: u64, count: usize, universe: u64, exponent: f64) -> Vec<u64> {
    let mut cumulative = Vec::with_capacity(universe as usize);
    let mut total = 0.0;
    for rank in 0..universe {
        total += 1.0 / ((rank + 1) as f64).powf(exponent);
        cumulative.push(total);
    }
    let mut random = SplitMix64::new(seed);
    (0..count)
        .map(|_| {
            let target = random.next_unit_open_zero() * total;
            cumulative
                .partition_point(|&mass| mass < target)
                .min(universe as usize - 1) as u64
        })
        .collect()
}

/// `count` values uniform in `[0, 1)`.
pub fn uniform_values(seed: u64, count: usize) -> Vec<f64> {
    let mut random = SplitMix64::new(seed);
    (0..count)
        .map(|_| (random.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_puts_the_expected_mass_on_the_first_key() {
        // With exponent 1 over 1,000 keys, key 0 has probability 1 / H(1000) = 0.1336.
        let keys = zipf_keys(3, 100_000, 1000, 1.0);
        let share = keys.iter().filter(|&&key| key == 0).count() as f64 / keys.len() as f64;
        assert!((share - 0.1336).abs() < 0.005, "share {share}");
        assert!(keys.iter().all(|&key| key < 1000));
    }
}
