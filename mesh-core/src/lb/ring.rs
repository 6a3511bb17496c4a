//! Ketama-style ring hash: every endpoint owns a number of points on a
//! 64-bit ring proportional to its weight (`minimum_ring_size` points per
//! weight unit, 1024 by default as Envoy's minimum; at most 8M in all); a
//! key is served by the first point clockwise from its hash. Points are
//! XXH64 of `"<address>_<n>"`. Unlike Envoy, which rescales every
//! endpoint's point count to the ring size, an endpoint's points here do
//! not depend on the others, so when one leaves only its keys move.

use super::hash::xxh64;

/// Envoy's default minimum ring size.
pub const DEFAULT_MIN_RING_SIZE: u64 = 1024;
/// Envoy's cap on the ring size.
pub const MAX_RING_SIZE: u64 = 8 * 1024 * 1024;

/// A built ring over endpoint indices.
#[derive(Debug, Clone)]
pub struct Ring {
    points: Vec<(u64, usize)>,
}

impl Ring {
    /// Builds a ring over `(index, name, weight)`; `name` (the endpoint's
    /// address) places its points, so the same endpoint lands on the same
    /// points whatever else is on the ring.
    pub fn build(hosts: &[(usize, String, u32)], min_ring_size: u64) -> Self {
        // Every weight unit (weights divided by their gcd) owns
        // `min_ring_size` points, so an endpoint's points do not depend on
        // the other endpoints and removing one moves only its keys. Rings
        // above the cap are scaled down.
        let g = hosts
            .iter()
            .fold(0u64, |g, h| gcd(g, u64::from(h.2.max(1))));
        let units: u64 = hosts.iter().map(|h| u64::from(h.2.max(1)) / g.max(1)).sum();
        let per_unit = min_ring_size.max(1);
        let scale = if units.saturating_mul(per_unit) > MAX_RING_SIZE {
            MAX_RING_SIZE as f64 / (units * per_unit) as f64
        } else {
            1.0
        };
        let mut points = Vec::new();
        for (idx, name, w) in hosts {
            let u = u64::from((*w).max(1)) / g.max(1);
            let n = (((u * per_unit) as f64 * scale) as u64).max(1);
            for i in 0..n {
                let key = format!("{name}_{i}");
                points.push((xxh64(key.as_bytes(), 0), *idx));
            }
        }
        points.sort_unstable();
        Self { points }
    }

    /// Number of points.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The endpoint for `hash`, walking clockwise past endpoints `allowed`
    /// rejects (at most one full turn).
    pub fn lookup(&self, hash: u64, allowed: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let start = self.points.partition_point(|p| p.0 < hash);
        let n = self.points.len();
        (0..n)
            .map(|i| self.points[(start + i) % n].1)
            .find(|idx| allowed(*idx))
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
