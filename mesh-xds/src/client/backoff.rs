//! Jittered exponential backoff for reconnects, with gRPC's connection
//! backoff shape (multiplier 1.6, ±20 % jitter) so that many clients losing
//! the same control plane do not come back in lockstep.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

const MULTIPLIER: f64 = 1.6;
const JITTER: f64 = 0.2;

/// Successive reconnect delays.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    pub(crate) fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            next: base,
            seed: RandomState::new().build_hasher().finish() | 1,
        }
    }

    /// Back to the first delay (after a session that worked).
    pub(crate) fn reset(&mut self) {
        self.next = self.base;
    }

    /// A uniform number in [0, 1) (xorshift; quality does not matter here,
    /// only that two processes differ).
    fn unit(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        // 53 random bits into a float in [0, 1): exact for u64 >> 11.
        #[allow(clippy::cast_precision_loss)]
        let x = (self.seed >> 11) as f64 / (1u64 << 53) as f64;
        x
    }

    /// The delay to wait now; the following one grows.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let cur = self.next;
        self.next = self.max.min(cur.mul_f64(MULTIPLIER));
        let factor = 1.0 + JITTER * (2.0 * self.unit() - 1.0);
        cur.mul_f64(factor).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_within_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut ideal = 100.0_f64;
        for _ in 0..10 {
            let d = b.next_delay().as_secs_f64() * 1000.0;
            let lo = ideal.min(1000.0) * 0.8 - 0.001;
            let hi = (ideal * 1.2).min(1000.0) + 0.001;
            assert!(d >= lo && d <= hi, "{d} not in [{lo}, {hi}]");
            ideal *= 1.6;
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(120));
    }
}
