//! Seeds for statistical tests: a failure names its seed, and
//! `MESH_TEST_SEED=<seed>` replays it.

use std::hash::{BuildHasher, Hasher};

/// The seed of this run: `MESH_TEST_SEED` when set, else a fresh one.
/// Put it in the test's failure message (`MESH_TEST_SEED={seed}: ...`).
pub fn seed() -> u64 {
    std::env::var("MESH_TEST_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x5eed);
            h.finish()
        })
}
