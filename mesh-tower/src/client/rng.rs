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
        let mut below_half = 0;
        for _ in 0..10_000 {
            let f = next_f64();
            assert!((0.0..1.0).contains(&f));
            if f < 0.5 {
                below_half += 1;
            }
        }
        assert!((4_700..5_300).contains(&below_half), "{below_half}");
    }
}
