//! A fast per-thread random number generator for per-request choices
//! (weighted splits, mirror and fault percentages, backoff jitter).
//!
//! xorshift64* seeded once per thread from the standard library's
//! randomly keyed hasher: no dependency, no lock, no allocation. Not for
//! anything security related.

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x9E37_79B9_7F4A_7C15);
    // Never zero: xorshift would stay at zero.
    h.finish() | 1
}

/// Seeds this thread's generator for a statistical test so that a failure
/// can be replayed: from `MESH_TEST_SEED` when set, else a fresh seed.
/// Returns the seed, for the test's failure message.
#[cfg(test)]
pub(crate) fn seed_for_test() -> u64 {
    let seed = std::env::var("MESH_TEST_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(seed);
    // Never zero: xorshift would stay at zero.
    STATE.with(|s| s.set(seed | 1));
    seed
}

/// A uniformly distributed `u64`.
#[inline]
pub fn next_u64() -> u64 {
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A uniformly distributed `f64` in `[0, 1)`.
#[inline]
pub fn next_f64() -> f64 {
    (next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_in_range_and_spread() {
        let seed = seed_for_test();
        let mut below_half = 0;
        for _ in 0..10_000 {
            let f = next_f64();
            assert!((0.0..1.0).contains(&f), "MESH_TEST_SEED={seed}: {f}");
            if f < 0.5 {
                below_half += 1;
            }
        }
        // 10 000 draws at p = 0.5: sd 50, so +-300 is 6 sd.
        assert!(
            (4_700..5_300).contains(&below_half),
            "MESH_TEST_SEED={seed}: {below_half} of 10000 below 0.5"
        );
    }

    #[test]
    fn a_seed_replays_the_same_draws() {
        let seed = seed_for_test();
        let first: Vec<u64> = (0..8).map(|_| next_u64()).collect();
        STATE.with(|s| s.set(seed | 1));
        let again: Vec<u64> = (0..8).map(|_| next_u64()).collect();
        assert_eq!(first, again, "MESH_TEST_SEED={seed}");
    }
}
